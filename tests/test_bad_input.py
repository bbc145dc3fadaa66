"""Bad input from Python: each mistake a user makes with the config, the model's inputs or a checkpoint is refused
with one clear message that names the problem and the fix, before it reaches torch; or, where the input is
reasonable, it is handled as the user meant (and the test says why). The command-line catalogue of the same kind
lives beside each script's tests."""

import json
import re
import subprocess
import sys

import pytest
import torch
from conftest import (
    EOS,
    VOCAB_SIZE,
    random_batch,
    run_script,
    script_stops_with,
    tiny_config,
    word_level_tokenizer,
    write_jsonl,
)
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from hf_scratch_transformer import (
    ScratchTransformerConfig,
    ScratchTransformerForConditionalGeneration,
    ScratchTransformerForSequenceClassification,
)

# ---------------------------------------------------------------------------------------------------------------
# The config
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [("pad_token_id", VOCAB_SIZE), ("bos_token_id", VOCAB_SIZE + 5), ("eos_token_id", [EOS, VOCAB_SIZE])]
    + [("decoder_start_token_id", -1)],
)
def test_special_ids_outside_the_vocabulary_are_refused(field, value):
    with pytest.raises(ValueError, match=rf"`{field}` is -?\d+, outside the vocabulary \[0, {VOCAB_SIZE}\).*len\("):
        tiny_config(**{field: value})


def test_special_ids_may_be_none():
    """A model without a padding or start token is reasonable (a classifier of unpadded batches, say)."""
    config = tiny_config(pad_token_id=None, decoder_start_token_id=None)
    assert config.pad_token_id is None and config.decoder_start_token_id is None


# ---------------------------------------------------------------------------------------------------------------
# The model's inputs
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seq2seq():
    torch.manual_seed(0)
    return ScratchTransformerForConditionalGeneration(tiny_config()).eval()


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return ScratchTransformerForSequenceClassification(tiny_config(num_labels=3)).eval()


@pytest.mark.parametrize("rows, length", [(0, 9), (3, 0)])
def test_an_empty_batch_is_refused(seq2seq, classifier, rows, length):
    input_ids, attention_mask, labels = random_batch()
    input_ids, attention_mask = input_ids[:rows, :length], attention_mask[:rows, :length]
    for model in (seq2seq, classifier):
        with pytest.raises(ValueError, match=rf"`input_ids` has shape \({rows}, {length}\): it needs at least one"):
            model(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize(
    "make_labels, message",
    [
        (lambda labels: labels[0], r"`labels` has shape \(7,\); it needs \(batch, target length\).*labels\[None\]"),
        (lambda labels: labels[:2], r"`labels` holds 2 rows for 3 sources"),
    ],
)
def test_seq2seq_labels_of_the_wrong_shape_are_refused(seq2seq, make_labels, message):
    input_ids, attention_mask, labels = random_batch()
    with pytest.raises(ValueError, match=message):
        seq2seq(input_ids=input_ids, attention_mask=attention_mask, labels=make_labels(labels))


def test_labels_and_decoder_inputs_of_different_lengths_are_refused(seq2seq):
    input_ids, attention_mask, labels = random_batch()
    with pytest.raises(ValueError, match=r"`labels` has shape \(3, 7\) but the decoder inputs \(3, 5\).*shifted left"):
        seq2seq(input_ids=input_ids, attention_mask=attention_mask, labels=labels, decoder_input_ids=labels[:, :5])


@pytest.mark.parametrize(
    "problem_type, labels, needs",
    [
        ("single_label_classification", torch.tensor([0, 1]), r"needs \(3,\): one class id per row"),
        ("single_label_classification", torch.zeros(3, 2, dtype=torch.long), r"needs \(3,\)"),
        ("multi_label_classification", torch.ones(3, 2), r"needs \(3, 3\): 0/1 per class"),
        ("regression", torch.ones(2, 3), r"needs \(3,\) or \(3, 3\) targets"),
    ],
)
def test_classifier_labels_of_the_wrong_shape_are_refused(problem_type, labels, needs):
    model = ScratchTransformerForSequenceClassification(tiny_config(num_labels=3, problem_type=problem_type))
    input_ids, attention_mask, _ = random_batch()
    with pytest.raises(ValueError, match=rf"`labels` has shape .*but {problem_type} of a batch of 3.*{needs}"):
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def test_class_ids_in_a_column_are_what_the_user_meant(classifier):
    """(batch, 1) class ids, as a CSV column often loads, are one id per row: accepted, with the same loss."""
    input_ids, attention_mask, _ = random_batch()
    labels = torch.tensor([0, 2, 1])
    flat = classifier(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    column = classifier(input_ids=input_ids, attention_mask=attention_mask, labels=labels[:, None]).loss
    torch.testing.assert_close(flat, column)


@torch.no_grad()
def test_an_additive_float_mask_is_refused_and_a_float_mask_of_ones_and_zeros_is_read(seq2seq):
    input_ids, attention_mask, labels = random_batch()
    additive = torch.zeros(attention_mask.shape).masked_fill(attention_mask == 0, float("-inf"))
    with pytest.raises(ValueError, match=r"`attention_mask` holds values other than 0 and 1.*\(additive_mask == 0\)"):
        seq2seq(input_ids=input_ids, attention_mask=additive, labels=labels)
    # 1.0 / 0.0 says the same as 1 / 0: read as the user meant.
    as_float = seq2seq(input_ids=input_ids, attention_mask=attention_mask.float(), labels=labels).logits
    as_int = seq2seq(input_ids=input_ids, attention_mask=attention_mask, labels=labels).logits
    torch.testing.assert_close(as_float, as_int)


@pytest.mark.parametrize("setting", [{"num_beams": 0}, {"num_return_sequences": 0}])
def test_generate_with_no_beam_or_no_sequence_is_refused(seq2seq, setting):
    input_ids, attention_mask, _ = random_batch()
    name, value = next(iter(setting.items()))
    with pytest.raises(ValueError, match=rf"`{name}` must be at least 1, got {value}"):
        seq2seq.generate(input_ids, attention_mask=attention_mask, max_new_tokens=3, **setting)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------


def test_a_truncated_weights_file_is_named_with_the_fix(seq2seq, tmp_path):
    seq2seq.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match=rf"The weights file of {tmp_path} cannot be read .*cut short.*again"):
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path)


def test_config_class_checks_apply_to_a_loaded_config_json(tmp_path):
    """A config.json edited by hand gets the same checks as a config built in Python."""
    tiny_config().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"pad_token_id": 0', f'"pad_token_id": {VOCAB_SIZE + 1}'))
    with pytest.raises(ValueError, match=r"`pad_token_id` is 100, outside the vocabulary"):
        ScratchTransformerConfig.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# The command line: each mistake stops the script before training, with one line that names it and the fix (the
# scripts run in this process, as `main()` with the flags in sys.argv, so the catalogue stays fast).
# ---------------------------------------------------------------------------------------------------------------

COMMON_FLAGS = ["--use_cpu", "--report_to", "none", "--save_strategy", "no", "--max_steps", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_input")
    tokenizer = word_level_tokenizer(["good", "bad", "film", "gut", "schlecht"], append_eos=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    write_jsonl(folder / "one_class.jsonl", [{"sentence": "good film", "label": 1}] * 8)
    write_jsonl(folder / "fraction.jsonl", [{"sentence": "good film", "label": value} for value in (0, 1, 0.5, 1)])
    write_jsonl(folder / "pairs.jsonl", [{"translation": {"en": "good film", "de": "gut"}}] * 8)
    write_jsonl(folder / "reviews.jsonl", [{"sentence": "good film", "label": 1}, {"sentence": "bad", "label": 0}])
    return folder


@pytest.mark.parametrize(
    "train_file, message",
    [
        ("one_class.jsonl", r"The training labels hold one class \(\[1\]\): a classifier needs examples of two"),
        ("fraction.jsonl", r"holds \[0\.5\], which are not class ids.*Round or map"),
    ],
)
def test_labels_that_are_not_two_or_more_classes_are_refused(files, tmp_path, train_file, message):
    code = script_stops_with("finetune_sentiment", "--train_file", files / train_file, "--tokenizer_name",
        files / "tokenizer", "--output_dir", tmp_path / "run", *COMMON_FLAGS,
    )  # fmt: skip
    assert re.search(message, code), code
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ("d_model=32,d_modle=64", r"'d_modle' is not a config field \(did you mean 'd_model'\?\)"),
        ("d_model=abc", r"--config_overrides: .*d_model"),
        ("encoder_attention_heads=3", r"--config_overrides: .*divisible by `encoder_attention_heads`"),
    ],
)
def test_config_overrides_that_do_not_make_a_config_are_refused(files, tmp_path, overrides, message):
    code = script_stops_with("finetune_sentiment", "--train_file", files / "reviews.jsonl", "--tokenizer_name",
        files / "tokenizer", "--config_overrides", overrides, "--output_dir", tmp_path / "run", *COMMON_FLAGS,
    )  # fmt: skip
    assert re.search(message, code), code


def test_config_overrides_that_shape_weights_are_refused_on_a_checkpoint(files, tmp_path):
    """A checkpoint keeps the config its weights were trained with (as transformers' own examples refuse)."""
    ScratchTransformerForSequenceClassification(tiny_config(num_labels=2)).save_pretrained(tmp_path / "model")
    code = script_stops_with("finetune_sentiment", "--train_file", files / "reviews.jsonl", "--model_name_or_path",
        tmp_path / "model", "--tokenizer_name", files / "tokenizer", "--config_overrides", "dropout=0.2,d_model=64",
        "--output_dir", tmp_path / "run", *COMMON_FLAGS,
    )  # fmt: skip
    assert "--config_overrides d_model: a checkpoint (--model_name_or_path) keeps the config" in code
    assert "only dropout, attention_dropout, activation_dropout, classifier_dropout, label_smoothing, " in code


def test_a_checkpoint_is_fine_tuned_with_the_dropout_and_pooling_asked_for(files, tmp_path):
    """Dropout and pooling shape no weight: a checkpoint pretrained without dropout can be fine-tuned with it, and
    its classifier can pool the first token."""
    from hf_scratch_transformer.training.arguments import ModelArguments
    from hf_scratch_transformer.training.model_loading import load_model, load_tokenizer

    config = tiny_config(num_labels=2, dropout=0.0)
    ScratchTransformerForSequenceClassification(config).save_pretrained(tmp_path / "model")
    model_args = ModelArguments(
        model_name_or_path=str(tmp_path / "model"),
        tokenizer_name=str(files / "tokenizer"),
        config_overrides="dropout=0.3,classifier_dropout=0.2,classifier_pooling=first",
    )
    model = load_model(AutoModelForSequenceClassification, model_args, load_tokenizer(model_args))
    config = model.config
    assert (config.dropout, config.classifier_dropout, config.classifier_pooling) == (0.3, 0.2, "first")
    assert model.dropout.p == 0.2 and model.model.encoder.layers[0].dropout == 0.3


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--target_lang", "de", "--num_beams", "0"], r"--num_beams must be at least 1, got 0"),
        (["--target_lang", "en"], r"--source_lang and --target_lang are both 'en'"),
        (
            ["--target_lang", "de", "--config_overrides", "d_model=32", "--config_overrides", "dropout=0.1"],
            r"--config_overrides given 2 times: join the changes in one",
        ),
        (["--target_lang", "de", "--lr_scheduler_type", "sometimes"], r"invalid choice: 'sometimes'"),
    ],
)
def test_flag_mistakes_end_in_one_argument_parser_line(capsys, files, tmp_path, flags, message):
    """Caught by the argument parser before any data is read: exit code 2 and one error line, as argparse does."""
    code = script_stops_with("finetune_translation", "--source_lang", "en", "--train_file", files / "pairs.jsonl",
        "--tokenizer_name", files / "tokenizer", "--output_dir", tmp_path / "run", *flags, *COMMON_FLAGS,
    )  # fmt: skip
    assert code == "2"
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error:" in last_line and re.search(message, last_line), last_line


def test_push_of_a_checkpoint_in_progress_is_refused(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoint-2"
    ScratchTransformerForConditionalGeneration(tiny_config()).save_pretrained(checkpoint)
    code = script_stops_with("push_to_hub", checkpoint, "--repo_id", "user/model")
    assert re.search(r"is a checkpoint of a run in progress.*Push the run's --output_dir", code), code


def test_a_tokenizer_folder_that_does_not_exist_is_named(files, tmp_path):
    missing = tmp_path / "runs" / "tokenizer"  # a path, which no Hub id can be
    code = script_stops_with(
        "finetune_sentiment", "--train_file", files / "reviews.jsonl", "--tokenizer_name", missing,
        "--output_dir", tmp_path / "run", *COMMON_FLAGS,
    )  # fmt: skip
    assert code == f"--tokenizer_name {missing}: there is no such folder. Give a folder that a training script saved."


def test_a_classifier_checkpoint_cannot_start_a_translation_run(files, tmp_path):
    """The classifier keeps the encoder alone: the cause to name is the missing decoder, not a count of layers."""
    ScratchTransformerForSequenceClassification(tiny_config(num_labels=2)).save_pretrained(tmp_path / "classifier")
    code = script_stops_with("finetune_translation", "--source_lang", "en", "--target_lang", "de", "--train_file",
        files / "pairs.jsonl", "--model_name_or_path", tmp_path / "classifier", "--tokenizer_name",
        files / "tokenizer", "--output_dir", tmp_path / "run", *COMMON_FLAGS,
    )  # fmt: skip
    assert re.search(r"is a classifier: the encoder alone, with no decoder to translate with", code), code


@pytest.mark.parametrize(
    "script, name, flags",
    [("finetune_sentiment", "latin1.jsonl", []), ("pretrain", "latin1.txt", ["--objective", "text_infilling"])],
)
def test_a_file_not_in_utf8_is_named_with_its_line_and_the_fix(tmp_path, files, script, name, flags):
    """JSON Lines and text saved as Latin-1 load without complaint and fail at the first row read: refuse them
    before, with the line (here the second) and how to convert the file."""
    rows = ['{"sentence": "good film", "label": 1}', '{"sentence": "très bien", "label": 1}']
    if name.endswith(".txt"):
        rows = ["a good film", "très bien"]
    (tmp_path / name).write_bytes("\n".join(rows).encode("latin-1") + b"\n")
    code = script_stops_with(script, "--train_file", tmp_path / name, "--tokenizer_name", files / "tokenizer",
        "--output_dir", tmp_path / "run", *flags, *COMMON_FLAGS,
    )  # fmt: skip
    assert re.search(rf"--train_file .*{name} is not UTF-8: line 2 has the byte 0xe8 at column \d+", code), code
    assert "iconv -f latin1 -t utf-8" in code


def test_rows_without_text_are_dropped_and_counted(caplog, tmp_path, files):
    """A null or blank text has nothing to classify: the run drops those rows, says how many, and trains on the
    rest (the tokenizer would otherwise fail on None with a traceback)."""
    rows = [{"sentence": "good film", "label": 1}, {"sentence": None, "label": 0}, {"sentence": " ", "label": 0}]
    rows += [{"sentence": "bad", "label": 0}]
    write_jsonl(tmp_path / "gaps.jsonl", rows)
    run_script(
        "finetune_sentiment", "--train_file", tmp_path / "gaps.jsonl", "--tokenizer_name", files / "tokenizer",
        "--config_overrides", "d_model=16,encoder_layers=1,decoder_layers=1,"
        "encoder_attention_heads=2,decoder_attention_heads=2,encoder_ffn_dim=32,decoder_ffn_dim=32",
        "--output_dir", tmp_path / "run", *COMMON_FLAGS,
    )  # fmt: skip
    assert "Dropped 2 train rows whose 'sentence' is empty or missing." in caplog.text
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_a_model_type_typo_in_config_json_is_named(tmp_path, files):
    """transformers would advise trust_remote_code=True, which cannot help: name the field and the near miss."""
    ScratchTransformerForConditionalGeneration(tiny_config()).save_pretrained(tmp_path / "checkpoint")
    config_file = tmp_path / "checkpoint" / "config.json"
    config_file.write_text(config_file.read_text().replace('"scratch_transformer"', '"scratch_transfromer"'))
    code = script_stops_with("finetune_translation", "--source_lang", "en", "--target_lang", "de", "--train_file",
        files / "pairs.jsonl", "--model_name_or_path", tmp_path / "checkpoint", "--tokenizer_name",
        files / "tokenizer", "--output_dir", tmp_path / "run", *COMMON_FLAGS,
    )  # fmt: skip
    assert "says model_type 'scratch_transfromer', which is no model type transformers knows" in code, code
    assert "Did you mean 'scratch_transformer'?" in code and "trust_remote_code" not in code


def damage_checkpoint(folder, damage: str) -> str:
    """Damage a saved checkpoint as an interrupted copy or a hand edit would; the file a message must name."""
    if damage == "weights cut short":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return "The weights file of"
    config_file = folder / "config.json"
    if damage == "config not JSON":
        config_file.write_text(config_file.read_text()[:40])
        return "its config.json is not a JSON object"
    config = json.loads(config_file.read_text())  # no model_type: transformers would ask to run the folder's code
    del config["model_type"]
    config_file.write_text(json.dumps(config))
    return "config.json says model_type None"


DAMAGES = ["weights cut short", "config not JSON", "config without model_type"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_ends_each_script_with_one_line(tmp_path, files, damage):
    checkpoint = tmp_path / "run" / "checkpoint-1"
    model = ScratchTransformerForConditionalGeneration(tiny_config(vocab_size=len(load_tokenizer(files))))
    model.save_pretrained(checkpoint)
    expected = damage_checkpoint(checkpoint, damage)
    stopped = {
        "finetune_translation": script_stops_with("finetune_translation", "--source_lang", "en", "--target_lang",
            "de", "--train_file", files / "pairs.jsonl", "--model_name_or_path", checkpoint, "--tokenizer_name",
            files / "tokenizer", "--output_dir", tmp_path / "out", *COMMON_FLAGS),
        "average_checkpoints": script_stops_with("average_checkpoints", "--run_dir", tmp_path / "run", "--last", 1,
                                                 "--output_dir", tmp_path / "averaged"),
    }  # fmt: skip
    for script, message in stopped.items():
        assert expected in message and str(checkpoint) in message, (script, message)
        assert "\n" not in message.strip() and "Do you wish" not in message


@pytest.mark.parametrize("damage", DAMAGES)
def test_the_plotting_command_never_prompts_and_names_the_damage(tmp_path, files, damage):
    """As a command, with nobody at the keyboard (stdin closed): one line, no question, no traceback."""
    folder = tmp_path / "model"
    ScratchTransformerForConditionalGeneration(tiny_config(vocab_size=len(load_tokenizer(files)))).save_pretrained(
        folder
    )
    load_tokenizer(files).save_pretrained(folder)
    expected = damage_checkpoint(folder, damage)
    completed = subprocess.run(
        [sys.executable, "-m", "hf_scratch_transformer.training.cli", "plot-attention", str(folder), "--source",
         "good film", "--out", str(tmp_path / "a.png")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 1 and expected in completed.stderr, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr and "Do you wish" not in completed.stderr + completed.stdout


def load_tokenizer(files):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(files / "tokenizer")
