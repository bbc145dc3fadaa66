"""`make demo`'s program on a shortened run: every step works and the reloaded model translates."""

import json
import subprocess
import sys

from conftest import REPO_ROOT
from test_readme import DEMO_MODEL, readme_snippets


def test_demo_quick_run(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "training" / "demo.py"), "--quick", "--output_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads((tmp_path / "demo_results.json").read_text())
    assert results["test_examples"] == 40
    assert 0.0 <= results["exact_match"] <= 1.0 and 0.0 <= results["char_bleu"] <= 100.0
    assert "Held-out translations (English -> German)" in completed.stdout
    log = json.loads((tmp_path / "model" / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert losses[-1] < 0.6 * losses[0], losses  # 150 steps: the model has clearly started to learn
    assert (tmp_path / "model" / "model.safetensors").is_file() and (
        tmp_path / "tokenizer" / "tokenizer.json"
    ).is_file()

    # The README's translation snippet runs against this model.
    (snippet,) = [snippet for snippet in readme_snippets() if DEMO_MODEL in snippet]
    namespace: dict = {}
    exec(compile(snippet.replace(DEMO_MODEL, str(tmp_path / "model")), "README.md", "exec"), namespace)
    assert len(namespace["tokenizer"].batch_decode(namespace["ids"], skip_special_tokens=True)) == 2
