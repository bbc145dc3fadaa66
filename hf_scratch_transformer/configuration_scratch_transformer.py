"""Configuration of the scratch Transformer: every knob of "Attention Is All You Need" in one flat class.

The defaults are the paper's base model (Vaswani et al., 2017, Table 3, row "base"). Field names follow
Marian and BART, so that `transformers`, `peft` and `accelerate` find them where they look for them.

This file imports nothing from the package it lives in, so that it can be copied next to a checkpoint and
loaded with `trust_remote_code=True` by a Python that does not have `hf_scratch_transformer` installed.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

POSITION_EMBEDDINGS = ("sinusoidal", "learned")
CLASSIFIER_POOLINGS = ("mean", "first")
AUTO_MAP = {
    "AutoConfig": "configuration_scratch_transformer.ScratchTransformerConfig",
    "AutoModel": "modeling_scratch_transformer.ScratchTransformerModel",
    "AutoModelForSeq2SeqLM": "modeling_scratch_transformer.ScratchTransformerForConditionalGeneration",
    "AutoModelForSequenceClassification": "modeling_scratch_transformer.ScratchTransformerForSequenceClassification",
}


@strict
class ScratchTransformerConfig(PreTrainedConfig):
    r"""
    Configuration of [`ScratchTransformerModel`], [`ScratchTransformerForConditionalGeneration`] and
    [`ScratchTransformerForSequenceClassification`].

    Args:
        vocab_size (`int`, defaults to 37000): size of the one vocabulary shared by source and target.
        d_model (`int`, defaults to 512): width of every hidden state (the paper's d_model).
        encoder_layers / decoder_layers (`int`, default to 6): number of layers in each stack (N).
        encoder_attention_heads / decoder_attention_heads (`int`, default to 8): heads per attention (h);
            `d_model` must be divisible by them.
        encoder_ffn_dim / decoder_ffn_dim (`int`, default to 2048): inner width of the feed-forward (d_ff).
        activation_function (`str`, defaults to `"relu"`): the feed-forward's non-linearity, any key of
            `transformers.activations.ACT2FN`.
        dropout (`float`, defaults to 0.1): residual dropout (P_drop), on each sub-layer's output and on the
            sum of embeddings and positions.
        attention_dropout (`float`, defaults to 0.0): dropout on the attention weights.
        activation_dropout (`float`, defaults to 0.0): dropout after the feed-forward's activation.
        label_smoothing (`float`, defaults to 0.0): label smoothing of the model's own loss (epsilon_ls). The
            paper trains with 0.1; the default is plain cross-entropy, as every Hugging Face model returns, so that
            exp(loss) is the perplexity. The training recipes set 0.1 (`--config_overrides label_smoothing=0.1`,
            or `--label_smoothing 0.1` on a checkpoint).
        max_position_embeddings (`int`, defaults to 512): longest sequence for learned positions, and the
            length of the precomputed sinusoidal table (sinusoidal positions extend past it on demand).
        position_embedding (`str`, defaults to `"sinusoidal"`): `"sinusoidal"` (the paper) or `"learned"`.
        scale_embedding (`bool`, defaults to `True`): multiply token embeddings by sqrt(d_model).
        normalize_before (`bool`, defaults to `False`): `False` is the paper's post-LN; `True` is pre-LN.
        init_std (`float`, *optional*): `None` (the default) initialises linear layers Xavier-uniform, scaled to
            each layer's fan-in and fan-out, as the paper's reference code and `torch.nn.Transformer` do; a float
            initialises them N(0, init_std), the BART/Marian convention (0.02).
        classifier_pooling (`str`, defaults to `"mean"`): how the classifier pools the encoder states:
            `"mean"` over non-pad tokens, or the `"first"` token.
        classifier_dropout (`float`, defaults to 0.1): dropout before the classification layer.
        pad_token_id / bos_token_id / eos_token_id (`int`, default to 0 / 1 / 2): special token ids, in the
            order that `training/train_tokenizer.py` gives them.
        decoder_start_token_id (`int`, defaults to 1): the first decoder input; `<s>`.
        tie_word_embeddings (`bool`, defaults to `True`): share the embedding with the output projection. The
            encoder and the decoder share their embedding whatever this says (one vocabulary for both languages).
        use_cache (`bool`, defaults to `True`): keep keys and values between generation steps.

    Example:

    ```python
    >>> from hf_scratch_transformer import ScratchTransformerConfig, ScratchTransformerForConditionalGeneration
    >>> config = ScratchTransformerConfig(vocab_size=8000, d_model=256, encoder_layers=3, decoder_layers=3)
    >>> model = ScratchTransformerForConditionalGeneration(config)
    ```
    """

    model_type = "scratch_transformer"
    keys_to_ignore_at_inference = ["past_key_values"]
    # The standard names point at the decoder: PEFT's prefix tuning and the generation cache size their
    # key/value tensors from `num_hidden_layers` and `num_attention_heads`, and only the decoder keeps a cache.
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "decoder_attention_heads",
        "num_hidden_layers": "decoder_layers",
    }

    # -- sizes: the paper's base model ---------------------------------------------------------------
    vocab_size: int = 37000  # the paper's shared EN-DE byte-pair vocabulary had about 37000 tokens
    d_model: int = 512
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 8  # d_k = d_v = d_model / h = 64
    decoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048  # d_ff = 4 * d_model
    decoder_ffn_dim: int = 2048
    activation_function: str = "relu"  # the paper's FFN(x) = max(0, x W1 + b1) W2 + b2

    # -- regularisation --------------------------------------------------------------------------------
    dropout: float | int = 0.1  # P_drop = 0.1 for the base model
    attention_dropout: float | int = 0.0  # the paper drops sub-layer outputs only, not attention weights
    activation_dropout: float | int = 0.0
    # The paper's epsilon_ls = 0.1 "hurts perplexity, but improves accuracy and BLEU": the recipes set it. The default
    # is the plain cross-entropy every Hugging Face model's loss is, so that exp(loss) is the perplexity.
    label_smoothing: float | int = 0.0

    # -- positions and embeddings --------------------------------------------------------------------------
    max_position_embeddings: int = 512  # the paper sets no limit; 512 covers sentence-level translation
    position_embedding: str = "sinusoidal"  # the paper's choice; "learned" scored nearly the same (Table 3, E)
    scale_embedding: bool = True  # "we multiply those weights by sqrt(d_model)" (section 3.4)
    normalize_before: bool = False  # post-LN as in the paper; pre-LN (Xiong et al., 2020) trains deep stacks stably
    # The paper does not state its initialisation; its code (tensor2tensor) and nn.Transformer scale each layer's to
    # its size (Xavier). BART's fixed N(0, 0.02) is that scale at d_model ~ 1000 but 5-9x too small for the d_model
    # 32-128 models one trains on a laptop: their cross-attention starts near zero and learns slowly (a 32-wide
    # model trained 300 steps to reverse 5-word sentences: loss 2.23 at 0.02, 0.01 with Xavier).
    init_std: float | None = None

    # -- sequence classification head ----------------------------------------------------------------
    classifier_pooling: str = "mean"
    classifier_dropout: float | int = 0.1

    # -- special tokens and Hugging Face switches ------------------------------------------------------
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 1
    # "the same weight matrix between the two embedding layers and the pre-softmax linear transformation"
    tie_word_embeddings: bool = True
    use_cache: bool = True
    is_encoder_decoder: bool = True

    def __post_init__(self, **kwargs):
        self._check_values()
        # Written into config.json so that `trust_remote_code=True` finds every head, whichever class saved it.
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__post_init__(**kwargs)

    def _check_values(self):
        """Raise a `ValueError` that names the bad field and says how to fix it."""
        for name in (
            "vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
            "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings",
        ):  # fmt: skip
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if self.d_model % heads != 0:
                raise ValueError(
                    f"`d_model` ({self.d_model}) must be divisible by `{side}_attention_heads` ({heads}): each head "
                    f"gets d_model / heads dimensions. Choose a head count that divides {self.d_model}."
                )
        for name in ("dropout", "attention_dropout", "activation_dropout", "classifier_dropout", "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {value}.")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            ids = getattr(self, name)
            for token_id in ids if isinstance(ids, list) else [ids]:
                if token_id is not None and not 0 <= token_id < self.vocab_size:
                    raise ValueError(
                        f"`{name}` is {token_id}, outside the vocabulary [0, {self.vocab_size}) that `vocab_size` "
                        "sets (the embedding would fail on it). Set `vocab_size` to len(tokenizer), or the id the "
                        "tokenizer gives that token."
                    )
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"`position_embedding` must be one of {POSITION_EMBEDDINGS}, got {self.position_embedding!r}."
            )
        if self.position_embedding == "sinusoidal" and self.d_model % 2 != 0:
            raise ValueError(
                f"Sinusoidal positions pair a sine with a cosine, so `d_model` must be even, got {self.d_model}. "
                "Use an even `d_model` or `position_embedding='learned'`."
            )
        if self.activation_function not in ACT2FN:
            raise ValueError(
                f"`activation_function` {self.activation_function!r} is unknown; choose one of {sorted(ACT2FN)}."
            )
        if self.classifier_pooling == "attention":
            raise ValueError(
                "`classifier_pooling='attention'` (a learned query weighing the tokens) is no longer offered: it "
                "measured the accuracy of mean pooling (SST-2 79.5 %, IMDB 88.6 %). Use 'mean', of equal quality, "
                "or 'first'."
            )
        if self.classifier_pooling not in CLASSIFIER_POOLINGS:
            raise ValueError(
                f"`classifier_pooling` must be one of {CLASSIFIER_POOLINGS}, got {self.classifier_pooling!r}."
            )


__all__ = ["ScratchTransformerConfig"]
