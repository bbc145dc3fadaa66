"""The speed benchmark runs (on a tiny shape: CI shows it works; the real numbers are in benchmarks/RESULTS.md)."""

import json
import subprocess
import sys

from conftest import REPO_ROOT


def test_speed_benchmark_runs_on_a_tiny_shape(tmp_path):
    results_file = tmp_path / "speed.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "speed.py"),
            "--tiny",
            "--repetitions",
            "1",
            "--warmup",
            "0",
            "--models",
            "ours-eager,ours-sdpa,marian-sdpa,bart-sdpa,nn",
            "--json",
            str(results_file),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "vs best of Marian/BART" in completed.stdout
    results = json.loads(results_file.read_text())
    for name in ("ours-sdpa", "marian-sdpa", "bart-sdpa"):
        entry = results["models"][name]
        assert entry["train"]["median"] > 0 and entry["greedy"]["median"] > 0 and entry["beam2"]["median"] > 0
    assert "greedy" not in results["models"]["nn"]  # nn.Transformer has no generate()
