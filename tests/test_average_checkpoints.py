"""training/average_checkpoints.py: the mean of a run's last checkpoints is a model the Auto classes load. The runs
call its main() in this process; one bad request starts it as a command, to see what a user sees."""

import logging
import re
import subprocess
import sys

import pytest
import torch
from conftest import command, run_script, script_stops_with, tiny_config
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from hf_scratch_transformer import ScratchTransformerForConditionalGeneration

SCRIPT = command("average-checkpoints")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder with checkpoint-1 and checkpoint-2 (the same weights) and checkpoint-10 (other weights): 10 is
    the last, although it sorts before 2 as text."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = ScratchTransformerForConditionalGeneration(tiny_config(tie_word_embeddings=True))
    model.save_pretrained(run / "checkpoint-1")
    model.save_pretrained(run / "checkpoint-2")
    torch.manual_seed(1)
    ScratchTransformerForConditionalGeneration(tiny_config(tie_word_embeddings=True)).save_pretrained(
        run / "checkpoint-10"
    )
    return run


def weights(path) -> dict[str, torch.Tensor]:
    return AutoModelForSeq2SeqLM.from_pretrained(path).state_dict()


def test_average_of_identical_checkpoints_is_that_checkpoint(run_dir, tmp_path):
    run_script(
        "average_checkpoints",
        *["--checkpoints", f"{run_dir / 'checkpoint-1'},{run_dir / 'checkpoint-2'}", "--output_dir", tmp_path],
    )
    averaged, original = weights(tmp_path), weights(run_dir / "checkpoint-1")
    assert averaged.keys() == original.keys()
    assert all(torch.equal(averaged[name], original[name]) for name in original)


def test_last_checkpoints_by_step_are_averaged_and_load_with_the_auto_classes(run_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run_script("average_checkpoints", "--run_dir", run_dir, "--last", 2, "--output_dir", tmp_path)
    assert "checkpoint-2" in caplog.text and "checkpoint-10" in caplog.text and "checkpoint-1'" not in caplog.text

    two, ten = weights(run_dir / "checkpoint-2"), weights(run_dir / "checkpoint-10")
    model, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    averaged = model.state_dict()
    for name, tensor in averaged.items():
        torch.testing.assert_close(tensor, (two[name] + ten[name]) / 2, atol=1e-6, rtol=0, msg=name)
    assert not torch.equal(averaged["model.shared.weight"], two["model.shared.weight"])
    assert model.model.encoder.embed_tokens.weight is model.model.shared.weight  # still tied

    classifier, info = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, num_labels=2, output_loading_info=True
    )
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert torch.equal(classifier.model.shared.weight, averaged["model.shared.weight"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--last", "5"], r"holds 3 checkpoints .*fewer than --last 5.*--save_total_limit 5"),
        (["--last", "0"], r"--last must be at least 1"),
    ],
)
def test_bad_requests_are_refused_with_what_to_change(run_dir, tmp_path, args, message):
    stopped_with = script_stops_with(
        "average_checkpoints", "--run_dir", run_dir, *args, "--output_dir", tmp_path / "out"
    )
    assert re.search(message, stopped_with), stopped_with
    assert not (tmp_path / "out").exists()


def test_a_bad_request_ends_the_command_in_one_line(run_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, *SCRIPT, "--run_dir", str(run_dir), "--last", "0", "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "--last must be at least 1, got 0.", result.stderr
