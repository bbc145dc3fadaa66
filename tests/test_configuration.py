"""The configuration: the paper's defaults, the standard names, and clear errors for impossible values."""

import pytest
from transformers import AutoConfig

from hf_scratch_transformer import ScratchTransformerConfig
from hf_scratch_transformer.configuration_scratch_transformer import AUTO_MAP


def test_defaults_are_the_papers_base_model():
    config = ScratchTransformerConfig()
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (512, 6, 6)
    assert (config.encoder_attention_heads, config.decoder_attention_heads) == (8, 8)
    assert (config.encoder_ffn_dim, config.decoder_ffn_dim) == (2048, 2048)
    assert config.dropout == 0.1
    # The paper's label smoothing is the recipes' to set: the model's loss is plain cross-entropy, as in every
    # Hugging Face model, so that exp(loss) is the perplexity.
    assert config.label_smoothing == 0.0
    assert config.position_embedding == "sinusoidal" and config.scale_embedding and not config.normalize_before
    assert config.activation_function == "relu" and config.tie_word_embeddings and config.is_encoder_decoder


def test_standard_names_resolve_to_the_decoder():
    config = ScratchTransformerConfig(d_model=64, encoder_layers=2, decoder_layers=3, decoder_attention_heads=2)
    assert config.hidden_size == 64
    assert config.num_hidden_layers == 3
    assert config.num_attention_heads == 2


def test_auto_config_builds_and_round_trips(tmp_path):
    config = AutoConfig.for_model("scratch_transformer", vocab_size=8000, d_model=256, encoder_layers=3)
    assert isinstance(config, ScratchTransformerConfig)
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert {**reloaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert reloaded.auto_map == AUTO_MAP
    assert (tmp_path / "configuration_scratch_transformer.py").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"d_model": 100, "encoder_attention_heads": 8},
            r"`d_model` \(100\) must be divisible by `encoder_attention_heads` \(8\)",
        ),
        ({"d_model": 64, "decoder_attention_heads": 5}, r"divisible by `decoder_attention_heads` \(5\)"),
        ({"vocab_size": 0}, r"`vocab_size` must be a positive integer, got 0"),
        ({"encoder_layers": -1}, r"`encoder_layers` must be a positive integer"),
        ({"decoder_ffn_dim": 0}, r"`decoder_ffn_dim` must be a positive integer"),
        ({"max_position_embeddings": 0}, r"`max_position_embeddings` must be a positive integer"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\), got 1.0"),
        ({"attention_dropout": -0.1}, r"`attention_dropout` must be in \[0, 1\)"),
        ({"activation_dropout": 1.5}, r"`activation_dropout` must be in \[0, 1\)"),
        ({"classifier_dropout": 1}, r"`classifier_dropout` must be in \[0, 1\)"),
        ({"label_smoothing": 1.0}, r"`label_smoothing` must be in \[0, 1\)"),
        (
            {"position_embedding": "rotary"},
            r"`position_embedding` must be one of \('sinusoidal', 'learned'\), got 'rotary'",
        ),
        ({"activation_function": "swish-ish"}, r"`activation_function` 'swish-ish' is unknown; choose one of"),
        (
            {"classifier_pooling": "max"},
            r"`classifier_pooling` must be one of \('mean', 'first'\), got 'max'",
        ),
    ],
)
def test_invalid_values_raise_a_value_error_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        ScratchTransformerConfig(**overrides)


def test_attention_pooling_is_refused_with_the_poolings_that_replace_it():
    """A config (or a checkpoint's config.json) asking for the learned-query pooler, which is no longer offered, is
    refused with the measured reason and the poolings to use instead."""
    with pytest.raises(ValueError) as refused:
        ScratchTransformerConfig(classifier_pooling="attention")
    message = str(refused.value)
    assert "`classifier_pooling='attention'`" in message and "is no longer offered" in message, message
    assert "Use 'mean', of equal quality, or 'first'." in message, message
    for pooling in ("mean", "first"):
        assert ScratchTransformerConfig(classifier_pooling=pooling).classifier_pooling == pooling


def test_odd_width_needs_learned_positions():
    with pytest.raises(ValueError, match=r"`d_model` must be even, got 9.*position_embedding='learned'"):
        ScratchTransformerConfig(d_model=9, encoder_attention_heads=3, decoder_attention_heads=3)
    assert (
        ScratchTransformerConfig(
            d_model=9, encoder_attention_heads=3, decoder_attention_heads=3, position_embedding="learned"
        ).d_model
        == 9
    )
