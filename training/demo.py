"""The package's main job on a fresh machine, offline, in a few minutes on 2 CPU cores: `make demo`.

1. Generate a translation task with the package's own code: numbers written out in English, to German
   ("three hundred forty-two" -> "dreihundertzweiundvierzig"); held-out numbers are never seen in training.
2. Train a byte-level BPE tokenizer on it (training/train_tokenizer.py).
3. Train a small Transformer on it (training/finetune_translation.py, Seq2SeqTrainer), its evaluation scored with
   the character-level BLEU that step 4 reports.
4. Reload the result with AutoModelForSeq2SeqLM / AutoTokenizer, translate the held-out test numbers with beam
   search, and report exact match and character-level sacreBLEU (each German number is one word, which leaves
   word-level BLEU no 2-, 3- or 4-grams to count); print a few translations.

    hf-scratch-transformer demo                 # the full demo (README lists its expected numbers)
    hf-scratch-transformer demo --quick         # a shortened run (150 steps) that shows every step works
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from hf_scratch_transformer.demo_data import make_demo_splits
from hf_scratch_transformer.metrics import load_metric

# A model a fifth of the paper's width: enough for number words, small enough for two CPU cores. Pre-LN and
# warmup let it train at a high learning rate from the first steps.
MODEL = (
    "d_model=128,encoder_layers=3,decoder_layers=3,encoder_attention_heads=4,decoder_attention_heads=4,"
    "encoder_ffn_dim=512,decoder_ffn_dim=512,normalize_before=true,dropout=0.1,label_smoothing=0.1"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--train_size", type=int, default=20000)
    parser.add_argument("--test_size", type=int, default=500)
    parser.add_argument("--max_number", type=int, default=99_999, help="numbers are drawn from 0 .. this")
    parser.add_argument("--max_steps", type=int, default=1600)
    parser.add_argument("--quick", action="store_true", help="a short run that shows every step works")
    args = parser.parse_args()
    if args.quick:
        args.train_size, args.test_size, args.max_steps = 2000, 40, 150
    return args


def run(command: str, *arguments) -> None:
    """One of the package's commands, `hf-scratch-transformer <command>`, in a process of its own."""
    print("$ hf-scratch-transformer", command, *arguments, flush=True)
    command = [sys.executable, "-m", "hf_scratch_transformer.training.cli", command, *map(str, arguments)]
    subprocess.run(command, check=True)


def write_jsonl(dataset, path: Path) -> None:
    path.write_text("".join(json.dumps({"translation": row["translation"]}) + "\n" for row in dataset))


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    data_dir = args.output_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)

    # 1. Data, generated: train, validation and test hold different numbers.
    splits = make_demo_splits(
        train_size=args.train_size, validation_size=200, test_size=args.test_size, seed=0, max_number=args.max_number
    )
    for split, dataset in splits.items():
        write_jsonl(dataset, data_dir / f"{split}.jsonl")
    sizes = ", ".join(f"{split} {len(dataset)}" for split, dataset in splits.items())
    print(f"data: {sizes}; e.g. {splits['train'][0]['translation']}")

    # 2. Tokenizer.
    tokenizer_dir = args.output_dir / "tokenizer"
    run("train-tokenizer", "--train_file", data_dir / "train.jsonl", "--output_dir", tokenizer_dir,
        "--vocab_size", 600, "--num_sentinel_tokens", 10)  # fmt: skip

    # 3. Model.
    model_dir = args.output_dir / "model"
    run("finetune-translation", "--source_lang", "en", "--target_lang", "de",
        "--train_file", data_dir / "train.jsonl", "--validation_file", data_dir / "validation.jsonl",
        "--tokenizer_name", tokenizer_dir, "--config_overrides", MODEL, "--output_dir", model_dir,
        "--overwrite_output_dir", "--max_steps", args.max_steps, "--per_device_train_batch_size", 64,
        "--learning_rate", 1e-3, "--warmup_steps", min(200, args.max_steps // 10),
        "--lr_scheduler_type", "inverse_sqrt", "--adam_beta2", 0.98, "--weight_decay", 0.0,
        "--predict_with_generate", "--num_beams", 4, "--max_target_length", 32, "--bleu_tokenize", "char",
        "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", max(10, args.max_steps // 16),
        "--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--seed", 0)  # fmt: skip

    # 4. Reload with the Auto classes and translate the held-out test numbers, with the beam search the run saved
    # in generation_config.json (4 beams, max_length 32).
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    sources = [row["translation"]["en"] for row in splits["test"]]
    references = [row["translation"]["de"] for row in splits["test"]]
    hypotheses = []
    with torch.inference_mode():
        for first in range(0, len(sources), 64):
            batch = tokenizer(sources[first : first + 64], return_tensors="pt", padding=True)
            hypotheses += tokenizer.batch_decode(model.generate(**batch), skip_special_tokens=True)
    exact_match = sum(h == r for h, r in zip(hypotheses, references, strict=True)) / len(references)
    # Each German number is one word, so word 4-gram BLEU is 0 by construction: score characters instead.
    scores = load_metric("sacrebleu_chrf").compute(predictions=hypotheses, references=references, tokenize="char")

    results = {
        "test_examples": len(references),
        "exact_match": exact_match,
        "char_bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "wall_time_s": time.perf_counter() - start,
    }
    (args.output_dir / "demo_results.json").write_text(json.dumps(results, indent=2))
    print("\nHeld-out translations (English -> German):")
    for source, hypothesis, reference in list(zip(sources, hypotheses, references, strict=True))[:8]:
        mark = "ok" if hypothesis == reference else f"expected {reference}"
        print(f"  {source:<45} -> {hypothesis:<40} {mark}")
    print(
        f"\nexact match {exact_match:.1%}, character sacreBLEU {scores['bleu']:.1f}, chrF {scores['chrf']:.1f} on "
        f"{len(references)} held-out numbers; {results['wall_time_s']:.0f} s in all. Model and tokenizer: {model_dir}"
    )


if __name__ == "__main__":
    main()
