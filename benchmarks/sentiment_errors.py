"""Where a fine-tuned sentiment classifier loses to the linear baseline: validation accuracy by length (thirds of the
texts by their words) and on the texts that turn on a contrast word ("good acting, but a dull plot"), for each
checkpoint given, beside NB-LR (benchmarks/nbsvm.py) trained on the same split. About 20 s for SST-2 and two
checkpoints, about 3 minutes for IMDB and four, on 2 cores.

    python -m benchmarks.sentiment_errors --data ../shared/data/sst2 \\
        --models runs/recipes/sst2_pretrained runs/recipes/sst2_scratch

A model that composes a sentence loses little on the long ones and the contrasts, where a bag of word pairs cannot
see which half of the sentence carries the verdict.
"""

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_scratch_transformer  # noqa: F401  (registers the Auto classes)
from benchmarks import nbsvm
from hf_scratch_transformer.training.finetune_sentiment import encode_truncated

CONTRAST_WORDS = {"but", "though", "although", "yet", "however"}


def slices(texts: list[str]) -> dict[str, torch.Tensor]:
    """(texts,) boolean masks: all; short, middle, long (thirds by the number of words and punctuation marks, as
    NB-LR reads them; ties to the shorter); with and without a contrast word."""
    words = [nbsvm.words(text) for text in texts]
    lengths = torch.tensor([len(text_words) for text_words in words], dtype=torch.float)
    first_cut, second_cut = torch.quantile(lengths, torch.tensor([1 / 3, 2 / 3])).tolist()
    contrast = torch.tensor([not CONTRAST_WORDS.isdisjoint(text_words) for text_words in words])
    return {
        "all": torch.ones(len(texts), dtype=torch.bool),
        "short": lengths <= first_cut,
        "middle": (lengths > first_cut) & (lengths <= second_cut),
        "long": lengths > second_cut,
        "contrast": contrast,
        "no contrast": ~contrast,
    }


def accuracy_by_slice(predictions: torch.Tensor, labels: torch.Tensor, masks: dict[str, torch.Tensor]) -> dict:
    correct = (predictions == labels).float()
    return {name: round(correct[mask].mean().item(), 4) if mask.any() else None for name, mask in masks.items()}


def classify(model_path: str, texts: list[str], max_length: int, truncate: str, batch_size: int) -> torch.Tensor:
    """(texts,) predicted class ids, each text truncated as finetune_sentiment.py's --truncate does."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path).eval()
    predictions = []
    for start in range(0, len(texts), batch_size):
        encoded = encode_truncated(tokenizer, texts[start : start + batch_size], max_length, truncate)
        batch = tokenizer.pad(encoded, return_tensors="pt")
        with torch.no_grad():
            predictions.append(model(**batch).logits.argmax(-1))
    return torch.cat(predictions)


def nb_lr_predictions(train_texts, train_labels, texts) -> torch.Tensor:
    vocabulary = nbsvm.ngram_vocabulary(train_texts)
    ratios, weights, bias = nbsvm.train_nb_lr(nbsvm.features(train_texts, vocabulary), torch.tensor(train_labels))
    return nbsvm.predict(nbsvm.features(texts, vocabulary), ratios, weights, bias)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sst2"), help="train and validation files")
    parser.add_argument("--models", nargs="*", default=[], help="fine-tuned sequence-classification checkpoints")
    parser.add_argument("--max_length", type=int, default=128, help="as the fine-tuning's --max_source_length")
    parser.add_argument("--truncate", choices=["end", "middle"], default="end", help="as the fine-tuning's")
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args(argv)
    train_texts, train_labels = nbsvm.read_split(args.data, "train")
    texts, labels = nbsvm.read_split(args.data, "validation")
    labels, masks = torch.tensor(labels), slices(texts)
    predictions = {"NB-LR": nb_lr_predictions(train_texts, train_labels, texts)}
    for model_path in args.models:
        predictions[model_path] = classify(model_path, texts, args.max_length, args.truncate, args.batch_size)
    results = {
        "texts": {name: int(mask.sum()) for name, mask in masks.items()},
        "accuracy": {name: accuracy_by_slice(predicted, labels, masks) for name, predicted in predictions.items()},
    }
    width = max(map(len, predictions))
    print(f"{'validation accuracy':<{width}}" + "".join(f"{name:>13}" for name in masks))
    print(f"{'(texts)':<{width}}" + "".join(f"{count:>13}" for count in results["texts"].values()))
    for name, accuracies in results["accuracy"].items():
        cells = (f"{100 * value:>12.1f}%" if value is not None else f"{'-':>13}" for value in accuracies.values())
        print(f"{name:<{width}}" + "".join(cells))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
