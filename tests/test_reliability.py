"""Runs that die: checkpoints appear only complete (AtomicTrainer), a killed run resumes to the weights of one that
was never stopped, and the output-dir checks that keep runs from overwriting each other."""

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, command, random_batch, run_script, tiny_config, toy_reviews, write_jsonl
from safetensors.torch import load_file
from transformers import Seq2SeqTrainingArguments, Trainer
from transformers.trainer_utils import get_last_checkpoint

from hf_scratch_transformer import ScratchTransformerForConditionalGeneration
from hf_scratch_transformer.training import atomic_checkpoints
from hf_scratch_transformer.training.atomic_checkpoints import (
    STAGING_DIR_NAME,
    AtomicSeq2SeqTrainer,
    AtomicTrainer,
    publish_checkpoint,
)

SCRIPT = command("finetune-sentiment")
# Dropout stays at the config's default (0.1): a resume only matches if the RNG states are restored too.
TINY_MODEL = (
    "d_model=32,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,decoder_attention_heads=2,"
    "encoder_ffn_dim=64,decoder_ffn_dim=64"
)
# What `checkpoint-N` of a single-process run holds once complete (model files, tokenizer and config too).
CHECKPOINT_FILES = {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"}


def checkpoints(output_dir: Path) -> list[str]:
    return sorted(
        (path.name for path in output_dir.glob("checkpoint-*") if path.is_dir()), key=lambda name: int(name[11:])
    )


def assert_complete(checkpoint: Path) -> None:
    missing = CHECKPOINT_FILES - {path.name for path in checkpoint.iterdir()}
    assert not missing, f"{checkpoint} lacks {sorted(missing)}"


def max_weight_difference(a: Path, b: Path) -> float:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    return max((first[name] - second[name]).abs().max().item() for name in first)


# ---- AtomicTrainer in process, on a tiny seq2seq model ----


def tiny_trainer(trainer_class, output_dir: Path, **overrides):
    rows = []
    for seed in range(4):
        input_ids, attention_mask, labels = random_batch(batch_size=2, seed=seed)
        for row in range(2):
            rows.append({"input_ids": input_ids[row], "attention_mask": attention_mask[row], "labels": labels[row]})
    values = dict(
        output_dir=str(output_dir), max_steps=6, save_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
        use_cpu=True, report_to="none", disable_tqdm=True, seed=0,
    )  # fmt: skip
    values.update(overrides)
    return trainer_class(
        model=ScratchTransformerForConditionalGeneration(tiny_config()),
        args=Seq2SeqTrainingArguments(**values),
        train_dataset=rows,
        eval_dataset=rows[:4],
    )


@pytest.mark.parametrize("trainer_class", [AtomicTrainer, AtomicSeq2SeqTrainer])
def test_a_save_that_fails_midway_leaves_no_checkpoint_folder(trainer_class, tmp_path, monkeypatch):
    save_optimizer_and_scheduler = trainer_class._save_optimizer_and_scheduler

    def fails_at_step_4(self, output_dir):
        if self.state.global_step == 4:  # the model file of the checkpoint is written, the rest is not
            raise OSError("No space left on device")
        save_optimizer_and_scheduler(self, output_dir)

    monkeypatch.setattr(trainer_class, "_save_optimizer_and_scheduler", fails_at_step_4)
    with pytest.raises(OSError, match="No space left"):
        tiny_trainer(trainer_class, tmp_path).train()
    assert checkpoints(tmp_path) == ["checkpoint-2"]
    staged = tmp_path / STAGING_DIR_NAME / "checkpoint-4"
    assert (staged / "model.safetensors").is_file() and not (staged / "optimizer.pt").exists()
    assert get_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")

    monkeypatch.undo()
    tiny_trainer(trainer_class, tmp_path).train(resume_from_checkpoint=get_last_checkpoint(str(tmp_path)))
    assert not (tmp_path / STAGING_DIR_NAME).exists()
    assert checkpoints(tmp_path) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    for name in checkpoints(tmp_path):
        assert_complete(tmp_path / name)


def test_leftovers_of_a_killed_save_are_deleted_when_training_starts(tmp_path):
    leftover = tmp_path / STAGING_DIR_NAME / "checkpoint-8"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half a file")
    tiny_trainer(AtomicTrainer, tmp_path, max_steps=1, save_strategy="no").train()
    assert not (tmp_path / STAGING_DIR_NAME).exists()


def test_best_checkpoint_and_rotation_name_the_real_folders(tmp_path):
    trainer = tiny_trainer(
        AtomicTrainer, tmp_path, eval_strategy="steps", eval_steps=2, save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model="loss",
    )  # fmt: skip
    trainer.train()
    best = Path(trainer.state.best_model_checkpoint)
    assert best.parent == tmp_path and best.is_dir()
    kept = checkpoints(tmp_path)
    assert len(kept) == 2 and "checkpoint-6" in kept and best.name in kept  # rotation ran on output_dir
    for name in kept:
        recorded = json.loads((tmp_path / name / "trainer_state.json").read_text())["best_model_checkpoint"]
        assert Path(recorded).parent == tmp_path, recorded  # a resume finds it (the staged path is gone)
    assert not (tmp_path / STAGING_DIR_NAME).exists()


def test_the_installed_transformers_writes_every_checkpoint_into_the_staging_folder(tmp_path, monkeypatch):
    """What AtomicCheckpointsMixin relies on, with the installed transformers (CI: the floor and the newest release):
    Trainer writes each checkpoint where `_get_output_dir` says, and checkpoint-N appears only when it is published."""
    published = []

    def publish(staged: str, final: str) -> None:
        published.append(
            (Path(staged).name, sorted(path.name for path in Path(staged).iterdir()), Path(final).exists())
        )
        publish_checkpoint(staged, final)

    monkeypatch.setattr(atomic_checkpoints, "publish_checkpoint", publish)
    tiny_trainer(AtomicTrainer, tmp_path).train()
    assert [name for name, _, _ in published] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    for _, files, final_existed in published:
        assert CHECKPOINT_FILES <= set(files) and not final_existed


def test_a_transformers_that_writes_checkpoints_in_place_stops_at_the_first_save(tmp_path, monkeypatch):
    # As if a release no longer asked _get_output_dir where to write: the checkpoint goes straight to output_dir.
    monkeypatch.setattr(AtomicTrainer, "_get_output_dir", Trainer._get_output_dir)
    with pytest.raises(RuntimeError, match="saved checkpoint-2 without asking _get_output_dir.*would not be atomic"):
        tiny_trainer(AtomicTrainer, tmp_path).train()


def test_a_transformers_without_an_overridden_method_cannot_import_the_module(monkeypatch):
    monkeypatch.delattr(Trainer, "_push_from_checkpoint")
    spec = importlib.util.spec_from_file_location("atomic_checkpoints_again", atomic_checkpoints.__file__)
    with pytest.raises(ImportError, match=r"Trainer has no \['_push_from_checkpoint'\]"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_publishing_a_step_saved_again_replaces_the_old_folder_whole(tmp_path):
    staged, final = tmp_path / STAGING_DIR_NAME / "checkpoint-3", tmp_path / "checkpoint-3"
    staged.mkdir(parents=True)
    final.mkdir()
    (staged / "new.bin").write_text("new")
    (final / "old.bin").write_text("old")
    publish_checkpoint(str(staged), str(final))
    assert [path.name for path in final.iterdir()] == ["new.bin"]
    assert not (tmp_path / STAGING_DIR_NAME).exists()


# ---- finetune_sentiment.py killed with SIGKILL, and resumed ----


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    """64 one-word-sentiment sentences and a 400-token tokenizer trained on them."""
    folder = tmp_path_factory.mktemp("reliability")
    write_jsonl(folder / "train.jsonl", toy_reviews(64, seed=0))
    run_script("train_tokenizer", "--train_file", folder / "train.jsonl", "--output_dir", folder / "tokenizer",
               "--vocab_size", 400, "--num_sentinel_tokens", 10)  # fmt: skip
    return folder


def script_arguments(sentiment: Path, output_dir: Path, *extra, steps: int = 30, save_steps: int = 5) -> list:
    """By default 30 steps of 8 rows (3.75 epochs: a resume lands mid-epoch) with a checkpoint every 5."""
    return [
        "--train_file", sentiment / "train.jsonl", "--tokenizer_name", sentiment / "tokenizer",
        "--config_overrides", TINY_MODEL, "--output_dir", output_dir, "--per_device_train_batch_size", 8,
        "--max_steps", steps, "--save_steps", save_steps, "--seed", 0, "--use_cpu", "--report_to", "none",
        "--disable_tqdm", "true", *extra,
    ]  # fmt: skip


def start_script(log: Path, *arguments, program: tuple = tuple(SCRIPT)) -> subprocess.Popen:
    with open(log, "w") as file:  # a file, not a pipe: nobody reads while the test polls
        return subprocess.Popen(
            [sys.executable, *program, *map(str, arguments)], stdout=file, stderr=file, cwd=REPO_ROOT
        )


def wait_until_killed(process: subprocess.Popen, log: Path) -> None:
    assert process.wait(timeout=300) == -signal.SIGKILL, log.read_text()[-4000:]


@pytest.fixture(scope="module")
def uninterrupted(sentiment, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    run_script("finetune_sentiment", *script_arguments(sentiment, output_dir, "--overwrite_output_dir"))
    assert checkpoints(output_dir) == [f"checkpoint-{step}" for step in range(5, 31, 5)]
    return output_dir


def test_a_run_killed_after_a_checkpoint_resumes_to_the_weights_of_an_uninterrupted_run(
    sentiment, uninterrupted, tmp_path
):
    output_dir = tmp_path / "run"
    log = tmp_path / "killed.log"
    process = start_script(log, *script_arguments(sentiment, output_dir))
    deadline = time.monotonic() + 300
    while not (output_dir / "checkpoint-10").is_dir():  # appears only complete: safe to kill right away
        assert process.poll() is None, f"the run ended before checkpoint-10:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, "no checkpoint-10 after 300 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    wait_until_killed(process, log)
    assert not (output_dir / "model.safetensors").exists()  # killed before the end of training
    for name in checkpoints(output_dir):  # whatever it was doing when killed, every checkpoint-N is whole
        assert_complete(output_dir / name)

    run_script("finetune_sentiment", *script_arguments(sentiment, output_dir, "--resume_from_checkpoint", "true"))
    assert max_weight_difference(output_dir, uninterrupted) <= 1e-6
    assert not (output_dir / STAGING_DIR_NAME).exists()


# A program run by `python -c` from the checkout, which its first sys.path entry ("") then is.
KILLED_IN_A_SAVE = """
import os, signal
from hf_scratch_transformer.training import finetune_sentiment
from hf_scratch_transformer.training.atomic_checkpoints import AtomicTrainer

save_optimizer_and_scheduler = AtomicTrainer._save_optimizer_and_scheduler


def killed_in_the_save_of_step_10(self, output_dir):
    if self.state.global_step == 10:  # model.safetensors of checkpoint-10 is written, the optimizer not yet
        os.kill(os.getpid(), signal.SIGKILL)
    save_optimizer_and_scheduler(self, output_dir)


AtomicTrainer._save_optimizer_and_scheduler = killed_in_the_save_of_step_10
finetune_sentiment.main()
"""


def test_a_run_killed_inside_a_save_leaves_no_partial_checkpoint_and_resumes(sentiment, uninterrupted, tmp_path):
    output_dir, log = tmp_path / "run", tmp_path / "killed.log"
    program = ("-c", KILLED_IN_A_SAVE)
    wait_until_killed(start_script(log, *script_arguments(sentiment, output_dir), program=program), log)
    assert checkpoints(output_dir) == ["checkpoint-5"]
    staged = output_dir / STAGING_DIR_NAME / "checkpoint-10"
    assert (staged / "model.safetensors").is_file() and not (staged / "optimizer.pt").exists()

    # From checkpoint-5:
    run_script("finetune_sentiment", *script_arguments(sentiment, output_dir, "--resume_from_checkpoint", "true"))
    assert max_weight_difference(output_dir, uninterrupted) <= 1e-6
    assert not (output_dir / STAGING_DIR_NAME).exists()
    assert checkpoints(output_dir) == [f"checkpoint-{step}" for step in range(5, 31, 5)]
    for name in checkpoints(output_dir):
        assert_complete(output_dir / name)


# ---- --output_dir checks ----


def short_run(sentiment: Path, output_dir: Path, steps: int, *extra) -> list:
    return script_arguments(sentiment, output_dir, *extra, steps=steps, save_steps=steps)


def test_a_second_run_into_a_used_output_dir_is_refused_unless_overwritten(sentiment, tmp_path):
    output_dir = tmp_path / "run"
    run_script("finetune_sentiment", *short_run(sentiment, output_dir, 2))
    with pytest.raises(SystemExit, match="already holds a run") as refused:
        run_script("finetune_sentiment", *short_run(sentiment, output_dir, 1))
    assert "--overwrite_output_dir" in str(refused.value) and "--resume_from_checkpoint" in str(refused.value)

    run_script("finetune_sentiment", *short_run(sentiment, output_dir, 1, "--overwrite_output_dir"))
    assert (output_dir / "checkpoint-1").is_dir()
    assert json.loads((output_dir / "checkpoint-1" / "trainer_state.json").read_text())["max_steps"] == 1


@pytest.mark.parametrize("content", ["nothing", "a killed save only"])
def test_resuming_from_a_dir_without_a_complete_checkpoint_is_a_clear_error(sentiment, tmp_path, content):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    if content == "a killed save only":
        (output_dir / STAGING_DIR_NAME / "checkpoint-5").mkdir(parents=True)
    with pytest.raises(SystemExit, match="holds no checkpoint-\\* folder to resume") as refused:
        run_script("finetune_sentiment", *short_run(sentiment, output_dir, 2, "--resume_from_checkpoint", "true"))
    assert "Start the run again without --resume_from_checkpoint" in str(refused.value)
    assert not list(output_dir.glob("checkpoint-*"))


def test_a_folder_holding_only_an_interrupted_first_checkpoint_takes_a_new_run(sentiment, tmp_path):
    """A run killed during its very first save leaves only the staging folder: a restart without
    --resume_from_checkpoint (what the resume refusal above advises) starts anew there, rather than calling the
    folder used."""
    output_dir = tmp_path / "run"
    (output_dir / STAGING_DIR_NAME / "checkpoint-2").mkdir(parents=True)
    (output_dir / STAGING_DIR_NAME / "checkpoint-2" / "model.safetensors").write_bytes(b"cut short")
    run_script("finetune_sentiment", *short_run(sentiment, output_dir, 2))
    assert (output_dir / "checkpoint-2").is_dir() and not (output_dir / STAGING_DIR_NAME).exists()
