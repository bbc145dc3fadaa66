"""Export a trained translator to CTranslate2, the C++ engine that serves Marian (OPUS-MT) models in production: no
Python or torch at serving time, int8 weights a quarter of the size, batching and beam search built in. The
architecture is the one CTranslate2's Transformer was built for, so the export is a copy of weights, layer by layer,
as CTranslate2's own converter does for Marian and BART.

    from hf_scratch_transformer.export import export_ctranslate2

    export_ctranslate2("runs/multi30k/averaged", "runs/multi30k/ct2", quantization="int8")

    import ctranslate2
    translator = ctranslate2.Translator("runs/multi30k/ct2")
    source = tokenizer.convert_ids_to_tokens(tokenizer("A dog runs.").input_ids)
    (result,) = translator.translate_batch([source], **decoding_options(num_beams=5, max_new_tokens=64))
    text = tokenizer.decode(tokenizer.convert_tokens_to_ids(result.hypotheses[0]), skip_special_tokens=True)

The folder's vocabulary holds the tokenizer's token strings, one per id. Two things differ from CTranslate2's
defaults and are written out here: the sinusoidal table (this model interleaves sin and cos; CTranslate2's built-in
table puts them in halves), and the decoding settings that reproduce `generate()` (`decoding_options`).
`hf-scratch-transformer export-ctranslate2` is the same from the shell. Needs the `export` extra.
"""

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from .extras import missing_extra_says_which
from .modeling_scratch_transformer import (
    ScratchTransformerAttention,
    ScratchTransformerForConditionalGeneration,
    ScratchTransformerLearnedPositions,
    ScratchTransformerSinusoidalPositions,
)

with missing_extra_says_which("export", "Exporting to CTranslate2"):
    from ctranslate2.converters.converter import Converter
    from ctranslate2.specs import common_spec, transformer_spec

QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "float16", "bfloat16", "float32")
ACTIVATIONS = {  # config.activation_function -> CTranslate2's; the others have no CTranslate2 kernel
    "relu": common_spec.Activation.RELU,
    "gelu": common_spec.Activation.GELU,
    "gelu_python": common_spec.Activation.GELU,
    "gelu_new": common_spec.Activation.GELUTanh,
    "gelu_fast": common_spec.Activation.GELUTanh,
    "gelu_pytorch_tanh": common_spec.Activation.GELUTanh,
    "quick_gelu": common_spec.Activation.GELUSigmoid,
    "silu": common_spec.Activation.SWISH,
    "swish": common_spec.Activation.SWISH,
    "tanh": common_spec.Activation.Tanh,
}
LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's, which every layer norm of the model uses


def decoding_options(num_beams: int = 1, max_new_tokens: int = 64, **options) -> dict:
    """`Translator.translate_batch` options that decode as `model.generate(num_beams=..., max_new_tokens=...)` does
    (greedy or beam search, no sampling): CTranslate2 counts the end token in `max_decoding_length` and stops at
    `min_decoding_length` 1 by default, returns 2 beams by default, and leaves the end token out; `generate()` may
    end at once and normalises beam scores by length as CTranslate2's `length_penalty=1` does."""
    return {
        "beam_size": num_beams,
        "max_decoding_length": max_new_tokens,
        "min_decoding_length": 0,
        "length_penalty": 1.0,
        "num_hypotheses": 1,
        **options,
    }


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float32).cpu().numpy()


def copy_linear(spec, linear: torch.nn.Linear) -> None:
    spec.weight = to_numpy(linear.weight)
    if linear.bias is not None:
        spec.bias = to_numpy(linear.bias)


def copy_layer_norm(spec, layer_norm: torch.nn.LayerNorm) -> None:
    spec.gamma, spec.beta = to_numpy(layer_norm.weight), to_numpy(layer_norm.bias)


def copy_attention(spec, attention: ScratchTransformerAttention, layer_norm: torch.nn.LayerNorm) -> None:
    """CTranslate2 fuses q, k and v into one matrix in self-attention, and k and v in cross-attention."""
    projections = [attention.q_proj, attention.k_proj, attention.v_proj]
    weights = [to_numpy(projection.weight) for projection in projections]
    biases = [to_numpy(projection.bias) for projection in projections]
    if attention.is_cross_attention:
        spec.linear[0].weight, spec.linear[0].bias = weights[0], biases[0]
        spec.linear[1].weight, spec.linear[1].bias = np.concatenate(weights[1:]), np.concatenate(biases[1:])
    else:
        spec.linear[0].weight, spec.linear[0].bias = np.concatenate(weights), np.concatenate(biases)
    copy_linear(spec.linear[-1], attention.out_proj)
    copy_layer_norm(spec.layer_norm, layer_norm)


def copy_stack(spec, stack) -> None:
    """Embeddings, positions, layers and the final layer norm (pre-LN) of the encoder or the decoder."""
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings  # the encoder's: a list
    embeddings.weight = to_numpy(stack.embed_tokens.weight)
    spec.scale_embeddings = stack.embed_scale != 1.0
    positions = stack.embed_positions
    if isinstance(positions, ScratchTransformerSinusoidalPositions):
        spec.position_encodings.encodings = to_numpy(positions.table)  # interleaved sin/cos, written out
    elif isinstance(positions, ScratchTransformerLearnedPositions):
        spec.position_encodings.encodings = to_numpy(positions.weight)
    for layer_spec, layer in zip(spec.layer, stack.layers, strict=True):
        copy_attention(layer_spec.self_attention, layer.self_attn, layer.self_attn_layer_norm)
        if hasattr(layer, "encoder_attn"):
            copy_attention(layer_spec.attention, layer.encoder_attn, layer.encoder_attn_layer_norm)
        copy_linear(layer_spec.ffn.linear_0, layer.feed_forward.fc1)
        copy_linear(layer_spec.ffn.linear_1, layer.feed_forward.fc2)
        copy_layer_norm(layer_spec.ffn.layer_norm, layer.final_layer_norm)
    if stack.layer_norm is not None:
        copy_layer_norm(spec.layer_norm, stack.layer_norm)


def transformer_spec_of(model: ScratchTransformerForConditionalGeneration):
    """The CTranslate2 `TransformerSpec` holding the model's weights."""
    config = model.config
    activation = ACTIVATIONS[config.activation_function]
    encoder = transformer_spec.TransformerEncoderSpec(
        config.encoder_layers, config.encoder_attention_heads, pre_norm=config.normalize_before,
        activation=activation,
    )  # fmt: skip
    decoder = transformer_spec.TransformerDecoderSpec(
        config.decoder_layers, config.decoder_attention_heads, pre_norm=config.normalize_before,
        activation=activation,
    )  # fmt: skip
    copy_stack(encoder, model.model.encoder)
    copy_stack(decoder, model.model.decoder)
    copy_linear(decoder.projection, model.lm_head)
    spec = transformer_spec.TransformerSpec(encoder, decoder)
    spec.config.layer_norm_epsilon = LAYER_NORM_EPSILON
    return spec


def vocabulary(tokenizer, vocab_size: int) -> list[str]:
    """One token string per id; ids the tokenizer does not use (a vocabulary rounded up) get placeholders."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(min(len(tokenizer), vocab_size))))
    return tokens + [f"<unused_{index}>" for index in range(len(tokens), vocab_size)]


class ScratchTransformerConverter(Converter):
    """CTranslate2's converter interface (`convert(output_dir, quantization=...)`) over a loaded model."""

    def __init__(self, model: ScratchTransformerForConditionalGeneration, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def _load(self):
        config = self.model.config
        spec = transformer_spec_of(self.model)
        tokens = vocabulary(self.tokenizer, config.vocab_size)
        spec.register_source_vocabulary(tokens)
        spec.register_target_vocabulary(tokens)
        spec.config.bos_token = tokens[config.bos_token_id]
        spec.config.eos_token = tokens[config.eos_token_id if isinstance(config.eos_token_id, int) else 0]
        spec.config.unk_token = self.tokenizer.unk_token or tokens[0]
        spec.config.decoder_start_token = tokens[config.decoder_start_token_id]
        return spec


def export_ctranslate2(
    model_dir: str | Path, output_dir: str | Path, quantization: str | None = None, force: bool = False
) -> str:
    """Write the translator saved in `model_dir` (a run's folder, or a Hub id) as a CTranslate2 model folder that
    `ctranslate2.Translator(output_dir)` loads; `quantization`: one of QUANTIZATIONS, or None for float32. Returns
    the output folder."""
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}: CTranslate2 takes {', '.join(QUANTIZATIONS)}, or None.")
    if (Path(model_dir) / "adapter_config.json").is_file():
        raise ValueError(
            f"{model_dir} is a PEFT adapter: merge it into its base model first, "
            "AutoPeftModelForSeq2SeqLM.from_pretrained(adapter_dir).merge_and_unload().save_pretrained(merged_dir) "
            "(and the tokenizer beside it), then export merged_dir."
        )
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, trust_remote_code=False).eval()
    if not isinstance(model, ScratchTransformerForConditionalGeneration):
        raise ValueError(f"{model_dir} holds a {type(model).__name__}, not a scratch_transformer translator.")
    if model.config.activation_function not in ACTIVATIONS:
        raise ValueError(
            f"activation_function={model.config.activation_function!r} has no CTranslate2 kernel; it has "
            f"{', '.join(ACTIVATIONS)}. Train the model with one of those to serve it with CTranslate2."
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    converter = ScratchTransformerConverter(model, tokenizer)
    return converter.convert(str(output_dir), quantization=quantization, force=force)


__all__ = ["QUANTIZATIONS", "decoding_options", "export_ctranslate2"]
