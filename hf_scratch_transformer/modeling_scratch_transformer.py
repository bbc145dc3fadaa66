"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), written from scratch as a Hugging Face model.

Everything in it is built around one formula, scaled dot-product attention (section 3.2.1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

The file reads in forward order, as the paper does:

1. scaled dot-product attention, the formula above, written out                 (section 3.2.1)
2. multi-head attention with `q_proj`, `k_proj`, `v_proj`, `out_proj`         (section 3.2.2)
3. the position-wise feed-forward network, `fc1` then `fc2`                     (section 3.3)
4. sinusoidal or learned positions                                              (section 3.5)
5. the encoder layer and the decoder layer                                      (section 3.1)
6. the pretrained base class: initialisation and loading (as in Marian's file, before the stacks, which are
   pretrained models of their own)
7. the masks (which keys each query may see: not padding, and in the decoder not the future), and the encoder and
   decoder stacks: embeddings and positions, then the layers                    (sections 3.1, 3.2.3, 3.4)
8. the bare encoder-decoder model
9. the heads: language modelling with label smoothing (translation, `generate()`; section 5.4) and sequence
   classification
10. what the paper has no part in, gathered at the end so that a reader of the paper can skip it: the key/value
    cache's two names and the decoder's cache, the attention kernels (SDPA, flash) and the masks each one takes,
    beam search's one encoder output per source, and the input checks that turn torch's errors into fixes

Shapes use B = batch, T = target (query) length, S = source (key) length, H = heads, D = head dimension,
E = d_model, V = vocabulary.

Only `torch`, `transformers` and the configuration file beside this one are imported, so that this file can be
copied next to a checkpoint and loaded with `trust_remote_code=True`.
"""

import math
import warnings

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
    SequenceClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import logging

from .configuration_scratch_transformer import ScratchTransformerConfig

logger = logging.get_logger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# 1. Scaled dot-product attention
# ---------------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, softmax(Q K^T / sqrt(d_k)) V, written out.

    query (B, H, T, D), key and value (B, H, S, D), attention_mask additive (B|1, 1, T|1, S) or None.
    Returns the output as (B, T, H, D), the layout every `transformers` attention kernel returns, and the
    attention weights (B, H, T, S).
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (B, H, T, S)
    if attention_mask is not None:
        scores = scores + attention_mask
    # Softmax in float32: in half precision the exponentials of large scores overflow.
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value)  # (B, H, T, D)
    return output.transpose(1, 2).contiguous(), weights  # (B, T, H, D)


# ---------------------------------------------------------------------------------------------------------------
# 2. Multi-head attention
# ---------------------------------------------------------------------------------------------------------------


class ScratchTransformerAttention(nn.Module):
    """Multi-head attention: h heads attend in parallel, each over its own d_model / h slice (section 3.2.2).

    Used three ways: encoder self-attention, masked decoder self-attention (`is_causal`), and decoder
    cross-attention over the encoder output (`is_cross_attention`). While generating, the decoder's keys and values
    are kept from step to step (`cached_keys_and_values`, at the end of the class).
    """

    def __init__(
        self,
        config: ScratchTransformerConfig,
        num_heads: int,
        is_causal: bool = False,
        is_cross_attention: bool = False,
        layer_idx: int | None = None,
    ):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = config.d_model // num_heads
        self.scaling = self.head_dim**-0.5  # the 1 / sqrt(d_k) that keeps dot products from saturating the softmax
        self.dropout = config.attention_dropout
        # `is_causal` is read by the SDPA and flash kernels, which then mask the future themselves.
        self.is_causal = is_causal
        self.is_cross_attention = is_cross_attention
        self.layer_idx = layer_idx

        self.q_proj = nn.Linear(config.d_model, config.d_model)
        self.k_proj = nn.Linear(config.d_model, config.d_model)
        self.v_proj = nn.Linear(config.d_model, config.d_model)
        self.out_proj = nn.Linear(config.d_model, config.d_model)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        batch_size, length, _ = states.shape
        return states.view(batch_size, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, D)

    def keys_and_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of `source` (B, S, E), split into heads: (B, H, S, D) each."""
        return self._split_heads(self.k_proj(source)), self._split_heads(self.v_proj(source))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        key_value_states: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, T, E) are the queries; keys and values come from `key_value_states` (B, S, E) for
        cross-attention, from `hidden_states` otherwise. Returns (B, T, E) and the weights (B, H, T, S) when
        `output_attentions`."""
        batch_size, query_length, _ = hidden_states.shape
        source = key_value_states if self.is_cross_attention else hidden_states
        query = self._split_heads(self.q_proj(hidden_states))  # (B, H, T, D)
        if cache is None:
            key, value = self.keys_and_values(source)  # (B, H, S, D) each
        else:
            key, value = self.cached_keys_and_values(source, cache)
        # Beam search keeps each source's cross-attention keys and values once for its k rows (section 10).
        query = rows_of_a_source_together(query, key.shape[0])  # (B, H, T, D), or (B / k, H, k·T, D)

        attention = attention_function(self.config, output_attentions)
        dropout = self.dropout if self.training else 0.0
        output, weights = attention(self, query, key, value, attention_mask, dropout=dropout, scaling=self.scaling)
        # (B, T, H, D) -> (B, T, E): the heads concatenated. Rows of a source, (B / k, k·T, H, D), alike.
        output = output.reshape(batch_size, query_length, -1)
        weights = weights_per_row(weights, batch_size) if output_attentions else None  # (B, H, T, S)
        return self.out_proj(output), weights

    def cached_keys_and_values(
        self, source: torch.Tensor, cache: EncoderDecoderCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values while generating, kept in an `EncoderDecoderCache`: self-attention projects this step's
        positions and appends them to those of the earlier steps; cross-attention projects the encoder output at the
        first step and reuses it after, since it does not change. (B, H, S, D) each, S every position so far."""
        if self.is_cross_attention and cache.is_updated.get(self.layer_idx):
            cached = cache.cross_attention_cache.layers[self.layer_idx]
            return cached.keys, cached.values
        key, value = self.keys_and_values(source)
        if not self.is_cross_attention:
            return cache.self_attention_cache.update(key, value, self.layer_idx)
        cache.is_updated[self.layer_idx] = True
        return cache.cross_attention_cache.update(key, value, self.layer_idx)


# ---------------------------------------------------------------------------------------------------------------
# 3. Position-wise feed-forward network
# ---------------------------------------------------------------------------------------------------------------


class ScratchTransformerFeedForward(nn.Module):
    """FFN(x) = max(0, x W1 + b1) W2 + b2, applied to every position alone (section 3.3)."""

    def __init__(self, config: ScratchTransformerConfig, ffn_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, ffn_dim)
        self.activation = ACT2FN[config.activation_function]
        self.activation_dropout = config.activation_dropout
        self.fc2 = nn.Linear(ffn_dim, config.d_model)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.activation(self.fc1(hidden_states))  # (B, T, ffn_dim)
        hidden_states = F.dropout(hidden_states, p=self.activation_dropout, training=self.training)
        return self.fc2(hidden_states)  # (B, T, E)


# ---------------------------------------------------------------------------------------------------------------
# 4. Positions
# ---------------------------------------------------------------------------------------------------------------


def sinusoids(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i / d_model)), PE(pos, 2i + 1) = cos(pos / 10000^(2i / d_model)).

    Wavelengths form a geometric progression from 2 pi to 10000 * 2 pi, so PE(pos + k) is a linear function of
    PE(pos) and relative offsets are easy to attend to (section 3.5). positions (L,) -> (L, dim), float32.
    """
    inverse_wavelengths = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) * (-math.log(10000.0) / dim)
    )  # (dim / 2,)
    angles = positions.to(torch.float32)[:, None] * inverse_wavelengths  # (L, dim / 2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (L, dim): sin at 2i, cos at 2i + 1


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """The sinusoids of positions 0 .. num_positions - 1: (num_positions, dim), float32."""
    return sinusoids(torch.arange(num_positions), dim)


class ScratchTransformerSinusoidalPositions(nn.Module):
    """Fixed sinusoidal positions. The table is computed, not learned, so it is a non-persistent buffer that
    checkpoints do not hold (`_init_weights` recomputes it after loading). The formula has no length limit: positions
    past `max_position_embeddings` are computed when asked for."""

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__()
        # In the dtype the model is built in, as its weights are (`from_pretrained(dtype=...)` sets the default).
        table = sinusoidal_table(config.max_position_embeddings, config.d_model).to(torch.get_default_dtype())
        self.register_buffer("table", table, persistent=False)

    def forward(self, length: int, past_length: int | torch.Tensor = 0) -> torch.Tensor:
        """Positions past_length .. past_length + length - 1 as a (length, E) tensor: rows of the table, or computed
        past its end and where `past_length` is a 0-dim tensor (a static cache's length, `static_cache_length`)."""
        if isinstance(past_length, int) and past_length + length <= self.table.shape[0]:
            return self.table[past_length : past_length + length]
        return sinusoids(torch.arange(length, device=self.table.device) + past_length, self.table.shape[1])


class ScratchTransformerLearnedPositions(nn.Embedding):
    """One trained vector per position, as in the seed thread (the paper found it "nearly identical", Table 3,
    row E). Unlike sinusoids it cannot go past `max_position_embeddings`."""

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__(config.max_position_embeddings, config.d_model)

    def forward(self, length: int, past_length: int | torch.Tensor = 0) -> torch.Tensor:
        """Positions past_length .. past_length + length - 1 as a (length, E) tensor; `past_length` a 0-dim tensor
        with a static cache, whose whole length the decoder checks against the table instead."""
        if isinstance(past_length, int):
            check_position_count(past_length + length, self.num_embeddings)
        positions = torch.arange(length, device=self.weight.device) + past_length
        return super().forward(positions)  # (length, E)


def make_positions(config: ScratchTransformerConfig) -> nn.Module:
    if config.position_embedding == "learned":
        return ScratchTransformerLearnedPositions(config)
    return ScratchTransformerSinusoidalPositions(config)


# ---------------------------------------------------------------------------------------------------------------
# 5. Encoder and decoder layers
# ---------------------------------------------------------------------------------------------------------------


class ScratchTransformerLayer(GradientCheckpointingLayer):
    """What encoder and decoder layers share: the residual connection around each sub-layer, with LayerNorm after
    the sum in the paper's post-LN, LayerNorm(x + Dropout(Sublayer(x))), or before the sub-layer with
    `normalize_before` (pre-LN), x + Dropout(Sublayer(LayerNorm(x)))."""

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__()
        self.normalize_before = config.normalize_before
        self.dropout = config.dropout

    def sublayer_input(self, layer_norm: nn.LayerNorm, hidden_states: torch.Tensor) -> torch.Tensor:
        return layer_norm(hidden_states) if self.normalize_before else hidden_states

    def sublayer_output(
        self, layer_norm: nn.LayerNorm, residual: torch.Tensor, sublayer_output: torch.Tensor
    ) -> torch.Tensor:
        hidden_states = residual + F.dropout(sublayer_output, p=self.dropout, training=self.training)
        return hidden_states if self.normalize_before else layer_norm(hidden_states)


class ScratchTransformerEncoderLayer(ScratchTransformerLayer):
    """Self-attention over the source, then the feed-forward network (section 3.1, left of Figure 1)."""

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__(config)
        self.self_attn = ScratchTransformerAttention(config, config.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.feed_forward = ScratchTransformerFeedForward(config, config.encoder_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(config.d_model)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        residual = hidden_states
        attention_output, attention_weights = self.self_attn(
            self.sublayer_input(self.self_attn_layer_norm, hidden_states),
            attention_mask=attention_mask,
            output_attentions=output_attentions,
        )
        hidden_states = self.sublayer_output(self.self_attn_layer_norm, residual, attention_output)

        residual = hidden_states
        feed_forward_output = self.feed_forward(self.sublayer_input(self.final_layer_norm, hidden_states))
        hidden_states = self.sublayer_output(self.final_layer_norm, residual, feed_forward_output)
        return hidden_states, attention_weights


class ScratchTransformerDecoderLayer(ScratchTransformerLayer):
    """Masked self-attention over the target so far, cross-attention over the encoder output, then the
    feed-forward network (section 3.1, right of Figure 1)."""

    def __init__(self, config: ScratchTransformerConfig, layer_idx: int):
        super().__init__(config)
        heads = config.decoder_attention_heads
        self.self_attn = ScratchTransformerAttention(config, heads, is_causal=True, layer_idx=layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.encoder_attn = ScratchTransformerAttention(config, heads, is_cross_attention=True, layer_idx=layer_idx)
        self.encoder_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.feed_forward = ScratchTransformerFeedForward(config, config.decoder_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(config.d_model)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        residual = hidden_states
        attention_output, self_attention_weights = self.self_attn(
            self.sublayer_input(self.self_attn_layer_norm, hidden_states),
            attention_mask=attention_mask,
            cache=cache,
            output_attentions=output_attentions,
        )
        hidden_states = self.sublayer_output(self.self_attn_layer_norm, residual, attention_output)

        residual = hidden_states
        attention_output, cross_attention_weights = self.encoder_attn(
            self.sublayer_input(self.encoder_attn_layer_norm, hidden_states),
            attention_mask=encoder_attention_mask,
            key_value_states=encoder_hidden_states,
            cache=cache,
            output_attentions=output_attentions,
        )
        hidden_states = self.sublayer_output(self.encoder_attn_layer_norm, residual, attention_output)

        residual = hidden_states
        feed_forward_output = self.feed_forward(self.sublayer_input(self.final_layer_norm, hidden_states))
        hidden_states = self.sublayer_output(self.final_layer_norm, residual, feed_forward_output)
        return hidden_states, self_attention_weights, cross_attention_weights


# ---------------------------------------------------------------------------------------------------------------
# 6. The pretrained base class: initialisation and loading
# ---------------------------------------------------------------------------------------------------------------


class ScratchTransformerPreTrainedModel(PreTrainedModel):
    """Initialisation, and what `from_pretrained` needs to know about the model.

    Initialisation (the paper does not state its own): linear layers Xavier-uniform (variance 2 / (fan_in +
    fan_out)), as its reference code and `nn.Transformer` do, or N(0, init_std) when `init_std` is set (the
    BART/Marian convention), with zero biases; token embeddings N(0, d_model^-1/2) when `scale_embedding`, so that
    after the sqrt(d_model) scale they have unit variance, the scale of the sinusoids they are added to (as fairseq
    does), else N(0, init_std or 0.02); the padding row zero; LayerNorm weight 1, bias 0; sinusoidal tables recomputed.
    `from_pretrained` runs this for weights a checkpoint lacks, and for the sinusoidal buffers it never holds.
    """

    config_class = ScratchTransformerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ScratchTransformerEncoderLayer", "ScratchTransformerDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = False
    # `torch.compile(model, fullgraph=True)` traces every forward without a break: nothing on the default path reads
    # a tensor's value into Python under compilation, and a static cache's length stays a tensor. transformers'
    # tests and `generate(cache_implementation="static")` with `compile_config` rely on this flag.
    _can_compile_fullgraph = True
    # The encoder and the decoder read the one embedding of the paper's shared source and target vocabulary: these
    # ties (also listed in `_tied_weights_keys`, where transformers looks when saving) hold whatever
    # `tie_word_embeddings` says. See `get_expanded_tied_weights_keys`.
    _shared_vocabulary_keys: dict[str, str] = {}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = 0.02 if self.config.init_std is None else self.config.init_std  # for embeddings without the scale
        if isinstance(module, ScratchTransformerSinusoidalPositions):
            init.copy_(module.table, sinusoidal_table(*module.table.shape))
        elif isinstance(module, ScratchTransformerLearnedPositions):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            embedding_std = self.config.d_model**-0.5 if self.config.scale_embedding else std
            init.normal_(module.weight, mean=0.0, std=embedding_std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.Linear):
            if self.config.init_std is None:
                init.xavier_uniform_(module.weight)
            else:
                init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        """transformers ties what `_tied_weights_keys` declares only when `tie_word_embeddings` is set (BART unties
        all three of its embeddings without it). Here that flag decides the output projection alone, as it always
        has for this model and the checkpoints saved with it: the encoder and the decoder keep reading `shared`."""
        ties = super().get_expanded_tied_weights_keys(all_submodels)
        return ties if all_submodels else {**self._shared_vocabulary_keys, **ties}

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with messages that say why a checkpoint does not fit its config. The
        behaviour stays transformers' own, so that code written for Marian or BART works unchanged:

        - weights of another shape raise transformers' `RuntimeError`, here naming each weight with both shapes
          (unless `ignore_mismatched_sizes=True` re-initialises them on purpose);
        - layers the config has and the checkpoint lacks are initialised anew, and layers the checkpoint has and
          the config lacks are dropped: both are listed in the loading info, and a warning says which layers and
          how to restore the config (dropping layers can be meant: a smaller student starts from a larger model).
        """
        return_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, loading_info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        except SafetensorError as error:
            source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            raise OSError(
                f"The weights file of {source} cannot be read ({error}): it was cut short or damaged, by an "
                "interrupted download, copy or save. Copy or save it again; for a Hub model, pass force_download=True."
            ) from error
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            # Load again, tolerating the mismatch, only to learn which weights did not fit.
            _, loading_info = super().from_pretrained(
                *args, output_loading_info=True, **{**kwargs, "ignore_mismatched_sizes": True}
            )
            mismatched = "; ".join(
                f"{key}: checkpoint {tuple(saved)}, config {tuple(expected)}"
                for key, saved, expected in loading_info["mismatched_keys"]
            )
            raise RuntimeError(
                f"The checkpoint's weights do not fit its config ({mismatched}). The config.json was edited or "
                "belongs to another checkpoint: restore the config that was saved with these weights, or pass "
                "ignore_mismatched_sizes=True to re-initialise those weights on purpose."
            ) from error
        for kind, where in (("missing_keys", "missing from the checkpoint"), ("unexpected_keys", "not in the model")):
            layer_keys = sorted(key for key in loading_info[kind] if ".layers." in key)
            if layer_keys:
                logger.warning(
                    f"The checkpoint and the config disagree on the number of layers: {len(layer_keys)} layer "
                    f"weights, e.g. {layer_keys[:2]}, are {where}, so those layers are "
                    f"{'new and random' if kind == 'missing_keys' else 'dropped'}. If that is not meant, restore the "
                    "`encoder_layers` / `decoder_layers` the checkpoint was saved with."
                )
        return (model, loading_info) if return_loading_info else model


# ---------------------------------------------------------------------------------------------------------------
# 7. Masks, and the encoder and decoder stacks
# ---------------------------------------------------------------------------------------------------------------


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Turn a boolean "may attend" mask into one added to the attention scores: 0 where allowed, the dtype's
    minimum where not. The minimum rather than -inf keeps a row with no allowed key finite (uniform, not NaN)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S) with 1 for tokens and 0 for padding -> additive (B, 1, 1, S), broadcast over heads and queries."""
    return additive_mask(attention_mask[:, None, None, :].bool(), dtype)


def causal_padding_mask(
    query_length: int,
    past_length: int | torch.Tensor,
    attention_mask: torch.Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
    key_length: int | None = None,
) -> torch.Tensor:
    """Additive (B|1, 1, T, K) mask for decoder self-attention: query i, at position past + i, sees the keys at
    positions 0 .. past + i that are not padding. Masking the future keeps training, where every target position
    is computed at once, equal to generation, where the future does not exist yet (section 3.2.3).

    K is past + T, or `key_length` for a static cache, which always returns all its slots: those after past + i
    are not filled yet, and the same rule hides them. `past_length` is then a 0-dim tensor on the device.

    This is the written-out rule; `attention_masks` (section 10) passes it, or an exact shortcut, to the kernels."""
    key_length = past_length + query_length if key_length is None else key_length
    key_positions = torch.arange(key_length, device=device)
    query_positions = torch.arange(query_length, device=device) + past_length
    allowed = (key_positions[None, :] <= query_positions[:, None])[None, None]  # (1, 1, T, K)
    if attention_mask is not None:
        # A static cache has slots after the mask's past + T positions: in the future, hidden above whatever this
        # pad says.
        attention_mask = F.pad(attention_mask, (0, key_length - attention_mask.shape[-1]), value=1)
        allowed = allowed & attention_mask[:, None, None, :].bool()  # (B, 1, T, K)
    return additive_mask(allowed, dtype)


class ScratchTransformerStack(ScratchTransformerPreTrainedModel):
    """What the encoder and the decoder share: token embeddings times sqrt(d_model) plus positions (sections 3.4,
    3.5), a stack of N layers, and in pre-LN a final LayerNorm (the residual stream is otherwise never normalised).

    Each stack is a pretrained model of its own, as Marian's and BART's are: its embedding module is its own, tied
    to the model's `shared` one by `_tied_weights_keys`, and transformers finds it through `get_input_embeddings`
    (`enable_input_require_grads`, which gradient checkpointing with frozen embeddings needs, hooks it there)."""

    def __init__(self, config: ScratchTransformerConfig, layers: list[nn.Module]):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_positions = make_positions(config)
        self.layers = nn.ModuleList(layers)
        self.layer_norm = nn.LayerNorm(config.d_model) if config.normalize_before else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def embed(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, past_length: int | torch.Tensor = 0
    ) -> torch.Tensor:
        """Token embeddings times sqrt(d_model) (section 3.4) plus the positions from `past_length` on (section 3.5),
        then dropout (section 5.4): (B, L, E). The scale applies to `inputs_embeds` too, so that
        `inputs_embeds=model.get_input_embeddings()(input_ids)` (what prompt tuning feeds) equals `input_ids`."""
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, L, E)
        positions = self.embed_positions(inputs_embeds.shape[1], past_length).to(inputs_embeds.dtype)  # (L, E)
        return F.dropout(inputs_embeds * self.embed_scale + positions, p=self.config.dropout, training=self.training)


class ScratchTransformerEncoder(ScratchTransformerStack):
    """`encoder_layers` encoder layers over the embedded source (section 3.1, left of Figure 1)."""

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__(config, [ScratchTransformerEncoderLayer(config) for _ in range(config.encoder_layers)])

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple:
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        check_inputs(self.config, input_ids, inputs_embeds, attention_mask)
        hidden_states = self.embed(input_ids, inputs_embeds)  # (B, S, E)
        mask, _ = attention_masks(self.config, hidden_states, attention_mask, output_attentions)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attention_weights = layer(hidden_states, mask, output_attentions=output_attentions)
            if output_attentions:
                all_attentions += (attention_weights,)
        if self.layer_norm is not None:
            hidden_states = self.layer_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        output = BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )
        return output if return_dict is not False else output.to_tuple()


class ScratchTransformerDecoder(ScratchTransformerStack):
    """`decoder_layers` decoder layers over the embedded target, each attending to the encoder output (section 3.1,
    right of Figure 1). While generating it reads only the newest token, and the earlier ones from `cache`."""

    def __init__(self, config: ScratchTransformerConfig):
        layers = [ScratchTransformerDecoderLayer(config, layer_idx=i) for i in range(config.decoder_layers)]
        super().__init__(config, layers)
        self.gradient_checkpointing = False  # set, with the layers' own, by `gradient_checkpointing_enable()`

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: EncoderDecoderCache | None = None,
    ) -> BaseModelOutputWithPastAndCrossAttentions | tuple:
        """`past_key_values` is `cache` under its name before transformers 5.24."""
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        cache, use_cache = decoder_cache(self, one_cache(cache, past_key_values), use_cache)
        # The positions decoded before this call; with a static cache a 0-dim tensor that is never read as a number.
        past_length = cache.get_seq_length() if cache is not None else 0
        check_inputs(
            self.config, input_ids, inputs_embeds, attention_mask, encoder_hidden_states, encoder_attention_mask,
            cache, past_length,
        )  # fmt: skip
        hidden_states = self.embed(input_ids, inputs_embeds, past_length)  # (B, T, E)
        self_mask, cross_mask = attention_masks(
            self.config, hidden_states, attention_mask, output_attentions, encoder_hidden_states,
            encoder_attention_mask, cache, past_length,
        )  # fmt: skip

        all_hidden_states = () if output_hidden_states else None
        all_self_attentions = () if output_attentions else None
        all_cross_attentions = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, self_attention_weights, cross_attention_weights = layer(
                hidden_states,
                self_mask,
                encoder_hidden_states,  # positional, so that gradient checkpointing saves it for the backward pass
                encoder_attention_mask=cross_mask,
                cache=cache,
                output_attentions=output_attentions,
            )
            if output_attentions:
                all_self_attentions += (self_attention_weights,)
                all_cross_attentions += (cross_attention_weights,)
        if self.layer_norm is not None:
            hidden_states = self.layer_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        output = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            attentions=all_self_attentions,
            cross_attentions=all_cross_attentions,
            **{CACHE_FIELD: cache if use_cache else None},
        )
        return output if return_dict is not False else output.to_tuple()


# ---------------------------------------------------------------------------------------------------------------
# 8. The bare encoder-decoder
# ---------------------------------------------------------------------------------------------------------------


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher forcing: the decoder reads <start> y1 .. y(n-1) and predicts y1 .. yn. Ignored labels (-100)
    become padding."""
    decoder_input_ids = labels.new_empty(labels.shape)
    decoder_input_ids[:, 1:] = labels[:, :-1]
    decoder_input_ids[:, 0] = decoder_start_token_id
    return decoder_input_ids.masked_fill(decoder_input_ids == -100, pad_token_id)


class ScratchTransformerModel(ScratchTransformerPreTrainedModel):
    """The bare encoder-decoder: one token embedding shared by encoder and decoder (the paper's shared source and
    target vocabulary), returning the decoder's last hidden states. `AutoModel` builds this class."""

    _shared_vocabulary_keys = {
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
    }
    _tied_weights_keys = _shared_vocabulary_keys

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.encoder = ScratchTransformerEncoder(config)
        self.decoder = ScratchTransformerDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = self.encoder.embed_tokens = self.decoder.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
    ) -> Seq2SeqModelOutput | tuple:
        """`past_key_values` is `cache` under its name before transformers 5.24."""
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            # As BART's bare model: without decoder inputs the decoder reads the source shifted right (the denoising
            # set-up), so that `AutoModel.from_pretrained(...)(input_ids)` runs as it does for BART.
            check_source_can_be_shifted(input_ids)
            decoder_input_ids = shift_tokens_right(input_ids, self.config.pad_token_id, decoder_start(self.config))

        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            cache=one_cache(cache, past_key_values),
            inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        output = Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            **{CACHE_FIELD: getattr(decoder_outputs, CACHE_FIELD)},
        )
        return output if return_dict is not False else output.to_tuple()


# ---------------------------------------------------------------------------------------------------------------
# 9. Heads
# ---------------------------------------------------------------------------------------------------------------


class LabelSmoothedCrossEntropy(torch.autograd.Function):
    """Token-level cross-entropy with label smoothing (section 5.4), summed over the labels that are not -100: the
    value and gradient of `F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum", label_smoothing=eps)`,
    in less memory. That one keeps the log-probabilities (N, V) for its backward, whose two steps each build another
    (N, V) tensor: at vocabulary width, the largest tensors of a training step. The gradient is known in closed form,
    softmax(logits) - q, with q the smoothed target distribution (1 - eps on the label, plus eps / V everywhere), so
    the forward keeps one log-sum-exp per position and the backward writes that one (N, V) gradient in place."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
        """logits (N, V), labels (N,) -> the summed loss, a scalar."""
        kept = labels != -100
        targets = labels.masked_fill(~kept, 0)
        log_normaliser = torch.logsumexp(logits, dim=-1)  # (N,): log p_v = logit_v - log_normaliser
        target_logits = logits.gather(1, targets[:, None]).squeeze(1)  # (N,)
        losses = (1.0 - smoothing) * (log_normaliser - target_logits)  # -log p_label
        if smoothing:
            losses = losses + smoothing * (log_normaliser - logits.mean(dim=-1))  # -mean_v log p_v: vs uniform
        ctx.save_for_backward(logits, targets, kept, log_normaliser)  # `logits` is the model's output: no copy
        ctx.smoothing = smoothing
        return (losses * kept).sum()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, targets, kept, log_normaliser = ctx.saved_tensors
        smoothing = ctx.smoothing
        grad = (logits - log_normaliser[:, None]).exp_()  # softmax(logits), (N, V)
        grad.scatter_add_(1, targets[:, None], torch.full_like(log_normaliser[:, None], smoothing - 1.0))
        if smoothing:
            grad.sub_(smoothing / logits.shape[-1])
        grad.mul_((grad_output * kept)[:, None])  # ignored positions get no gradient
        return grad, None, None


class ScratchTransformerForConditionalGeneration(ScratchTransformerPreTrainedModel, GenerationMixin):
    """The encoder-decoder with its output projection to the vocabulary, tied to the shared embedding
    (section 3.4): translation, summarisation, denoising. `AutoModelForSeq2SeqLM` builds this class, and
    `generate()` (greedy, beam search, sampling) comes from `GenerationMixin`; what it needs from the model is at
    the end of the class.

    The loss is token-level cross-entropy with `config.label_smoothing`, summed over the labels that are not
    -100 and divided by their number, or by `num_items_in_batch` when the `Trainer` passes it: then gradient
    accumulation and several processes give exactly the loss of one big batch.
    """

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}
    # Tells `Trainer` to pass `num_items_in_batch` (the forward takes it by name, and no **kwargs).
    accepts_loss_kwargs = True

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__(config)
        self.model = ScratchTransformerModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Used by `DataCollatorForSeq2Seq` to build `decoder_input_ids` in the data loader."""
        return shift_tokens_right(labels, self.config.pad_token_id, decoder_start(self.config))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        logits_to_keep: int = 0,
        past_key_values: Cache | None = None,
    ) -> Seq2SeqLMOutput | tuple:
        """`past_key_values` is `cache` under its name before transformers 5.24. `logits_to_keep`: the last positions
        to project to the vocabulary, 0 for all; `generate()` asks for 1, so that a decoder prompt of several tokens
        is not projected whole at the first step."""
        if labels is not None:
            check_labels(
                labels, input_ids, inputs_embeds, decoder_input_ids, decoder_inputs_embeds, logits_to_keep, self.config
            )
            use_cache = False  # teacher forcing sees the whole target at once: there is nothing to cache
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)

        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=one_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.lm_head(outputs.last_hidden_state[:, -logits_to_keep:])  # (B, T, V); [-0:] keeps all

        loss = None
        if labels is not None:
            summed = LabelSmoothedCrossEntropy.apply(
                logits.float().view(-1, logits.shape[-1]),  # float32: a half-precision log-softmax loses the loss
                labels.view(-1),
                self.config.label_smoothing,
            )
            num_items = num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum()
            loss = summed / torch.as_tensor(num_items, device=summed.device).clamp(min=1)

        # The bare model's outputs, with the logits (and the loss) in place of its last hidden state.
        kept = {name: value for name, value in outputs.items() if name != "last_hidden_state"}
        output = Seq2SeqLMOutput(loss=loss, logits=logits, **kept)
        return output if return_dict is not False else output.to_tuple()

    def generate(self, *args, **kwargs):
        """`GenerationMixin.generate`, after checking the counts that transformers lets through to a
        ZeroDivisionError deep inside it: at least one beam and one returned sequence."""
        generation_config = kwargs.get("generation_config") or self.generation_config
        for name in ("num_beams", "num_return_sequences"):
            value = kwargs.get(name, getattr(generation_config, name, None))
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be at least 1, got {value} (1 beam is greedy decoding or sampling).")
        return super().generate(*args, **kwargs)

    @staticmethod
    def create_masks_for_generate(attention_mask: torch.Tensor | None = None, **generation_metadata):
        """With a static cache, `generate()` asks the model to build the decoder's masks ahead of each step, in the
        kernels' 4D formats. This decoder builds its masks itself, from the (B, past + T) mask or none, static caches
        included (see `attention_masks`), so that mask is passed on as it is. The batch size, positions and the
        cache that `generate()` passes along, for other models' masks, are not needed."""
        return attention_mask

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        """Beam search (and `num_return_sequences`) decodes `expand_size` rows per source. `GenerationMixin` copies
        the encoder output and its mask for every row, and each copy is then projected to cross-attention keys and
        values in every layer: `expand_size` identical copies. Here the decoder's inputs are expanded and the
        encoder's are not; the cross-attention of a source's rows reads its one copy (`rows_of_a_source_together`).
        Kernels other than eager and SDPA (flash attention) get transformers' masks, built for equal batches: they
        keep the copies."""
        if self.config._attn_implementation not in ("eager", "sdpa"):
            return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)
        once_per_source = {
            key: model_kwargs.pop(key) for key in ("encoder_outputs", "attention_mask") if key in model_kwargs
        }
        input_ids, model_kwargs = super()._expand_inputs_for_generation(expand_size, False, input_ids, **model_kwargs)
        return input_ids, {**model_kwargs, **once_per_source}

    @staticmethod
    def _reorder_cache(cache: EncoderDecoderCache, beam_idx: torch.Tensor) -> EncoderDecoderCache:
        """Beam search, between steps: the self-attention keys and values follow the beams that were kept. The
        cross-attention ones stay where they are: `beam_idx` only moves beams within their own source, whose encoder
        output is held once (`_expand_inputs_for_generation`), or copied per beam for flash attention, all alike."""
        cache.self_attention_cache.reorder_cache(beam_idx)
        return cache


class ScratchTransformerEncoderModel(nn.Module):
    """The shared embedding and the encoder, without the decoder: all a classifier runs. Its parameter names
    match `ScratchTransformerModel`'s, so a checkpoint of the encoder-decoder loads into the classifier."""

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__()
        self.shared = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.encoder = ScratchTransformerEncoder(config)


class ScratchTransformerForSequenceClassification(ScratchTransformerPreTrainedModel):
    """The encoder, a pooling of its states (the mean over the tokens, or the first token), dropout and a linear
    `classifier` (the name PEFT saves with an adapter). `AutoModelForSequenceClassification` builds this class.

    The loss follows `config.problem_type`, as in `transformers`: mean squared error for one label (regression),
    cross-entropy for single-label classification, binary cross-entropy for multi-label classification.
    """

    _shared_vocabulary_keys = {"model.encoder.embed_tokens.weight": "model.shared.weight"}
    _tied_weights_keys = _shared_vocabulary_keys
    # The loss is a mean over the batch, not a sum to be divided by `num_items_in_batch`: this tells `Trainer` to
    # average over processes and accumulation steps itself.
    accepts_loss_kwargs = False
    # A checkpoint of the encoder-decoder loads without complaint: the classifier has no use for its decoder.
    _keys_to_ignore_on_load_unexpected = [r"^model\.decoder\.", r"^lm_head\."]

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__(config)
        self.model = ScratchTransformerEncoderModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.shared = self.model.encoder.embed_tokens = value

    def get_encoder(self) -> ScratchTransformerEncoder:
        return self.model.encoder

    def pool(self, hidden_states: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, S, E) -> (B, E): the mean of the non-pad states, or the first state."""
        if self.config.classifier_pooling == "first":
            return hidden_states[:, 0]
        if token_mask is None:
            return hidden_states.mean(dim=1)
        weights = token_mask.to(hidden_states.dtype)[:, :, None]  # (B, S, 1)
        return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
    ) -> SequenceClassifierOutput | tuple:
        """`cache` and `past_key_values` are refused (see `check_no_cache`): the classifier is the encoder alone."""
        check_no_cache(one_cache(cache, past_key_values))
        if attention_mask is None and input_ids is not None and self.config.pad_token_id is not None:
            # Without a mask, padding is read off the ids, so that a sentence's label does not depend on how much
            # padding its batch needed.
            attention_mask = (input_ids != self.config.pad_token_id).long()
        encoder_outputs = self.model.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        pooled = self.pool(encoder_outputs.last_hidden_state, attention_mask)
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)

        loss = None
        if labels is not None:
            loss = self.classification_loss(logits, labels)
        output = SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )
        return output if return_dict is not False else output.to_tuple()

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type is None:
            if self.config.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        check_classification_labels(labels, logits.shape[0], self.config)
        if self.config.problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float().view(logits.squeeze(-1).shape))
        if self.config.problem_type == "single_label_classification":
            return F.cross_entropy(logits.float(), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


# ---------------------------------------------------------------------------------------------------------------
# 10. What the paper has no part in: the cache, the attention kernels and their masks, beam search's one encoder
#     output per source, and the input checks
# ---------------------------------------------------------------------------------------------------------------

# transformers 5.24 renamed the key/value cache from `past_key_values` to `cache`: `generate()` passes it to `forward`
# under the new name, and the output classes hold it in a field of that name (the old one stays a deprecated alias
# until 5.40). The forwards take it under either name, so that every release from 5.23 on can call them, and fill
# the output field that the installed release defines.
CACHE_FIELD = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"


def one_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache a forward was given: under its name since transformers 5.24, `cache`, or before, `past_key_values`.

    Where the installed transformers says `cache`, the old name alone works with a FutureWarning, as for its own
    models. Given both, `cache` counts, as in transformers' models, unless it is still empty: PEFT's prefix tuning
    hands its prefix over as `past_key_values` at every step, beside the `cache` that `generate()` starts empty and
    that then holds the prefix and the tokens so far.
    """
    if past_key_values is None:
        return cache
    if cache is None:
        if CACHE_FIELD == "cache":
            warnings.warn("`past_key_values` is deprecated: pass the cache as `cache`.", FutureWarning, stacklevel=3)
        return past_key_values
    return cache if cache.get_seq_length() else past_key_values


def decoder_cache(
    decoder: ScratchTransformerDecoder, cache: EncoderDecoderCache | None, use_cache: bool | None
) -> tuple[EncoderDecoderCache | None, bool]:
    """The cache the decoder attends to and fills, and whether it returns it. A new one when `use_cache` asks for
    it; one passed in is attended to even when `use_cache` is off: PEFT prefix tuning hands its trained prefix to the
    decoder as cached keys and values, also when teacher forcing with labels."""
    use_cache = use_cache if use_cache is not None else decoder.config.use_cache
    if decoder.gradient_checkpointing and decoder.training and torch.is_grad_enabled():
        # The backward pass runs each layer again, which would append its keys and values a second time.
        if cache is not None:
            raise ValueError(
                "A key/value cache (e.g. a PEFT prefix) cannot be used with gradient checkpointing: recomputing "
                "a layer in the backward pass would fill it twice. Disable gradient checkpointing, or use LoRA."
            )
        use_cache = False
    if use_cache and cache is None:
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    return cache, use_cache


def static_cache_length(cache: EncoderDecoderCache | None) -> int | None:
    """The number of slots of a static (preallocated) self-attention cache, which returns all of them at every step;
    None for a cache that grows, such as `DynamicCache`, or no cache. A static cache gives its length so far as a
    0-dim tensor on the device (0 before its first step), which is never read as a number: reading it would wait
    for the device, and `torch.compile` would specialise on its value."""
    if cache is None:
        return None
    length = cache.self_attention_cache.get_max_length(0)
    return length if length > 0 else None  # -1: no maximum, the cache grows


def attention_function(config: ScratchTransformerConfig, output_attentions: bool):
    """The kernel that computes softmax(Q K^T / sqrt(d_k)) V: "eager" is ours (section 1); "sdpa",
    "flash_attention_2", ... are those `transformers` registered. Fused kernels never materialise the weights, so a
    request for them runs the written-out formula."""
    if output_attentions:
        return eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)


def attention_masks(
    config: ScratchTransformerConfig,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    output_attentions: bool,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    cache: EncoderDecoderCache | None = None,
    past_length: int | torch.Tensor = 0,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The one place that decides which mask each attention kernel gets: (self-attention mask, cross-attention
    mask), the second None in the encoder (no `encoder_hidden_states`).

    Eager attention (which a request for attention weights always runs) and SDPA take the additive masks of
    section 7. Two shortcuts leave a mask out where it would change nothing, so that SDPA can take its faster paths:
    - no padding mask when nothing is padding (adding zeros changes nothing). Finding that out reads the mask, so it
      is only done where the mask is already on the host (the CPU): on a GPU it would wait for the device at every
      step, and under `torch.compile` it would make the graph depend on the data; there the mask is always built;
    - no causal mask where the future needs no hiding: one new token, which may see every cached one (but not with a
      static cache, whose unfilled slots it must not see); and SDPA without a cache, which masks the future itself
      (the decoder's self-attention has `is_causal`).
    Flash attention and the other kernels transformers registers take the formats `transformers.masking_utils`
    builds for them.
    """
    is_decoder = encoder_hidden_states is not None
    if not (output_attentions or config._attn_implementation in (None, "eager", "sdpa")):
        if not is_decoder:
            return create_bidirectional_mask(config, inputs_embeds, attention_mask), None
        self_cache = cache.self_attention_cache if cache is not None else None
        return (
            create_causal_mask(config, inputs_embeds, attention_mask, self_cache),
            create_bidirectional_mask(
                config, inputs_embeds, encoder_attention_mask, encoder_hidden_states=encoder_hidden_states
            ),
        )

    def padding_or_none(mask: torch.Tensor | None) -> torch.Tensor | None:
        if mask is None:
            return None
        if mask.device.type == "cpu" and not torch.compiler.is_compiling() and bool(mask.all()):
            return None
        return padding_mask(mask, inputs_embeds.dtype)

    if not is_decoder:
        return padding_or_none(attention_mask), None
    target_length = inputs_embeds.shape[1]
    static_length = static_cache_length(cache)
    starts_at_zero = isinstance(past_length, int) and past_length == 0
    sdpa_masks_the_future = config._attn_implementation == "sdpa" and starts_at_zero and not output_attentions
    if attention_mask is None and static_length is None and (target_length == 1 or sdpa_masks_the_future):
        self_mask = None
    else:
        self_mask = causal_padding_mask(
            target_length, past_length, attention_mask, inputs_embeds.dtype, inputs_embeds.device, static_length
        )
    return self_mask, padding_or_none(encoder_attention_mask)


def rows_of_a_source_together(query: torch.Tensor, num_sources: int) -> torch.Tensor:
    """Beam search and `num_return_sequences` decode k consecutive rows per source, while each source's encoder
    output, and so its cross-attention keys and values, is kept once (`_expand_inputs_for_generation`): the k rows'
    queries attend together, as k·T query positions of one row, which the same kernels compute.
    (B, H, T, D) -> (B / k, H, k·T, D); unchanged where there is one row per source."""
    batch_size, num_heads, length, head_dim = query.shape
    rows_per_source = batch_size // num_sources
    if rows_per_source == 1:
        return query
    query = query.view(num_sources, rows_per_source, num_heads, length, head_dim).transpose(1, 2)  # (B/k, H, k, T, D)
    return query.reshape(num_sources, num_heads, rows_per_source * length, head_dim)


def weights_per_row(weights: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The attention weights of rows that attended together (`rows_of_a_source_together`), (B / k, H, k·T, S), as
    the (H, T, S) of each row: (B, H, T, S)."""
    num_sources, num_heads, _, key_length = weights.shape
    if num_sources == batch_size:
        return weights
    weights = weights.unflatten(2, (batch_size // num_sources, -1)).transpose(1, 2)  # (B / k, k, H, T, S)
    return weights.reshape(batch_size, num_heads, -1, key_length)


def decoder_start(config: ScratchTransformerConfig) -> int:
    """The first decoder input, which teacher forcing puts before the shifted labels."""
    start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.bos_token_id
    if start is None:
        raise ValueError(
            "No `decoder_input_ids` were given, and the config has neither `decoder_start_token_id` nor "
            "`bos_token_id`, so they cannot be made by shifting the labels (or the inputs) right. Set "
            "`model.config.decoder_start_token_id` (usually the id of '<s>'), or pass `decoder_input_ids`."
        )
    return start


def check_inputs(
    config: ScratchTransformerConfig,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    cache: EncoderDecoderCache | None = None,
    past_length: int | torch.Tensor = 0,
) -> None:
    """A stack's inputs: exactly one of ids and embeddings, at least one sequence of at least one token, ids inside
    the vocabulary, and a mask of (batch, past + length). The decoder's (given `encoder_hidden_states`) also: one row
    per source or k consecutive rows per source, the source mask, and with learned positions all the positions a
    static cache can reach, checked from its size (a number; its length so far is a tensor, not read)."""
    prefix = "" if encoder_hidden_states is None else "decoder_"
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError(f"Pass exactly one of `{prefix}input_ids` and `{prefix}inputs_embeds`.")
    given = input_ids if input_ids is not None else inputs_embeds
    if given.dim() < 2 or given.shape[0] == 0 or given.shape[1] == 0:
        name = f"{prefix}input_ids" if input_ids is not None else f"{prefix}inputs_embeds"
        raise ValueError(
            f"`{name}` has shape {tuple(given.shape)}: it needs at least one sequence of at least one token, as "
            "(batch, length). Tokenize a non-empty list of texts, or add a batch dimension with [None]."
        )
    # The ids of later decoding steps are those `generate()` chose from the model's own vocabulary. Checking them
    # reads them, which on a GPU means waiting for the device at every step: only the first call's are checked
    # there (on the CPU, where reading costs nothing, every call's are).
    first_call = isinstance(past_length, int) and past_length == 0
    if input_ids is not None and (first_call or input_ids.device.type == "cpu"):
        check_token_ids(f"{prefix}input_ids", input_ids, config.vocab_size)
    batch_size, length = given.shape[:2]
    if isinstance(past_length, int):
        check_mask_shape(f"{prefix}attention_mask", attention_mask, (batch_size, past_length + length))
    if encoder_hidden_states is None:
        return
    if batch_size % encoder_hidden_states.shape[0]:
        raise ValueError(
            f"The decoder has {batch_size} rows and the encoder output {encoder_hidden_states.shape[0]}: give "
            "one decoder row per source, or k consecutive rows per source (as beam search does)."
        )
    check_mask_shape("attention_mask", encoder_attention_mask, tuple(encoder_hidden_states.shape[:2]))
    static_length = static_cache_length(cache)
    if static_length is not None and config.position_embedding == "learned":
        check_position_count(static_length, config.max_position_embeddings)


def check_token_ids(name: str, ids: torch.Tensor, vocab_size: int, allow_ignore_index: bool = False) -> None:
    """Raise a clear error for ids outside the vocabulary, instead of an index error deep inside torch (or, on a
    GPU, a device-side assert that kills the process). Skipped under `torch.compile`: reading the ids would break
    the graph (the eager run of the same code checks them)."""
    if torch.compiler.is_compiling():
        return
    valid = (ids >= 0) & (ids < vocab_size)
    if allow_ignore_index:
        valid |= ids == -100
    if not bool(valid.all()):
        bad = ids[~valid]
        raise ValueError(
            f"`{name}` holds ids outside the vocabulary [0, {vocab_size}): {bad.unique()[:10].tolist()}. "
            "The tokenizer and the model disagree: use the tokenizer the model was trained with, or a config whose "
            "`vocab_size` covers len(tokenizer)."
        )


def check_mask_shape(name: str, mask: torch.Tensor | None, expected: tuple[int, int]) -> None:
    """A (batch, length) mask of 1 for a token and 0 for padding. A float mask is read as that too, so one holding
    anything else (an additive mask of 0 and -inf, as `nn.Transformer` takes) is refused rather than misread."""
    if mask is None:
        return
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"`{name}` has shape {tuple(mask.shape)} but the inputs need {expected} (batch, length): 1 for a "
            "token, 0 for padding. Pass the mask the tokenizer returned with the ids."
        )
    if mask.is_floating_point() and not torch.compiler.is_compiling() and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(
            f"`{name}` holds values other than 0 and 1 ({mask.unique()[:5].tolist()}...). It says 1 for a token and "
            "0 for padding; an additive mask (0 and -inf) is not that: pass (additive_mask == 0).long() instead."
        )


def check_position_count(count: int, num_positions: int) -> None:
    if count > num_positions:
        raise ValueError(
            f"A sequence of {count} tokens is longer than max_position_embeddings={num_positions}, the "
            "number of learned positions. Truncate the inputs (tokenizer(..., truncation=True, "
            f"max_length={num_positions})), or use a model with position_embedding='sinusoidal'."
        )


def check_source_can_be_shifted(input_ids: torch.Tensor | None) -> None:
    if input_ids is None:
        raise ValueError(
            "The decoder needs `decoder_input_ids` (or `labels`, from which the model with a language-"
            "modelling head derives them). To encode only, call `model.get_encoder()(input_ids, ...)`."
        )


def check_labels(
    labels: torch.Tensor,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    decoder_input_ids: torch.Tensor | None,
    decoder_inputs_embeds: torch.Tensor | None,
    logits_to_keep: int,
    config: ScratchTransformerConfig,
) -> None:
    """Target ids are (batch, target length): one row per source, as long as the decoder inputs when those are
    given, and inside the vocabulary (or -100, ignored). Otherwise the loss fails deep inside torch."""
    if logits_to_keep:
        raise ValueError("The loss needs the logits of every target position: no `logits_to_keep` with labels.")
    source = input_ids if input_ids is not None else inputs_embeds
    decoder = decoder_input_ids if decoder_input_ids is not None else decoder_inputs_embeds
    if labels.dim() != 2:
        raise ValueError(
            f"`labels` has shape {tuple(labels.shape)}; it needs (batch, target length), one row of target ids per "
            "source. For one sentence add a batch dimension: labels[None]."
        )
    if source is not None and labels.shape[0] != source.shape[0]:
        raise ValueError(
            f"`labels` holds {labels.shape[0]} rows for {source.shape[0]} sources: give one row of target ids per "
            "source (the tokenizer's text_target= output for the same batch)."
        )
    if decoder is not None and tuple(labels.shape) != tuple(decoder.shape[:2]):
        raise ValueError(
            f"`labels` has shape {tuple(labels.shape)} but the decoder inputs {tuple(decoder.shape[:2])}: the labels "
            "are the decoder inputs shifted left by one, so both have the same shape. Pass labels alone, and the "
            "model builds the decoder inputs from them."
        )
    check_token_ids("labels", labels, config.vocab_size, allow_ignore_index=True)


def check_classification_labels(labels: torch.Tensor, batch_size: int, config: ScratchTransformerConfig) -> None:
    """Labels of the shape the loss of `config.problem_type` reads, and class ids below `num_labels` (not read under
    torch.compile, where it would break the graph)."""
    num_labels, problem_type = config.num_labels, config.problem_type
    expected = {  # what each loss reads: one value per row and label, or one class id per row
        "regression": (batch_size * num_labels, f"({batch_size},) or ({batch_size}, {num_labels}) targets"),
        "single_label_classification": (batch_size, f"({batch_size},): one class id per row"),
        "multi_label_classification": (batch_size * num_labels, f"({batch_size}, {num_labels}): 0/1 per class"),
    }[problem_type]
    if labels.numel() != expected[0] or labels.shape[0] != batch_size:
        raise ValueError(
            f"`labels` has shape {tuple(labels.shape)}, but {problem_type} of a batch of {batch_size} with "
            f"num_labels={num_labels} needs {expected[1]}."
        )
    if problem_type != "single_label_classification" or torch.compiler.is_compiling():
        return
    if not bool(((labels >= 0) & (labels < num_labels)).all()):
        raise ValueError(
            f"`labels` must be class ids in [0, {num_labels}), got {labels.unique()[:10].tolist()}. Set "
            "`num_labels` (and `id2label`) to the number of classes in the data."
        )


def check_no_cache(cache: Cache | None) -> None:
    """PEFT prefix tuning passes its prefix as a cache: the classifier, the encoder alone, would silently ignore it
    and train nothing."""
    if cache is not None:
        raise ValueError(
            "The classifier is the encoder alone and keeps no key/value cache, so a `cache` (e.g. a PEFT prefix "
            "tuning prefix) cannot reach it. Use LoRA or prompt tuning for classification."
        )


__all__ = [
    "ScratchTransformerPreTrainedModel",
    "ScratchTransformerModel",
    "ScratchTransformerForConditionalGeneration",
    "ScratchTransformerForSequenceClassification",
]
