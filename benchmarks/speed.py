"""Speed, side by side: our model against Hugging Face's Marian and BART, and torch.nn.Transformer, at one shape.

Every model gets the same shape, the same inputs and the same measurement; models take turns within each
repetition so that drift of the machine (thermal, other load) spreads over all of them. Reported: medians with
min-max, ratios against the best of Marian/BART, model FLOP utilisation (MFU) against the measured matmul rate
(CPU) or the given peak (GPU), and peak memory.

    python benchmarks/speed.py                                   # the issue's shape, CPU, fp32
    python benchmarks/speed.py --device cuda --dtype bf16 --peak_tflops 989
    python benchmarks/speed.py --tiny                            # seconds; what CI runs

Training: batch x (source, target) tokens, forward + backward + AdamW step; throughput in target tokens/s.
Generation: `generate()` of exactly `new_tokens` tokens, greedy and beam search; throughput in new tokens/s
(beam search counts the returned tokens, batch x new_tokens, not the beams).
"""

import argparse
import gc
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn
from transformers import BartConfig, BartForConditionalGeneration, MarianConfig, MarianMTModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hf_scratch_transformer import ScratchTransformerConfig, ScratchTransformerForConditionalGeneration  # noqa: E402

PAD, BOS, EOS = 0, 1, 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--d_model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn_dim", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3, help="encoder layers = decoder layers")
    parser.add_argument("--max_positions", type=int, default=256)
    parser.add_argument("--train_batch", type=int, default=32)
    parser.add_argument("--source_length", type=int, default=32)
    parser.add_argument("--target_length", type=int, default=32)
    parser.add_argument("--generate_batch", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--num_beams", type=int, default=4)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: all cores)")
    parser.add_argument("--peak_tflops", type=float, default=None, help="peak of the device, for MFU on a GPU")
    parser.add_argument("--models", default="ours-eager,ours-sdpa,marian-eager,marian-sdpa,bart-eager,bart-sdpa,nn")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long run on a tiny shape (CI)")
    args = parser.parse_args()
    if args.tiny:
        args.vocab_size, args.d_model, args.heads, args.ffn_dim, args.layers = 100, 32, 2, 64, 1
        args.train_batch, args.source_length, args.target_length = 4, 8, 8
        args.generate_batch, args.new_tokens, args.num_beams = 2, 4, 2
        args.repetitions, args.warmup = 2, 1
    return args


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------------------------
# The models, all at one shape
# ---------------------------------------------------------------------------------------------------------------


def build(name: str, args: argparse.Namespace) -> nn.Module:
    family, _, implementation = name.partition("-")
    shape = dict(
        vocab_size=args.vocab_size,
        d_model=args.d_model,
        encoder_layers=args.layers,
        decoder_layers=args.layers,
        encoder_attention_heads=args.heads,
        decoder_attention_heads=args.heads,
        encoder_ffn_dim=args.ffn_dim,
        decoder_ffn_dim=args.ffn_dim,
        max_position_embeddings=args.max_positions,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=BOS,
    )
    if family == "ours":
        config = ScratchTransformerConfig(**shape, bos_token_id=BOS, label_smoothing=0.0)
        return ScratchTransformerForConditionalGeneration._from_config(config, attn_implementation=implementation)
    if family == "marian":
        config = MarianConfig(**shape, activation_function="relu", scale_embedding=True)
        return MarianMTModel._from_config(config, attn_implementation=implementation)
    if family == "bart":
        config = BartConfig(**shape, bos_token_id=BOS, activation_function="relu", forced_eos_token_id=None)
        return BartForConditionalGeneration._from_config(config, attn_implementation=implementation)
    if family == "nn":
        return NNTransformerSeq2Seq(args)
    raise ValueError(f"unknown model {name!r}")


class NNTransformerSeq2Seq(nn.Module):
    """torch.nn.Transformer with the embedding, positions and output projection it lacks: training only."""

    def __init__(self, args: argparse.Namespace):
        super().__init__()
        self.embed = nn.Embedding(args.vocab_size, args.d_model, padding_idx=PAD)
        self.positions = nn.Embedding(args.max_positions, args.d_model)
        self.transformer = nn.Transformer(
            args.d_model, args.heads, args.layers, args.layers, args.ffn_dim, dropout=0.1, batch_first=True
        )
        self.lm_head = nn.Linear(args.d_model, args.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, input_ids, attention_mask, decoder_input_ids, labels):
        def embed(ids):
            return self.embed(ids) * self.embed.embedding_dim**0.5 + self.positions.weight[: ids.shape[1]]

        target_length = decoder_input_ids.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(target_length, device=input_ids.device)
        hidden = self.transformer(
            embed(input_ids),
            embed(decoder_input_ids),
            tgt_mask=causal,
            tgt_is_causal=True,
            src_key_padding_mask=attention_mask == 0,
            memory_key_padding_mask=attention_mask == 0,
        )
        logits = self.lm_head(hidden)
        loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
        return loss


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(function: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def make_inputs(args: argparse.Namespace, batch: int, device: torch.device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, args.vocab_size, (batch, args.source_length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    labels = torch.randint(3, args.vocab_size, (batch, args.target_length), generator=generator)
    decoder_input_ids = torch.cat([torch.full((batch, 1), BOS), labels[:, :-1]], dim=1)
    return {
        name: tensor.to(device)
        for name, tensor in dict(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, labels=labels
        ).items()
    }


class Runner:
    """One model, its optimizer, and one closure per measured task."""

    def __init__(self, name: str, args: argparse.Namespace, device: torch.device):
        self.name = name
        self.args = args
        self.device = device
        dtype = DTYPES[args.dtype]
        self.model = build(name, args).to(device=device, dtype=dtype)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.train_inputs = make_inputs(args, args.train_batch, device)
        self.generate_inputs = make_inputs(args, args.generate_batch, device, seed=1)

    def train_step(self) -> None:
        self.model.train()
        out = self.model(**self.train_inputs)
        loss = out if isinstance(out, torch.Tensor) else out.loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def can_generate(self) -> bool:
        return hasattr(self.model, "generate")

    @torch.inference_mode()
    def generate(self, num_beams: int) -> None:
        self.model.eval()
        ids = self.model.generate(
            input_ids=self.generate_inputs["input_ids"],
            attention_mask=self.generate_inputs["attention_mask"],
            num_beams=num_beams,
            do_sample=False,
            max_new_tokens=self.args.new_tokens,
            min_new_tokens=self.args.new_tokens,
            early_stopping=False,
        )
        assert ids.shape[1] >= self.args.new_tokens, f"{self.name} stopped early: {ids.shape}"


def training_flops(args: argparse.Namespace) -> float:
    """Matmul FLOPs of one training step (forward x 3 for forward + backward), the same for every model."""
    batch, source, target, width, ffn = (
        args.train_batch,
        args.source_length,
        args.target_length,
        args.d_model,
        args.ffn_dim,
    )
    projections = 4 * width * width  # q, k, v, out
    encoder = source * (projections + 2 * width * ffn) + 2 * source * source * width  # + QK^T and AV
    decoder = target * (2 * projections + 2 * width * ffn) + 2 * target * target * width
    cross_kv = source * 2 * width * width
    cross_attention = 2 * target * source * width
    lm_head = target * width * args.vocab_size
    multiply_adds = args.layers * (encoder + decoder + cross_kv + cross_attention) + lm_head
    return 3 * 2 * batch * multiply_adds


def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int = 1024, repeats: int = 20) -> float:
    """The device's measured dense matmul rate at this dtype: the CPU's practical peak."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    seconds = timed(lambda: [a @ b for _ in range(repeats)], device)
    return 2 * size**3 * repeats / seconds / 1e12


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def summarise(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = args.models.split(",")
    runners = [Runner(name, args, device) for name in names]

    tasks = {"train": lambda r: r.train_step()}
    tasks["greedy"] = lambda r: r.generate(1)
    tasks[f"beam{args.num_beams}"] = lambda r: r.generate(args.num_beams)
    tokens = {
        "train": args.train_batch * args.target_length,
        "greedy": args.generate_batch * args.new_tokens,
        f"beam{args.num_beams}": args.generate_batch * args.new_tokens,
    }
    seconds: dict[str, dict[str, list[float]]] = {task: {r.name: [] for r in runners} for task in tasks}
    for repetition in range(args.warmup + args.repetitions):
        for task, run in tasks.items():
            for runner in runners if repetition % 2 == 0 else reversed(runners):
                if task != "train" and not runner.can_generate():
                    continue
                elapsed = timed(partial(run, runner), device)
                if repetition >= args.warmup:
                    seconds[task][runner.name].append(elapsed)
            gc.collect()

    dtype = DTYPES[args.dtype]
    peak = args.peak_tflops if args.peak_tflops else matmul_tflops(device, dtype)
    flops = training_flops(args)
    results = {"args": vars(args) | {"json": str(args.json)}, "peak_tflops": peak, "device": device_name(device)}
    results["models"] = {}
    for runner in runners:
        entry = {"parameters": runner.parameters}
        for task in tasks:
            samples = seconds[task][runner.name]
            if samples:
                rates = [tokens[task] / s for s in samples]
                entry[task] = summarise(rates)
        entry["train_mfu"] = flops / statistics.median(seconds["train"][runner.name]) / 1e12 / peak
        results["models"][runner.name] = entry
    results["peak_memory_mb_process"] = peak_memory_mb(device)
    print_table(results, tasks)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def print_table(results: dict, tasks: dict) -> None:
    models = results["models"]
    baselines = [name for name in models if name.startswith(("marian", "bart"))]
    print(f"device: {results['device']}; matmul peak used for MFU: {results['peak_tflops'] * 1000:.1f} GFLOP/s")
    header = f"{'model':<14}" + "".join(f"{task + ' tok/s (min-max)':>30}" for task in tasks) + f"{'train MFU':>11}"
    print(header)
    for name, entry in models.items():
        cells = []
        for task in tasks:
            if task in entry:
                s = entry[task]
                cells.append(f"{s['median']:>10.0f} ({s['min']:.0f}-{s['max']:.0f})".rjust(30))
            else:
                cells.append("—".rjust(30))
        print(f"{name:<14}" + "".join(cells) + f"{entry['train_mfu']:>10.1%}")
    if baselines:
        for ours in (name for name in models if name.startswith("ours")):
            ratios = []
            for task in tasks:
                best = max(models[b][task]["median"] for b in baselines if task in models[b])
                ratios.append(f"{task} {models[ours][task]['median'] / best:.2f}x")
            print(f"{ours} vs best of Marian/BART: " + ", ".join(ratios))


if __name__ == "__main__":
    main()
