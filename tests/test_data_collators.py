"""`hf_scratch_transformer.data_collators`: T5 span corruption, BART text infilling and BERT masked LM.

The invariants: span corruption loses nothing (putting the target's pieces back into the input's sentinel slots
gives the original), infilling's target is the original, the noise is the asked-for fraction over many samples,
a seed reproduces a batch, and the batch is padded as the model expects (-100 labels, decoder_input_ids).
The tokenizer is a word-level one built here, with the special ids of training/train_tokenizer.py.
"""

import numpy as np
import pytest
import torch
from conftest import BOS, EOS, PAD, tiny_config, word_level_tokenizer
from transformers import PreTrainedTokenizerFast

from hf_scratch_transformer import ScratchTransformerForConditionalGeneration
from hf_scratch_transformer.data_collators import (
    DataCollatorForMaskedLM,
    DataCollatorForSpanCorruption,
    DataCollatorForTextInfilling,
    compute_input_and_target_lengths,
    count_noise,
    random_spans_noise_mask,
)

NUM_SENTINELS = 40
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"] + [f"<extra_id_{i}>" for i in range(NUM_SENTINELS)]
WORDS = [f"w{i}" for i in range(50)]
MASK = 4
SENTINEL_IDS = list(range(5, 5 + NUM_SENTINELS))
FIRST_WORD = len(SPECIALS)


def make_tokenizer(num_sentinels: int = NUM_SENTINELS) -> PreTrainedTokenizerFast:
    return word_level_tokenizer(WORDS, num_sentinels=num_sentinels)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def random_examples(count: int, lengths: tuple[int, int], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(lengths[0], lengths[1] + 1, size=count)
    return [{"input_ids": rng.integers(FIRST_WORD, FIRST_WORD + len(WORDS), size=n).tolist()} for n in sizes]


def unpadded(ids: torch.Tensor, pad: int) -> list[int]:
    ids = ids.tolist()
    while ids and ids[-1] == pad:
        ids.pop()
    return ids


def reconstruct(inputs: list[int], labels: list[int]) -> list[int]:
    """Put each span of the target back where its sentinel is in the input (both end with </s>)."""
    assert inputs[-1] == EOS and labels[-1] == EOS
    pieces, current = {}, None
    for token in labels[:-1]:
        if token in SENTINEL_IDS:
            current = token
            pieces[current] = []
        else:
            pieces[current].append(token)
    assert None not in pieces, "the target must start with a sentinel"
    original = []
    for token in inputs[:-1]:
        original += pieces.pop(token) if token in SENTINEL_IDS else [token]
    assert not pieces, "every sentinel of the target must be in the input"
    return original


# ---------------------------------------------------------------------------------------------------------------
# Span corruption
# ---------------------------------------------------------------------------------------------------------------


def test_span_corruption_reconstructs_the_original_exactly(tokenizer):
    examples = random_examples(64, (2, 150))
    batch = DataCollatorForSpanCorruption(tokenizer)(examples)
    for row, example in enumerate(examples):
        inputs = unpadded(batch["input_ids"][row], PAD)
        labels = unpadded(batch["labels"][row], -100)
        assert reconstruct(inputs, labels) == example["input_ids"]
        sentinels = [token for token in inputs if token in SENTINEL_IDS]
        assert sentinels == SENTINEL_IDS[: len(sentinels)], "sentinels are used in order, from <extra_id_0>"
        assert [token for token in labels if token in SENTINEL_IDS] == sentinels


@pytest.mark.parametrize("density, mean_span", [(0.15, 3.0), (0.3, 1.0), (0.5, 2.0)])
def test_span_corruption_noise_density_and_span_length(tokenizer, density, mean_span):
    collator = DataCollatorForSpanCorruption(tokenizer, noise_density=density, mean_noise_span_length=mean_span)
    examples = random_examples(300, (40, 120), seed=1)
    batch = collator(examples)
    tokens = sum(len(example["input_ids"]) for example in examples)
    labels = batch["labels"]
    spans = torch.isin(labels, torch.tensor(SENTINEL_IDS)).sum().item()
    noise = (labels >= FIRST_WORD).sum().item()
    assert abs(noise / tokens - density) < 0.01
    assert abs(noise / spans - mean_span) < 0.15 * mean_span


def test_random_spans_noise_mask_counts_and_shape():
    rng = np.random.default_rng(0)
    for length in (2, 3, 10, 57, 141):
        mask = random_spans_noise_mask(length, 0.15, 3.0, rng)
        num_noise, num_spans = count_noise(length, 0.15, 3.0)
        assert mask.shape == (length,) and mask.dtype == bool
        assert mask.sum() == num_noise
        assert (np.diff(mask.astype(int)) == 1).sum() == num_spans  # every span starts after a kept token
        assert not mask[0] and mask[-1]  # as in T5: kept tokens first, noise last


@pytest.mark.parametrize("inputs_length", [16, 128, 512])
def test_computed_chunk_length_fills_the_input_exactly(tokenizer, inputs_length):
    raw_length, target_length = compute_input_and_target_lengths(inputs_length, 0.15, 3.0)
    batch = DataCollatorForSpanCorruption(tokenizer)(random_examples(2, (raw_length, raw_length)))
    assert batch["input_ids"].shape == (2, inputs_length)
    assert batch["labels"].shape == (2, target_length)
    assert compute_input_and_target_lengths(512, 0.15, 3.0) == (568, 114)  # T5's numbers


def test_span_corruption_is_deterministic_under_a_seed(tokenizer):
    collator = DataCollatorForSpanCorruption(tokenizer)
    examples = random_examples(8, (20, 60))
    torch.manual_seed(123)
    first = collator(examples)
    second_call = collator(examples)
    torch.manual_seed(123)
    again = collator(examples)
    for key in first:
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["labels"], second_call["labels"]), "each call draws a new seed from torch"


@pytest.mark.parametrize(
    "collator_class", [DataCollatorForSpanCorruption, DataCollatorForTextInfilling, DataCollatorForMaskedLM]
)
def test_a_seeded_collator_corrupts_each_example_by_seed_epoch_and_tokens_alone(tokenizer, collator_class):
    """What makes a resumed pretraining run mask as the first one did: neither torch's RNG nor the batch matters."""
    collator = collator_class(tokenizer)
    collator.seed = 0
    examples = random_examples(6, (20, 40))
    torch.manual_seed(1)
    first = collator(examples)
    torch.manual_seed(2)
    reordered = collator(examples[3:] + examples[:3])  # other neighbours, other padding, another RNG state
    for row in range(6):
        moved = (row + 3) % 6
        length = int(first["attention_mask"][row].sum())
        assert torch.equal(first["input_ids"][row, :length], reordered["input_ids"][moved, :length])
        labels = first["labels"][row][first["labels"][row] != -100]
        assert torch.equal(labels, reordered["labels"][moved][reordered["labels"][moved] != -100])
    collator.epoch = 1  # a new epoch masks anew
    assert not torch.equal(collator(examples)["input_ids"], first["input_ids"])
    collator.epoch, collator.seed = 0, 1  # and so does another seed
    assert not torch.equal(collator(examples)["input_ids"], first["input_ids"])


def test_too_few_sentinels_is_a_clear_error():
    collator = DataCollatorForSpanCorruption(make_tokenizer(num_sentinels=3))
    collator(random_examples(2, (20, 20)))  # 3 noise tokens in 1 span: fine
    with pytest.raises(ValueError, match=r"makes 7 noise spans.*only 3 sentinels.*--num_sentinel_tokens 7"):
        collator(random_examples(2, (141, 141)))
    with pytest.raises(ValueError, match="only 0 sentinels"):
        DataCollatorForSpanCorruption(make_tokenizer(num_sentinels=0)).check_length(10)


def test_bad_settings_are_refused(tokenizer):
    with pytest.raises(ValueError, match="noise_density"):
        DataCollatorForSpanCorruption(tokenizer, noise_density=0.0)
    with pytest.raises(ValueError, match="mean_noise_span_length"):
        DataCollatorForSpanCorruption(tokenizer, mean_noise_span_length=0.5)
    with pytest.raises(ValueError, match="mask_ratio"):
        DataCollatorForTextInfilling(tokenizer, mask_ratio=1.0)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        DataCollatorForSpanCorruption(tokenizer)([{"input_ids": [FIRST_WORD]}])


# ---------------------------------------------------------------------------------------------------------------
# Text infilling
# ---------------------------------------------------------------------------------------------------------------


def test_text_infilling_target_is_the_original(tokenizer):
    examples = random_examples(64, (1, 150))
    batch = DataCollatorForTextInfilling(tokenizer)(examples)
    for row, example in enumerate(examples):
        original = example["input_ids"]
        inputs = unpadded(batch["input_ids"][row], PAD)
        assert unpadded(batch["labels"][row], -100) == original + [EOS]
        assert inputs[-1] == EOS and len(inputs) <= len(original) + 1
        kept = [token for token in inputs[:-1] if token != MASK]
        masks = len(inputs) - 1 - len(kept)
        num_noise = int(np.round(len(original) * 0.3))
        assert len(kept) == len(original) - num_noise and masks <= num_noise
        iterator = iter(original)  # the kept tokens are the original minus the masked ones, in order
        assert all(token in iterator for token in kept)


def test_text_infilling_mask_ratio_and_span_length(tokenizer):
    examples = random_examples(300, (40, 120), seed=2)
    batch = DataCollatorForTextInfilling(tokenizer)(examples)
    tokens = sum(len(example["input_ids"]) for example in examples)
    masks = (batch["input_ids"] == MASK).sum().item()
    kept = (batch["input_ids"] >= FIRST_WORD).sum().item()
    assert abs((tokens - kept) / tokens - 0.3) < 0.01
    assert 2.5 < (tokens - kept) / masks < 3.5  # Poisson(3) lengths, the last of each example cut to fit


def test_text_infilling_is_deterministic_under_a_seed(tokenizer):
    collator = DataCollatorForTextInfilling(tokenizer)
    examples = random_examples(8, (20, 60))
    torch.manual_seed(7)
    first = collator(examples)
    torch.manual_seed(7)
    assert torch.equal(first["input_ids"], collator(examples)["input_ids"])


# ---------------------------------------------------------------------------------------------------------------
# The batch: padding, decoder inputs, already-corrupted examples
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("collator_class", [DataCollatorForSpanCorruption, DataCollatorForTextInfilling])
def test_batch_padding_and_decoder_input_ids(tokenizer, collator_class):
    model = ScratchTransformerForConditionalGeneration(tiny_config(vocab_size=len(tokenizer)))
    examples = random_examples(4, (10, 60), seed=3)
    batch = collator_class(tokenizer, model=model, pad_to_multiple_of=8)(examples)

    assert set(batch) == {"input_ids", "attention_mask", "labels", "decoder_input_ids"}
    assert all(tensor.dtype == torch.long for tensor in batch.values())
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["labels"].shape[1] % 8 == 0
    assert torch.equal(batch["attention_mask"].bool(), batch["input_ids"] != PAD)
    for row in range(len(examples)):
        labels = batch["labels"][row].tolist()
        length = labels.index(EOS) + 1
        assert all(label == -100 for label in labels[length:]), "labels are padded with -100"
    decoder_input_ids = batch["decoder_input_ids"]
    assert decoder_input_ids.shape == batch["labels"].shape
    assert (decoder_input_ids[:, 0] == BOS).all(), "decoder inputs start with decoder_start_token_id"
    assert torch.equal(decoder_input_ids[:, 1:], batch["labels"][:, :-1].masked_fill(batch["labels"][:, :-1] < 0, PAD))
    assert torch.isfinite(model(**batch).loss)


def test_corrupted_examples_are_only_padded(tokenizer):
    collator = DataCollatorForSpanCorruption(tokenizer)
    fixed = collator.corrupt(random_examples(1, (30, 30))[0]["input_ids"], np.random.default_rng(0))
    fresh = random_examples(1, (50, 50))[0]
    batch = collator([fixed, fresh])
    assert unpadded(batch["input_ids"][0], PAD) == fixed["input_ids"]
    assert unpadded(batch["labels"][0], -100) == fixed["labels"]
    assert batch["input_ids"].shape[1] > len(fixed["input_ids"])  # the other row was corrupted, and is longer


def test_masked_lm_labels_the_chosen_tokens_and_masks_80_randomises_10_keeps_10_percent(tokenizer):
    collator = DataCollatorForMaskedLM(tokenizer)
    rng = np.random.default_rng(0)
    chosen = masked = randomised = kept = 0
    for example in random_examples(400, (20, 60)):
        original = example["input_ids"]
        corrupted = collator.corrupt(original, rng)
        inputs, labels = corrupted["input_ids"], corrupted["labels"]
        assert len(inputs) == len(labels) == len(original) + 1 and inputs[-1] == EOS and labels[-1] == -100
        picked = [i for i, label in enumerate(labels) if label != -100]
        assert len(picked) == max(round(len(original) * 0.15), 1)  # round(n * 0.15) positions, no more
        assert all(labels[i] == original[i] for i in picked)  # a label is the token that was there
        assert all(inputs[i] == original[i] for i in range(len(original)) if i not in picked)  # the rest untouched
        for i in picked:
            if inputs[i] == MASK:
                masked += 1
            elif inputs[i] == original[i]:
                kept += 1
            else:
                randomised += 1
                assert inputs[i] >= FIRST_WORD  # random tokens are ordinary ones, never special
        chosen += len(picked)
    assert chosen > 2000
    # 80 / 10 / 10 (a random token can be the original by chance: 1 in 50 of the randomised count as kept)
    assert masked / chosen == pytest.approx(0.8, abs=0.03)
    assert randomised / chosen == pytest.approx(0.1 * 49 / 50, abs=0.02)
    assert kept / chosen == pytest.approx(0.1 + 0.1 / 50, abs=0.02)


def test_masked_lm_batch_has_labels_per_input_position_and_no_decoder_inputs(tokenizer):
    collator = DataCollatorForMaskedLM(tokenizer, mlm_probability=0.3)
    torch.manual_seed(0)
    batch = collator(random_examples(3, (10, 30)))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["labels"].shape == batch["input_ids"].shape == batch["attention_mask"].shape
    assert ((batch["labels"] != -100) <= (batch["attention_mask"] == 1)).all()  # padding is never a label
    torch.manual_seed(0)
    assert torch.equal(collator(random_examples(3, (10, 30)))["input_ids"], batch["input_ids"])  # seeded
    with pytest.raises(ValueError, match="mlm_probability must be in"):
        DataCollatorForMaskedLM(tokenizer, mlm_probability=1.0)
