"""What low precision costs in quality: a translation checkpoint decodes a validation set in fp32, bf16 and int8
(dynamic quantization of every linear layer, CPU), and exported to CTranslate2 in float32 and int8 (the `export`
extra), each with the same beam search; sacreBLEU and chrF of each, the change against the first, how many
sentences come out identical to it, and the decoding speed.

    python -m benchmarks.precision_bleu --model runs/recipes/multi30k_en_de/averaged \
        --validation_file ../shared/data/multi30k/validation.jsonl --source_lang en --target_lang de
    python -m benchmarks.precision_bleu ... --precisions fp32,ct2-float32,ct2-int8

The metric is the training scripts' own (`sacrebleu_chrf`: cased, 13a tokenization, on detokenized text), so the
fp32 figure equals `finetune_translation.py --predict_with_generate` on the same checkpoint and beams.
"""

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import hf_scratch_transformer  # noqa: F401  (registers the Auto classes)
from benchmarks.speed import quantize_int8
from hf_scratch_transformer.metrics import load_metric

PRECISIONS = ("fp32", "bf16", "int8", "ct2-float32", "ct2-int8")
# The CTranslate2 rows by default where the `export` extra is installed.
DEFAULT_PRECISIONS = PRECISIONS if importlib.util.find_spec("ctranslate2") else PRECISIONS[:3]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a translation checkpoint (folder with its tokenizer)")
    parser.add_argument("--validation_file", required=True, help='JSON Lines of {"translation": {lang: text}}')
    parser.add_argument("--source_lang", required=True)
    parser.add_argument("--target_lang", required=True)
    parser.add_argument("--precisions", default=",".join(DEFAULT_PRECISIONS))
    parser.add_argument("--num_beams", type=int, default=5)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args()


def model_in(precision: str, checkpoint: str) -> torch.nn.Module:
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint).eval()
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        return quantize_int8(model, torch.device("cpu"))
    return model


@torch.inference_mode()
def translate(model, tokenizer, sources: list[str], args: argparse.Namespace) -> tuple[list[str], float, int]:
    """Hypotheses in the order of `sources`, the seconds it took, and the tokens generated."""
    # Sources sorted by length, so that a batch pads little; the hypotheses are put back in order.
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    hypotheses: list[str] = [""] * len(sources)
    generated = 0
    start = time.perf_counter()
    for first in range(0, len(order), args.batch_size):
        rows = order[first : first + args.batch_size]
        batch = tokenizer([sources[i] for i in rows], return_tensors="pt", padding=True)
        ids = model.generate(**batch, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)
        generated += int((ids[:, 1:] != tokenizer.pad_token_id).sum())
        for row, text in zip(rows, tokenizer.batch_decode(ids, skip_special_tokens=True), strict=True):
            hypotheses[row] = text.strip()
    return hypotheses, time.perf_counter() - start, generated


def translate_with_ctranslate2(
    quantization: str, checkpoint: str, tokenizer, sources: list[str], args: argparse.Namespace
) -> tuple[list[str], float, int]:
    """`translate` through the checkpoint exported to CTranslate2 with `quantization`, decoding as `generate()`
    does (`decoding_options`), with torch's number of threads."""
    import ctranslate2

    from hf_scratch_transformer.export import decoding_options, export_ctranslate2

    with tempfile.TemporaryDirectory() as folder:
        translator = ctranslate2.Translator(
            export_ctranslate2(checkpoint, Path(folder) / "ct2", quantization=quantization),
            intra_threads=torch.get_num_threads(),
        )
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        tokens = [tokenizer.convert_ids_to_tokens(tokenizer(sources[i]).input_ids) for i in order]
        start = time.perf_counter()
        results = translator.translate_batch(
            tokens, max_batch_size=args.batch_size, **decoding_options(args.num_beams, args.max_new_tokens)
        )
        seconds = time.perf_counter() - start
    hypotheses: list[str] = [""] * len(sources)
    generated = 0
    for row, result in zip(order, results, strict=True):
        output = result.hypotheses[0]
        generated += len(output) + (len(output) < args.max_new_tokens)  # + </s>, which generate() counts
        hypotheses[row] = tokenizer.decode(tokenizer.convert_tokens_to_ids(output), skip_special_tokens=True).strip()
    return hypotheses, seconds, generated


def main() -> None:
    args = parse_args()
    with open(args.validation_file, encoding="utf-8") as file:
        pairs = [json.loads(line)["translation"] for line in file if line.strip()][: args.max_samples]
    sources = [pair[args.source_lang] for pair in pairs]
    references = [pair[args.target_lang] for pair in pairs]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    metric = load_metric("sacrebleu_chrf")
    results: dict[str, dict] = {}
    baseline: list[str] | None = None
    for precision in args.precisions.split(","):
        if precision not in PRECISIONS:
            raise SystemExit(f"--precisions: {precision!r} is not one of {', '.join(PRECISIONS)}.")
        if precision.startswith("ct2-"):
            quantization = precision.removeprefix("ct2-")
            hypotheses, seconds, generated = translate_with_ctranslate2(
                quantization, args.model, tokenizer, sources, args
            )
        else:
            hypotheses, seconds, generated = translate(model_in(precision, args.model), tokenizer, sources, args)
        scores = metric.compute(predictions=hypotheses, references=references)
        baseline = hypotheses if baseline is None else baseline
        results[precision] = {
            "bleu": scores["bleu"],
            "chrf": scores["chrf"],
            "identical_to_first": sum(a == b for a, b in zip(hypotheses, baseline, strict=True)) / len(sources),
            "seconds": seconds,
            "tokens_per_second": generated / seconds,
        }
    first = next(iter(results.values()))
    print(f"{len(sources)} sentences, beam {args.num_beams}, {torch.get_num_threads()} threads")
    print(f"{'precision':<12}{'BLEU':>8}{'change':>8}{'chrF':>8}{'identical':>11}{'seconds':>9}{'tok/s':>8}")
    for precision, entry in results.items():
        print(
            f"{precision:<12}{entry['bleu']:>8.2f}{entry['bleu'] - first['bleu']:>+8.2f}{entry['chrf']:>8.2f}"
            f"{entry['identical_to_first']:>11.1%}{entry['seconds']:>9.1f}{entry['tokens_per_second']:>8.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **results}, indent=2))


if __name__ == "__main__":
    main()
