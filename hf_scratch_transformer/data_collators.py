"""Data collators for denoising pretraining: they corrupt token sequences and give the encoder-decoder the
corrupted text as input and what was hidden (or the whole text) as target.

- `DataCollatorForSpanCorruption`: T5's objective (Raffel et al., 2020, section 3.1.4). About 15% of the tokens,
  in spans of mean length 3, are each replaced by one sentinel; the target lists every sentinel followed by the
  tokens it hides.

      original: The cat sat on the mat and purred
      input:    The cat <extra_id_0> the mat <extra_id_1> </s>
      target:   <extra_id_0> sat on <extra_id_1> and purred </s>

- `DataCollatorForTextInfilling`: BART's objective (Lewis et al., 2020, section 2.2). About 30% of the tokens, in
  spans of Poisson(3) lengths, are each replaced by a single `<mask>` (a span of length 0 inserts a `<mask>`), and
  the target is the whole original text.

- `DataCollatorForMaskedLM`: BERT's objective (Devlin et al., 2019, section 3.1), for the encoder alone. 15% of the
  tokens are chosen; 80% of those become `<mask>`, 10% a random token, 10% stay; the labels are the chosen tokens'
  ids at their positions and -100 elsewhere, and the encoder's states predict them (see training/pretrain.py).

      original: The cat sat on the mat and purred
      input:    The cat <mask> on the mat and purred </s>
      labels:   -100 -100 sat -100 -100 -100 -100 -100 -100

All take examples that hold `input_ids` (token ids without special tokens, e.g. fixed-length chunks of a packed
corpus), and return a batch of `torch.long` tensors, padded on the right:

    input_ids          (B, S)  corrupted text, then </s>; padding is the tokenizer's pad id
    attention_mask     (B, S)  1 for tokens, 0 for padding
    labels             (B, T)  target, then </s>; padding is -100 (ignored by the loss)
    decoder_input_ids  (B, T)  labels shifted right after decoder_start_token_id (only when a model is given and
                               the labels are a target text, not masked-LM labels)

Randomness: by default every call draws a seed from torch's global RNG and corrupts the batch with a `numpy`
Generator seeded with it, so `transformers.set_seed` (which `Trainer` calls) makes the corruption reproducible, and
each data-loader worker (torch seeds each one differently) corrupts differently. With `collator.seed` set, each
example's corruption is instead a function of the seed, `collator.epoch` and the example's tokens alone (as
fairseq seeds its masking): the same in any batch, worker or process, and in a run resumed from a checkpoint, which
torch's RNG cannot promise (the data loader collates one batch ahead, so the RNG state a checkpoint saves is already
past the next batch); the masks change when the epoch does. An example that already has `labels` is taken as
corrupted and only padded: that is how a validation set is corrupted once, with a fixed seed (see `corrupt`), and
then scored the same way at every evaluation.
"""

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

SENTINEL_TEMPLATE = "<extra_id_{}>"  # T5's sentinel names, which training/train_tokenizer.py gives ids 5, 6, ...


# -----------------------------------------------------------------------------------------------------------------
# T5's span sampling
# -----------------------------------------------------------------------------------------------------------------


def count_noise(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """How many of `length` tokens are noise, and in how many spans: T5's `random_spans_noise_mask` counts.

    round(length * noise_density) noise tokens, at least 1 and at most length - 1 (so that the input and the target
    both keep something), in round(noise / mean_noise_span_length) spans, at least 1.
    """
    if length < 2:
        raise ValueError(f"Span corruption needs at least 2 tokens (one noise, one kept), got {length}.")
    num_noise_tokens = min(max(int(np.round(length * noise_density)), 1), length - 1)
    num_nonnoise_tokens = length - num_noise_tokens
    # min(): as many non-noise spans as noise spans must fit, since the two alternate
    num_noise_spans = max(int(np.round(min(num_noise_tokens, num_nonnoise_tokens) / mean_noise_span_length)), 1)
    return num_noise_tokens, num_noise_spans


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Split `num_items` items into `num_segments` non-empty runs of random lengths; returns the lengths."""
    first_in_segment = np.arange(num_items - 1) < (num_segments - 1)  # (num_items - 1,): where new runs start
    rng.shuffle(first_in_segment)
    segment_id = np.cumsum(np.pad(first_in_segment, [[1, 0]]))  # (num_items,): 0, 0, 1, 1, 1, 2, ...
    return np.bincount(segment_id, minlength=num_segments)  # (num_segments,)


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """A boolean mask `(length,)`, True on noise: T5's `random_spans_noise_mask`, with a numpy Generator.

    The noise tokens and the non-noise tokens are each cut into the same number of runs at random, and the runs
    alternate, non-noise first. As in T5, the sequence therefore always starts with kept tokens and ends with noise.
    """
    num_noise_tokens, num_noise_spans = count_noise(length, noise_density, mean_noise_span_length)
    noise_span_lengths = _random_segmentation(num_noise_tokens, num_noise_spans, rng)
    nonnoise_span_lengths = _random_segmentation(length - num_noise_tokens, num_noise_spans, rng)
    interleaved = np.stack([nonnoise_span_lengths, noise_span_lengths], axis=1).reshape(-1)  # (2 * spans,)
    span_starts = np.cumsum(interleaved)[:-1]
    span_start_indicator = np.zeros(length, dtype=np.int64)
    span_start_indicator[span_starts] = 1
    return np.cumsum(span_start_indicator) % 2 == 1  # odd runs are noise


def compute_input_and_target_lengths(
    inputs_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """The longest raw chunk whose span-corrupted input, `</s>` included, fits in `inputs_length` tokens, and the
    length of its target (with `</s>`): T5's `compute_input_and_target_lengths`.

    With the defaults, 128 input tokens hold a raw chunk of 141 tokens: 21 noise tokens in 7 spans leave 120 kept
    tokens + 7 sentinels + `</s>` = 128, and the target is 7 sentinels + 21 tokens + `</s>` = 29.
    """
    if inputs_length < 3:
        raise ValueError(f"A corrupted input needs room for a kept token, a sentinel and </s>; got {inputs_length}.")

    def corrupted_lengths(tokens_length: int) -> tuple[int, int]:
        noise, spans = count_noise(tokens_length, noise_density, mean_noise_span_length)
        return tokens_length - noise + spans + 1, noise + spans + 1

    # Start from inputs_length - 1, which always fits (a span is never shorter than its sentinel), and grow.
    tokens_length = inputs_length - 1
    while corrupted_lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, corrupted_lengths(tokens_length)[1]


# -----------------------------------------------------------------------------------------------------------------
# Batching, shared by both collators
# -----------------------------------------------------------------------------------------------------------------


def _pad(rows: list[list[int]], value: int, pad_to_multiple_of: int | None) -> torch.Tensor:
    """Right-pad `rows` to one length: `(len(rows), longest row, rounded up to pad_to_multiple_of)`."""
    width = max(len(row) for row in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    batch = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return batch


def _token_list(ids: Any) -> list[int]:
    return ids.tolist() if hasattr(ids, "tolist") else list(ids)


class _DenoisingCollator:
    """What the collators do around `corrupt`: draw the Generator, corrupt, pad, shift the labels."""

    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel | None
    pad_to_multiple_of: int | None
    label_pad_token_id: int
    # Set `seed` to corrupt each example as a function of (seed, epoch, its tokens); see the module's docstring.
    seed: int | None = None
    epoch: int = 0

    def corrupt(self, input_ids: Sequence[int], rng: np.random.Generator) -> dict[str, list[int]]:
        raise NotImplementedError

    def _special_id(self, name: str) -> int:
        token_id = getattr(self.tokenizer, f"{name}_token_id")
        if token_id is None:
            raise ValueError(f"{type(self).__name__} needs a tokenizer with a {name} token; this one has none.")
        return token_id

    def example_rng(self, input_ids: list[int]) -> np.random.Generator:
        """The Generator of one example when `seed` is set: a function of the seed, the epoch and the tokens."""
        tokens = zlib.crc32(np.asarray(input_ids, dtype=np.int64).tobytes())
        return np.random.default_rng([self.seed, self.epoch, tokens])

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch_rng = None
        if self.seed is None:
            batch_rng = np.random.default_rng(int(torch.randint(2**62, (1,)).item()))  # set_seed reproduces it
        pairs = []
        for example in examples:
            if "labels" in example:  # corrupted already (a fixed validation set): only pad
                pairs.append(
                    {"input_ids": _token_list(example["input_ids"]), "labels": _token_list(example["labels"])}
                )
            else:
                input_ids = _token_list(example["input_ids"])
                pairs.append(
                    self.corrupt(input_ids, batch_rng if batch_rng is not None else self.example_rng(input_ids))
                )
        inputs = [pair["input_ids"] for pair in pairs]
        batch = {
            "input_ids": _pad(inputs, self.tokenizer.pad_token_id, self.pad_to_multiple_of),  # (B, S)
            "attention_mask": _pad([[1] * len(row) for row in inputs], 0, self.pad_to_multiple_of),  # (B, S)
            "labels": _pad([pair["labels"] for pair in pairs], self.label_pad_token_id, self.pad_to_multiple_of),
        }  # labels: (B, T)
        if self.model is not None and hasattr(self.model, "prepare_decoder_input_ids_from_labels"):
            batch["decoder_input_ids"] = self.model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        return batch


# -----------------------------------------------------------------------------------------------------------------
# The collators
# -----------------------------------------------------------------------------------------------------------------


@dataclass
class DataCollatorForSpanCorruption(_DenoisingCollator):
    """T5 span corruption of examples holding `input_ids` (ids without special tokens, any length >= 2).

    Per example of n tokens: round(n * noise_density) noise tokens in round(noise / mean_noise_span_length) spans
    (`random_spans_noise_mask`). The input is the text with the i-th span replaced by the sentinel `<extra_id_i>`,
    then `</s>`; the target is each sentinel followed by the span it hides, then `</s>`. So
    - replacing each sentinel of the input by its piece of the target gives back the original exactly, and
    - an n-token example always gives inputs and targets of the same lengths, n - noise + spans + 1 and
      noise + spans + 1 (`compute_input_and_target_lengths` picks n for a wanted input length).

    Args:
        tokenizer: gives the pad and `</s>` ids and the sentinels `<extra_id_0>`, `<extra_id_1>`, ... (looked up by
            name, so a T5 tokenizer's sentinels, numbered downwards, work too).
        model: if given, its `prepare_decoder_input_ids_from_labels` adds `decoder_input_ids` to the batch.
        noise_density: fraction of the tokens to corrupt (T5: 0.15).
        mean_noise_span_length: mean length of a corrupted span (T5: 3.0).
        pad_to_multiple_of: round padded lengths up to a multiple of this.
        label_pad_token_id: padding of the labels; -100 is ignored by the loss.
    """

    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel | None = None
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = -100

    def __post_init__(self):
        if not 0.0 < self.noise_density < 1.0:
            raise ValueError(f"noise_density must be in (0, 1), got {self.noise_density}.")
        if self.mean_noise_span_length < 1.0:
            raise ValueError(f"mean_noise_span_length must be at least 1, got {self.mean_noise_span_length}.")
        self.eos_token_id = self._special_id("eos")
        self._special_id("pad")
        vocab = self.tokenizer.get_vocab()
        self.sentinel_ids = []  # <extra_id_0>, <extra_id_1>, ... while the tokenizer has them
        while SENTINEL_TEMPLATE.format(len(self.sentinel_ids)) in vocab:
            self.sentinel_ids.append(vocab[SENTINEL_TEMPLATE.format(len(self.sentinel_ids))])

    def check_length(self, length: int) -> None:
        """Raise a `ValueError` if an example of `length` tokens needs more sentinels than the tokenizer has."""
        _, num_spans = count_noise(length, self.noise_density, self.mean_noise_span_length)
        if num_spans > len(self.sentinel_ids):
            raise ValueError(
                f"Span corruption of {length} tokens makes {num_spans} noise spans, each replaced by its own "
                f"sentinel, but the tokenizer has only {len(self.sentinel_ids)} sentinels (<extra_id_0>, ...). "
                f"Train the tokenizer with --num_sentinel_tokens {num_spans} or more (training/train_tokenizer.py), "
                "or use shorter sequences (--max_seq_length) or longer spans (--mean_noise_span_length)."
            )

    def corrupt(self, input_ids: Sequence[int], rng: np.random.Generator) -> dict[str, list[int]]:
        """One example: `{"input_ids": corrupted + [</s>], "labels": sentinels and spans + [</s>]}` (lists)."""
        self.check_length(len(input_ids))
        noise = random_spans_noise_mask(len(input_ids), self.noise_density, self.mean_noise_span_length, rng)
        inputs, labels = [], []
        span = -1  # index of the current noise span
        for position, (token, is_noise) in enumerate(zip(input_ids, noise, strict=True)):
            if not is_noise:
                inputs.append(token)
                continue
            if position == 0 or not noise[position - 1]:  # a span starts: one sentinel in both
                span += 1
                inputs.append(self.sentinel_ids[span])
                labels.append(self.sentinel_ids[span])
            labels.append(token)
        return {"input_ids": inputs + [self.eos_token_id], "labels": labels + [self.eos_token_id]}


@dataclass
class DataCollatorForTextInfilling(_DenoisingCollator):
    """BART text infilling of examples holding `input_ids` (ids without special tokens).

    Per example of n tokens: span lengths are drawn from Poisson(poisson_lambda) until they cover
    round(n * mask_ratio) tokens (the last one is cut to fit), the spans go to random places among the kept tokens,
    and each span becomes one `<mask>`; a span of length 0 inserts a `<mask>`, so the model must also learn how many
    tokens a mask hides, none included. The input is the masked text then `</s>`; the target is the original then
    `</s>`. Exactly round(n * mask_ratio) tokens are masked, with at most that many masks, so the input is never
    longer than the target.

    Args:
        tokenizer: gives the pad, `</s>` and `<mask>` ids.
        model: if given, its `prepare_decoder_input_ids_from_labels` adds `decoder_input_ids` to the batch.
        mask_ratio: fraction of the tokens to mask (BART: 0.3).
        poisson_lambda: mean span length (BART: 3.0).
        pad_to_multiple_of: round padded lengths up to a multiple of this.
        label_pad_token_id: padding of the labels; -100 is ignored by the loss.
    """

    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel | None = None
    mask_ratio: float = 0.3
    poisson_lambda: float = 3.0
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = -100

    def __post_init__(self):
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}.")
        if self.poisson_lambda <= 0:
            raise ValueError(f"poisson_lambda must be positive, got {self.poisson_lambda}.")
        self.eos_token_id = self._special_id("eos")
        self.mask_token_id = self._special_id("mask")
        self._special_id("pad")

    def span_lengths(self, num_noise_tokens: int, rng: np.random.Generator) -> list[int]:
        """Poisson lengths summing to `num_noise_tokens`, in random order, no more of them than that sum."""
        lengths = []
        while sum(lengths) < num_noise_tokens:
            lengths.append(int(rng.poisson(self.poisson_lambda)))
        if lengths:
            lengths[-1] -= sum(lengths) - num_noise_tokens  # cut the last span to fit
        nonzero = [length for length in lengths if length > 0]
        zeros = min(len(lengths) - len(nonzero), num_noise_tokens - len(nonzero))  # keep masks <= noise tokens
        lengths = nonzero + [0] * zeros
        rng.shuffle(lengths)
        return lengths

    def corrupt(self, input_ids: Sequence[int], rng: np.random.Generator) -> dict[str, list[int]]:
        """One example: `{"input_ids": masked + [</s>], "labels": original + [</s>]}` (lists)."""
        input_ids = list(input_ids)
        num_noise_tokens = int(np.round(len(input_ids) * self.mask_ratio))
        lengths = self.span_lengths(num_noise_tokens, rng)
        num_kept = len(input_ids) - num_noise_tokens
        # Span i goes after the first slots[i] kept tokens; equal slots make adjacent masks.
        slots = np.sort(rng.integers(0, num_kept + 1, size=len(lengths)))
        inputs, position, kept = [], 0, 0
        for slot, length in zip(slots, lengths, strict=True):
            inputs += input_ids[position : position + slot - kept]  # the kept tokens before the span
            position += slot - kept
            kept = slot
            inputs.append(self.mask_token_id)
            position += length  # the span's tokens are hidden
        inputs += input_ids[position:]
        return {"input_ids": inputs + [self.eos_token_id], "labels": input_ids + [self.eos_token_id]}


@dataclass
class DataCollatorForMaskedLM(_DenoisingCollator):
    """BERT masking of examples holding `input_ids` (ids without special tokens), for an encoder-only objective.

    Per example of n tokens: round(n * mlm_probability) positions (at least 1) are chosen at random; each becomes
    `<mask>` with probability 0.8, a random ordinary token with probability 0.1, and stays itself otherwise, so the
    encoder cannot tell which unmasked tokens it will be asked about. The input is the result then `</s>`; the
    labels have the original ids at the chosen positions and `label_pad_token_id` (-100, ignored by the loss)
    everywhere else, `</s>` included: `(B, S)`, the shape of the input. No `decoder_input_ids`: the labels are
    per input position, not a text for the decoder.

    Args:
        tokenizer: gives the pad, `</s>` and `<mask>` ids, and the size of the vocabulary to draw random tokens from
            (the ids after the special tokens).
        mlm_probability: fraction of the tokens to predict (BERT: 0.15).
        pad_to_multiple_of: round padded lengths up to a multiple of this.
        label_pad_token_id: the label of every position not chosen; -100 is ignored by the loss.
    """

    tokenizer: PreTrainedTokenizerBase
    mlm_probability: float = 0.15
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = -100
    model: PreTrainedModel | None = None  # never used: there are no decoder inputs to make

    # BERT's split of the chosen tokens: 80% <mask>, 10% a random token, the rest (10%) kept.
    MASK_SHARE = 0.8
    RANDOM_SHARE = 0.1

    def __post_init__(self):
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        self.eos_token_id = self._special_id("eos")
        self.mask_token_id = self._special_id("mask")
        self._special_id("pad")
        self.first_ordinary_id = max(self.tokenizer.all_special_ids) + 1  # the special tokens come first
        self.model = None

    def corrupt(self, input_ids: Sequence[int], rng: np.random.Generator) -> dict[str, list[int]]:
        """One example: `{"input_ids": masked + [</s>], "labels": [-100 or original id] * n + [-100]}` (lists)."""
        inputs = np.array(input_ids, dtype=np.int64)
        num_chosen = max(int(np.round(len(inputs) * self.mlm_probability)), 1)
        chosen = rng.choice(len(inputs), size=min(num_chosen, len(inputs)), replace=False)
        labels = np.full(len(inputs), self.label_pad_token_id, dtype=np.int64)
        labels[chosen] = inputs[chosen]
        draw = rng.random(len(chosen))
        inputs[chosen[draw < self.MASK_SHARE]] = self.mask_token_id
        replaced = chosen[(draw >= self.MASK_SHARE) & (draw < self.MASK_SHARE + self.RANDOM_SHARE)]
        inputs[replaced] = rng.integers(self.first_ordinary_id, len(self.tokenizer), size=len(replaced))
        return {
            "input_ids": inputs.tolist() + [self.eos_token_id],
            "labels": labels.tolist() + [self.label_pad_token_id],
        }


__all__ = [
    "DataCollatorForMaskedLM",
    "DataCollatorForSpanCorruption",
    "DataCollatorForTextInfilling",
    "compute_input_and_target_lengths",
    "count_noise",
    "random_spans_noise_mask",
]
