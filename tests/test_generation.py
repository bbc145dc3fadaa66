"""Generation: the key/value cache, greedy search, beam search, sampling, padding, and attention weights.

Every test builds a tiny random model (see `conftest.tiny_config`) with untied embeddings, so that the random
model's outputs depend on its inputs and generated sequences are not one token repeated.
"""

import contextlib
import types

import pytest
import torch
from conftest import BOS, EOS, PAD, VOCAB_SIZE, random_batch, tiny_config
from transformers import AutoModelForSeq2SeqLM, GenerationMixin
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from hf_scratch_transformer import ScratchTransformerForConditionalGeneration

ATOL = 1e-4
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Width-16 matrices gain nothing from threads, and on a busy machine the threads' spin-waiting slows every
    step many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(
    attn_implementation: str = "sdpa", seed: int = 3, **overrides
) -> ScratchTransformerForConditionalGeneration:
    """A random tiny model. Many seeds give one that repeats a token or two whatever its input, which would leave the
    cache and beam checks below little to tell apart (they assert that outputs vary): the default seed, and the one
    the variants use, give models whose outputs vary."""
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(tiny_config(**overrides), attn_implementation=attn_implementation)
    assert isinstance(model, ScratchTransformerForConditionalGeneration)
    assert model.config._attn_implementation == attn_implementation
    return model.eval()


def max_abs_diff(first, second) -> float:
    """Largest absolute difference between two tensors or two equal-length sequences of tensors, ignoring the
    positions where both are -inf (tokens a logits processor removed)."""
    if isinstance(first, torch.Tensor):
        first, second = (first,), (second,)
    assert len(first) == len(second)
    worst = 0.0
    for a, b in zip(first, second, strict=True):
        assert a.shape == b.shape
        both_inf = torch.isinf(a) & torch.isinf(b) & (torch.sign(a) == torch.sign(b))
        assert torch.equal(torch.isinf(a), torch.isinf(b)), "-inf in different places"
        diff = (a - b).abs().masked_fill(both_inf, 0.0)
        worst = max(worst, diff.max().item())
    return worst


@torch.no_grad()
def greedy_without_cache(model, input_ids, attention_mask, max_new_tokens, min_new_tokens=0, eos_token_id=EOS):
    """Greedy decoding written out: run the whole model on the whole decoder prefix at every step, no cache.
    Returns the ids (start token included), the raw last-position logits of every step, and those logits after
    the `min_new_tokens` rule (EOS forbidden before then), which is what `generate(output_scores=True)` gives."""
    batch_size = input_ids.shape[0]
    decoder_input_ids = torch.full((batch_size, 1), model.config.decoder_start_token_id, dtype=torch.long)
    finished = torch.zeros(batch_size, dtype=torch.bool)
    raw_logits, scores = [], []
    for step in range(max_new_tokens):
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
        ).logits[:, -1, :]
        raw_logits.append(logits.clone())
        processed = logits.clone()
        if step < min_new_tokens and eos_token_id is not None:
            processed[:, eos_token_id] = -float("inf")
        scores.append(processed)
        next_tokens = processed.argmax(dim=-1)
        next_tokens = torch.where(finished, torch.full_like(next_tokens, PAD), next_tokens)
        decoder_input_ids = torch.cat([decoder_input_ids, next_tokens[:, None]], dim=-1)
        if eos_token_id is not None:
            finished |= next_tokens == eos_token_id
        if finished.all():
            break
    return decoder_input_ids, raw_logits, scores


# ---------------------------------------------------------------------------------------------------------------
# 1. Greedy search with the cache equals greedy search written out without one
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
def test_greedy_generate_with_cache_matches_handwritten_loop_without_cache(attn_implementation):
    model = make_model(attn_implementation)
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=9)
    new_tokens = 10

    with torch.no_grad():
        out = model.generate(
            input_ids,
            attention_mask=attention_mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
        )
    expected_ids, expected_logits, expected_scores = greedy_without_cache(
        model, input_ids, attention_mask, new_tokens, min_new_tokens=new_tokens
    )

    assert out.sequences.shape == (3, 1 + new_tokens)
    assert torch.equal(out.sequences, expected_ids)
    assert len(out.logits) == len(out.scores) == new_tokens
    assert max_abs_diff(out.logits, expected_logits) < ATOL
    assert max_abs_diff(out.scores, expected_scores) < ATOL
    # The random model must not be degenerate, or the comparison proves little.
    assert len(out.sequences[:, 1:].unique()) > 2


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
def test_greedy_generate_stops_at_eos_like_handwritten_loop(attn_implementation):
    """EOS chosen as a token that row 0 produces mid-way: that row stops there and is padded, the others go on."""
    model = make_model(attn_implementation)
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=9)
    new_tokens = 10
    free_run, _, _ = greedy_without_cache(model, input_ids, attention_mask, new_tokens, eos_token_id=None)
    candidates = [t for t in free_run[0, 2:-2].tolist() if t not in (PAD, BOS)]
    assert candidates, f"row 0 generated nothing usable as an EOS: {free_run[0].tolist()}"
    eos = candidates[0]

    with torch.no_grad():
        out = model.generate(
            input_ids,
            attention_mask=attention_mask,
            max_new_tokens=new_tokens,
            eos_token_id=eos,
            pad_token_id=PAD,
            use_cache=True,
            return_dict_in_generate=True,
            output_logits=True,
        )
    expected_ids, expected_logits, _ = greedy_without_cache(
        model, input_ids, attention_mask, new_tokens, eos_token_id=eos
    )

    assert torch.equal(out.sequences, expected_ids)
    assert max_abs_diff(out.logits, expected_logits) < ATOL
    row0 = out.sequences[0].tolist()
    stop = row0.index(eos)
    assert stop < len(row0) - 1
    assert all(t == PAD for t in row0[stop + 1 :])


# ---------------------------------------------------------------------------------------------------------------
# 2 and 7. Beam search: the cache (reordered between steps) changes nothing
# ---------------------------------------------------------------------------------------------------------------


def beam_generate(model, input_ids, attention_mask, use_cache, **kwargs):
    with torch.no_grad():
        return model.generate(
            input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            use_cache=use_cache,
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )


@pytest.mark.parametrize(
    "attn_implementation, length_penalty, early_stopping",
    [("sdpa", 1.0, True), ("eager", 0.6, False), ("sdpa", 2.0, "never")],
)
def test_beam_search_with_cache_matches_without_cache(attn_implementation, length_penalty, early_stopping):
    model = make_model(attn_implementation)
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=9)
    kwargs = dict(
        num_beams=4,
        num_return_sequences=2,
        max_new_tokens=8,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
    )
    cached = beam_generate(model, input_ids, attention_mask, use_cache=True, **kwargs)
    uncached = beam_generate(model, input_ids, attention_mask, use_cache=False, **kwargs)

    assert cached.sequences.shape[0] == 2 * input_ids.shape[0]
    assert cached.sequences_scores.shape == (2 * input_ids.shape[0],)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert max_abs_diff(cached.sequences_scores, uncached.sequences_scores) < ATOL
    assert len(cached.scores) == len(uncached.scores)
    assert max_abs_diff(cached.scores, uncached.scores) < ATOL
    assert torch.equal(cached.beam_indices, uncached.beam_indices)
    # Returned beams come best first.
    scores = cached.sequences_scores.view(input_ids.shape[0], 2)
    assert bool((scores[:, 0] >= scores[:, 1] - 1e-6).all())


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
def test_wide_long_beam_search_cache_reordering(attn_implementation):
    """Five beams over twenty tokens: beams overtake each other many times, so a cache that were not reordered
    with them (self-attention and cross-attention alike) would show."""
    model = make_model(attn_implementation)
    input_ids, attention_mask, _ = random_batch(batch_size=2, source_length=11, seed=2)
    kwargs = dict(num_beams=5, num_return_sequences=5, max_new_tokens=20, min_new_tokens=20)
    cached = beam_generate(model, input_ids, attention_mask, use_cache=True, **kwargs)
    uncached = beam_generate(model, input_ids, attention_mask, use_cache=False, **kwargs)

    assert cached.sequences.shape == (10, 21)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert torch.equal(cached.beam_indices, uncached.beam_indices)
    assert max_abs_diff(cached.sequences_scores, uncached.sequences_scores) < ATOL
    assert max_abs_diff(cached.scores, uncached.scores) < ATOL
    # The beams must really have been reordered after the first steps: some surviving hypothesis changed slot,
    # so the cache rows had to move with it.
    beam_indices = cached.beam_indices[:, 1:20]
    assert bool((beam_indices[:, 1:] != beam_indices[:, :-1]).any())
    assert len(set(map(tuple, cached.sequences.tolist()))) == 10
    assert len(cached.sequences[:, 1:].unique()) > 4


# ---------------------------------------------------------------------------------------------------------------
# 3. A padded batch generates what each sentence generates alone
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
@pytest.mark.parametrize("num_beams", [1, 4])
def test_padded_batch_generates_what_each_sentence_generates_alone(attn_implementation, num_beams):
    model = make_model(attn_implementation)
    input_ids, attention_mask, _ = random_batch(batch_size=4, source_length=10, seed=5)
    assert bool((attention_mask[:, -1] == 0).any()), "the batch must hold right padding"
    kwargs = dict(num_beams=num_beams, max_new_tokens=8, do_sample=False, return_dict_in_generate=True)
    if num_beams == 1:
        kwargs.update(output_logits=True)
    else:
        kwargs.update(output_scores=True)

    with torch.no_grad():
        batched = model.generate(input_ids, attention_mask=attention_mask, **kwargs)
        for row in range(input_ids.shape[0]):
            length = int(attention_mask[row].sum())
            alone = model.generate(
                input_ids[row : row + 1, :length], attention_mask=attention_mask[row : row + 1, :length], **kwargs
            )
            width = alone.sequences.shape[1]
            assert torch.equal(batched.sequences[row, :width], alone.sequences[0]), f"row {row}"
            # Anything after where the sentence alone stopped is padding.
            assert bool((batched.sequences[row, width:] == PAD).all())
            if num_beams == 1:
                steps = len(alone.logits)
                assert (
                    max_abs_diff([step[row] for step in batched.logits[:steps]], [step[0] for step in alone.logits])
                    < ATOL
                )
            else:
                assert abs(batched.sequences_scores[row].item() - alone.sequences_scores[0].item()) < ATOL


def test_padded_batch_without_attention_mask_differs():
    """The mask is what makes padding harmless: dropping it changes the output (so the test above tests it)."""
    model = make_model("eager")
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=10, seed=5)
    with torch.no_grad():
        masked = model(input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids[:, :3]).logits
        unmasked = model(input_ids, decoder_input_ids=input_ids[:, :3]).logits
    assert torch.allclose(masked[0], unmasked[0], atol=1e-5)  # row 0 has no padding
    assert not torch.allclose(masked[1:], unmasked[1:], atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# 4. Sampling
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
@pytest.mark.parametrize("top_k, top_p", [(10, 1.0), (0, 0.9), (20, 0.8)])
def test_sampling_with_cache_matches_without_cache(attn_implementation, top_k, top_p):
    model = make_model(attn_implementation)
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=9)
    kwargs = dict(
        do_sample=True, top_k=top_k, top_p=top_p, temperature=1.3, num_return_sequences=3, max_new_tokens=10,
        min_new_tokens=10,
    )  # fmt: skip

    outputs = {}
    with torch.no_grad():
        for use_cache in (True, False):
            torch.manual_seed(1234)
            outputs[use_cache] = model.generate(
                input_ids, attention_mask=attention_mask, use_cache=use_cache, **kwargs
            )
        torch.manual_seed(1234)
        again = model.generate(input_ids, attention_mask=attention_mask, use_cache=True, **kwargs)
        torch.manual_seed(4321)
        other_seed = model.generate(input_ids, attention_mask=attention_mask, use_cache=True, **kwargs)

    sequences = outputs[True]
    assert sequences.shape == (3 * 3, 11)
    assert torch.equal(sequences, outputs[False])
    assert torch.equal(sequences, again)
    assert not torch.equal(sequences, other_seed)
    assert bool((sequences[:, 0] == model.config.decoder_start_token_id).all())
    assert bool(((sequences >= 0) & (sequences < VOCAB_SIZE)).all())
    assert not bool((sequences[:, 1:] == EOS).any())  # min_new_tokens forbids EOS
    # num_return_sequences: the copies of one sentence sit next to each other, and sampling makes them differ.
    copies = sequences.view(3, 3, -1)
    assert any(
        not torch.equal(copies[i, 0], copies[i, 1]) or not torch.equal(copies[i, 0], copies[i, 2]) for i in range(3)
    )


@torch.no_grad()
def test_sampling_respects_top_k_one_and_tiny_top_p():
    """top_k=1 and a tiny top_p both leave only the most likely token: sampling becomes greedy search."""
    model = make_model("sdpa")
    input_ids, attention_mask, _ = random_batch()
    greedy = model.generate(
        input_ids, attention_mask=attention_mask, do_sample=False, max_new_tokens=8, min_new_tokens=8
    )
    for kwargs in (dict(top_k=1), dict(top_k=0, top_p=1e-6)):
        torch.manual_seed(7)
        sampled = model.generate(
            input_ids, attention_mask=attention_mask, do_sample=True, max_new_tokens=8, min_new_tokens=8, **kwargs
        )
        assert torch.equal(sampled, greedy), kwargs


# ---------------------------------------------------------------------------------------------------------------
# 5. What runs how often: the encoder once, cross-attention projections once, self-attention once per step
# ---------------------------------------------------------------------------------------------------------------


class CallCounter:
    def __init__(self):
        self.calls = 0
        self.shapes = []

    def __call__(self, module, args, output):
        self.calls += 1
        if args:
            self.shapes.append(tuple(args[0].shape))


def copying_the_encoder_output_per_row(model):
    """The model as transformers' own generate() would run it: the encoder output copied for every beam or sample."""
    model._expand_inputs_for_generation = types.MethodType(GenerationMixin._expand_inputs_for_generation, model)
    return model


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_cross_attention_once_per_source_gives_what_copies_per_beam_give(attn_implementation):
    """Beam search and several samples per source read each source's cross-attention keys and values once: the
    tokens, beam scores, every step's cross-attention weights and the encoder outputs returned are those of the copies
    per row that transformers makes (padded sources included), the encoder's once per source as transformers returns
    them; the cache holds one row per source."""
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=9)
    settings = dict(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=5, min_new_tokens=5,
        return_dict_in_generate=True, output_scores=True, output_attentions=True,
    )  # fmt: skip
    runs = {}
    for name, model in [
        ("shared", make_model(attn_implementation)),
        ("copied", copying_the_encoder_output_per_row(make_model(attn_implementation))),
    ]:
        with torch.no_grad():
            beams = model.generate(num_beams=3, num_return_sequences=2, **settings)
            torch.manual_seed(0)
            samples = model.generate(do_sample=True, num_return_sequences=3, **settings)
        runs[name] = beams, samples
    (beams, samples), (reference_beams, reference_samples) = runs["shared"], runs["copied"]
    assert torch.equal(beams.sequences, reference_beams.sequences)
    assert len(set(map(tuple, beams.sequences[:, 1:].tolist()))) > 2  # the rows differ: the check can fail
    assert max_abs_diff(beams.sequences_scores, reference_beams.sequences_scores) < 1e-5
    for step, reference_step in zip(beams.cross_attentions, reference_beams.cross_attentions, strict=True):
        assert max_abs_diff(step, reference_step) < 1e-5  # each layer's (3 · 3, H, 1, 9) weights
    assert max_abs_diff(beams.encoder_attentions, reference_beams.encoder_attentions) == 0
    assert beams.encoder_attentions[0].shape[0] == 3
    assert torch.equal(samples.sequences, reference_samples.sequences)
    assert max_abs_diff(samples.scores, reference_samples.scores) < 1e-5
    cross_cache = beams.past_key_values.cross_attention_cache.layers[0].keys
    reference_cross_cache = reference_beams.past_key_values.cross_attention_cache.layers[0].keys
    assert cross_cache.shape[0] == 3 and reference_cross_cache.shape[0] == 3 * 3


def test_a_decoder_batch_that_is_no_multiple_of_the_sources_is_refused():
    model = make_model()
    input_ids, attention_mask, labels = random_batch(batch_size=2)
    encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
    with pytest.raises(ValueError, match=r"The decoder has 3 rows and the encoder output 2: give one decoder row"):
        model(encoder_outputs=encoder_outputs, attention_mask=attention_mask, decoder_input_ids=labels[[0, 1, 1]])


@pytest.mark.parametrize("num_beams", [1, 3])
def test_encoder_and_cross_attention_projections_run_once_per_generate(num_beams):
    model = make_model("sdpa")
    input_ids, attention_mask, _ = random_batch(batch_size=2, source_length=9)
    new_tokens = 6
    encoder = model.get_encoder()
    assert encoder is model.model.encoder
    layers = model.model.decoder.layers
    counters = {"encoder": CallCounter()}
    handles = [encoder.register_forward_hook(counters["encoder"])]
    for i, layer in enumerate(layers):
        for name, module in (
            ("cross_k", layer.encoder_attn.k_proj), ("cross_v", layer.encoder_attn.v_proj),
            ("self_k", layer.self_attn.k_proj), ("self_v", layer.self_attn.v_proj),
        ):  # fmt: skip
            counters[f"{name}{i}"] = CallCounter()
            handles.append(module.register_forward_hook(counters[f"{name}{i}"]))
    try:
        for use_cache in (True, False):
            for counter in counters.values():
                counter.calls, counter.shapes = 0, []
            with torch.no_grad():
                out = model.generate(
                    input_ids, attention_mask=attention_mask, num_beams=num_beams, max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens, use_cache=use_cache,
                )  # fmt: skip
            assert out.shape == (2, 1 + new_tokens)
            assert counters["encoder"].calls == 1, use_cache
            for i in range(len(layers)):
                if use_cache:
                    # The encoder output is projected to keys and values at the first step, and reused after; once
                    # per source, not once per beam.
                    assert counters[f"cross_k{i}"].calls == 1
                    assert counters[f"cross_v{i}"].calls == 1
                    assert counters[f"cross_k{i}"].shapes == [(2, 9, 16)]
                    # Self-attention projects only the newest token, once per step.
                    assert counters[f"self_k{i}"].calls == new_tokens
                    assert counters[f"self_v{i}"].calls == new_tokens
                    assert all(shape == (2 * num_beams, 1, 16) for shape in counters[f"self_k{i}"].shapes)
                else:
                    assert counters[f"cross_k{i}"].calls == new_tokens
                    assert all(shape == (2, 9, 16) for shape in counters[f"cross_k{i}"].shapes)
                    assert counters[f"self_k{i}"].calls == new_tokens
                    # Without a cache the whole prefix is projected again at every step.
                    lengths = [shape[1] for shape in counters[f"self_k{i}"].shapes]
                    assert lengths == list(range(1, new_tokens + 1))
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------------------------------------------------------
# 6. The cache object itself
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
@torch.no_grad()
def test_forward_cache_is_encoder_decoder_cache_that_grows_one_per_step(attn_implementation):
    model = make_model(attn_implementation)
    input_ids, attention_mask, labels = random_batch(batch_size=3, source_length=9, target_length=7)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)
    batch_size, target_length = decoder_input_ids.shape
    config = model.config
    head_dim = config.d_model // config.decoder_attention_heads

    full = model(input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, use_cache=False)
    assert full.past_key_values is None
    assert (
        model(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
            return_dict=False,
        )[0].shape
        == full.logits.shape
    )

    prefix = 3
    out = model(
        input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids[:, :prefix], use_cache=True
    )
    cache = out.past_key_values
    assert isinstance(cache, EncoderDecoderCache)
    assert isinstance(cache.self_attention_cache, DynamicCache)
    assert len(cache) == config.decoder_layers
    assert cache.get_seq_length() == prefix
    for layer_idx in range(config.decoder_layers):
        assert cache.is_updated[layer_idx]
        self_layer = cache.self_attention_cache.layers[layer_idx]
        cross_layer = cache.cross_attention_cache.layers[layer_idx]
        assert self_layer.keys.shape == (batch_size, config.decoder_attention_heads, prefix, head_dim)
        assert self_layer.values.shape == (batch_size, config.decoder_attention_heads, prefix, head_dim)
        assert cross_layer.keys.shape == (batch_size, config.decoder_attention_heads, input_ids.shape[1], head_dim)
    assert torch.allclose(out.logits, full.logits[:, :prefix], atol=ATOL)

    encoder_outputs = model.get_encoder()(input_ids, attention_mask=attention_mask)
    cross_keys = [layer.keys.clone() for layer in cache.cross_attention_cache.layers]
    for step in range(prefix, target_length):
        out = model(
            encoder_outputs=encoder_outputs,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids[:, step : step + 1],
            past_key_values=cache,
            use_cache=True,
        )
        assert out.past_key_values is cache
        assert cache.get_seq_length() == step + 1
        for layer_idx in range(config.decoder_layers):
            assert cache.self_attention_cache.get_seq_length(layer_idx) == step + 1
            # The cross-attention cache is written once and then left alone.
            assert torch.equal(cache.cross_attention_cache.layers[layer_idx].keys, cross_keys[layer_idx])
        assert out.logits.shape == (batch_size, 1, config.vocab_size)
        assert max_abs_diff(out.logits[:, 0], full.logits[:, step]) < ATOL

    # Several new tokens at once on top of a cache (as assisted decoding feeds them) need the causal mask too.
    out = model(input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids[:, :2], use_cache=True)
    out = model(
        encoder_outputs=encoder_outputs,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids[:, 2:],
        past_key_values=out.past_key_values,
        use_cache=True,
    )
    assert out.past_key_values.get_seq_length() == target_length
    assert max_abs_diff(out.logits, full.logits[:, 2:]) < ATOL


@torch.no_grad()
def test_generate_returns_cache_only_when_use_cache():
    model = make_model("sdpa")
    input_ids, attention_mask, _ = random_batch(batch_size=2)
    new_tokens = 5
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, return_dict_in_generate=True)

    cached = model.generate(input_ids, attention_mask=attention_mask, use_cache=True, **kwargs)
    assert isinstance(cached.past_key_values, EncoderDecoderCache)
    # The last generated token is never fed back, so the cache holds the start token and the first n - 1.
    assert cached.past_key_values.get_seq_length() == new_tokens
    assert cached.past_key_values.cross_attention_cache.get_seq_length() == input_ids.shape[1]

    uncached = model.generate(input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    assert uncached.past_key_values is None
    assert torch.equal(cached.sequences, uncached.sequences)

    # use_cache=False in the config is the default generate() follows.
    model.config.use_cache = False
    model.generation_config.use_cache = False
    from_config = model.generate(input_ids, attention_mask=attention_mask, **kwargs)
    assert from_config.past_key_values is None
    assert torch.equal(from_config.sequences, cached.sequences)
    out = model(input_ids, attention_mask=attention_mask, decoder_input_ids=cached.sequences[:, :3])
    assert out.past_key_values is None


# ---------------------------------------------------------------------------------------------------------------
# 8. Attention weights
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
@torch.no_grad()
def test_output_attentions_shapes_normalisation_and_masking(attn_implementation):
    model = make_model(attn_implementation, encoder_attention_heads=2, decoder_layers=3)
    input_ids, attention_mask, labels = random_batch(batch_size=3, source_length=9, target_length=6)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)
    (B, S), T = input_ids.shape, decoder_input_ids.shape[1]
    config = model.config

    out = model(
        input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids,
        output_attentions=True,
        use_cache=False,
    )
    assert len(out.encoder_attentions) == config.encoder_layers
    assert len(out.decoder_attentions) == len(out.cross_attentions) == config.decoder_layers
    source_padding = attention_mask == 0  # (B, S)
    assert bool(source_padding.any())
    causal_future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)

    for weights in out.encoder_attentions:
        assert weights.shape == (B, config.encoder_attention_heads, S, S)
        torch.testing.assert_close(weights.sum(-1), torch.ones(B, config.encoder_attention_heads, S))
        assert weights.transpose(1, 3)[source_padding].abs().max() == 0  # no weight on padded keys
    for weights in out.decoder_attentions:
        assert weights.shape == (B, config.decoder_attention_heads, T, T)
        torch.testing.assert_close(weights.sum(-1), torch.ones(B, config.decoder_attention_heads, T))
        assert weights[..., causal_future].abs().max() == 0  # no weight on future tokens
    for weights in out.cross_attentions:
        assert weights.shape == (B, config.decoder_attention_heads, T, S)
        torch.testing.assert_close(weights.sum(-1), torch.ones(B, config.decoder_attention_heads, T))
        assert weights.transpose(1, 3)[source_padding].abs().max() == 0
        assert bool((weights[:, :, :, :2] > 0).all())  # every sentence has at least two real tokens

    # Asking for the weights does not change the result (for SDPA it swaps the fused kernel for the formula).
    plain = model(input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, use_cache=False)
    assert max_abs_diff(plain.logits, out.logits) < ATOL
    assert out.encoder_attentions[0] is not None and plain.encoder_attentions is None

    # Weights requested while generating one token on top of a cache: (B, H, 1, past + 1) and (B, H, 1, S).
    step = model(input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids[:, :4], use_cache=True)
    step = model(
        input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids[:, 4:5],
        past_key_values=step.past_key_values,
        use_cache=True,
        output_attentions=True,
    )
    for self_weights, cross_weights, full_self, full_cross in zip(
        step.decoder_attentions, step.cross_attentions, out.decoder_attentions, out.cross_attentions, strict=True
    ):
        assert self_weights.shape == (B, config.decoder_attention_heads, 1, 5)
        assert cross_weights.shape == (B, config.decoder_attention_heads, 1, S)
        assert max_abs_diff(self_weights[:, :, 0], full_self[:, :, 4, :5]) < ATOL
        assert max_abs_diff(cross_weights[:, :, 0], full_cross[:, :, 4]) < ATOL


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
@pytest.mark.parametrize("use_cache", [True, False])
@torch.no_grad()
def test_generate_with_output_attentions_generates_the_same(attn_implementation, use_cache):
    """Requesting attention weights from generate() must not change what is generated."""
    model = make_model(attn_implementation)
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=9)
    kwargs = dict(
        max_new_tokens=6, min_new_tokens=6, use_cache=use_cache, return_dict_in_generate=True, output_logits=True
    )
    plain = model.generate(input_ids, attention_mask=attention_mask, **kwargs)
    with_weights = model.generate(input_ids, attention_mask=attention_mask, output_attentions=True, **kwargs)
    assert torch.equal(plain.sequences, with_weights.sequences)
    assert max_abs_diff(plain.logits, with_weights.logits) < ATOL
    assert len(with_weights.decoder_attentions) == len(with_weights.cross_attentions) == 6
    assert len(with_weights.encoder_attentions) == model.config.encoder_layers
    last_self = with_weights.decoder_attentions[-1][-1]  # last step, last layer
    expected_queries = 1 if use_cache else 6
    assert last_self.shape == (3, model.config.decoder_attention_heads, expected_queries, 6)


@torch.no_grad()
def test_attention_weights_agree_between_eager_and_sdpa():
    model = make_model("eager")
    input_ids, attention_mask, labels = random_batch()
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)
    kwargs = dict(attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, output_attentions=True)
    eager = model(input_ids, **kwargs)
    model.set_attn_implementation("sdpa")
    assert model.config._attn_implementation == "sdpa"
    sdpa = model(input_ids, **kwargs)
    sdpa_plain = model(input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
    for name in ("encoder_attentions", "decoder_attentions", "cross_attentions"):
        assert max_abs_diff(getattr(eager, name), getattr(sdpa, name)) < 1e-6, name
    assert max_abs_diff(eager.logits, sdpa.logits) < ATOL
    assert max_abs_diff(eager.logits, sdpa_plain.logits) < ATOL


# ---------------------------------------------------------------------------------------------------------------
# 9. Generation across attention kernels, position embeddings and LayerNorm placement
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "position_embedding, normalize_before",
    [("sinusoidal", False), ("learned", True), ("learned", False), ("sinusoidal", True)],
)
@torch.no_grad()
def test_generation_across_variants(position_embedding, normalize_before):
    model = make_model("eager", seed=1, position_embedding=position_embedding, normalize_before=normalize_before)
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=9)
    new_tokens = 8
    kwargs = dict(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, return_dict_in_generate=True, output_logits=True
    )

    results = {}
    for implementation in ATTN_IMPLEMENTATIONS:
        model.set_attn_implementation(implementation)
        assert model.config._attn_implementation == implementation
        for use_cache in (True, False):
            results[implementation, use_cache] = model.generate(
                input_ids, attention_mask=attention_mask, use_cache=use_cache, **kwargs
            )
        beams = [
            model.generate(
                input_ids, attention_mask=attention_mask, num_beams=3, max_new_tokens=6, use_cache=use_cache
            )
            for use_cache in (True, False)
        ]
        assert torch.equal(beams[0], beams[1]), implementation
        results[implementation, "beam"] = beams[0]

    reference = results["eager", True]
    assert reference.sequences.shape == (3, 1 + new_tokens)
    assert len(reference.sequences[:, 1:].unique()) > 2
    for key, result in results.items():
        if key[1] == "beam":
            assert torch.equal(result, results["eager", "beam"]), key
            continue
        assert torch.equal(result.sequences, reference.sequences), key
        assert max_abs_diff(result.logits, reference.logits) < ATOL, key
    expected_ids, expected_logits, _ = greedy_without_cache(
        model, input_ids, attention_mask, new_tokens, min_new_tokens=new_tokens
    )
    assert torch.equal(reference.sequences, expected_ids)
    assert max_abs_diff(reference.logits, expected_logits) < ATOL


@torch.no_grad()
def test_generation_with_tied_embeddings_and_past_sinusoidal_table():
    """The paper's configuration (tied embeddings, sinusoids) generating past `max_position_embeddings`: the table
    is extended on the fly, with the cache and without it alike."""
    model = make_model("sdpa", tie_word_embeddings=True, max_position_embeddings=8)
    assert model.lm_head.weight.data_ptr() == model.model.shared.weight.data_ptr()
    input_ids, attention_mask, _ = random_batch(batch_size=2, source_length=6)
    kwargs = dict(max_new_tokens=12, min_new_tokens=12, return_dict_in_generate=True, output_logits=True)
    cached = model.generate(input_ids, attention_mask=attention_mask, use_cache=True, **kwargs)
    uncached = model.generate(input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    assert cached.sequences.shape == (2, 13)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert max_abs_diff(cached.logits, uncached.logits) < ATOL


@torch.no_grad()
def test_learned_positions_refuse_to_generate_past_their_table():
    model = make_model("sdpa", position_embedding="learned", max_position_embeddings=12)
    input_ids, attention_mask, _ = random_batch(batch_size=2, source_length=6)
    out = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=11, min_new_tokens=11)
    assert out.shape == (2, 12)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=13, min_new_tokens=13)


# ---------------------------------------------------------------------------------------------------------------
# 9. Fast paths: the same numbers, less work
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_logits_to_keep_gives_the_last_positions_of_the_full_logits():
    model = make_model("sdpa")
    input_ids, attention_mask, labels = random_batch()
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)
    full = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    for keep in (1, 3):
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
        kept = model(**inputs, logits_to_keep=keep).logits
        assert kept.shape == (3, keep, VOCAB_SIZE)
        torch.testing.assert_close(kept, full[:, -keep:])
    with pytest.raises(ValueError, match="every target position"):
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, logits_to_keep=1)


def test_generate_from_a_decoder_prompt_asks_only_for_the_last_logits():
    """`generate()` passes `logits_to_keep=1`: with a prompt of several decoder tokens, the first step projects
    only the last position to the vocabulary, and picks the token the full logits pick."""
    model = make_model("sdpa")
    input_ids, attention_mask, labels = random_batch()
    prompt = model.prepare_decoder_input_ids_from_labels(labels)[:, :4]
    shapes = []
    handle = model.lm_head.register_forward_hook(lambda module, args, output: shapes.append(tuple(output.shape)))
    with torch.no_grad():
        try:
            out = model.generate(
                input_ids, attention_mask=attention_mask, decoder_input_ids=prompt, max_new_tokens=3, min_new_tokens=3
            )
        finally:
            handle.remove()
        full = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=prompt).logits
    assert shapes[0] == (3, 1, VOCAB_SIZE)
    assert torch.equal(out[:, :4], prompt)
    assert torch.equal(out[:, 4], full[:, -1].argmax(-1))


def test_beam_reordering_moves_self_attention_keys_and_leaves_cross_attention_ones():
    """Between beam-search steps, only the self-attention cache follows the kept beams: the cross-attention keys
    and values of all beams of one source are equal, so moving them would copy without changing anything."""
    model = make_model("sdpa")
    self_cache, cross_cache = DynamicCache(), DynamicCache()
    for layer in range(2):
        self_cache.update(torch.randn(4, 4, 3, 4), torch.randn(4, 4, 3, 4), layer)
        cross = torch.randn(2, 4, 5, 4).repeat_interleave(2, dim=0)  # 2 sources x 2 beams, beams equal
        cross_cache.update(cross, cross.clone(), layer)
    cache = EncoderDecoderCache(self_cache, cross_cache)
    self_before = [layer.keys.clone() for layer in self_cache.layers]
    cross_before = [layer.keys for layer in cross_cache.layers]
    beam_idx = torch.tensor([1, 1, 2, 3])  # beams stay within their source
    assert model._reorder_cache(cache, beam_idx) is cache
    for layer, before in zip(self_cache.layers, self_before, strict=True):
        assert torch.equal(layer.keys, before[beam_idx])
    for layer, before in zip(cross_cache.layers, cross_before, strict=True):
        assert layer.keys is before  # not copied
        assert torch.equal(layer.keys[beam_idx], before)  # and reordering would not have changed it


def output_shapes(output) -> dict:
    """Every field of a `generate()` output as the nesting of its tensors' shapes, the cache left out: ours keeps the
    cross-attention keys once per source, which is its own business."""

    def shapes(value):
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        return tuple(shapes(item) for item in value)

    return {name: shapes(value) for name, value in output.items() if name not in ("cache", "past_key_values")}


@pytest.mark.parametrize("attn_implementation", ATTN_IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "search",
    [
        dict(),
        dict(num_beams=2),
        dict(num_beams=3, num_return_sequences=2),
        dict(do_sample=True, num_return_sequences=2),
        dict(do_sample=True, num_beams=2),
    ],
    ids=["greedy", "beam", "beam-returning-2", "sample-returning-2", "beam-sample"],
)
def test_generate_returns_the_fields_and_shapes_marian_returns(search, attn_implementation):
    """What `generate(return_dict_in_generate=True, output_*=True)` returns is defined by transformers: every field
    has the shape Marian's has for the same batch, sizes and search (encoder outputs once per source, per-step
    scores, logits, attentions and hidden states once per row). Marian runs eager attention: with SDPA it returns no
    attention weights, where ours computes them with the written-out formula."""
    from transformers import MarianConfig

    ours = make_model(attn_implementation)
    config = ours.config
    marian = AutoModelForSeq2SeqLM.from_config(
        MarianConfig(
            vocab_size=config.vocab_size, d_model=config.d_model, encoder_layers=config.encoder_layers,
            decoder_layers=config.decoder_layers, encoder_attention_heads=config.encoder_attention_heads,
            decoder_attention_heads=config.decoder_attention_heads, encoder_ffn_dim=config.encoder_ffn_dim,
            decoder_ffn_dim=config.decoder_ffn_dim, max_position_embeddings=config.max_position_embeddings,
            pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=BOS, forced_eos_token_id=None,
        ),
        attn_implementation="eager",
    ).eval()  # fmt: skip
    input_ids, attention_mask, _ = random_batch(batch_size=2, source_length=7)
    settings = dict(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=4, min_new_tokens=4,
        return_dict_in_generate=True, output_scores=True, output_logits=True, output_attentions=True,
        output_hidden_states=True, **search,
    )  # fmt: skip
    with torch.no_grad():
        torch.manual_seed(0)
        our_output = ours.generate(**settings)
        torch.manual_seed(0)
        marian_output = marian.generate(**settings)
    assert type(our_output) is type(marian_output)
    our_shapes, marian_shapes = output_shapes(our_output), output_shapes(marian_output)
    assert our_shapes == marian_shapes
    assert our_shapes["encoder_attentions"][0][0] == 2  # one per source, as the issue that found the bug saw


def test_forward_takes_the_cache_under_its_new_and_its_old_name():
    """transformers 5.24 renamed `past_key_values` to `cache`: both names reach the same cache on every supported
    release, and a misspelt name is refused rather than ignored."""
    import transformers.modeling_outputs

    model = make_model()
    input_ids, attention_mask, labels = random_batch()
    common = dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=labels[:, :3], use_cache=True)
    with torch.no_grad():
        first = model(**common)
        prefix = first.cache if "cache" in first else first.past_key_values
        steps = {}
        for name in ("cache", "past_key_values"):
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            model(**{**common, name: cache})
            assert cache.get_seq_length() == 3  # the forward filled the cache it was given
            steps[name] = model(**{**common, "decoder_input_ids": labels[:, 3:4], name: cache}).logits
        assert torch.equal(steps["cache"], steps["past_key_values"])
        assert prefix.get_seq_length() == 3
        with pytest.raises(TypeError, match="caches"):
            model(**common, caches=prefix)
    new_name = "cache" in transformers.modeling_outputs.Seq2SeqLMOutput.__dataclass_fields__
    with pytest.warns(FutureWarning, match="past_key_values") if new_name else contextlib.nullcontext():
        model(**common, past_key_values=EncoderDecoderCache(DynamicCache(), DynamicCache()))
