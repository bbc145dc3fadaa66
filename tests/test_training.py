"""Training behaviour: the loss (label smoothing, `num_items_in_batch`), gradient accumulation through the real
`Trainer`, `Seq2SeqTrainer` with `DataCollatorForSeq2Seq` and generation, gradient checkpointing, the sequence
classifier's losses and pooling, and half precision on the CPU.

Every model here is tiny (see `conftest.tiny_config`) and dropout is off, so results are deterministic.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import BOS, EOS, PAD, VOCAB_SIZE, random_batch, tiny_config, word_level_tokenizer
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import SequentialSampler
from transformers import (
    DataCollatorForSeq2Seq,
    PreTrainedTokenizerFast,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from hf_scratch_transformer import (
    ScratchTransformerConfig,
    ScratchTransformerForConditionalGeneration,
    ScratchTransformerForSequenceClassification,
)

# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def padded_labels_batch(seed: int = 0):
    """`random_batch` with some labels ignored (-100): trailing ones in rows 1 and 2, and one in the middle of row 0,
    so the loss must skip positions that are not at the end."""
    input_ids, attention_mask, labels = random_batch(batch_size=3, source_length=9, target_length=7, seed=seed)
    labels[0, 3] = -100
    labels[1, 5:] = -100
    labels[2, 2:] = -100
    return input_ids, attention_mask, labels


def reference_smoothed_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float, num_items=None) -> torch.Tensor:
    """The label-smoothed cross-entropy written out, in float64: for each non-ignored token,
    (1 - eps) * -log p[y] + eps * mean over the vocabulary of -log p[v]; summed, then divided by the number of
    non-ignored tokens (or by `num_items`)."""
    log_probs = logits.double().log_softmax(dim=-1)
    keep = labels != -100
    log_probs, targets = log_probs[keep], labels[keep]
    nll = -log_probs.gather(-1, targets[:, None]).squeeze(-1)
    uniform = -log_probs.mean(dim=-1)
    summed = ((1.0 - eps) * nll + eps * uniform).sum()
    denominator = keep.sum() if num_items is None else num_items
    return summed / denominator


def clone_model(model):
    twin = type(model)(model.config)
    twin.load_state_dict(model.state_dict())
    return twin


def grads_of(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


COMMON_ARGS = dict(report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no", dataloader_num_workers=0)


# ---------------------------------------------------------------------------------------------------------------
# 1-2. The loss: label smoothing, num_items_in_batch
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_label_smoothed_loss_matches_reference_formula(eps):
    model = ScratchTransformerForConditionalGeneration(tiny_config(label_smoothing=eps)).eval()
    input_ids, attention_mask, labels = padded_labels_batch()

    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    expected = reference_smoothed_loss(output.logits, labels, eps)

    assert output.loss.dtype == torch.float32
    assert abs(output.loss.item() - expected.item()) < 1e-6, (output.loss.item(), expected.item())
    if eps == 0.0:
        plain = F.cross_entropy(output.logits.reshape(-1, VOCAB_SIZE), labels.reshape(-1), ignore_index=-100)
        assert abs(output.loss.item() - plain.item()) < 1e-6


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_loss_gradient_matches_torch_cross_entropy(eps):
    """The loss computes its own gradient (to keep fewer vocabulary-wide tensors): it must be the one autograd gets
    through `F.cross_entropy`, for every weight, with ignored labels and label smoothing."""
    model = ScratchTransformerForConditionalGeneration(tiny_config(label_smoothing=eps)).eval()
    input_ids, attention_mask, labels = padded_labels_batch()
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    ours = torch.autograd.grad(output.loss, list(model.parameters()), retain_graph=True)
    count = (labels != -100).sum()
    reference = F.cross_entropy(
        output.logits.reshape(-1, VOCAB_SIZE), labels.reshape(-1), reduction="sum", label_smoothing=eps
    )
    expected = torch.autograd.grad(reference / count, list(model.parameters()))
    for (name, _), got, want in zip(model.named_parameters(), ours, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5, msg=name)


def test_label_smoothing_changes_the_loss():
    """The two references above differ, so the config value is really read (a loss ignoring it would fail one)."""
    input_ids, attention_mask, labels = padded_labels_batch()
    plain = ScratchTransformerForConditionalGeneration(tiny_config(label_smoothing=0.0)).eval()
    smoothed = ScratchTransformerForConditionalGeneration(tiny_config(label_smoothing=0.1)).eval()
    smoothed.load_state_dict(plain.state_dict())
    loss_plain = plain(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    loss_smoothed = smoothed(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    assert abs(loss_plain.item() - loss_smoothed.item()) > 1e-3


def test_default_loss_is_the_plain_cross_entropy_of_the_labels():
    """As in every Hugging Face model: exp(loss) is the perplexity. The paper's smoothing is the recipes' choice."""
    values = {key: value for key, value in tiny_config().to_dict().items() if key != "label_smoothing"}
    config = ScratchTransformerConfig.from_dict(values)
    assert config.label_smoothing == 0.0
    model = ScratchTransformerForConditionalGeneration(config).eval()
    input_ids, attention_mask, labels = padded_labels_batch()
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    expected = F.cross_entropy(output.logits.reshape(-1, VOCAB_SIZE), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("num_items", [1, 7, 40])
def test_num_items_in_batch_divides_the_summed_loss(eps, as_tensor, num_items):
    model = ScratchTransformerForConditionalGeneration(tiny_config(label_smoothing=eps)).eval()
    input_ids, attention_mask, labels = padded_labels_batch()
    n = torch.tensor(num_items) if as_tensor else num_items

    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, num_items_in_batch=n)
    expected = reference_smoothed_loss(output.logits, labels, eps, num_items=num_items)
    assert abs(output.loss.item() - expected.item()) < 1e-6 * max(1.0, expected.abs().item())

    # And it is the default loss rescaled: default * count / N.
    default = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    count = (labels != -100).sum().item()
    assert abs(output.loss.item() - default.item() * count / num_items) < 1e-5 * max(1.0, expected.abs().item())


# ---------------------------------------------------------------------------------------------------------------
# 3. Gradient accumulation through the real Trainer
# ---------------------------------------------------------------------------------------------------------------

GA_SOURCE_LENGTH, GA_TARGET_LENGTH = 10, 12
# Many labels in the first four examples, few in the last four: the two micro-batches of 4 hold 45 and 8 labels,
# so a mean of the two micro-batch means weighs the last tokens 45/8 times too much.
GA_LABEL_COUNTS = [12, 12, 11, 10, 3, 2, 2, 1]
GA_SOURCE_COUNTS = [10, 9, 7, 10, 4, 6, 3, 2]


def ga_dataset() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    examples = []
    for source_count, label_count in zip(GA_SOURCE_COUNTS, GA_LABEL_COUNTS, strict=True):
        input_ids = torch.full((GA_SOURCE_LENGTH,), PAD)
        input_ids[:source_count] = torch.randint(3, VOCAB_SIZE, (source_count,), generator=generator)
        attention_mask = (torch.arange(GA_SOURCE_LENGTH) < source_count).long()
        labels = torch.full((GA_TARGET_LENGTH,), -100)
        labels[: label_count - 1] = torch.randint(3, VOCAB_SIZE, (label_count - 1,), generator=generator)
        labels[label_count - 1] = EOS
        examples.append({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})
    return examples


class SequentialTrainer(Trainer):
    """Belt and braces on top of `train_sampling_strategy="sequential"`: the order must be 0..7 in both runs."""

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)


def run_one_trainer_step(model, dataset, batch_size, accumulation, output_dir):
    """One optimizer step of plain SGD, lr 1, no clipping: the parameter change is exactly minus the gradient."""
    seen_num_items = []

    def record(module, args, kwargs):
        seen_num_items.append(kwargs.get("num_items_in_batch"))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1.0,
        max_grad_norm=0.0,
        logging_strategy="steps",
        logging_steps=1,
        train_sampling_strategy="sequential",
        seed=0,
        **COMMON_ARGS,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.0, weight_decay=0.0)
    scheduler = LambdaLR(optimizer, lambda step: 1.0)
    trainer = SequentialTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=default_data_collator,
        optimizers=(optimizer, scheduler),
    )
    assert trainer.model_accepts_loss_kwargs, "the Trainer must pass num_items_in_batch to the model's forward"
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = trainer.train()
    handle.remove()
    updates = {name: before[name] - p.detach() for name, p in model.named_parameters()}
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return updates, logged, result, seen_num_items


def test_gradient_accumulation_matches_one_big_batch_in_trainer(tmp_path):
    dataset = ga_dataset()
    total_labels = sum(GA_LABEL_COUNTS)
    base = ScratchTransformerForConditionalGeneration(tiny_config())

    big_model, accumulated_model = clone_model(base), clone_model(base)
    big_updates, big_logged, big_result, big_seen = run_one_trainer_step(big_model, dataset, 8, 1, tmp_path / "big")
    acc_updates, acc_logged, acc_result, acc_seen = run_one_trainer_step(
        accumulated_model, dataset, 4, 2, tmp_path / "accumulated"
    )

    # The Trainer counted the labels of the whole accumulated batch and handed that count to every micro-batch.
    assert len(big_seen) == 1 and len(acc_seen) == 2
    for seen in big_seen + acc_seen:
        assert seen is not None, "the Trainer did not pass num_items_in_batch to forward"
        assert int(seen) == total_labels

    # The reference: gradients of the mean loss over all 53 labels of the 8 examples at once, by hand.
    batch = default_data_collator(dataset)
    reference = clone_model(base).train()
    full_loss = reference(**batch).loss
    full_loss.backward()
    reference_grads = grads_of(reference)

    # Same update (= gradient, lr 1) in both Trainer runs, and equal to the hand-computed gradient.
    assert big_updates.keys() == acc_updates.keys()
    accumulation_diff = max_abs_diff(big_updates, acc_updates)
    assert accumulation_diff < 1e-6, f"accumulated update differs from big-batch update by {accumulation_diff:.3g}"
    reference_updates = {name: reference_grads.get(name, torch.zeros_like(u)) for name, u in big_updates.items()}
    assert max_abs_diff(big_updates, reference_updates) < 1e-6
    assert max(u.abs().max().item() for u in big_updates.values()) > 1e-3  # the step really moved the weights

    # The naive recipe, the mean of the two micro-batch means, would have given a clearly different update: this
    # test can tell the two apart.
    naive = clone_model(base).train()
    for half in (dataset[:4], dataset[4:]):
        (naive(**default_data_collator(half)).loss / 2).backward()
    naive_diff = max_abs_diff(reference_grads, grads_of(naive))
    assert naive_diff > 1e-3, f"naive mean-of-means differs by only {naive_diff:.3g}: the test has no power"
    assert naive_diff > 1000 * accumulation_diff

    # The logged training loss is the big-batch loss in both runs.
    assert len(big_logged) == 1 and len(acc_logged) == 1
    assert abs(big_logged[0] - acc_logged[0]) < 1e-5
    assert abs(acc_logged[0] - full_loss.item()) < 1e-5
    assert abs(big_result.training_loss - acc_result.training_loss) < 1e-5


# ---------------------------------------------------------------------------------------------------------------
# 4. Seq2SeqTrainer, DataCollatorForSeq2Seq and generation on a copy task
# ---------------------------------------------------------------------------------------------------------------


def digit_tokenizer() -> PreTrainedTokenizerFast:
    """The digits 0..9, one id each after the special tokens; every sequence ends in </s>."""
    return word_level_tokenizer([str(digit) for digit in range(10)], append_eos=True)


def copy_task(tokenizer, count: int, seed: int) -> list[dict[str, list[int]]]:
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(count):
        text = " ".join(str(d) for d in rng.integers(0, 10, size=rng.integers(2, 6)))
        features = tokenizer(text, text_target=text)
        examples.append(
            {
                "input_ids": features["input_ids"],
                "attention_mask": features["attention_mask"],
                "labels": features["labels"],
            }
        )
    return examples


def test_data_collator_for_seq2seq_builds_decoder_inputs_with_the_model():
    tokenizer = digit_tokenizer()
    model = ScratchTransformerForConditionalGeneration(tiny_config())
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    features = copy_task(tokenizer, 4, seed=3)
    batch = collator(features)

    labels, decoder_input_ids = batch["labels"], batch["decoder_input_ids"]
    assert decoder_input_ids.shape == labels.shape
    assert (labels == -100).any(), "the examples have different lengths, so some labels must be padded"
    assert (decoder_input_ids[:, 0] == model.config.decoder_start_token_id).all()
    shifted = labels[:, :-1].masked_fill(labels[:, :-1] == -100, PAD)
    assert torch.equal(decoder_input_ids[:, 1:], shifted)
    assert torch.equal(decoder_input_ids, model.prepare_decoder_input_ids_from_labels(labels=labels))
    # Padding the sources uses the tokenizer's pad id and mask.
    assert ((batch["input_ids"] == PAD) == (batch["attention_mask"] == 0)).all()

    # The collated batch goes through forward, and precomputed decoder inputs give the same loss as labels alone.
    with torch.no_grad():
        with_decoder_inputs = model(**batch).loss
        from_labels = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    assert torch.isfinite(with_decoder_inputs)
    assert abs(with_decoder_inputs.item() - from_labels.item()) < 1e-6


def test_seq2seq_trainer_trains_on_a_copy_task_and_generates(tmp_path):
    tokenizer = digit_tokenizer()
    config = tiny_config(d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, init_std=0.02)
    model = ScratchTransformerForConditionalGeneration(config)
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    train_data, eval_data = copy_task(tokenizer, 256, seed=0), copy_task(tokenizer, 12, seed=1)

    def compute_metrics(prediction):
        predictions = np.where(prediction.predictions == -100, PAD, prediction.predictions)
        labels = np.where(prediction.label_ids == -100, PAD, prediction.label_ids)
        decoded = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        return {"exact_match": float(np.mean([p == r for p, r in zip(decoded, references, strict=True)]))}

    generation_max_length = 9
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        per_device_eval_batch_size=8,
        max_steps=48,
        learning_rate=3e-3,
        warmup_steps=4,
        logging_strategy="steps",
        logging_steps=4,
        eval_strategy="no",
        predict_with_generate=True,
        generation_max_length=generation_max_length,
        generation_num_beams=1,
        seed=0,
        **COMMON_ARGS,
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    assert trainer.model_accepts_loss_kwargs
    trainer.train()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 48 // 4
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses

    # 48 steps teach the model the task's statistics, not yet to copy (it generates no digit: exact match 0).
    # Evaluation and prediction run generation; what they return is checked for its shape, not for copies.
    metrics = trainer.evaluate()
    assert np.isfinite(metrics["eval_loss"])

    prediction = trainer.predict(eval_data)
    predictions = prediction.predictions
    assert predictions.ndim == 2 and predictions.shape[0] == len(eval_data)
    # `generate` stopped at generation_max_length; Seq2SeqTrainer pads to the generation config's max_length.
    longest = max(generation_max_length, model.generation_config.max_length)
    assert generation_max_length <= predictions.shape[1] <= longest
    assert np.isin(predictions[:, generation_max_length:], [PAD, -100]).all()
    assert (predictions[:, 0] == config.decoder_start_token_id).all(), "generation starts from the decoder start"
    generated = predictions[predictions != -100]
    assert ((generated >= 0) & (generated < VOCAB_SIZE)).all()
    assert prediction.label_ids.shape[0] == len(eval_data)
    assert np.isfinite(prediction.metrics["test_loss"])
    assert "test_exact_match" in prediction.metrics


# ---------------------------------------------------------------------------------------------------------------
# 5. Gradient checkpointing
# ---------------------------------------------------------------------------------------------------------------


def seq2seq_loss(model):
    input_ids, attention_mask, labels = padded_labels_batch(seed=2)
    return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss


def classifier_loss(model):
    input_ids, attention_mask, _ = random_batch(batch_size=3, seed=2)
    labels = torch.tensor([0, 2, 1])
    return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss


@pytest.mark.parametrize("use_reentrant", [True, False])
@pytest.mark.parametrize(
    "model_class, loss_fn, overrides",
    [
        (ScratchTransformerForConditionalGeneration, seq2seq_loss, {"label_smoothing": 0.1}),
        (ScratchTransformerForSequenceClassification, classifier_loss, {"num_labels": 3}),
    ],
    ids=["seq2seq", "classifier"],
)
def test_gradient_checkpointing_gives_the_same_gradients(model_class, loss_fn, overrides, use_reentrant):
    plain = model_class(tiny_config(**overrides)).train()
    checkpointed = clone_model(plain).train()
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert checkpointed.is_gradient_checkpointing and not plain.is_gradient_checkpointing

    plain_loss, checkpointed_loss = loss_fn(plain), loss_fn(checkpointed)
    plain_loss.backward()
    checkpointed_loss.backward()
    assert abs(plain_loss.item() - checkpointed_loss.item()) < 1e-6

    plain_grads, checkpointed_grads = grads_of(plain), grads_of(checkpointed)
    # Every trainable parameter gets its gradient (reentrant checkpointing silently drops the gradients of inputs
    # passed by keyword, e.g. the encoder output into the decoder layers).
    trainable = {name for name, p in plain.named_parameters() if p.requires_grad}
    assert checkpointed_grads.keys() == plain_grads.keys() == trainable
    diff = max_abs_diff(plain_grads, checkpointed_grads)
    assert diff < 1e-6, f"checkpointed gradients differ by {diff:.3g}"
    encoder_grads = [g for name, g in checkpointed_grads.items() if ".encoder.layers." in name]
    assert encoder_grads and all(g.abs().sum() > 0 for g in encoder_grads)

    checkpointed.gradient_checkpointing_disable()
    assert not checkpointed.is_gradient_checkpointing


# ---------------------------------------------------------------------------------------------------------------
# 6. Sequence classification: losses and pooling
# ---------------------------------------------------------------------------------------------------------------


def test_single_label_classification_loss_is_cross_entropy():
    model = ScratchTransformerForSequenceClassification(tiny_config(num_labels=3)).eval()
    input_ids, attention_mask, _ = random_batch(batch_size=4)
    labels = torch.tensor([0, 2, 1, 2])
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert output.logits.shape == (4, 3)
    assert model.config.problem_type == "single_label_classification"
    assert abs(output.loss.item() - F.cross_entropy(output.logits, labels).item()) < 1e-6


def test_regression_loss_when_one_label():
    model = ScratchTransformerForSequenceClassification(tiny_config(num_labels=1)).eval()
    input_ids, attention_mask, _ = random_batch(batch_size=4)
    labels = torch.tensor([0.5, -1.0, 2.0, 0.0])
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert output.logits.shape == (4, 1)
    assert model.config.problem_type == "regression"
    assert abs(output.loss.item() - F.mse_loss(output.logits.squeeze(-1), labels).item()) < 1e-6


@pytest.mark.parametrize("bad_label", [3, 7, -1])
def test_class_ids_outside_num_labels_raise(bad_label):
    model = ScratchTransformerForSequenceClassification(tiny_config(num_labels=3)).eval()
    input_ids, attention_mask, _ = random_batch(batch_size=3)
    labels = torch.tensor([0, bad_label, 1])
    with pytest.raises(ValueError, match="num_labels"):
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def test_mean_pooling_ignores_padding():
    model = ScratchTransformerForSequenceClassification(tiny_config(num_labels=3, classifier_pooling="mean")).eval()
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=9)
    assert (attention_mask == 0).any()

    def logits_of(ids):
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=attention_mask).logits

    base = logits_of(input_ids)
    # The pooled vector is the mean of the encoder states over the real tokens only.
    with torch.no_grad():
        states = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask[:, :, None].float()
        expected = model.classifier((states * weights).sum(1) / weights.sum(1))
    assert torch.allclose(base, expected, atol=1e-6)

    # Another token id under the mask: nothing the classifier sees changes.
    changed = input_ids.clone()
    changed[attention_mask == 0] = 5
    assert torch.allclose(logits_of(changed), base, atol=1e-6)
    # A change to a real token does change the logits, so the comparison above has power.
    real_changed = input_ids.clone()
    real_changed[:, 1] = (real_changed[:, 1] + 1 - 3) % (VOCAB_SIZE - 3) + 3
    assert (logits_of(real_changed) - base).abs().max() > 1e-4


def test_classifier_without_attention_mask_masks_pad_ids():
    """The classifier derives the mask from pad ids when none is given (see `forward`); the encoder must then use
    it too, or an example's logits depend on how much padding its batch happens to add."""
    model = ScratchTransformerForSequenceClassification(tiny_config(num_labels=3, classifier_pooling="mean")).eval()
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=9)
    assert torch.equal(attention_mask.bool(), input_ids != PAD)
    with torch.no_grad():
        with_mask = model(input_ids=input_ids, attention_mask=attention_mask).logits
        without_mask = model(input_ids=input_ids).logits
        # The same example with more padding (one more pad column) gives the same logits.
        more_padding = torch.cat([input_ids, torch.full_like(input_ids[:, :1], PAD)], dim=1)
        without_mask_longer = model(input_ids=more_padding).logits
    assert torch.allclose(without_mask, with_mask, atol=1e-5), (without_mask - with_mask).abs().max()
    assert torch.allclose(without_mask_longer, without_mask, atol=1e-5)


def test_first_token_pooling_uses_the_first_state():
    model = ScratchTransformerForSequenceClassification(tiny_config(num_labels=3, classifier_pooling="first")).eval()
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=9)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        states = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mean_model = ScratchTransformerForSequenceClassification(tiny_config(num_labels=3, classifier_pooling="mean"))
        mean_model.load_state_dict(model.state_dict())
        mean_logits = mean_model.eval()(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.allclose(logits, model.classifier(states[:, 0]), atol=1e-6)
    assert (logits - mean_logits).abs().max() > 1e-4  # first and mean pooling really differ


# ---------------------------------------------------------------------------------------------------------------
# 7. No decoder start token
# ---------------------------------------------------------------------------------------------------------------


def test_labels_without_a_decoder_start_token_raise():
    config = tiny_config(decoder_start_token_id=None, bos_token_id=None)
    model = ScratchTransformerForConditionalGeneration(config).eval()
    input_ids, attention_mask, labels = random_batch()
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        model.prepare_decoder_input_ids_from_labels(labels)
    # With explicit decoder inputs the labels still give a loss.
    decoder_input_ids = torch.cat([torch.full_like(labels[:, :1], PAD), labels[:, :-1]], dim=1)
    loss = model(
        input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, labels=labels
    )
    assert torch.isfinite(loss.loss)


def test_bos_token_is_the_fallback_decoder_start():
    model = ScratchTransformerForConditionalGeneration(tiny_config(decoder_start_token_id=None, bos_token_id=BOS))
    labels = torch.tensor([[5, 6, -100]])
    assert model.prepare_decoder_input_ids_from_labels(labels).tolist() == [[BOS, 5, 6]]


# ---------------------------------------------------------------------------------------------------------------
# 8. Half precision on the CPU
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_is_finite_and_close_to_float32(dtype, attn_implementation):
    config = tiny_config(label_smoothing=0.1)
    model = ScratchTransformerForConditionalGeneration(config).eval()
    model.config._attn_implementation = attn_implementation
    half = clone_model(model).to(dtype).eval()
    half.config._attn_implementation = attn_implementation
    input_ids, attention_mask, labels = padded_labels_batch()
    right_padded = (labels != -100).long()
    right_padded[0] = 1  # row 0 has an ignored label in the middle, not padding
    decoder_masks = {"none": None, "right": right_padded, "left": right_padded.flip(-1)}

    for name, decoder_attention_mask in decoder_masks.items():
        kwargs = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            decoder_attention_mask=decoder_attention_mask,
        )
        with torch.no_grad():
            reference = model(**kwargs)
            output = half(**kwargs)
        assert output.logits.dtype == dtype
        assert torch.isfinite(output.logits).all(), f"non-finite logits in {dtype} with decoder mask {name}"
        assert output.loss.dtype == torch.float32, "the loss is computed in float32"
        assert torch.isfinite(output.loss)
        relative = abs(output.loss.item() - reference.loss.item()) / abs(reference.loss.item())
        assert relative < 5e-2, f"{dtype} loss {output.loss.item()} vs float32 {reference.loss.item()} ({name})"

    # Left-padded sources too: every query must still see a real key.
    left_ids, left_mask = input_ids.clone(), attention_mask.clone()
    for row in range(left_ids.shape[0]):
        real = int(attention_mask[row].sum())
        left_ids[row] = torch.cat([input_ids[row, real:], input_ids[row, :real]])
        left_mask[row] = torch.cat([attention_mask[row, real:], attention_mask[row, :real]])
    with torch.no_grad():
        output = half(input_ids=left_ids, attention_mask=left_mask, labels=labels)
    assert torch.isfinite(output.logits).all() and torch.isfinite(output.loss)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_forward_backward_gives_finite_gradients(dtype):
    model = ScratchTransformerForConditionalGeneration(tiny_config(label_smoothing=0.1)).train()
    reference = clone_model(model).train()
    input_ids, attention_mask, labels = padded_labels_batch()
    with torch.autocast("cpu", dtype=dtype):
        output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert output.logits.dtype == dtype, "autocast should run the output projection in half precision"
    assert output.loss.dtype == torch.float32
    assert torch.isfinite(output.loss)
    output.loss.backward()

    reference_loss = reference(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    assert abs(output.loss.item() - reference_loss.item()) / reference_loss.item() < 5e-2

    grads = grads_of(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert grads.keys() == trainable
    for name, grad in grads.items():
        assert grad.dtype == torch.float32, name
        assert torch.isfinite(grad).all(), f"non-finite gradient for {name} under {dtype} autocast"
    assert sum(g.abs().sum().item() for g in grads.values()) > 0
