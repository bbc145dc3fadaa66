"""`make demo`'s program on a shortened run (conftest.demo_run): every step works, and the reloaded model translates
nearly all held-out numbers."""

import json

import pytest
from conftest import DEMO_MODEL, REPO_ROOT, documentation_pages, python_snippets
from transformers import AutoModelForSeq2SeqLM

# The slow tier (make test-slow): make demo's program, trained for 500 steps.
pytestmark = pytest.mark.slow


def test_demo_short_run(demo_run, tmp_path, monkeypatch):
    results = json.loads((demo_run.folder / "demo_results.json").read_text())
    assert results["test_examples"] == 40
    assert results["exact_match"] >= 0.8 and results["char_bleu"] >= 90.0  # 500 steps: 97.5 % and 99.2 measured
    assert "Held-out translations (English -> German)" in demo_run.stdout
    # Our own files cause no warning: generate() uses the saved generation_config.json as it is.
    assert "seem to have been set" not in demo_run.stdout + demo_run.stderr
    # The training log's evaluation scores characters, as the demo does (word BLEU of one-word numbers is 0).
    training_results = json.loads((demo_run.model / "all_results.json").read_text())
    assert "|tok:char|" in training_results["eval_bleu_signature"] and training_results["eval_bleu"] > 50
    log = json.loads((demo_run.model / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert losses[-1] < 0.3 * losses[0], losses  # 500 steps: the model has learned most of the task
    assert (demo_run.model / "model.safetensors").is_file()
    assert (demo_run.folder / "tokenizer" / "tokenizer.json").is_file()

    # The documentation's snippets that use the demo's model (the README's translation, docs/attention.md and
    # docs/serving.md) run against this one, in order, in one namespace.
    snippets = [(page, snippet) for page in documentation_pages() for snippet in python_snippets(page)]
    snippets = [(page, snippet) for page, snippet in snippets if DEMO_MODEL in snippet]
    assert [page.name for page, _ in snippets] == ["README.md", "attention.md", "serving.md"]
    monkeypatch.chdir(tmp_path)  # the attention snippet saves a picture
    namespace: dict = {}
    for page, snippet in snippets:
        code = snippet.replace(DEMO_MODEL, str(demo_run.model))
        exec(compile(code, str(page.relative_to(REPO_ROOT)), "exec"), namespace)
    assert len(namespace["tokenizer"].batch_decode(namespace["ids"], skip_special_tokens=True)) == 2
    assert (tmp_path / "attention.png").read_bytes().startswith(b"\x89PNG")
    # The serving snippet: CTranslate2 translates as generate() does, with the decoding settings it shows.
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(demo_run.model), namespace["tokenizer"]
    expected = model.generate(**tokenizer(["seven thousand four hundred"], return_tensors="pt"), num_beams=4,
                              max_new_tokens=32)  # fmt: skip
    assert namespace["text"] == tokenizer.decode(expected[0], skip_special_tokens=True) and namespace["text"]
