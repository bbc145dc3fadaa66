"""Corpus sacreBLEU and chrF of detokenized translations, as an `evaluate` metric that needs nothing from the Hub.

This file is self-contained on purpose: `evaluate.load` copies it, alone, into its modules cache and imports it
from there, so it may import installed libraries but nothing from this package.
"""

from typing import Any

import datasets
import evaluate
from sacrebleu.metrics import BLEU, CHRF

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores", author = "Post, Matt", year = "2018",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    url = "https://aclanthology.org/W18-6319",
}
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation", author = "Popovi{\\'c}, Maja",
    year = "2015", booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    url = "https://aclanthology.org/W15-3049",
}
"""

_DESCRIPTION = """\
Corpus-level BLEU (Papineni et al., 2002) and chrF (Popovic, 2015) computed by the sacrebleu library on
detokenized text, so that scores are comparable across papers: sacreBLEU tokenizes the text itself (13a, the
WMT standard, by default) and is case-sensitive unless asked otherwise. Both scores come with sacreBLEU's
signature string, which records every setting that changes the number.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): detokenized system outputs, one string per segment.
    references (`list[str]` or `list[list[str]]`): detokenized references, either one string per prediction or a
        list of several references per prediction; every prediction must have the same number of references.
    tokenize (`str`, defaults to `"13a"`): sacreBLEU tokenizer for BLEU (`"13a"`, `"intl"`, `"zh"`, `"char"`,
        `"none"`, ...).
    lowercase (`bool`, defaults to `False`): lowercase predictions and references before scoring both metrics.

Returns:
    bleu (`float`): corpus BLEU, 0 to 100.
    chrf (`float`): corpus chrF (character 6-grams, beta 2), 0 to 100.
    precisions (`list[float]`): BLEU's modified 1- to 4-gram precisions, 0 to 100.
    brevity_penalty (`float`): BLEU's brevity penalty, 0 to 1.
    sys_len (`int`): number of tokens in the predictions.
    ref_len (`int`): effective reference length (the closest reference length, summed over segments).
    bleu_signature (`str`): sacreBLEU's BLEU signature, such as
        `"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"`.
    chrf_signature (`str`): sacreBLEU's chrF signature.

Examples:
    >>> metric = evaluate.load("hf_scratch_transformer/metrics/sacrebleu_chrf/sacrebleu_chrf.py")
    >>> result = metric.compute(predictions=["Das Haus ist klein."], references=[["Das Haus ist klein."]])
    >>> round(result["bleu"], 1), round(result["chrf"], 1)
    (100.0, 100.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SacrebleuChrf(evaluate.Metric):
    """Corpus sacreBLEU and chrF, from one or several references per prediction."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # evaluate keeps the first feature set that the first example fits. Its type check refuses a string
            # for a `List` (rather than storing a list of characters) and a list for a `Value("string")`, so one
            # reference per prediction selects the first set and several select the second.
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Value("string"),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.List(datasets.Value("string")),
                    }
                ),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/W18-6319", "https://aclanthology.org/W15-3049"],
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[str] | list[list[str]],
        tokenize: str = "13a",
        lowercase: bool = False,
    ) -> dict[str, Any]:
        """Score the corpus with sacreBLEU's BLEU and chrF."""
        ref_streams = _reference_streams(references)
        bleu = BLEU(tokenize=tokenize, lowercase=lowercase)
        chrf = CHRF(lowercase=lowercase)
        bleu_score = bleu.corpus_score(predictions, ref_streams)
        chrf_score = chrf.corpus_score(predictions, ref_streams)
        return {
            "bleu": bleu_score.score,
            "chrf": chrf_score.score,
            "precisions": list(bleu_score.precisions),
            "brevity_penalty": bleu_score.bp,
            "sys_len": bleu_score.sys_len,
            "ref_len": bleu_score.ref_len,
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
        }


def _reference_streams(references: list[str] | list[list[str]]) -> list[list[str]]:
    """Turn references per prediction into sacreBLEU's streams, where stream k holds each segment's k-th reference."""
    if not references or isinstance(references[0], str):
        return [list(references)]
    counts = {len(refs) for refs in references}
    # sacreBLEU reads the k-th reference of every segment from stream k, so a segment with fewer references would
    # shift the others; refuse rather than score the wrong pairs.
    if len(counts) != 1:
        raise ValueError(f"Every prediction needs the same number of references, got counts {sorted(counts)}.")
    return [list(stream) for stream in zip(*references, strict=True)]
