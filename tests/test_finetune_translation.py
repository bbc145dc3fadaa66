"""`training/finetune_translation.py`: a new tiny model learns the demo's number translation end to end, a
checkpoint is fine-tuned from a JSON file of arguments with the paper's learning rate schedule, the schedule is
the paper's formula, bad input stops with a clear message, and a short run on Multi30k (when ../shared/data is
there) reports a BLEU score.

The data is made here by `hf_scratch_transformer.demo_data` (English number words -> German), and the tokenizer
by `training/train_tokenizer.py`, once for the module. The runs call the scripts' main() in this process; one bad
run starts the script as a command, to see what a user sees.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, command, run_script, script_stops_with, tiny_config
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hf_scratch_transformer import ScratchTransformerForConditionalGeneration
from hf_scratch_transformer.demo_data import make_demo_splits
from hf_scratch_transformer.metrics import load_metric
from hf_scratch_transformer.training import finetune_translation as ft

SCRIPT = command("finetune-translation")
MULTI30K = SHARED_DATA / "multi30k"
# Nothing to fetch: fail fast rather than wait on the network. One thread: these models are tiny, and on a busy
# machine two OpenMP threads that wait for each other made a 50-step run 20 times slower (10 s instead of 0.5 s).
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
# d_model 32, one layer each way; pre-LN and no dropout or label smoothing, so that 50 steps visibly teach it.
TINY_MODEL = (
    "d_model=32,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,decoder_attention_heads=2,"
    "encoder_ffn_dim=64,decoder_ffn_dim=64,normalize_before=true,dropout=0.0,label_smoothing=0.0"
)
QUIET = ["--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--use_cpu"]
QUIET += ["--dataloader_pin_memory", "false"]
MAX_TARGET_LENGTH = 32


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def read_json(path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def logged(output_dir, key: str) -> list[tuple[int, float]]:
    """(step, value) of every training log entry that holds `key`, from trainer_state.json."""
    history = read_json(output_dir / "trainer_state.json")["log_history"]
    return [(entry["step"], entry[key]) for entry in history if key in entry]


# ---------------------------------------------------------------------------------------------------------------
# Data and tokenizer, once for the module
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Numbers in English words -> German words, as jsonl, and a 400-token BPE tokenizer trained on both sides."""
    folder = tmp_path_factory.mktemp("demo")
    splits = make_demo_splits(train_size=1000, validation_size=32, test_size=0, seed=0)
    files = {}
    for split in ("train", "validation"):
        files[split] = write_jsonl(
            folder / f"{split}.jsonl", [{"translation": t} for t in splits[split]["translation"]]
        )
    tokenizer_dir = folder / "tokenizer"
    run_script("train_tokenizer", "--train_file", files["train"], "--output_dir", tokenizer_dir,
               "--vocab_size", 400, "--num_sentinel_tokens", 10)  # fmt: skip
    return SimpleNamespace(
        folder=folder, train=files["train"], validation=files["validation"], tokenizer=tokenizer_dir
    )


def data_flags(demo) -> list:
    return ["--train_file", demo.train, "--validation_file", demo.validation, "--source_lang", "en"]


# ---------------------------------------------------------------------------------------------------------------
# End to end: a new model, then a fine-tuned checkpoint from a JSON file
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def new_model_run(demo):
    output_dir = demo.folder / "new_model"
    run_script(
        "finetune_translation",
        *data_flags(demo),
        *["--target_lang", "de", "--tokenizer_name", demo.tokenizer, "--config_overrides", TINY_MODEL],
        *["--output_dir", output_dir, "--max_steps", 50, "--per_device_train_batch_size", 32],
        *["--learning_rate", 1e-2, "--warmup_steps", 5, "--logging_steps", 10, "--max_eval_samples", 16],
        *["--predict_with_generate", "--num_beams", 2, "--max_target_length", MAX_TARGET_LENGTH],
        *["--num_samples_to_write", 16, *QUIET],  # every validation row that is evaluated
    )
    return output_dir


def test_new_model_loss_falls(new_model_run):
    losses = logged(new_model_run, "loss")
    assert len(losses) == 5
    assert losses[-1][1] < losses[0][1] - 1.0, losses  # about 5.5 -> 2.7 in 50 steps


def samples(output_dir) -> list[dict]:
    lines = (output_dir / ft.SAMPLES_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_results_hold_bleu_chrf_and_generated_length(new_model_run):
    results = read_json(new_model_run / "all_results.json")
    for key in ("eval_bleu", "eval_chrf", "eval_gen_len", "eval_loss", "train_loss"):
        assert math.isfinite(results[key]), (key, results)
    assert results["eval_bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert results["eval_gen_len"] >= 1 and results["eval_gen_len"] <= MAX_TARGET_LENGTH
    # The scores are those of the translations the evaluation made, which the samples file holds (all 16).
    written = samples(new_model_run)
    scores = load_metric("sacrebleu_chrf").compute(
        predictions=[sample["hypothesis"] for sample in written],
        references=[sample["reference"] for sample in written],
    )
    assert (results["eval_bleu"], results["eval_chrf"]) == pytest.approx((scores["bleu"], scores["chrf"]))


def test_translation_samples_are_written(new_model_run, demo):
    written = samples(new_model_run)
    assert len(written) == 16
    assert all(set(sample) == {"source", "reference", "hypothesis"} for sample in written)
    first = json.loads(open(demo.validation, encoding="utf-8").readline())["translation"]
    assert (written[0]["source"], written[0]["reference"]) == (first["en"], first["de"])


def test_the_cross_attention_of_the_shortest_translations_is_drawn_for_the_card(new_model_run, tmp_path):
    from PIL import Image

    from hf_scratch_transformer.training.model_card import make_model_card

    picture = Image.open(new_model_run / ft.ATTENTION_FILE)
    assert picture.format == "PNG" and picture.width > 600  # three maps side by side
    assert f"![Cross-attention of the model's translations of validation sentences]({ft.ATTENTION_FILE})" in (
        make_model_card(new_model_run, "user/numbers").text
    )
    without_picture = tmp_path / "run"
    shutil.copytree(new_model_run, without_picture, ignore=shutil.ignore_patterns(ft.ATTENTION_FILE))
    assert "## Attention" not in make_model_card(without_picture, "user/numbers").text


def test_output_dir_reloads_and_generates_with_the_saved_settings(new_model_run):
    model = AutoModelForSeq2SeqLM.from_pretrained(new_model_run).eval()
    tokenizer = AutoTokenizer.from_pretrained(new_model_run)
    assert model.config.vocab_size == len(tokenizer) == 400
    assert (model.generation_config.num_beams, model.generation_config.max_length) == (2, MAX_TARGET_LENGTH)

    # generate() with no settings, on the script's first batch of samples (8, its eval batch size): the reloaded
    # model translates as the script did with the model it trained.
    first_batch = samples(new_model_run)[:8]
    batch = tokenizer([sample["source"] for sample in first_batch], padding=True, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert generated.shape[1] <= MAX_TARGET_LENGTH
    assert (generated[:, 0] == model.config.decoder_start_token_id).all()
    translations = [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    assert translations == [sample["hypothesis"] for sample in first_batch]


def test_fine_tune_checkpoint_from_json_args_with_paper_schedule(new_model_run, demo, tmp_path):
    """All flags from one JSON file; the checkpoint's label smoothing changed by --label_smoothing; the logged
    learning rate is the paper's formula (the multiplier is 1.0 when --learning_rate is not given)."""
    output_dir = tmp_path / "fine_tuned"
    args = {
        "model_name_or_path": str(new_model_run),
        "train_file": demo.train,
        "validation_file": demo.validation,
        "source_lang": "en",
        "target_lang": "de",
        "output_dir": str(output_dir),
        "max_train_samples": 200,
        "max_eval_samples": 8,
        "max_steps": 6,
        "per_device_train_batch_size": 16,
        "logging_steps": 1,
        "paper_schedule": True,
        "warmup_steps": 3,
        "label_smoothing": 0.1,
        "predict_with_generate": True,
        "num_beams": 1,
        "num_samples_to_write": 2,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "use_cpu": True,
        "dataloader_pin_memory": False,
    }
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps(args), encoding="utf-8")
    run_script("finetune_translation", args_file)

    # d_model 32 makes the formula's rates large (peak 0.059 at warmup 3): this run checks the schedule, not the loss.
    assert read_json(output_dir / "config.json")["label_smoothing"] == 0.1
    assert read_json(new_model_run / "config.json")["label_smoothing"] == 0.0
    # Trainer logs the learning rate the update of that step used: update k used lrate(step_num=k).
    rates = logged(output_dir, "learning_rate")
    assert [step for step, _ in rates] == [1, 2, 3, 4, 5, 6]
    for step, rate in rates:
        assert rate == pytest.approx(32**-0.5 * min(step**-0.5, step * 3**-1.5), rel=1e-6)
    assert max(rates, key=lambda pair: pair[1])[0] == 3
    assert math.isfinite(read_json(output_dir / "all_results.json")["eval_bleu"])
    assert len((output_dir / ft.SAMPLES_FILE).read_text().splitlines()) == 2


def test_generated_length_counts_up_to_the_first_eos_whatever_fills_the_rest():
    """Beam search fills a finished row with </s> when the pad id is 0 (as our tokenizers have it), greedy search
    with padding: the length is the same either way, and a row that never ended counts every token."""
    predictions = np.array(
        [
            [1, 5, 6, 2, 2, 2],  # beam search: </s> after </s>
            [1, 5, 6, 2, 0, 0],  # greedy search: padding after </s>
            [1, 5, 6, 7, 8, 9],  # cut at the maximum length
            [1, 5, 0, 0, 0, 0],  # no </s>, padded (the -100 of Trainer's gathering, decoded as padding)
        ]
    )
    assert ft.generated_lengths(predictions, eos_token_id=2, pad_token_id=0).tolist() == [3, 3, 5, 1]


# ---------------------------------------------------------------------------------------------------------------
# The paper's learning rate schedule
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_paper_schedule_is_the_formula(factor):
    d_model, warmup = 512, 4000
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=factor)
    scheduler = ft.paper_schedule(optimizer, d_model, warmup)
    for step_num in range(1, 12001):  # the rate of update step_num is the current one, then the scheduler steps
        expected = factor * d_model**-0.5 * min(step_num**-0.5, step_num * warmup**-1.5)
        if step_num in (1, 2, 100, 3999, 4000, 4001, 8000, 12000):
            assert scheduler.get_last_lr()[0] == pytest.approx(expected, rel=1e-12), step_num
        optimizer.step()
        scheduler.step()


def test_paper_schedule_peaks_at_warmup():
    d_model, warmup = 512, 4000
    rates = [ft.paper_learning_rate(step_num, d_model, warmup) for step_num in range(1, 4 * warmup + 1)]
    peak = max(rates)
    assert rates.index(peak) + 1 == warmup
    assert peak == pytest.approx(d_model**-0.5 * warmup**-0.5)  # about 7.0e-4 for the base model
    assert rates[warmup // 2 - 1] == pytest.approx(peak / 2)  # a linear rise ...
    assert rates[4 * warmup - 1] == pytest.approx(peak / 2)  # ... then 1/sqrt(step_num): half at 4 * warmup
    assert all(later < earlier for earlier, later in zip(rates[warmup - 1 : -1], rates[warmup:], strict=True))


# ---------------------------------------------------------------------------------------------------------------
# Errors: each run stops with a message that says what is wrong
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_runs(demo):
    """The flags of each failing run, by name, with the files they need."""
    folder = demo.folder / "errors"
    folder.mkdir()
    flat = write_jsonl(folder / "flat.jsonl", [{"en": "one", "de": "eins"}, {"en": "two", "de": "zwei"}])
    occupied = folder / "occupied"
    occupied.mkdir()
    (occupied / "config.json").write_text("{}")
    small_checkpoint = folder / "small_vocab"
    ScratchTransformerForConditionalGeneration(tiny_config(vocab_size=50)).save_pretrained(small_checkpoint)

    tokenizer, train = ["--tokenizer_name", demo.tokenizer], ["--max_steps", 1, *QUIET]
    cases = {
        "no_translation_column": ["--train_file", flat, "--source_lang", "en", "--target_lang", "de", *tokenizer],
        "missing_language": [*data_flags(demo), "--target_lang", "fr", *tokenizer],
        "learned_positions_too_short": [*data_flags(demo), "--target_lang", "de", *tokenizer]
        + ["--config_overrides", f"{TINY_MODEL},position_embedding=learned,max_position_embeddings=64"],
        "output_dir_holds_run": [*data_flags(demo), "--target_lang", "de", *tokenizer],
        "tokenizer_larger_than_vocab": [*data_flags(demo), "--target_lang", "de", *tokenizer]
        + ["--model_name_or_path", small_checkpoint],
        "eval_only_without_a_model": [*data_flags(demo), "--target_lang", "de", *tokenizer, "--eval_only"],
    }
    return {
        name: [*flags, "--output_dir", occupied if name == "output_dir_holds_run" else folder / name, *train]
        for name, flags in cases.items()
    }


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no_translation_column", ["no column 'translation'", "'en'", "'de'"]),
        ("missing_language", ["--target_lang fr", "['de', 'en']"]),
        ("learned_positions_too_short", ["--max_source_length gives sequences of up to 128 tokens", "(64)"]),
        ("output_dir_holds_run", ["already holds a run", "--overwrite_output_dir"]),
        ("tokenizer_larger_than_vocab", ["The tokenizer has 400 tokens but the model's vocab_size is 50"]),
        ("eval_only_without_a_model", ["--eval_only evaluates a trained model", "--model_name_or_path"]),
    ],
)
def test_bad_input_stops_with_a_clear_message(bad_runs, case, expected):
    stopped_with = script_stops_with("finetune_translation", *bad_runs[case])
    for text in expected:
        assert text in stopped_with, (text, stopped_with)


def test_bad_input_ends_the_command_with_one_line_and_no_traceback(bad_runs):
    completed = subprocess.run(
        [sys.executable, *SCRIPT, *map(str, bad_runs["missing_language"])],
        capture_output=True, text=True, timeout=300, env=ENV,
    )  # fmt: skip
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    last_line = completed.stderr.strip().splitlines()[-1]
    assert "--target_lang fr" in last_line and "['de', 'en']" in last_line, last_line


# ---------------------------------------------------------------------------------------------------------------
# Real data: Multi30k
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not (MULTI30K / "train.jsonl").is_file(), reason=f"no Multi30k in {MULTI30K}")
def test_multi30k_short_run_reports_bleu(tmp_path):
    tokenizer_dir = tmp_path / "tokenizer"
    run_script("train_tokenizer", "--train_file", MULTI30K / "train.jsonl", "--max_train_samples", 2000,
               "--vocab_size", 1000, "--num_sentinel_tokens", 10, "--output_dir", tokenizer_dir)  # fmt: skip

    output_dir = tmp_path / "run"
    run_script(
        "finetune_translation",
        *["--train_file", MULTI30K / "train.jsonl", "--validation_file", MULTI30K / "validation.jsonl"],
        *["--max_train_samples", 2000, "--max_eval_samples", 50, "--source_lang", "en", "--target_lang", "de"],
        *["--tokenizer_name", tokenizer_dir, "--config_overrides", TINY_MODEL, "--output_dir", output_dir],
        *["--max_steps", 40, "--per_device_train_batch_size", 32, "--learning_rate", 1e-2, "--warmup_steps", 5],
        *["--logging_steps", 10, "--predict_with_generate", "--num_beams", 2, "--max_target_length", 64, *QUIET],
    )
    results = read_json(output_dir / "all_results.json")
    assert math.isfinite(results["eval_bleu"]) and math.isfinite(results["eval_chrf"])
    losses = logged(output_dir, "loss")
    assert losses[-1][1] < losses[0][1]
