"""training/finetune_sentiment.py end to end on a generated toy task, its errors, and real SST-2 when present.
The runs call the script's main() in this process; one bad run starts it as a command, to see what a user sees."""

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO_ROOT, SHARED_DATA, command, run_script, script_stops_with, toy_reviews, write_jsonl
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from hf_scratch_transformer.training.finetune_sentiment import keep_head_and_tail
from hf_scratch_transformer.training.output_dir import validation_metrics

SCRIPT = command("finetune-sentiment")
TINY_MODEL = (
    "d_model=32,encoder_layers=2,decoder_layers=1,encoder_attention_heads=4,decoder_attention_heads=4,"
    "encoder_ffn_dim=64,decoder_ffn_dim=64,normalize_before=true"
)
COMMON = ["--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no", "--seed", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sentiment")
    train = write_jsonl(folder / "train.jsonl", toy_reviews(400, seed=0))
    validation = write_jsonl(folder / "validation.jsonl", toy_reviews(100, seed=1))
    tokenizer = folder / "tokenizer"
    run_script("train_tokenizer", "--train_file", train, "--output_dir", tokenizer, "--vocab_size", 400,
               "--num_sentinel_tokens", 10)  # fmt: skip
    return {"folder": folder, "train": train, "validation": validation, "tokenizer": str(tokenizer)}


def test_trains_a_new_model_and_saves_a_pipeline_ready_classifier(data, tmp_path):
    output = tmp_path / "run"
    run_script("finetune_sentiment", "--train_file", data["train"], "--validation_file", data["validation"],
        "--tokenizer_name", data["tokenizer"], "--config_overrides", TINY_MODEL, "--class_names", "negative,positive",
        "--output_dir", output, "--num_train_epochs", 3, "--per_device_train_batch_size", 16,
        "--learning_rate", 3e-3, "--eval_strategy", "epoch", "--logging_steps", 5, *COMMON)  # fmt: skip
    results = json.loads((output / "all_results.json").read_text())
    assert results["eval_accuracy"] >= 0.9, results  # the toy task is one word; chance is 0.5
    model = AutoModelForSequenceClassification.from_pretrained(output)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    classify = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(output))
    assert classify("the film was really wonderful")[0]["label"] == "positive"
    assert classify("the film was really awful")[0]["label"] == "negative"

    # The reported scores are those of the saved model on the validation file: accuracy, and F1 of "positive".
    rows = [json.loads(line) for line in Path(data["validation"]).read_text().splitlines()]
    predicted = [model.config.label2id[result["label"]] for result in classify([row["sentence"] for row in rows])]
    pairs = [(guess, row["label"]) for guess, row in zip(predicted, rows, strict=True)]
    true_positives = sum(guess == label == 1 for guess, label in pairs)
    f1 = 2 * true_positives / (sum(guess == 1 for guess, _ in pairs) + sum(label == 1 for _, label in pairs))
    assert results["eval_accuracy"] == pytest.approx(sum(guess == label for guess, label in pairs) / len(pairs))
    assert results["eval_f1"] == pytest.approx(f1)
    # Trainer evaluated after each epoch, the last one on the final model: the results are that evaluation's, and
    # the validation set was not read a fourth time.
    evaluations = [entry for entry in read_log_history(output) if "eval_accuracy" in entry]
    assert [entry["epoch"] for entry in evaluations] == [1, 2, 3], evaluations
    assert results["eval_accuracy"] == evaluations[-1]["eval_accuracy"]


def read_log_history(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


def test_validation_metrics_are_read_from_the_last_step_or_measured_again():
    """Only an evaluation of the final model stands for it: one at the last step, unless the best checkpoint was
    loaded back since."""
    evaluate = {"eval_accuracy": 0.5, "epoch": 2.0}

    def trainer(log_history, global_step, load_best_model_at_end=False):
        return SimpleNamespace(
            state=SimpleNamespace(log_history=log_history, global_step=global_step),
            args=SimpleNamespace(load_best_model_at_end=load_best_model_at_end),
            evaluate=lambda: evaluate,
        )

    history = [{"loss": 0.7, "step": 5}, {"eval_accuracy": 0.9, "eval_runtime": 1.0, "epoch": 2.0, "step": 10}]
    assert validation_metrics(trainer(history, 10)) == {"eval_accuracy": 0.9, "eval_runtime": 1.0, "epoch": 2.0}
    assert validation_metrics(trainer(history, 12)) == evaluate  # steps after the last evaluation
    assert validation_metrics(trainer(history, 10, load_best_model_at_end=True)) == evaluate
    assert validation_metrics(trainer(history[:1], 5)) == evaluate  # no evaluation during training
    assert validation_metrics(trainer([], 0)) == evaluate  # an evaluation-only run


def test_arguments_from_a_json_file_and_the_text_column_of_imdb(data, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", toy_reviews(40, seed=2, text_key="text"))
    arguments = {
        "train_file": train,
        "tokenizer_name": data["tokenizer"],
        "config_overrides": TINY_MODEL,
        "output_dir": str(tmp_path / "run"),
        "max_steps": 3,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
    }
    (tmp_path / "args.json").write_text(json.dumps(arguments))
    run_script("finetune_sentiment", tmp_path / "args.json")
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert (state["max_steps"], state["global_step"]) == (3, 3)  # --max_steps from the file took effect


@pytest.mark.parametrize(("truncate", "accuracy"), [("end", (0.3, 0.7)), ("middle", (0.9, 1.0))])
def test_truncating_the_middle_keeps_the_verdict_at_the_end_of_a_long_text(data, tmp_path, truncate, accuracy):
    """Toy reviews after 30 neutral words: cut to 16 tokens, their end (the sentiment word) is gone and the model
    guesses; with their middle cut, it reads the end and learns the task."""
    for split, count, seed in (("train", 400, 0), ("validation", 100, 1)):
        rows = [{**row, "sentence": "plot " * 30 + row["sentence"]} for row in toy_reviews(count, seed=seed)]
        write_jsonl(tmp_path / f"{split}.jsonl", rows)
    output = tmp_path / "run"
    run_script("finetune_sentiment", "--train_file", tmp_path / "train.jsonl",
        "--validation_file", tmp_path / "validation.jsonl", "--max_source_length", 16, "--truncate", truncate,
        "--tokenizer_name", data["tokenizer"], "--config_overrides", TINY_MODEL, "--output_dir", output,
        "--num_train_epochs", 3, "--per_device_train_batch_size", 16, "--learning_rate", 3e-3, *COMMON)  # fmt: skip
    results = json.loads((output / "all_results.json").read_text())
    assert accuracy[0] <= results["eval_accuracy"] <= accuracy[1], results


def test_keep_head_and_tail():
    assert keep_head_and_tail(list(range(8)), 8) == list(range(8))  # fits: unchanged
    assert keep_head_and_tail(list(range(100)), 8) == [0, 1, 94, 95, 96, 97, 98, 99]  # a quarter from the start


@pytest.mark.parametrize(
    ("make_train", "extra", "message"),
    [
        (
            lambda p: write_jsonl(p, [{"review": "good", "label": 1}]),
            [],
            r"no column 'sentence'; it has \['review', 'label'\]",
        ),
        (
            lambda p: write_jsonl(p, [{"sentence": "good", "label": 5}]),
            ["--class_names", "negative,positive"],
            r"Labels \[5\] in the train split are outside the 2 classes",
        ),
        (lambda p: (p.write_text(""), str(p))[1], [], r"Could not read|is empty"),
    ],
    ids=["missing column", "label outside the classes", "empty file"],
)
def test_bad_data_gets_a_clear_error(data, tmp_path, make_train, extra, message):
    train = make_train(tmp_path / "train.jsonl")
    stopped_with = script_stops_with("finetune_sentiment", "--train_file", train, "--tokenizer_name",
        data["tokenizer"], "--config_overrides", TINY_MODEL, "--output_dir", tmp_path / "run", "--max_steps", 1,
        *extra, *COMMON)  # fmt: skip
    assert re.search(message, stopped_with), stopped_with


def test_a_missing_file_ends_the_command_with_a_message_and_no_traceback(data, tmp_path):
    completed = subprocess.run(
        [sys.executable, *SCRIPT, "--train_file", tmp_path / "missing.jsonl", "--tokenizer_name", data["tokenizer"],
         "--config_overrides", TINY_MODEL, "--output_dir", tmp_path / "run", "--max_steps", "1", *COMMON],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
    )  # fmt: skip
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert re.search(r"no such file", completed.stderr.strip().splitlines()[-1]), completed.stderr[-2000:]


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused(data, tmp_path):
    stopped_with = script_stops_with("finetune_sentiment", "--train_file", data["train"], "--tokenizer_name",
        data["tokenizer"], "--config_overrides", TINY_MODEL + ",vocab_size=100", "--output_dir", tmp_path / "run",
        "--max_steps", 1, *COMMON)  # fmt: skip
    assert "The tokenizer has" in stopped_with and "vocab_size" in stopped_with


@pytest.mark.skipif(not (SHARED_DATA / "sst2").is_dir(), reason="../shared/data/sst2 is absent")
def test_real_sst2_slice_learns_above_chance(tmp_path):
    """150 steps of a new tiny model on 5000 rows of SST-2: the 1000 validation sentences are 52.2 % positive,
    and the model gets 0.63-0.66 of them right (seeds 0 and 1; 0.53 after 40 steps, where it still says
    "positive" to everything)."""
    tokenizer = tmp_path / "tokenizer"
    run_script("train_tokenizer", "--train_file", SHARED_DATA / "sst2" / "train.jsonl",
        "--max_train_samples", 3000, "--output_dir", tokenizer, "--vocab_size", 1000,
        "--num_sentinel_tokens", 10)  # fmt: skip
    run_script("finetune_sentiment", "--train_file", SHARED_DATA / "sst2" / "train.jsonl",
        "--validation_file", SHARED_DATA / "sst2" / "validation.jsonl", "--max_train_samples", 5000,
        "--tokenizer_name", tokenizer, "--config_overrides", TINY_MODEL, "--output_dir", tmp_path / "run",
        "--max_steps", 150, "--per_device_train_batch_size", 32, "--learning_rate", 5e-3, *COMMON)  # fmt: skip
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["eval_accuracy"] >= 0.58, results  # chance (the majority class) is 0.522; 0.016 is one std
