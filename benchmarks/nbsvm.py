"""The linear baseline of IMDB's anchor, on our splits: NBSVM's features (Wang & Manning, 2012: binarised unigrams and
bigrams, each scaled by its naive-Bayes log-count ratio) under a logistic regression (NB-LR, which the literature
finds within a few tenths of NBSVM's 91.2 % on IMDB's test set). It says what the sentiment goals mean on the
validation sets the sentiment recipe reports (IMDB's carved from its train, not its test set; SST-2's whole
sentences), and takes a minute (IMDB) or ten seconds (SST-2) on one core.

    python -m benchmarks.nbsvm --data ../shared/data/imdb     # -> validation accuracy, and the same on train
    python -m benchmarks.nbsvm --data ../shared/data/sst2

Text: lower-cased, `<br />` read as a space, words and punctuation split apart (as NBSVM's own scripts did).
"""

import argparse
import gzip
import json
import re
import time
from pathlib import Path

import torch

ALPHA = 1.0  # naive-Bayes smoothing: a count of 1 added to every feature in each class (Wang & Manning)
L2 = 1e-5  # weight decay of the logistic regression: the features are already scaled by their evidence
STEPS = 200  # full-batch L-BFGS iterations; the training loss has flattened well before
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def read_split(data: Path, split: str) -> tuple[list[str], list[int]]:
    """`split`.jsonl.gz or `split`.jsonl of `data`: the texts (column `text`, or SST-2's `sentence`) and labels."""
    path = data / f"{split}.jsonl.gz"
    if not path.exists():
        path = data / f"{split}.jsonl"
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as file:
        rows = [json.loads(line) for line in file]
    text_column = "text" if "text" in rows[0] else "sentence"
    return [row[text_column] for row in rows], [int(row["label"]) for row in rows]


def words(text: str) -> list[str]:
    """A text's words and punctuation marks, lower-cased, `<br />` read as a space."""
    return TOKEN.findall(text.lower().replace("<br />", " "))


def ngrams(text: str) -> set[str]:
    """The unigrams and bigrams of a text, each once (binarised features)."""
    unigrams = words(text)
    return set(unigrams) | {f"{first} {second}" for first, second in zip(unigrams, unigrams[1:], strict=False)}


def ngram_vocabulary(texts: list[str]) -> dict[str, int]:
    """An id for each n-gram of `texts`, in order of first appearance."""
    vocabulary = {}
    for text in texts:
        for gram in ngrams(text):
            vocabulary.setdefault(gram, len(vocabulary))
    return vocabulary


def features(texts: list[str], vocabulary: dict[str, int]) -> torch.Tensor:
    """(documents, features) sparse 0/1 matrix (COO) of the n-grams in `vocabulary`."""
    rows, columns = [], []
    for row, text in enumerate(texts):
        ids = [vocabulary[gram] for gram in ngrams(text) if gram in vocabulary]
        rows += [row] * len(ids)
        columns += ids
    indices = torch.tensor([rows, columns], dtype=torch.long)
    values = torch.ones(len(columns))
    size = (len(texts), len(vocabulary))
    return torch.sparse_coo_tensor(indices, values, size, check_invariants=True).coalesce()


def times(x: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """x @ vector for a sparse x: (documents,)."""
    return torch.sparse.mm(x, vector[:, None]).squeeze(1)


def train_nb_lr(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Naive-Bayes log-count ratios r, then a logistic regression on x * r; returns (r, weights, bias)."""
    positive = times(x.t(), labels.float()) + ALPHA  # (features,): documents of each class holding each n-gram
    negative = times(x.t(), 1 - labels.float()) + ALPHA
    ratios = torch.log(positive / positive.sum()) - torch.log(negative / negative.sum())
    weights = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=STEPS, line_search_fn="strong_wolfe")

    def loss_and_gradient():
        optimizer.zero_grad()
        logits = times(x, weights * ratios) + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
        loss = loss + L2 * weights.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(loss_and_gradient)
    return ratios, weights.detach(), bias.item()


def predict(x: torch.Tensor, ratios: torch.Tensor, weights: torch.Tensor, bias: float) -> torch.Tensor:
    """(documents,) predicted labels, 0 or 1."""
    return (times(x, weights * ratios) + bias > 0).long()


def accuracy(x: torch.Tensor, labels: torch.Tensor, ratios: torch.Tensor, weights: torch.Tensor, bias: float) -> float:
    return (predict(x, ratios, weights, bias) == labels).float().mean().item()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data/imdb"), help="a folder with train and validation .jsonl(.gz)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    train_texts, train_labels = read_split(args.data, "train")
    validation_texts, validation_labels = read_split(args.data, "validation")
    vocabulary = ngram_vocabulary(train_texts)
    x_train, y_train = features(train_texts, vocabulary), torch.tensor(train_labels)
    x_validation, y_validation = features(validation_texts, vocabulary), torch.tensor(validation_labels)
    ratios, weights, bias = train_nb_lr(x_train, y_train)
    results = {
        "validation_accuracy": accuracy(x_validation, y_validation, ratios, weights, bias),
        "train_accuracy": accuracy(x_train, y_train, ratios, weights, bias),
        "features": len(vocabulary),
        "train_texts": len(train_texts),
        "validation_texts": len(validation_texts),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
