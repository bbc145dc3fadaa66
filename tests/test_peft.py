"""PEFT on the model, from Python as in PEFT's own docs: LoRA (seq2seq and the classifier), prefix tuning and
prompt tuning; training touches only the adapter; `generate()` with beams; adapters saved, loaded with
`PeftModel` and the `AutoPeftModel` classes; `merge_and_unload`; gradient checkpointing; `Seq2SeqTrainer`.

Everything runs on the tiny configuration with dropout off, so results are deterministic."""

import numpy as np
import pytest
import torch
from conftest import BOS, EOS, PAD, VOCAB_SIZE, random_batch, tiny_config
from peft import (
    AutoPeftModelForSeq2SeqLM,
    AutoPeftModelForSequenceClassification,
    LoraConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptTuningConfig,
    get_peft_model,
)
from safetensors import safe_open
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from hf_scratch_transformer import (
    ScratchTransformerForConditionalGeneration,
    ScratchTransformerForSequenceClassification,
)

SEQ2SEQ_METHODS = {
    "lora": lambda: LoraConfig(task_type="SEQ_2_SEQ_LM", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    "lora_all_linear": lambda: LoraConfig(task_type="SEQ_2_SEQ_LM", r=4, target_modules="all-linear"),
    "prefix": lambda: PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4),
    "prompt": lambda: PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4),
}
# Learning rates at which each method's loss falls within 30 steps: prompt-learning methods train a handful of
# vectors and need a larger step than LoRA.
LEARNING_RATES = {"lora": 3e-2, "lora_all_linear": 3e-2, "prefix": 3e-1, "prompt": 3e-1}
# The loss after 30 steps, as a fraction of the first, stays below these over PEFT's random initialisations
# (measured over six seeds: LoRA 0.29-0.72, prefix 0.50-0.57, prompt 0.72-0.90); an adapter that gets no gradient
# stays at 1.
LOSS_FALLS_BELOW = {"lora": 0.8, "lora_all_linear": 0.8, "prefix": 0.7, "prompt": 0.95}
CLASSIFIER_METHODS = {
    "lora": lambda: LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    "prompt": lambda: PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4),
}


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def seq2seq_base(tmp_path):
    """A saved tiny seq2seq model, loaded back, so that adapters record where their base lives."""
    ScratchTransformerForConditionalGeneration(tiny_config()).save_pretrained(tmp_path / "base")
    return tmp_path / "base"


@pytest.fixture
def classifier_base(tmp_path):
    ScratchTransformerForSequenceClassification(tiny_config(num_labels=2)).save_pretrained(
        tmp_path / "classifier_base"
    )
    return tmp_path / "classifier_base"


def fixed_reply_batch():
    """Four padded sources, each answered with the same sentence: a task every method can adapt a frozen random
    model to within a few dozen steps."""
    input_ids, attention_mask, _ = random_batch(batch_size=4, source_length=6, seed=1)
    labels = torch.tensor([[7, 8, 9, 10, EOS]] * 4)
    return input_ids, attention_mask, labels


def train(model, batch: dict, steps: int = 30, learning_rate: float = 3e-2) -> list[float]:
    """Plain AdamW steps on one batch; returns the losses."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def base_weights(peft_model) -> dict[str, torch.Tensor]:
    """The base model's own weights (what LoRA wraps is `base_layer`), by their name in the plain model."""
    weights = {}
    for name, parameter in peft_model.get_base_model().named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            continue
        weights[name.replace(".base_layer", "").replace(".original_module", "")] = parameter.detach().clone()
    return weights


def adapter_file_keys(adapter_dir) -> list[str]:
    with safe_open(adapter_dir / "adapter_model.safetensors", "pt") as file:
        return list(file.keys())


def logits_of(model, input_ids, attention_mask, **extra) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


# ---------------------------------------------------------------------------------------------------------------
# 1. Training touches only the adapter, and the loss falls
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", SEQ2SEQ_METHODS)
def test_seq2seq_adapter_trains_and_leaves_the_base_untouched(method, seq2seq_base):
    base = AutoModelForSeq2SeqLM.from_pretrained(seq2seq_base)
    before = {name: p.detach().clone() for name, p in base.named_parameters()}
    peft_model = get_peft_model(base, SEQ2SEQ_METHODS[method]())
    trainable = {name: p.detach().clone() for name, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable, "PEFT made nothing trainable"
    assert all(("lora_" in name or "prompt_encoder" in name) for name in trainable), sorted(trainable)

    input_ids, attention_mask, labels = fixed_reply_batch()
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    losses = train(peft_model, batch, learning_rate=LEARNING_RATES[method])
    assert losses[-1] < LOSS_FALLS_BELOW[method] * losses[0], losses

    after = base_weights(peft_model)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before), "a base weight changed"
    changed = [
        name for name, p in peft_model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[name])
    ]
    assert changed, "no adapter weight changed"


def test_all_linear_lora_wraps_every_projection_but_not_the_lm_head(seq2seq_base):
    peft_model = get_peft_model(
        AutoModelForSeq2SeqLM.from_pretrained(seq2seq_base), SEQ2SEQ_METHODS["lora_all_linear"]()
    )
    wrapped = {name.rsplit(".", 1)[-1] for name, module in peft_model.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    assert not hasattr(peft_model.get_base_model().lm_head, "lora_A")
    # 2 encoder layers x (4 self-attention projections + fc1, fc2) + 2 decoder layers x (4 + 4 cross + 2).
    assert sum(hasattr(module, "lora_A") for module in peft_model.modules()) == 2 * (4 + 2) + 2 * (4 + 4 + 2)


@pytest.mark.parametrize("method", CLASSIFIER_METHODS)
def test_classifier_adapter_trains_the_head_and_saves_it(method, classifier_base, tmp_path):
    base = AutoModelForSequenceClassification.from_pretrained(classifier_base)
    before = {name: p.detach().clone() for name, p in base.named_parameters()}
    peft_model = get_peft_model(base, CLASSIFIER_METHODS[method]())
    input_ids, attention_mask, _ = random_batch(batch_size=4, source_length=8, seed=2)
    labels = torch.tensor([0, 1, 1, 0])
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    losses = train(peft_model, batch, learning_rate=LEARNING_RATES[method])
    assert losses[-1] < 0.5 * losses[0], losses

    after = base_weights(peft_model)
    assert all(torch.equal(after[name], before[name]) for name in before), "a base weight changed"
    head = peft_model.get_base_model().classifier
    assert hasattr(head, "modules_to_save"), "PEFT did not make the classification head trainable"
    assert not torch.equal(head.modules_to_save["default"].weight, before["classifier.weight"])

    peft_model.save_pretrained(tmp_path / "adapter")
    assert any(key.endswith("classifier.weight") for key in adapter_file_keys(tmp_path / "adapter"))
    reloaded = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "adapter")
    expected = logits_of(peft_model, input_ids, attention_mask)
    assert torch.equal(logits_of(reloaded, input_ids, attention_mask), expected)
    assert expected.argmax(-1).tolist() == labels.tolist()


def test_prefix_tuning_on_the_classifier_is_a_clear_error(classifier_base):
    """The classifier has no cache: a prefix handed to it as `past_key_values` must not be silently dropped."""
    peft_model = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(classifier_base),
        PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4),
    )
    input_ids, attention_mask, _ = random_batch(batch_size=2, source_length=5)
    with pytest.raises(ValueError, match="Use LoRA or prompt tuning for classification"):
        peft_model(input_ids=input_ids, attention_mask=attention_mask)


# ---------------------------------------------------------------------------------------------------------------
# 2. generate() through the adapter: beams, and the cache against a loop without it
# ---------------------------------------------------------------------------------------------------------------


def greedy_without_cache(peft_model, input_ids, attention_mask, steps: int) -> torch.Tensor:
    """Greedy decoding by hand: the whole decoder input every step, no cache, through the PEFT model's forward
    (which adds the prefix or the prompt the same way as in training). </s> is never chosen, as `generate()` with
    `min_new_tokens=steps` does."""
    decoder_input_ids = torch.full((input_ids.shape[0], 1), BOS)
    for _ in range(steps):
        logits = logits_of(peft_model, input_ids, attention_mask, decoder_input_ids=decoder_input_ids)[:, -1]
        logits[:, EOS] = float("-inf")
        decoder_input_ids = torch.cat([decoder_input_ids, logits.argmax(-1, keepdim=True)], dim=1)
    return decoder_input_ids


@pytest.mark.parametrize("method", SEQ2SEQ_METHODS)
def test_generate_through_the_adapter(method, seq2seq_base):
    peft_model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(seq2seq_base), SEQ2SEQ_METHODS[method]())
    input_ids, attention_mask, labels = fixed_reply_batch()
    train(peft_model, {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}, steps=5)

    settings = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)  # a fixed length: no early </s>
    greedy = peft_model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=1, **settings)
    assert torch.equal(greedy, greedy_without_cache(peft_model, input_ids, attention_mask, steps=6))

    beams = peft_model.generate(
        input_ids=input_ids, attention_mask=attention_mask, num_beams=4, num_return_sequences=2, **settings
    )
    assert beams.shape == (2 * input_ids.shape[0], 7)
    assert beams[:, 0].eq(BOS).all() and beams[:, 1:].lt(VOCAB_SIZE).all()


def test_prefix_tuning_reaches_the_decoder_and_generation_uses_it(seq2seq_base):
    """The prefix must change what is generated: with its keys and values zeroed out of the cache, or with the
    adapter disabled, the output differs."""
    peft_model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(seq2seq_base), SEQ2SEQ_METHODS["prefix"]())
    input_ids, attention_mask, labels = fixed_reply_batch()
    train(peft_model, {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}, learning_rate=0.3)
    with_prefix = logits_of(peft_model, input_ids, attention_mask, labels=labels)
    with peft_model.disable_adapter():
        without = logits_of(peft_model, input_ids, attention_mask, labels=labels)
    assert (with_prefix - without).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------------------------
# 3. Saving and loading an adapter
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", SEQ2SEQ_METHODS)
def test_adapter_saves_alone_and_loads_with_peft_model_and_auto_peft_model(method, seq2seq_base, tmp_path):
    peft_model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(seq2seq_base), SEQ2SEQ_METHODS[method]())
    input_ids, attention_mask, labels = fixed_reply_batch()
    train(peft_model, {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}, steps=5)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)

    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert not list(adapter.glob("*.bin")) and not (adapter / "model.safetensors").exists()
    keys = adapter_file_keys(adapter)
    assert keys and all(("lora_" in key or "prompt_embeddings" in key) for key in keys), keys
    base_size = (seq2seq_base / "model.safetensors").stat().st_size
    assert (adapter / "adapter_model.safetensors").stat().st_size < 0.5 * base_size

    expected = logits_of(peft_model, input_ids, attention_mask, labels=labels)
    with_peft_model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(seq2seq_base), adapter)
    assert torch.equal(logits_of(with_peft_model, input_ids, attention_mask, labels=labels), expected)
    with_auto = AutoPeftModelForSeq2SeqLM.from_pretrained(adapter)  # the base comes from adapter_config.json
    assert torch.equal(logits_of(with_auto, input_ids, attention_mask, labels=labels), expected)


# ---------------------------------------------------------------------------------------------------------------
# 4. merge_and_unload
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["seq2seq", "classifier"])
def test_merged_model_equals_the_adapted_one_and_saves_as_a_plain_checkpoint(
    task, seq2seq_base, classifier_base, tmp_path
):
    input_ids, attention_mask, labels = fixed_reply_batch()
    if task == "seq2seq":
        auto_class, base, config = AutoModelForSeq2SeqLM, seq2seq_base, SEQ2SEQ_METHODS["lora_all_linear"]()
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        extra = {"labels": labels}
    else:
        auto_class, base, config = AutoModelForSequenceClassification, classifier_base, CLASSIFIER_METHODS["lora"]()
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.tensor([0, 1, 1, 0])}
        extra = {}
    peft_model = get_peft_model(auto_class.from_pretrained(base), config)
    train(peft_model, batch, steps=10)
    adapted = logits_of(peft_model, input_ids, attention_mask, **extra)

    merged = peft_model.merge_and_unload()
    assert type(merged) is type(auto_class.from_pretrained(base))
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert (logits_of(merged, input_ids, attention_mask, **extra) - adapted).abs().max() < 1e-5

    merged.save_pretrained(tmp_path / "merged")
    reloaded, loading = auto_class.from_pretrained(tmp_path / "merged", output_loading_info=True)
    assert not any(loading[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), loading
    assert (logits_of(reloaded, input_ids, attention_mask, **extra) - adapted).abs().max() < 1e-5


# ---------------------------------------------------------------------------------------------------------------
# 5. Gradient checkpointing and Seq2SeqTrainer
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_lora_with_gradient_checkpointing_gives_the_same_gradients(use_reentrant, seq2seq_base):
    input_ids, attention_mask, labels = fixed_reply_batch()
    gradients = []
    for checkpointing in (False, True):
        base = AutoModelForSeq2SeqLM.from_pretrained(seq2seq_base)
        if checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
        torch.manual_seed(0)  # the same LoRA initialisation both times
        peft_model = get_peft_model(base, SEQ2SEQ_METHODS["lora"]()).train()
        peft_model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        gradients.append({n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad})
    plain, checkpointed = gradients
    assert plain.keys() == checkpointed.keys()
    assert all(checkpointed[name] is not None for name in plain), "checkpointing lost adapter gradients"
    assert max((plain[name] - checkpointed[name]).abs().max().item() for name in plain) < 1e-6


def test_seq2seq_trainer_with_generation_on_a_peft_model(seq2seq_base, tmp_path):
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    input_ids, attention_mask, labels = fixed_reply_batch()
    rows = [
        {"input_ids": i.tolist(), "attention_mask": m.tolist(), "labels": label.tolist()}
        for i, m, label in zip(input_ids, attention_mask, labels, strict=True)
    ] * 8
    peft_model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(seq2seq_base), SEQ2SEQ_METHODS["lora"]())
    arguments = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, per_device_eval_batch_size=4,
        num_train_epochs=8, learning_rate=3e-2, logging_steps=1, save_strategy="no", report_to="none",
        predict_with_generate=True, generation_max_length=8, generation_num_beams=2, use_cpu=True,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = Seq2SeqTrainer(model=peft_model, args=arguments, train_dataset=rows, eval_dataset=rows[:4])
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < 0.6 * before, (before, after)
    predictions = trainer.predict(rows[:4]).predictions
    # Seq2SeqTrainer pads to the model's generation_config.max_length; what was generated stops at 8 tokens.
    assert predictions.shape[0] == 4 and np.isin(predictions[:, 8:], [PAD, -100]).all()
    assert (predictions[:, 0] == BOS).all()
    trainer.save_model(tmp_path / "saved")
    assert (tmp_path / "saved" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "saved" / "model.safetensors").exists()
