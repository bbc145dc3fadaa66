"""Draw a model's attention for one sentence, to a PNG, SVG or PDF file.

    hf-scratch-transformer plot-attention runs/demo/model --source "three hundred forty-two" --out attention.png
    hf-scratch-transformer plot-attention runs/demo/model --source "seven" --target "sieben" --kind decoder
    hf-scratch-transformer plot-attention runs/sst2 --source "a lovely film" --kind encoder --layer all --head all

A translator without `--target` translates the source with its saved generation settings and shows the
cross-attention of that translation: each output token's row says which source tokens it looked at. A classifier
(a run of finetune_sentiment.py) has the encoder's self-attention only. `--layer` and `--head` take an index (from
0; -1 is the last), or `all` for a grid; `--head mean` (the default) averages the heads.
"""

import argparse
from pathlib import Path

from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, AutoTokenizer

from hf_scratch_transformer.visualization import KINDS, plot_attention

from .model_loading import explained_load_errors


def load_model_and_tokenizer(name_or_path: str):
    """A saved run (folder or Hub id) with the Auto class its config names: a classifier or a translator. This
    package's model is installed: no code is ever run from the folder (`trust_remote_code=False`)."""
    architectures = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False).architectures or [""]
    if architectures[0].endswith("ForSequenceClassification"):
        model = AutoModelForSequenceClassification.from_pretrained(name_or_path, trust_remote_code=False)
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path, trust_remote_code=False)
    return model.eval(), AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)


def index_or_word(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="A run folder or Hub id holding the model and its tokenizer.")
    parser.add_argument("--source", required=True, help="The text to encode.")
    parser.add_argument("--target", default=None, help="The output to show (default: the model's translation).")
    parser.add_argument("--kind", choices=KINDS, default=None, help="Default: cross (encoder for a classifier).")
    parser.add_argument("--layer", type=index_or_word, default=-1, help="An index, or all. Default: the last.")
    parser.add_argument("--head", type=index_or_word, default="mean", help="An index, mean (default), or all.")
    parser.add_argument("--out", type=Path, default=Path("attention.png"), help="A .png, .svg or .pdf file.")
    args = parser.parse_args()

    with explained_load_errors("model", args.model):
        model, tokenizer = load_model_and_tokenizer(args.model)
    kind = args.kind or ("cross" if model.can_generate() else "encoder")
    try:
        figure = plot_attention(model, tokenizer, args.source, args.target, kind, args.layer, args.head)
    except (ValueError, IndexError) as error:
        raise SystemExit(f"plot_attention: {error}") from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=150)
    print(f"{figure.get_suptitle()}\nSaved to {args.out}")


if __name__ == "__main__":
    main()
