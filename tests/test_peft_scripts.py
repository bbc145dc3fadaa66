"""`--peft lora|prefix|prompt` in training/finetune_translation.py and training/finetune_sentiment.py: an adapter
trains on a frozen checkpoint, only the adapter and the tokenizer are saved, evaluation runs through it, and the
`AutoPeftModel` classes load it; bad flags stop with a clear message; and, on ../shared/data when present, LoRA
fine-tunes SST-2 from a checkpoint made by training/pretrain.py.

The checkpoint is made by the translation script itself, on toy reviews "translated" into their reversed word
order, once for the module, with a word-level tokenizer of the reviews' words."""

import json
import logging

import pytest
import torch
from conftest import SHARED_DATA, run_script, script_stops_with, toy_reviews, word_level_tokenizer, write_jsonl
from peft import AutoPeftModelForSeq2SeqLM, AutoPeftModelForSequenceClassification
from safetensors.torch import load_file
from transformers import AutoTokenizer

TINY_MODEL = (
    "d_model=32,encoder_layers=2,decoder_layers=2,encoder_attention_heads=4,decoder_attention_heads=4,"
    "encoder_ffn_dim=64,decoder_ffn_dim=64,normalize_before=true,dropout=0.0,label_smoothing=0.0"
)
QUIET = ["--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--use_cpu", "--seed", "0"]
TRANSLATION = ["--source_lang", "en", "--target_lang", "de", "--max_target_length", "24"]
# Per method: a learning rate at which the adapter learns in 30 steps (prompt learning trains a few vectors).
LEARNING_RATES = {"lora": "1e-2", "prefix": "1e-1", "prompt": "1e-1"}


def logged_losses(output_dir) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def reversed_reviews(count: int, seed: int) -> list[dict]:
    """A toy "translation": each review into its words in reverse order. A checkpoint trained on it has learned
    embeddings for the reviews' words, which the sentiment adapters then build on."""
    return [
        {"translation": {"en": row["sentence"], "de": " ".join(reversed(row["sentence"].split()))}}
        for row in toy_reviews(count, seed=seed)
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Reversed-review and review files, a word-level tokenizer for them, and a checkpoint trained 200 steps on the
    reversed reviews: enough for its encoder to tell the words apart (after 60 steps the mean-pooled encoder
    output hardly varies from one review to the next, and no adapter on it can classify)."""
    folder = tmp_path_factory.mktemp("peft_scripts")
    translation = {
        "train": write_jsonl(folder / "train.jsonl", reversed_reviews(600, seed=0)),
        "validation": write_jsonl(folder / "validation.jsonl", reversed_reviews(16, seed=1)),
    }
    reviews = {
        "train": write_jsonl(folder / "reviews_train.jsonl", toy_reviews(200, seed=2)),
        "validation": write_jsonl(folder / "reviews_validation.jsonl", toy_reviews(40, seed=3)),
    }
    words = {word for row in toy_reviews(600, seed=0) for word in row["sentence"].split()}
    tokenizer = folder / "tokenizer"
    word_level_tokenizer(sorted(words), append_eos=True).save_pretrained(tokenizer)

    base = folder / "base"
    run_script("finetune_translation", *TRANSLATION, "--train_file", translation["train"],
        "--tokenizer_name", tokenizer, "--config_overrides", TINY_MODEL, "--output_dir", base,
        "--max_steps", 200, "--per_device_train_batch_size", 32, "--learning_rate", 1e-2, "--warmup_steps", 10,
        "--num_samples_to_write", 0, *QUIET)  # fmt: skip
    return {"translation": translation, "reviews": reviews, "tokenizer": tokenizer, "base": base}


@pytest.mark.parametrize("method", ["lora", "prefix", "prompt"])
def test_translation_trains_and_saves_only_an_adapter(method, data, tmp_path, caplog):
    output = tmp_path / method
    caplog.set_level(logging.INFO)
    run_script("finetune_translation", *TRANSLATION, "--model_name_or_path", data["base"], "--peft", method,
        "--train_file", data["translation"]["train"], "--validation_file", data["translation"]["validation"],
        "--output_dir", output, "--max_steps", 30, "--per_device_train_batch_size", 32,
        "--learning_rate", LEARNING_RATES[method], "--logging_steps", 5, "--num_virtual_tokens", 4,
        "--predict_with_generate", "--num_beams", 2, "--num_samples_to_write", 4, *QUIET)  # fmt: skip
    assert f"PEFT {method}:" in caplog.text and "trainable parameters of" in caplog.text

    saved = {path.name for path in output.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "all_results.json"} <= saved
    assert "model.safetensors" not in saved, "the frozen base was saved again"
    adapter_config = json.loads((output / "adapter_config.json").read_text())
    assert (
        adapter_config["peft_type"] == {"lora": "LORA", "prefix": "PREFIX_TUNING", "prompt": "PROMPT_TUNING"}[method]
    )
    assert adapter_config["base_model_name_or_path"] == str(data["base"])

    results = json.loads((output / "all_results.json").read_text())
    assert 0 < results["trainable_params"] < 0.2 * results["total_params"], results
    assert "eval_bleu" in results and len((output / "translation_samples.jsonl").read_text().splitlines()) == 4
    losses = logged_losses(output)
    assert len(losses) == 6 and losses[-1] < losses[0], losses

    # The adapter loads onto the base it names, whose weights are those of the checkpoint file.
    model = AutoPeftModelForSeq2SeqLM.from_pretrained(output)
    base_weights = load_file(data["base"] / "model.safetensors")
    for name, weight in model.get_base_model().state_dict().items():
        name = name.replace(".base_layer", "")
        if name in base_weights:
            assert torch.equal(weight, base_weights[name]), f"{name} changed: the base was not frozen"


@pytest.mark.parametrize(
    ("method", "flags", "min_accuracy"),
    [
        # LoRA on q_proj and v_proj learns the one-word task on this small checkpoint in 60 steps (0.825 measured
        # with two seeds);
        ("lora", ["--learning_rate", "3e-2"], 0.75),
        # prompt tuning a 32-wide model barely moves it (0.5-0.55 measured): here it must run and save the head
        # (tests/test_peft.py shows its loss falling on an easier task).
        ("prompt", ["--num_virtual_tokens", "4", "--learning_rate", "1e-2"], None),
    ],
)
def test_sentiment_trains_an_adapter_and_the_head(method, flags, min_accuracy, data, tmp_path):
    output = tmp_path / method
    run_script("finetune_sentiment", "--model_name_or_path", data["base"], "--peft", method, *flags,
        "--train_file", data["reviews"]["train"], "--validation_file", data["reviews"]["validation"],
        "--output_dir", output, "--max_steps", 60, "--per_device_train_batch_size", 16, *QUIET)  # fmt: skip
    assert not (output / "model.safetensors").exists()
    results = json.loads((output / "all_results.json").read_text())
    assert results["trainable_params"] < 0.2 * results["total_params"], results
    if min_accuracy is not None:
        assert results["eval_accuracy"] >= min_accuracy, results  # one word decides the label; chance is 0.5

    model = AutoPeftModelForSequenceClassification.from_pretrained(output)
    head = model.get_base_model().classifier
    assert hasattr(head, "modules_to_save"), "the head was not trained and saved"


def test_lora_trains_and_saves_the_modules_named_to_save(data, tmp_path):
    """--lora_modules_to_save: the named modules (here each layer's final layer norm) train in full beside the
    adapter, are saved in its file, and come back when it loads; the rest of the base stays frozen."""
    output = tmp_path / "lora"
    run_script("finetune_sentiment", "--model_name_or_path", data["base"], "--peft", "lora",
        "--lora_modules_to_save", "final_layer_norm", "--learning_rate", "1e-2",
        "--train_file", data["reviews"]["train"], "--output_dir", output, "--max_steps", 5,
        "--per_device_train_batch_size", 16, *QUIET)  # fmt: skip
    adapter_config = json.loads((output / "adapter_config.json").read_text())
    assert "final_layer_norm" in adapter_config["modules_to_save"], adapter_config["modules_to_save"]

    base_weights = load_file(data["base"] / "model.safetensors")
    saved = load_file(output / "adapter_model.safetensors")
    saved_norms = sorted(name for name in saved if "final_layer_norm" in name)
    assert len(saved_norms) == 2 * 2, saved_norms  # weight and bias of each of the 2 encoder layers
    model = AutoPeftModelForSequenceClassification.from_pretrained(output).get_base_model()
    for index, layer in enumerate(model.model.encoder.layers):
        assert hasattr(layer.final_layer_norm, "modules_to_save"), f"layer {index}'s norm was not trained"
        trained = layer.final_layer_norm.modules_to_save["default"].weight
        frozen = base_weights[f"model.encoder.layers.{index}.final_layer_norm.weight"]
        assert not torch.equal(trained, frozen), f"layer {index}'s norm did not change"
        assert torch.equal(layer.self_attn_layer_norm.weight, base_weights[
            f"model.encoder.layers.{index}.self_attn_layer_norm.weight"])  # fmt: skip


def test_lora_adapts_the_token_embedding_when_named(data, tmp_path):
    """--lora_target_modules embed_tokens: PEFT's low-rank update of an embedding (lora_embedding_A/B), trained,
    saved, and loaded back; the embedding itself stays frozen, and the adapter's file holds no copy of it (PEFT says
    it will save embedding layers, but the base checkpoint supplies this one)."""
    output = tmp_path / "lora"
    run_script("finetune_sentiment", "--model_name_or_path", data["base"], "--peft", "lora",
        "--lora_target_modules", "q_proj,v_proj,embed_tokens", "--learning_rate", "1e-2",
        "--train_file", data["reviews"]["train"], "--output_dir", output, "--max_steps", 5,
        "--per_device_train_batch_size", 16, *QUIET)  # fmt: skip
    saved = load_file(output / "adapter_model.safetensors")
    embedding_update = sorted(name for name in saved if "embed_tokens.lora_embedding" in name)
    assert len(embedding_update) == 2, embedding_update  # A and B of the encoder's embedding
    assert all(torch.count_nonzero(saved[name]) > 0 for name in embedding_update)
    copies = [name for name in saved if "shared" in name or name.endswith("embed_tokens.base_layer.weight")]
    assert not copies, copies

    model = AutoPeftModelForSequenceClassification.from_pretrained(output).get_base_model()
    embedding = model.model.encoder.embed_tokens
    assert torch.equal(embedding.lora_embedding_B["default"], saved[embedding_update[1]])
    assert torch.equal(
        embedding.base_layer.weight, load_file(data["base"] / "model.safetensors")["model.shared.weight"]
    )


# ---------------------------------------------------------------------------------------------------------------
# Bad flags
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "flags", "message"),
    [
        (
            "finetune_translation",
            ["--peft", "lora", "--lora_target_modules", "q_proj,qkv"],
            r"--lora_target_modules 'qkv' matches no linear layer or embedding of the model. Its linear layers "
            r"are ['fc1', 'fc2', 'k_proj', 'lm_head', 'out_proj', 'q_proj', 'v_proj'] and its token embedding "
            r"['embed_tokens', 'shared']",
        ),
        (
            "finetune_translation",
            ["--peft", "prefix", "--gradient_checkpointing"],
            "--peft prefix does not work with --gradient_checkpointing",
        ),
        ("finetune_sentiment", ["--peft", "prefix"], "Use --peft lora or --peft prompt."),
        (
            "finetune_sentiment",
            ["--peft", "lora", "--lora_modules_to_save", "final_layer_norm,norms"],
            "--lora_modules_to_save 'norms' matches no module of the model. Its layer norms, for example, are "
            "['final_layer_norm', 'layer_norm', 'self_attn_layer_norm'].",
        ),
    ],
)
def test_bad_peft_flags_stop_with_a_clear_message(script, flags, message, data, tmp_path):
    task = (
        [*TRANSLATION, "--train_file", data["translation"]["train"]]
        if script == "finetune_translation"
        else ["--train_file", data["reviews"]["train"]]
    )
    stopped_with = script_stops_with(script, "--model_name_or_path", data["base"], *task, *flags,
                                     "--output_dir", tmp_path / "run", "--max_steps", 1, *QUIET)  # fmt: skip
    assert message in stopped_with, stopped_with
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_peft_without_a_checkpoint_is_refused(data, tmp_path):
    stopped_with = script_stops_with("finetune_translation", *TRANSLATION,
        "--train_file", data["translation"]["train"], "--tokenizer_name", data["tokenizer"],
        "--config_overrides", TINY_MODEL, "--peft", "lora", "--output_dir", tmp_path / "run", "--max_steps", 1,
        *QUIET)  # fmt: skip
    assert "pass --model_name_or_path" in stopped_with, stopped_with


def test_an_adapter_for_another_base_is_refused_with_the_mismatch(data, tmp_path):
    adapter = tmp_path / "adapter"
    run_script("finetune_translation", *TRANSLATION, "--model_name_or_path", data["base"], "--peft", "lora",
        "--train_file", data["translation"]["train"], "--output_dir", adapter, "--max_steps", 1, *QUIET)  # fmt: skip
    other_base = tmp_path / "other_base"
    run_script("finetune_translation", *TRANSLATION, "--train_file", data["translation"]["train"],
        "--tokenizer_name", data["tokenizer"], "--config_overrides", TINY_MODEL.replace("d_model=32", "d_model=48"),
        "--output_dir", other_base, "--max_steps", 1, *QUIET)  # fmt: skip

    stopped_with = script_stops_with("finetune_translation", *TRANSLATION, "--model_name_or_path", other_base,
        "--peft", "lora", "--adapter_name_or_path", adapter, "--train_file", data["translation"]["train"],
        "--output_dir", tmp_path / "continued", "--max_steps", 1, *QUIET)  # fmt: skip
    assert f"The adapter {adapter} was trained for another base model (it names '{data['base']}')" in stopped_with
    assert "lora_A.weight: (8, 32) in the adapter, (8, 48) for this base" in stopped_with


def test_an_adapter_continues_training_on_its_own_base(data, tmp_path):
    adapter, continued = tmp_path / "adapter", tmp_path / "continued"
    common = [*TRANSLATION, "--model_name_or_path", data["base"], "--peft", "lora",
              "--train_file", data["translation"]["train"], "--max_steps", 3, *QUIET]  # fmt: skip
    run_script("finetune_translation", *common, "--output_dir", adapter)
    run_script("finetune_translation", *common, "--adapter_name_or_path", adapter, "--output_dir", continued)
    before, after = (
        load_file(adapter / "adapter_model.safetensors"),
        load_file(continued / "adapter_model.safetensors"),
    )
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[name], after[name]) for name in before), "the adapter did not train further"


# ---------------------------------------------------------------------------------------------------------------
# Real data: LoRA on SST-2 from a checkpoint made by pretrain.py
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED_DATA / "sst2").is_dir(), reason="../shared/data is absent")
def test_lora_on_sst2_from_a_pretrained_checkpoint(tmp_path):
    """The real chain on real data, small: a tokenizer and a checkpoint from our own scripts on the first 3000 lines
    of the pretraining corpus, then LoRA on SST-2. Accuracy is measured on the full-size run (docs/results.md): a
    checkpoint pretrained for 40 steps gives its adapter little to work with."""
    corpus = tmp_path / "corpus.txt"
    with open(SHARED_DATA / "pretrain" / "corpus.txt", encoding="utf-8") as source:
        corpus.write_text("".join(line for _, line in zip(range(3000), source, strict=False)))
    run_script("train_tokenizer", "--train_file", corpus, "--output_dir", tmp_path / "tokenizer", "--vocab_size", 2000,
        "--num_sentinel_tokens", 20)  # fmt: skip
    pretrained = tmp_path / "pretrain"
    run_script("pretrain", "--train_file", corpus, "--tokenizer_name", tmp_path / "tokenizer",
        "--config_overrides", TINY_MODEL, "--output_dir", pretrained, "--max_seq_length", 32, "--max_steps", 40,
        "--per_device_train_batch_size", 32, "--learning_rate", 3e-3, *QUIET)  # fmt: skip
    output = tmp_path / "sst2_lora"
    run_script("finetune_sentiment", "--model_name_or_path", pretrained, "--peft", "lora",
        "--train_file", SHARED_DATA / "sst2" / "train.jsonl",
        "--validation_file", SHARED_DATA / "sst2" / "validation.jsonl",
        "--max_train_samples", 2000, "--max_eval_samples", 200, "--output_dir", output, "--max_steps", 30,
        "--per_device_train_batch_size", 32, "--learning_rate", 3e-3, *QUIET)  # fmt: skip

    results = json.loads((output / "all_results.json").read_text())
    assert results["trainable_params"] < 0.1 * results["total_params"], results
    assert (output / "adapter_model.safetensors").is_file() and not (output / "model.safetensors").exists()
    model = AutoPeftModelForSequenceClassification.from_pretrained(output).eval()
    encoder_weights = {
        name: weight
        for name, weight in load_file(pretrained / "model.safetensors").items()
        if name.startswith("model.encoder.")
    }
    loaded = {name.replace(".base_layer", ""): w for name, w in model.get_base_model().state_dict().items()}
    assert encoder_weights and all(torch.equal(loaded[name], w) for name, w in encoder_weights.items())

    # The reported accuracy is that of the saved adapter and head on the 200 validation rows, in the evaluation's
    # batches of 8 (the same padding, so the same logits).
    with open(SHARED_DATA / "sst2" / "validation.jsonl", encoding="utf-8") as file:
        rows = [json.loads(line) for line, _ in zip(file, range(200), strict=False)]
    tokenizer, correct = AutoTokenizer.from_pretrained(output), 0
    for start in range(0, len(rows), 8):
        batch_rows = rows[start : start + 8]
        texts = [row["sentence"] for row in batch_rows]
        batch = tokenizer(texts, max_length=128, truncation=True, padding=True, return_tensors="pt")
        with torch.no_grad():
            predicted = model(**batch).logits.argmax(-1).tolist()
        correct += sum(guess == row["label"] for guess, row in zip(predicted, batch_rows, strict=True))
    assert results["eval_accuracy"] == pytest.approx(correct / len(rows)), results
