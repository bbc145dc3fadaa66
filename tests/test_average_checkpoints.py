"""training/average_checkpoints.py: the mean of a run's last checkpoints is a model the Auto classes load."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from hf_scratch_transformer import ScratchTransformerForConditionalGeneration

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "average_checkpoints.py"


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


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
    result = run_script(
        "--checkpoints", f"{run_dir / 'checkpoint-1'},{run_dir / 'checkpoint-2'}", "--output_dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    averaged, original = weights(tmp_path), weights(run_dir / "checkpoint-1")
    assert averaged.keys() == original.keys()
    assert all(torch.equal(averaged[name], original[name]) for name in original)


def test_last_checkpoints_by_step_are_averaged_and_load_with_the_auto_classes(run_dir, tmp_path):
    result = run_script("--run_dir", str(run_dir), "--last", "2", "--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (
        "checkpoint-2" in result.stderr and "checkpoint-10" in result.stderr and "checkpoint-1'" not in result.stderr
    )

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
def test_bad_requests_end_in_one_line(run_dir, tmp_path, args, message):
    result = run_script("--run_dir", str(run_dir), *args, "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr.strip().splitlines()[-1]), result.stderr
    assert not (tmp_path / "out").exists()
