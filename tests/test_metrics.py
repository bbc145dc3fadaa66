"""The package's own `evaluate` metrics: they load offline, by path, and agree with sacrebleu and hand counts.

evaluate reads HF_EVALUATE_OFFLINE (and huggingface_hub reads HF_HUB_OFFLINE) once, when first imported, so
setting them inside this pytest process would come too late. Everything that calls `evaluate.load` therefore runs
once, in a fresh Python with the offline variables set, sockets disabled and an empty HF_HOME; the tests below
check what it returns.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

from hf_scratch_transformer.metrics import AVAILABLE_METRICS, load_metric

# German and English with umlauts, accents and capitals; the predictions miss some of them on purpose, so that a
# lowercasing or ASCII-folding metric would score differently from sacreBLEU's cased default.
PREDICTIONS = [
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "müller wohnt seit Jahren in Koln.",
    "The café in Zürich opens at nine o'clock.",
    "She said: « Déjà vu » and left the room.",
]
REFERENCES_A = [
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Müller wohnt seit vielen Jahren in Köln.",
    "The Café in Zürich opens at 9 o'clock.",
    "She said « déjà vu » and left the room.",
]
REFERENCES_B = [
    "Der flinke braune Fuchs springt über den trägen Hund.",
    "Herr Müller lebt seit Jahren in Köln.",
    "The café in Zurich opens at nine.",
    "She said: « Déjà vu », then left.",
]

# Binary: TP = 3 (positions 0-2), FN = 2 (3-4), FP = 1 (5), TN = 4 (6-9).
BINARY_REFERENCES = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
BINARY_PREDICTIONS = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]

# Three classes, per class (TP, FP, FN): 0 -> (2, 1, 1), 1 -> (2, 1, 1), 2 -> (3, 1, 1); support 3, 3, 4.
MULTI_REFERENCES = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
MULTI_PREDICTIONS = [0, 0, 1, 1, 1, 2, 2, 2, 0, 2]

# Runs in the child process; reads the cases as JSON on stdin and writes the results as JSON on stdout.
_OFFLINE_SCRIPT = """
import json, socket, sys

def _no_network(*args, **kwargs):
    raise OSError("network access attempted while loading a metric")

# Any attempt to reach the Hub fails loudly instead of waiting for a timeout.
socket.socket.connect = _no_network
socket.create_connection = _no_network

import evaluate
import huggingface_hub
from hf_scratch_transformer.metrics import load_metric

cases = json.load(sys.stdin)
bleu_chrf = load_metric("sacrebleu_chrf")
accuracy_f1 = load_metric("accuracy_f1")

def error_of(fn):
    try:
        fn()
    except ValueError as error:
        return str(error)
    return None

out = {
    "evaluate_offline": evaluate.config.HF_EVALUATE_OFFLINE,
    "hub_offline": huggingface_hub.constants.HF_HUB_OFFLINE,
    "module_files": {
        name: sys.modules[type(metric).__module__].__file__
        for name, metric in [("sacrebleu_chrf", bleu_chrf), ("accuracy_f1", accuracy_f1)]
    },
    "sacrebleu": {
        name: bleu_chrf.compute(predictions=preds, references=refs) for name, (preds, refs) in cases["text"].items()
    },
    "accuracy_f1": {
        name: accuracy_f1.compute(predictions=preds, references=refs, average=average)
        for name, (preds, refs, average) in cases["labels"].items()
    },
    "errors": {
        "uneven_references": error_of(
            lambda: bleu_chrf.compute(predictions=["a b", "c d"], references=[["a b"], ["c d", "c e"]])
        ),
        "binary_with_three_classes": error_of(
            lambda: accuracy_f1.compute(predictions=[0, 1, 2], references=[0, 1, 1])
        ),
    },
}
json.dump(out, sys.stdout)
"""


@pytest.fixture(scope="module")
def offline_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Load both metrics offline in a fresh Python and compute every case of this file once."""
    cases = {
        "text": {
            "one_reference": [PREDICTIONS, REFERENCES_A],
            "one_reference_as_lists": [PREDICTIONS, [[ref] for ref in REFERENCES_A]],
            "two_references": [PREDICTIONS, [list(refs) for refs in zip(REFERENCES_A, REFERENCES_B, strict=True)]],
            "perfect": [REFERENCES_A, REFERENCES_A],
        },
        "labels": {
            "binary": [BINARY_PREDICTIONS, BINARY_REFERENCES, "binary"],
            "macro": [MULTI_PREDICTIONS, MULTI_REFERENCES, "macro"],
            "micro": [MULTI_PREDICTIONS, MULTI_REFERENCES, "micro"],
            "weighted": [MULTI_PREDICTIONS, MULTI_REFERENCES, "weighted"],
        },
    }
    hf_home = tmp_path_factory.mktemp("hf_home")
    env = {
        **os.environ,
        "HF_HOME": str(hf_home),  # an empty cache: nothing can come from an earlier run
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    for inherited in ("HF_MODULES_CACHE", "HF_METRICS_CACHE", "HF_EVALUATE_CACHE"):
        env.pop(inherited, None)  # these would override HF_HOME
    proc = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout)
    results["hf_home"] = str(hf_home)
    return results


def test_metrics_load_offline_from_evaluate_cache(offline_results: dict) -> None:
    assert offline_results["evaluate_offline"] is True
    assert offline_results["hub_offline"] is True
    for name, module_file in offline_results["module_files"].items():
        # evaluate imports its own copy of the file, inside the fresh HF_HOME, not the package file itself.
        assert Path(module_file).name == f"{name}.py"
        assert Path(module_file).is_relative_to(offline_results["hf_home"])


@pytest.mark.parametrize("case", ["one_reference", "one_reference_as_lists"])
def test_sacrebleu_chrf_one_reference_matches_sacrebleu(offline_results: dict, case: str) -> None:
    result = offline_results["sacrebleu"][case]
    expected_bleu = sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES_A])
    assert result["bleu"] == pytest.approx(expected_bleu.score)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES_A]).score)
    assert result["precisions"] == pytest.approx(expected_bleu.precisions)
    assert result["brevity_penalty"] == pytest.approx(expected_bleu.bp)
    assert (result["sys_len"], result["ref_len"]) == (expected_bleu.sys_len, expected_bleu.ref_len)
    # The sample is cased on purpose: lowercasing would change the score.
    assert result["bleu"] != pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES_A], lowercase=True).score)
    assert result["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|")
    assert result["chrf_signature"].startswith("nrefs:1|case:mixed|")


def test_sacrebleu_chrf_two_references_match_sacrebleu(offline_results: dict) -> None:
    result = offline_results["sacrebleu"]["two_references"]
    streams = [REFERENCES_A, REFERENCES_B]
    bleu, chrf = BLEU(), CHRF()
    expected_bleu = bleu.corpus_score(PREDICTIONS, streams)
    assert expected_bleu.score == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, streams).score)
    assert result["bleu"] == pytest.approx(expected_bleu.score)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDICTIONS, streams).score)
    assert result["precisions"] == pytest.approx(expected_bleu.precisions)
    assert (result["sys_len"], result["ref_len"]) == (expected_bleu.sys_len, expected_bleu.ref_len)
    # A second reference can only help, and it does on this sample.
    assert result["bleu"] > offline_results["sacrebleu"]["one_reference"]["bleu"]
    chrf.corpus_score(PREDICTIONS, streams)  # a signature needs a scored corpus (it records nrefs)
    assert result["bleu_signature"] == str(bleu.get_signature())
    assert result["chrf_signature"] == str(chrf.get_signature())
    assert result["bleu_signature"].startswith("nrefs:2|")


def test_sacrebleu_chrf_perfect_prediction_scores_100(offline_results: dict) -> None:
    result = offline_results["sacrebleu"]["perfect"]
    assert result["bleu"] == pytest.approx(100.0)
    assert result["chrf"] == pytest.approx(100.0)
    assert result["brevity_penalty"] == 1.0


def test_sacrebleu_chrf_rejects_uneven_reference_counts(offline_results: dict) -> None:
    assert "same number of references" in offline_results["errors"]["uneven_references"]


def test_accuracy_f1_binary_from_confusion_matrix(offline_results: dict) -> None:
    result = offline_results["accuracy_f1"]["binary"]
    tp, fp, fn, tn = 3, 1, 2, 4
    assert result["accuracy"] == pytest.approx((tp + tn) / 10)  # 0.7
    assert result["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))  # precision 3/4, recall 3/5: F1 2/3


def test_accuracy_f1_three_classes(offline_results: dict) -> None:
    f1_per_class = [2 * 2 / (2 * 2 + 1 + 1), 2 * 2 / (2 * 2 + 1 + 1), 2 * 3 / (2 * 3 + 1 + 1)]  # 2/3, 2/3, 3/4
    results = offline_results["accuracy_f1"]
    assert results["macro"]["accuracy"] == pytest.approx(0.7)
    assert results["macro"]["f1"] == pytest.approx(sum(f1_per_class) / 3)  # 25/36
    assert results["micro"]["f1"] == pytest.approx(2 * 7 / (2 * 7 + 3 + 3))  # equals accuracy for single labels
    assert results["weighted"]["f1"] == pytest.approx((3 * 2 / 3 + 3 * 2 / 3 + 4 * 3 / 4) / 10)


def test_accuracy_f1_binary_rejects_three_classes(offline_results: dict) -> None:
    assert "average='macro'" in offline_results["errors"]["binary_with_three_classes"]


def test_load_metric_unknown_name_lists_available_metrics() -> None:
    with pytest.raises(ValueError, match="Unknown metric 'bleu'") as error:
        load_metric("bleu")
    for name in AVAILABLE_METRICS:
        assert name in str(error.value)
