"""Accuracy and F1 of integer class predictions, as an `evaluate` metric that needs nothing from the Hub.

This file is self-contained on purpose: `evaluate.load` copies it, alone, into its modules cache and imports it
from there, so it may import installed libraries but nothing from this package.
"""

from typing import Any

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Accuracy, the fraction of predictions equal to their reference, and F1, the harmonic mean of precision and
recall: 2 TP / (2 TP + FP + FN). F1 is for the positive class by default (binary classification); with several
classes, `average` combines the per-class F1 scores the way scikit-learn's `f1_score` does, over the classes that
appear in the predictions or the references. A class with no true positive, false positive or false negative
has F1 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class ids.
    references (`list[int]`): true class ids.
    average (`str`, defaults to `"binary"`): how to turn per-class F1 into one number:
        `"binary"`: F1 of `pos_label` only (at most two classes allowed);
        `"macro"`: unweighted mean over classes;
        `"micro"`: F1 of the summed counts over classes (equal to accuracy for single-label data);
        `"weighted"`: mean over classes weighted by their number of references.
    pos_label (`int`, defaults to 1): the positive class when `average="binary"`.

Returns:
    accuracy (`float`): 0 to 1.
    f1 (`float`): 0 to 1.

Examples:
    >>> metric = evaluate.load("hf_scratch_transformer/metrics/accuracy_f1/accuracy_f1.py")
    >>> metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75, 'f1': 0.6666666666666666}
    >>> metric.compute(predictions=[0, 1, 2, 2], references=[0, 1, 2, 1], average="macro")["f1"]
    0.7777777777777777
"""

_AVERAGES = ("binary", "macro", "micro", "weighted")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AccuracyF1(evaluate.Metric):
    """Accuracy and binary, macro, micro or weighted F1 from integer class ids."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(
        self,
        predictions: list[int],
        references: list[int],
        average: str = "binary",
        pos_label: int = 1,
    ) -> dict[str, Any]:
        """Accuracy and F1 of the predictions against the references."""
        if average not in _AVERAGES:
            raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}.")
        preds = np.asarray(predictions, dtype=np.int64)
        refs = np.asarray(references, dtype=np.int64)
        if preds.shape != refs.shape:
            raise ValueError(f"Got {preds.size} predictions but {refs.size} references.")
        if preds.size == 0:
            raise ValueError("Accuracy and F1 need at least one prediction.")
        accuracy = float(np.mean(preds == refs))

        classes = np.union1d(preds, refs)
        if average == "binary":
            if classes.size > 2:
                raise ValueError(
                    f"average='binary' needs at most two classes but found {classes.tolist()}; "
                    "pass average='macro', 'micro' or 'weighted'."
                )
            classes = np.array([pos_label])

        # One row per class: is the prediction / the reference this class? (n_classes, n_examples)
        predicted = preds[None, :] == classes[:, None]
        actual = refs[None, :] == classes[:, None]
        tp = np.sum(predicted & actual, axis=1)
        fp = np.sum(predicted & ~actual, axis=1)
        fn = np.sum(~predicted & actual, axis=1)

        if average == "micro":
            f1 = _f1(tp.sum(), fp.sum(), fn.sum())
        else:
            per_class = np.array([_f1(*counts) for counts in zip(tp, fp, fn, strict=True)])
            if average == "weighted":
                support = actual.sum(axis=1)
                # No reference in any class leaves nothing to weight by; scikit-learn also returns 0 then.
                f1 = float(np.average(per_class, weights=support)) if support.sum() > 0 else 0.0
            else:  # "binary" (a single class) or "macro"
                f1 = float(per_class.mean())
        return {"accuracy": accuracy, "f1": f1}


def _f1(tp: int, fp: int, fn: int) -> float:
    """F1 from true positive, false positive and false negative counts; 0 when all three are 0."""
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator > 0 else 0.0
