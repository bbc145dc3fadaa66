"""How long one training step of the sentiment classifier takes, fully fine-tuned and through LoRA adapters with and
without dropout on their input, in one process, alternating, on the shape of training/recipes/sentiment.sh.

    python -m benchmarks.lora_step                       # IMDB's shape: 32 reviews of 256 tokens
    python -m benchmarks.lora_step --length 16           # about SST-2's
    python -m benchmarks.lora_step --checkpoint runs/recipes/pretrain_reviews/model

An adapter freezes the model's weights, so a step skips their gradients and their optimizer state, and might be
expected to run faster than full fine-tuning. With PEFT's `lora_dropout` above 0 it draws a fresh dropout mask over
the input of every adapted layer, q, k and v each their own, and on a CPU drawing random numbers is slow: this
measures what that costs.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from hf_scratch_transformer import ScratchTransformerConfig, ScratchTransformerForSequenceClassification

# The encoder of training/recipes/pretrain_reviews.sh (its decoder does not run in the classifier).
RECIPE_SHAPE = dict(
    vocab_size=16000,
    d_model=256,
    encoder_layers=4,
    decoder_layers=4,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=1024,
    decoder_ffn_dim=1024,
    normalize_before=True,
    max_position_embeddings=512,
)
TINY_SHAPE = dict(
    RECIPE_SHAPE,
    vocab_size=100,
    d_model=16,
    encoder_layers=1,
    decoder_layers=1,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
)
ADAPTED_LAYERS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]  # what sentiment.sh's PEFT=lora adapts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="a saved model; default: a new one of the recipe's shape")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=256, help="tokens a text")
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--lora_dropouts", default="0.05,0", help="comma-separated; one LoRA row each")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each row, after one untimed")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds, the rows taking turns in each")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long run on a tiny shape (CI)")
    return parser.parse_args()


def classifier_config(args: argparse.Namespace) -> ScratchTransformerConfig:
    """The checkpoint's config, or the recipe's shape (tiny with --tiny), fine-tuned as sentiment.sh does."""
    if args.checkpoint:
        return ScratchTransformerConfig.from_pretrained(args.checkpoint, num_labels=2, dropout=0.1)
    return ScratchTransformerConfig(**(TINY_SHAPE if args.tiny else RECIPE_SHAPE), num_labels=2, dropout=0.1)


def new_classifier(args: argparse.Namespace, config: ScratchTransformerConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    if args.checkpoint:
        return ScratchTransformerForSequenceClassification.from_pretrained(args.checkpoint, config=config)
    return ScratchTransformerForSequenceClassification(config)


def with_lora(model: torch.nn.Module, rank: int, dropout: float) -> torch.nn.Module:
    config = LoraConfig(
        task_type="SEQ_CLS", r=rank, lora_alpha=2 * rank, lora_dropout=dropout, target_modules=ADAPTED_LAYERS
    )
    return get_peft_model(model, config)


def step_seconds(model: torch.nn.Module, batch: dict, steps: int) -> list[float]:
    """Seconds of each of `steps` training steps (forward, backward, AdamW), after one untimed step (AdamW's state
    is made in the first)."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    seconds = []
    for step in range(steps + 1):
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step > 0:
            seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    args = parse_args()
    if args.tiny:
        args.batch, args.length, args.steps, args.rounds = 2, 8, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    config = classifier_config(args)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, config.vocab_size, (args.batch, args.length), generator=generator)
    batch = dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        labels=torch.randint(0, 2, (args.batch,), generator=generator),
    )

    rows = {"full fine-tuning": None} | {
        f"LoRA r={args.lora_r}, lora_dropout={dropout}": float(dropout) for dropout in args.lora_dropouts.split(",")
    }
    samples = {name: [] for name in rows}
    trainable = {}
    # Rows take turns, so that a slower minute of the host is shared among them. Round 0 is not timed: the first
    # model a process trains runs its first few steps several times slower (one-time set-up inside torch).
    for round_index in range(args.rounds + 1):
        for name, dropout in rows.items():
            model = new_classifier(args, config)
            if dropout is not None:
                model = with_lora(model, args.lora_r, dropout)
            trainable[name] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            seconds = step_seconds(model, batch, args.steps)
            if round_index > 0:
                samples[name] += seconds

    full = statistics.median(samples["full fine-tuning"])
    results = {
        name: {
            "median_step_s": statistics.median(seconds),
            "min_step_s": min(seconds),
            "max_step_s": max(seconds),
            "against_full_fine_tuning": statistics.median(seconds) / full,
            "trainable_parameters": trainable[name],
        }
        for name, seconds in samples.items()
    }
    print(
        f"batch {args.batch} x {args.length} tokens, {torch.get_num_threads()} threads, "
        f"{args.steps} steps x {args.rounds} rounds a row"
    )
    print(f"{'':<34}{'step s (min-max)':>24}{'x full':>9}{'trainable':>12}")
    for name, row in results.items():
        spread = f"{row['median_step_s']:.3f} ({row['min_step_s']:.3f}-{row['max_step_s']:.3f})"
        print(f"{name:<34}{spread:>24}{row['against_full_fine_tuning']:>8.2f}x{row['trainable_parameters']:>12,}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
