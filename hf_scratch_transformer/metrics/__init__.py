"""Evaluation metrics that ship with the package, loaded by path so that no metric code is fetched from the Hub.

Each metric is one self-contained `evaluate` module file, `<name>/<name>.py` next to this file::

    from hf_scratch_transformer.metrics import load_metric

    sacrebleu_chrf = load_metric("sacrebleu_chrf")  # corpus sacreBLEU and chrF of detokenized text
    accuracy_f1 = load_metric("accuracy_f1")  # accuracy and binary / macro / micro / weighted F1
"""

from pathlib import Path
from typing import Any

from ..extras import missing_extra_says_which

with missing_extra_says_which("train", "The metrics"):
    import evaluate

_METRICS_DIR = Path(__file__).resolve().parent

AVAILABLE_METRICS = ("accuracy_f1", "sacrebleu_chrf")


def metric_path(name: str) -> str:
    """Path of the `evaluate` module file of the metric `name`."""
    if name not in AVAILABLE_METRICS:
        raise ValueError(f"Unknown metric {name!r}; available metrics: {', '.join(AVAILABLE_METRICS)}.")
    return str(_METRICS_DIR / name / f"{name}.py")


def load_metric(name: str, **load_kwargs: Any) -> evaluate.EvaluationModule:
    """Load one of the package's metrics with `evaluate.load`, by path, so it works offline.

    `load_kwargs` go to `evaluate.load` (e.g. `experiment_id`, `num_process`, `process_id`, `keep_in_memory`).
    """
    # A path ending in ".py" makes evaluate use its local-file loader, which never asks the Hub, even for a name
    # (such as "accuracy") that also exists there.
    return evaluate.load(metric_path(name), **load_kwargs)


__all__ = ["AVAILABLE_METRICS", "load_metric", "metric_path"]
