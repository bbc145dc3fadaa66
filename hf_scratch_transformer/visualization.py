"""Attention maps: which tokens each token looked at, drawn from the model's own attention weights.

    from hf_scratch_transformer.visualization import plot_attention

    plot_attention(model, tokenizer, "three hundred forty-two").savefig("attention.png")  # cross-attention
    plot_attention(model, tokenizer, "three hundred", kind="encoder", layer="all", head="all")  # every layer x head

The weights are those the model returns with `output_attentions=True` (the written-out softmax(Q K^T / sqrt(D))
of every layer and head, shape (B, H, rows, columns)); nothing is recomputed here. Rows and columns are labelled
with the tokens as the tokenizer decodes them, one piece at a time.

Which rows and columns, by `kind`:

- `"cross"`: rows are the output tokens, columns the source tokens. Row t is the decoding step that produced
  output token t (its query is the decoder input at t, the token before it), so a trained translator shows how
  its output aligns with its input (the alignment pictures of the paper's Figure 3 and the Annotated
  Transformer). Without a `target`, the output is what `generate()` produces with the model's generation config.
- `"encoder"`: self-attention of the source; rows are the queries, columns the keys.
- `"decoder"`: masked self-attention of the output; rows are the output tokens as above, columns the decoder
  inputs (the start token, then the output shifted right), so everything above the diagonal is 0.
"""

import textwrap
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .extras import missing_extra_says_which

with missing_extra_says_which("train", "Drawing attention"):
    from matplotlib.figure import Figure

KINDS = ("cross", "encoder", "decoder")
AXIS_NAMES = {  # kind -> (rows, columns)
    "cross": ("output tokens", "source tokens"),
    "encoder": ("source tokens (queries)", "source tokens (keys)"),
    "decoder": ("output tokens", "decoder input tokens"),
}
TITLES = {"cross": "cross-attention", "encoder": "encoder self-attention", "decoder": "decoder self-attention"}
INCHES_PER_TOKEN = 0.32  # room for one tick label of a short word piece at 9 pt


@dataclass
class AttentionMaps:
    """The attention weights of one kind for one source (and its output), with the tokens of each axis."""

    kind: str
    source: str
    weights: torch.Tensor  # (layers, heads, rows, columns), each row a distribution summing to 1
    row_tokens: list[str]
    column_tokens: list[str]
    output_text: str | None  # the target as decoded (the model's translation when no target was given)


def token_labels(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[str]:
    """Each id decoded on its own, as the tokenizer shows it. A byte-level piece that holds part of a character
    decodes to the replacement character U+FFFD, and a piece of spaces to an invisible label: those keep the
    tokenizer's raw spelling instead."""
    labels = []
    for token_id, raw in zip(ids, tokenizer.convert_ids_to_tokens(ids), strict=True):
        decoded = tokenizer.decode([token_id])
        labels.append(raw if "\ufffd" in decoded or not decoded.strip() else decoded)
    return labels


def stack_layers(attentions: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A model output's weights of each layer, (B, H, rows, columns), for its one sequence: (layers, H, rows,
    columns)."""
    return torch.stack(attentions)[:, 0].float().cpu()


@torch.no_grad()
def attention_maps(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    target: str | None = None,
    kind: str = "cross",
    **generate_kwargs,
) -> AttentionMaps:
    """The model's attention weights of `kind` ("cross", "encoder" or "decoder") for one `source` text. A
    translator decodes `target` with teacher forcing, or, without one, its own `generate(**generate_kwargs)`
    output (e.g. num_beams=4, max_new_tokens=64; by default the model's generation config). A classifier (encoder
    only) has only "encoder" maps and takes no target."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    translator = model.can_generate()  # a seq2seq LM; the classifier is the encoder alone
    if not translator and (kind != "encoder" or target is not None):
        raise ValueError(
            f"{type(model).__name__} is an encoder alone: it has encoder self-attention only "
            '(kind="encoder", no target).'
        )
    was_training = model.training
    model.eval()
    try:
        encoded = tokenizer(source, return_tensors="pt").to(model.device)
        source_tokens = token_labels(tokenizer, encoded["input_ids"][0].tolist())
        if not translator:
            weights = stack_layers(model(**encoded, output_attentions=True).attentions)
            source_tokens = with_virtual_tokens(source_tokens, weights.shape[-1])
            return AttentionMaps(kind, source, weights, source_tokens, source_tokens, None)
        if target is None:
            # generate() puts the start token first; the rest (ending in </s>, or cut at max_length) is the output.
            output_ids = model.generate(**encoded, **generate_kwargs)[:1, 1:]
        else:
            output_ids = tokenizer(text_target=target, return_tensors="pt")["input_ids"].to(model.device)
        start = torch.tensor([[model.config.decoder_start_token_id]], device=model.device)
        decoder_input_ids = torch.cat([start, output_ids[:, :-1]], dim=1)  # the outputs shifted right
        outputs = model(**encoded, decoder_input_ids=decoder_input_ids, output_attentions=True)
    finally:
        model.train(was_training)

    output_tokens = token_labels(tokenizer, output_ids[0].tolist())
    if kind == "encoder":
        rows, columns, attentions = source_tokens, source_tokens, outputs.encoder_attentions
    elif kind == "cross":
        rows, columns, attentions = output_tokens, source_tokens, outputs.cross_attentions
    else:
        decoder_inputs = token_labels(tokenizer, decoder_input_ids[0].tolist())
        rows, columns, attentions = output_tokens, decoder_inputs, outputs.decoder_attentions
    weights = stack_layers(attentions)
    rows, columns = with_virtual_tokens(rows, weights.shape[-2]), with_virtual_tokens(columns, weights.shape[-1])
    output_text = tokenizer.decode(output_ids[0], skip_special_tokens=True)
    return AttentionMaps(kind, source, weights, rows, columns, output_text)


def with_virtual_tokens(tokens: list[str], count: int) -> list[str]:
    """`tokens`, behind a label for each of the vectors that PEFT puts in front of them: prompt tuning's learned
    inputs of the encoder, prefix tuning's learned keys of each attention layer."""
    return [f"<virtual {index}>" for index in range(count - len(tokens))] + tokens


def check_index(name: str, value: int | str, count: int, attention: str, words: tuple[str, ...]) -> None:
    """`value` is one of `words` or an index into `count` layers or heads; else an error that says the range."""
    if isinstance(value, str):
        if value not in words:
            raise ValueError(f"{name}={value!r}: use an index or one of {words}.")
    elif not -count <= value < count:
        raise IndexError(
            f"{name}={value} is out of range: the {attention} has {count} {name}s (0 to {count - 1}, or -{count} "
            "to -1 from the end)."
        )


def select(maps: AttentionMaps, layer: int | str, head: int | str) -> list[list[tuple[str, torch.Tensor]]]:
    """The panels to draw: a grid (rows of (title, weights (rows, columns))) for `layer` (an index, or "all")
    and `head` (an index, "mean" over the heads, or "all")."""
    num_layers, num_heads = maps.weights.shape[:2]
    check_index("layer", layer, num_layers, TITLES[maps.kind], words=("all",))
    check_index("head", head, num_heads, TITLES[maps.kind], words=("mean", "all"))
    layers = range(num_layers) if layer == "all" else [range(num_layers)[layer]]  # a negative index counts back
    if head in ("mean", "all"):
        heads = ["mean"] if head == "mean" else list(range(num_heads))
    else:
        heads = [range(num_heads)[head]]
    grid = []
    for layer_index in layers:
        row = []
        for head_index in heads:
            if head_index == "mean":
                title, weights = f"layer {layer_index}, mean of {num_heads} heads", maps.weights[layer_index].mean(0)
            else:
                title, weights = f"layer {layer_index}, head {head_index}", maps.weights[layer_index, head_index]
            row.append((title, weights))
        grid.append(row)
    return grid


def draw_panel(axes, weights: torch.Tensor, row_tokens: list[str], column_tokens: list[str], vmax: float):
    """One heat map with the tokens as tick labels; returns the image (for a colorbar)."""
    image = axes.imshow(weights.numpy(), cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    axes.set_xticks(range(len(column_tokens)), labels=column_tokens, rotation=90, fontsize=9)
    axes.set_yticks(range(len(row_tokens)), labels=row_tokens, fontsize=9)
    axes.tick_params(length=0)
    return image


def plot_attention(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: str, target: str | None = None,
    kind: str = "cross", layer: int | str = -1, head: int | str = "mean", **generate_kwargs,
) -> Figure:  # fmt: skip
    """A matplotlib Figure of the attention of `kind` for `source`: one map for a `layer` (index, default the
    last) and a `head` (index, or the default "mean" over heads), or a grid with `layer="all"` (a row per layer)
    and/or `head="all"` (a column per head). Save it with `figure.savefig("attention.png")` (or .svg, .pdf).
    Without a `target`, a translator's output is `generate(**generate_kwargs)`'s."""
    return draw_attention(attention_maps(model, tokenizer, source, target, kind, **generate_kwargs), layer, head)


def draw_attention(maps: AttentionMaps, layer: int | str = -1, head: int | str = "mean") -> Figure:
    """The Figure of `plot_attention`, from maps already computed (`attention_maps`)."""
    grid = select(maps, layer, head)
    vmax = max(float(weights.max()) for row in grid for _, weights in row)
    rows, columns = len(grid), len(grid[0])
    panel_width = 1.2 + INCHES_PER_TOKEN * len(maps.column_tokens)
    panel_height = 1.2 + INCHES_PER_TOKEN * len(maps.row_tokens)
    figure = Figure(figsize=(columns * panel_width + 1.0, rows * panel_height + 0.8), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for grid_row, panels in enumerate(grid):
        for grid_column, (title, weights) in enumerate(panels):
            ax = axes[grid_row, grid_column]
            image = draw_panel(ax, weights, maps.row_tokens, maps.column_tokens, vmax)
            ax.set_title(title, fontsize=10)
            if grid_column == 0:
                ax.set_ylabel(AXIS_NAMES[maps.kind][0])
            if grid_row == rows - 1:
                ax.set_xlabel(AXIS_NAMES[maps.kind][1])
    figure.colorbar(image, ax=axes, shrink=0.9 if rows == 1 else 0.6)
    heading = f"{TITLES[maps.kind]}: {maps.source!r}"
    if maps.output_text is not None:
        heading += f" -> {maps.output_text!r}"
    # Wrapped to the figure's width (about 8 characters an inch at 11 pt), so that a long sentence is not cut off;
    # a German compound stays whole.
    width = int(8 * figure.get_figwidth())
    figure.suptitle(textwrap.fill(heading, width=width, break_long_words=False), fontsize=11)
    return figure


def shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def plot_translation_attention(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sources: list[str], layer: int = -1
) -> Figure:
    """The cross-attention (mean of the heads of `layer`) of the model's own translation of each of `sources`,
    side by side: the picture `finetune_translation.py` saves at the end of a run and the model card shows."""
    all_maps = [attention_maps(model, tokenizer, source) for source in sources]
    widths = [1.2 + INCHES_PER_TOKEN * len(maps.column_tokens) for maps in all_maps]
    height = 1.6 + INCHES_PER_TOKEN * max(len(maps.row_tokens) for maps in all_maps)
    figure = Figure(figsize=(sum(widths) + 1.0, height), layout="constrained")
    axes = figure.subplots(1, len(sources), squeeze=False, width_ratios=widths)[0]
    panels = [select(maps, layer, "mean")[0][0] for maps in all_maps]
    vmax = max(float(weights.max()) for _, weights in panels)
    for ax, maps, (_, weights) in zip(axes, all_maps, panels, strict=True):
        image = draw_panel(ax, weights, maps.row_tokens, maps.column_tokens, vmax)
        ax.set_title(shorten(maps.output_text, len(maps.column_tokens) * 4), fontsize=10)  # about the panel's width
        ax.set_xlabel(AXIS_NAMES["cross"][1])
    axes[0].set_ylabel(AXIS_NAMES["cross"][0])
    figure.colorbar(image, ax=axes, shrink=0.9)
    which_layer = panels[0][0]  # e.g. "layer 2, mean of 4 heads"
    figure.suptitle(f"Cross-attention of the model's translations ({which_layer})", fontsize=11)
    return figure
