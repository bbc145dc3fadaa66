"""The model is the paper's: parity with torch.nn.Transformer, attention kernels that agree, masks that hold,
and clear errors for bad input."""

import pytest
import torch
from conftest import BOS, VOCAB_SIZE, random_batch, tiny_config
from torch import nn

from hf_scratch_transformer import (
    ScratchTransformerForConditionalGeneration,
    ScratchTransformerForSequenceClassification,
    ScratchTransformerModel,
)
from hf_scratch_transformer.modeling_scratch_transformer import (
    attention_masks,
    causal_padding_mask,
    eager_attention_forward,
    padding_mask,
    sinusoidal_table,
)

# ---------------------------------------------------------------------------------------------------------------
# Parity with torch.nn.Transformer
# ---------------------------------------------------------------------------------------------------------------


def copy_attention(ours, reference: nn.MultiheadAttention) -> None:
    """nn.MultiheadAttention packs q, k and v into one (3E, E) matrix; ours keeps three named projections."""
    for projection, weight, bias in zip(
        (ours.q_proj, ours.k_proj, ours.v_proj),
        reference.in_proj_weight.chunk(3),
        reference.in_proj_bias.chunk(3),
        strict=True,
    ):
        projection.weight.copy_(weight)
        projection.bias.copy_(bias)
    ours.out_proj.load_state_dict(reference.out_proj.state_dict())


def copy_into_reference(model: ScratchTransformerModel, reference: nn.Transformer) -> None:
    """Randomise the reference, then copy its weights into our model, layer by layer."""
    for parameter in reference.parameters():
        nn.init.normal_(parameter, std=0.3)
    for ours, theirs in zip(model.encoder.layers, reference.encoder.layers, strict=True):
        copy_attention(ours.self_attn, theirs.self_attn)
        ours.feed_forward.fc1.load_state_dict(theirs.linear1.state_dict())
        ours.feed_forward.fc2.load_state_dict(theirs.linear2.state_dict())
        ours.self_attn_layer_norm.load_state_dict(theirs.norm1.state_dict())
        ours.final_layer_norm.load_state_dict(theirs.norm2.state_dict())
    for ours, theirs in zip(model.decoder.layers, reference.decoder.layers, strict=True):
        copy_attention(ours.self_attn, theirs.self_attn)
        copy_attention(ours.encoder_attn, theirs.multihead_attn)
        ours.feed_forward.fc1.load_state_dict(theirs.linear1.state_dict())
        ours.feed_forward.fc2.load_state_dict(theirs.linear2.state_dict())
        ours.self_attn_layer_norm.load_state_dict(theirs.norm1.state_dict())
        ours.encoder_attn_layer_norm.load_state_dict(theirs.norm2.state_dict())
        ours.final_layer_norm.load_state_dict(theirs.norm3.state_dict())
    if model.config.normalize_before:
        model.encoder.layer_norm.load_state_dict(reference.encoder.norm.state_dict())
        model.decoder.layer_norm.load_state_dict(reference.decoder.norm.state_dict())


def embedded(stack, ids: torch.Tensor) -> torch.Tensor:
    """What our stack feeds its first layer: scaled token embeddings plus positions (nn.Transformer has neither)."""
    return stack.embed_tokens(ids) * stack.embed_scale + stack.embed_positions(ids.shape[1])


@pytest.mark.parametrize("normalize_before", [False, True], ids=["post-LN (paper)", "pre-LN"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@torch.no_grad()
def test_parity_with_torch_nn_transformer(normalize_before, attn_implementation):
    config = tiny_config(normalize_before=normalize_before)
    model = ScratchTransformerModel._from_config(config, attn_implementation=attn_implementation).eval()
    reference = nn.Transformer(  # its encoder and decoder layer sizes are one number: ours are equal here
        d_model=config.d_model,
        nhead=config.encoder_attention_heads,
        num_encoder_layers=config.encoder_layers,
        num_decoder_layers=config.decoder_layers,
        dim_feedforward=config.encoder_ffn_dim,
        dropout=0.0,
        batch_first=True,
        norm_first=normalize_before,
    )
    if not normalize_before:
        # nn.Transformer always adds a final LayerNorm; the paper's post-LN stack ends with the last layer's own.
        reference.encoder.norm = None
        reference.decoder.norm = None
    copy_into_reference(model, reference)
    # Train mode (dropout is 0) keeps nn.Transformer off its fast path, which zeroes the outputs at padding.
    reference.train()

    input_ids, attention_mask, labels = random_batch()
    decoder_input_ids = torch.cat([torch.full((3, 1), config.decoder_start_token_id), labels[:, :-1]], dim=1)
    ours = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)

    expected_memory = reference.encoder(embedded(model.encoder, input_ids), src_key_padding_mask=attention_mask == 0)
    torch.testing.assert_close(ours.encoder_last_hidden_state, expected_memory, atol=1e-5, rtol=0)

    target_length = decoder_input_ids.shape[1]
    expected_decoder = reference.decoder(
        embedded(model.decoder, decoder_input_ids),
        expected_memory,
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(target_length),
        tgt_is_causal=True,
        memory_key_padding_mask=attention_mask == 0,
    )
    torch.testing.assert_close(ours.last_hidden_state, expected_decoder, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Attention kernels and masks
# ---------------------------------------------------------------------------------------------------------------


def seq2seq_inputs():
    input_ids, attention_mask, labels = random_batch()
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


@pytest.mark.parametrize("position_embedding", ["sinusoidal", "learned"])
@pytest.mark.parametrize("normalize_before", [False, True])
@torch.no_grad()
def test_eager_and_sdpa_agree(position_embedding, normalize_before):
    config = tiny_config(position_embedding=position_embedding, normalize_before=normalize_before)
    model = ScratchTransformerForConditionalGeneration(config).eval()
    inputs = seq2seq_inputs()
    model.set_attn_implementation("eager")
    eager = model(**inputs)
    model.set_attn_implementation("sdpa")
    sdpa = model(**inputs)
    torch.testing.assert_close(sdpa.logits, eager.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(sdpa.encoder_last_hidden_state, eager.encoder_last_hidden_state, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@torch.no_grad()
def test_mask_without_padding_equals_no_mask(attn_implementation):
    """A mask of all ones builds no additive mask at all (the fast path of every decoding step): the same outputs as
    a mask the model does build, for a batch where only the other rows have padding."""
    model = ScratchTransformerForConditionalGeneration._from_config(
        tiny_config(), attn_implementation=attn_implementation
    ).eval()
    inputs = seq2seq_inputs()
    assert not bool(inputs["attention_mask"].all()) and bool(inputs["attention_mask"][0].all())
    batch = model(**inputs).logits
    first = {name: tensor[:1] for name, tensor in inputs.items()}
    without_mask = {name: tensor for name, tensor in first.items() if name != "attention_mask"}
    torch.testing.assert_close(model(**first).logits, batch[:1], atol=1e-5, rtol=0)
    torch.testing.assert_close(model(**without_mask).logits, batch[:1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@torch.no_grad()
def test_padded_source_tokens_change_nothing(attn_implementation):
    model = ScratchTransformerForConditionalGeneration._from_config(
        tiny_config(), attn_implementation=attn_implementation
    ).eval()
    inputs = seq2seq_inputs()
    before = model(**inputs).logits
    changed = inputs["input_ids"].clone()
    changed[inputs["attention_mask"] == 0] = 42  # any token, where the mask says padding
    after = model(**{**inputs, "input_ids": changed}).logits
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    # ...while a real token does change the output, so the test can fail.
    changed[0, 0] = (changed[0, 0] + 1) % VOCAB_SIZE
    assert not torch.allclose(model(**{**inputs, "input_ids": changed}).logits, before, atol=1e-4)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@torch.no_grad()
def test_future_target_tokens_never_change_earlier_logits(attn_implementation):
    model = ScratchTransformerForConditionalGeneration._from_config(
        tiny_config(), attn_implementation=attn_implementation
    ).eval()
    inputs = seq2seq_inputs()
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(inputs.pop("labels"))
    before = model(**inputs, decoder_input_ids=decoder_input_ids).logits
    position = 3
    changed = decoder_input_ids.clone()
    changed[:, position] = (changed[:, position] + 7) % VOCAB_SIZE
    after = model(**inputs, decoder_input_ids=changed).logits
    torch.testing.assert_close(after[:, :position], before[:, :position], atol=1e-6, rtol=0)
    assert not torch.allclose(after[:, position:], before[:, position:], atol=1e-4)


@torch.no_grad()
def test_decoder_padding_mask_hides_padded_targets():
    model = ScratchTransformerForConditionalGeneration(tiny_config()).eval()
    inputs = seq2seq_inputs()
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(inputs.pop("labels"))
    decoder_attention_mask = torch.ones_like(decoder_input_ids)
    decoder_attention_mask[0, 2] = 0  # a padding token in the middle of row 0
    before = model(**inputs, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask)
    changed = decoder_input_ids.clone()
    changed[0, 2] = 55
    after = model(**inputs, decoder_input_ids=changed, decoder_attention_mask=decoder_attention_mask)
    # Every position other than the padded one itself is blind to it.
    keep = torch.ones(decoder_input_ids.shape[1], dtype=torch.bool)
    keep[2] = False
    torch.testing.assert_close(after.logits[0, keep], before.logits[0, keep], atol=1e-6, rtol=0)


@torch.no_grad()
def test_inputs_embeds_equal_input_ids():
    """Prompt tuning feeds embeddings: the sqrt(d_model) scale must apply to them too."""
    model = ScratchTransformerForConditionalGeneration(tiny_config()).eval()
    inputs = seq2seq_inputs()
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(inputs.pop("labels"))
    from_ids = model(**inputs, decoder_input_ids=decoder_input_ids).logits
    embed = model.get_input_embeddings()
    from_embeds = model(
        inputs_embeds=embed(inputs["input_ids"]),
        attention_mask=inputs["attention_mask"],
        decoder_inputs_embeds=embed(decoder_input_ids),
    ).logits
    torch.testing.assert_close(from_embeds, from_ids, atol=1e-6, rtol=0)


@torch.no_grad()
def test_sinusoidal_positions_follow_the_paper_and_extend_past_the_table():
    table = sinusoidal_table(50, 8)
    position, i = 7, 1
    assert table[position, 2 * i].item() == pytest.approx(
        torch.sin(torch.tensor(position / 10000 ** (2 * i / 8))).item()
    )
    assert table[position, 2 * i + 1].item() == pytest.approx(
        torch.cos(torch.tensor(position / 10000 ** (2 * i / 8))).item()
    )
    model = ScratchTransformerForConditionalGeneration(tiny_config(max_position_embeddings=8)).eval()
    long_source = torch.randint(3, VOCAB_SIZE, (1, 20))  # longer than the 8 precomputed positions
    positions = model.model.encoder.embed_positions(20)
    torch.testing.assert_close(positions, sinusoidal_table(20, 16))
    out = model(input_ids=long_source, decoder_input_ids=long_source[:, :3])
    assert torch.isfinite(out.logits).all()


# ---------------------------------------------------------------------------------------------------------------
# Bad input: a clear error that says what was wrong and what to do
# ---------------------------------------------------------------------------------------------------------------


def test_token_ids_outside_the_vocabulary_are_refused():
    model = ScratchTransformerForConditionalGeneration(tiny_config())
    inputs = seq2seq_inputs()
    too_big = inputs["input_ids"].clone()
    too_big[0, 0] = VOCAB_SIZE
    with pytest.raises(ValueError, match=r"`input_ids` holds ids outside the vocabulary \[0, 99\): \[99\]"):
        model(**{**inputs, "input_ids": too_big})
    negative = inputs["input_ids"].clone()
    negative[1, 1] = -5
    with pytest.raises(ValueError, match=r"outside the vocabulary.*\[-5\]"):
        model(**{**inputs, "input_ids": negative})
    bad_labels = inputs["labels"].clone()
    bad_labels[0, 0] = 1000
    with pytest.raises(ValueError, match=r"`labels` holds ids outside the vocabulary"):
        model(**{**inputs, "labels": bad_labels})
    bad_decoder = torch.full((3, 2), VOCAB_SIZE + 1)
    with pytest.raises(ValueError, match=r"`decoder_input_ids` holds ids"):
        model(input_ids=inputs["input_ids"], decoder_input_ids=bad_decoder)


def test_learned_positions_refuse_sources_longer_than_the_table():
    model = ScratchTransformerForConditionalGeneration(
        tiny_config(position_embedding="learned", max_position_embeddings=8)
    )
    with pytest.raises(ValueError, match=r"12 tokens is longer than max_position_embeddings=8.*truncation=True"):
        model(input_ids=torch.randint(3, VOCAB_SIZE, (1, 12)), decoder_input_ids=torch.ones(1, 2, dtype=torch.long))


def test_attention_mask_of_the_wrong_shape_is_refused():
    model = ScratchTransformerForConditionalGeneration(tiny_config())
    inputs = seq2seq_inputs()
    with pytest.raises(ValueError, match=r"`attention_mask` has shape \(3, 8\) but the inputs need \(3, 9\)"):
        model(**{**inputs, "attention_mask": inputs["attention_mask"][:, :8]})
    with pytest.raises(ValueError, match=r"`decoder_attention_mask` has shape \(3, 2\)"):
        model(**inputs, decoder_attention_mask=torch.ones(3, 2))
    classifier = ScratchTransformerForSequenceClassification(tiny_config())
    with pytest.raises(ValueError, match=r"`attention_mask` has shape \(9,\)"):
        classifier(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"][0])


@torch.no_grad()
def test_missing_decoder_inputs_are_the_source_shifted_right_or_explained():
    """As BART's bare model: without decoder inputs, the decoder reads the source shifted right; with nothing to
    shift, a clear error."""
    model = ScratchTransformerModel(tiny_config()).eval()
    input_ids, attention_mask, _ = random_batch()
    shifted = torch.cat([torch.full_like(input_ids[:, :1], BOS), input_ids[:, :-1]], dim=1)
    torch.testing.assert_close(
        model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state,
        model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=shifted).last_hidden_state,
    )
    embeds = model.get_input_embeddings()(input_ids)
    with pytest.raises(ValueError, match=r"needs `decoder_input_ids`.*get_encoder"):
        model(inputs_embeds=embeds, attention_mask=attention_mask)
    with pytest.raises(ValueError, match=r"exactly one of `input_ids` and `inputs_embeds`"):
        model(decoder_input_ids=input_ids)


@torch.no_grad()
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize(
    "past_length, target_length, padded",
    [(0, 5, False), (0, 5, True), (4, 1, False), (4, 1, True), (3, 2, False), (3, 2, True)],
    ids=["training", "training-padded", "step", "step-padded", "prompt-after-cache", "prompt-after-cache-padded"],
)
def test_the_masks_each_kernel_gets_equal_the_written_out_rule(implementation, past_length, target_length, padded):
    """Where `attention_masks` leaves a mask out (nothing padded; one new token; SDPA's own causal mask), the
    kernel still computes what eager attention computes with the reference masks: `causal_padding_mask` for
    decoder self-attention, `padding_mask` for the source."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    config = tiny_config()
    config._attn_implementation = implementation
    kernel = sdpa_attention_forward if implementation == "sdpa" else eager_attention_forward
    batch, heads, head_dim, source_length = 2, 2, 8, 6
    keys_length = past_length + target_length
    decoder_mask = torch.ones(batch, keys_length, dtype=torch.long)
    source_mask = torch.ones(batch, source_length, dtype=torch.long)
    if padded:
        decoder_mask[0, :2] = 0  # left padding, as generate() pads a batch of decoder prompts
        source_mask[1, -2:] = 0
    embeds = torch.randn(batch, target_length, config.d_model)
    encoder_hidden_states = torch.randn(batch, source_length, config.d_model)

    def attend(mask, reference_mask, is_causal, query_length, key_length):
        module = nn.Module().eval()
        module.is_causal = is_causal
        query = torch.randn(batch, heads, query_length, head_dim)
        key, value = torch.randn(2, batch, heads, key_length, head_dim)
        got = kernel(module, query, key, value, mask, scaling=head_dim**-0.5, dropout=0.0)[0]
        expected = eager_attention_forward(module, query, key, value, reference_mask, scaling=head_dim**-0.5)[0]
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)

    self_mask, cross_mask = attention_masks(
        config, embeds, decoder_mask if padded else None, output_attentions=False,
        encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=source_mask, past_length=past_length,
    )  # fmt: skip
    reference = causal_padding_mask(target_length, past_length, decoder_mask, torch.float32, torch.device("cpu"))
    attend(self_mask, reference, True, target_length, keys_length)
    attend(cross_mask, padding_mask(source_mask, torch.float32), False, target_length, source_length)
    assert (self_mask is None) == (not padded and (target_length == 1 or implementation == "sdpa" and not past_length))
    assert (cross_mask is None) == (not padded)

    encoder_mask, no_cross_mask = attention_masks(config, encoder_hidden_states, source_mask, output_attentions=False)
    assert no_cross_mask is None
    attend(encoder_mask, padding_mask(source_mask, torch.float32), False, source_length, source_length)


def test_kernels_registered_with_transformers_get_their_masks_from_transformers():
    """Kernels other than eager and SDPA (flash attention on a GPU) are looked up in transformers'
    AttentionInterface, with masks from its AttentionMaskInterface. A kernel registered by name goes the same way."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import sdpa_mask

    calls = []

    def recording_kernel(*args, **kwargs):
        calls.append(args[1].shape)  # the query
        return sdpa_attention_forward(*args, **kwargs)

    AttentionInterface.register("scratch_test_kernel", recording_kernel)
    AttentionMaskInterface.register("scratch_test_kernel", sdpa_mask)
    model = ScratchTransformerForConditionalGeneration(tiny_config()).eval()
    inputs = seq2seq_inputs()
    expected = model(**inputs).logits
    expected_ids = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=5)

    model.set_attn_implementation("scratch_test_kernel")
    torch.testing.assert_close(model(**inputs).logits, expected, atol=1e-5, rtol=0)
    assert len(calls) == 3 * 2  # encoder self, decoder self, decoder cross: 2 layers each
    ids = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=5)
    assert torch.equal(ids, expected_ids)
