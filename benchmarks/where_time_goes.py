"""Where the time goes: one task of one model from speed.py, under torch.profiler, in categories of operators.

    python -m benchmarks.where_time_goes --model ours-sdpa --task greedy    # train, greedy or beam
    python -m benchmarks.where_time_goes --model marian-sdpa --task train --layers 3 --d_model 256

Each operator's own time (not its children's) goes to one category; what the operators do not account for is the
Python and dispatch overhead between them (the profiler adds some of its own there too). Medians over repetitions.
Shape flags are speed.py's.
"""

import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import speed

CATEGORIES = {
    # Eager matmuls, the ones a compiled graph calls (oneDNN's linear), and int8 dynamic quantization's.
    "matmul": (
        "aten::addmm",
        "aten::mm",
        "aten::bmm",
        "aten::baddbmm",
        "mkldnn::_linear_pointwise",
        "quantized::linear_dynamic",
    ),
    "attention kernel": ("aten::_scaled_dot_product", "aten::_softmax", "aten::_softmax_backward_data"),
    "cache and copies": ("aten::cat", "aten::index_select", "aten::copy_", "aten::clone", "aten::index"),
    "loss": ("aten::_log_softmax", "aten::nll_loss", "aten::logsumexp", "aten::exp", "aten::scatter_add_"),
    "optimizer": ("aten::_foreach", "aten::lerp_", "aten::addcdiv_", "aten::addcmul_", "aten::sqrt", "aten::mul_"),
    "layer norm": ("aten::native_layer_norm",),
    "generate's logits processing": ("aten::where", "aten::isin", "aten::argmax", "aten::topk", "aten::sort"),
}


def category(name: str) -> str:
    for label, prefixes in CATEGORIES.items():
        if name.startswith(prefixes):
            return label
    return "other operators"


def main() -> None:
    parser = speed.argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="ours-sdpa")
    parser.add_argument("--task", choices=["train", "greedy", "beam"], default="greedy")
    parser.add_argument("--profiles", type=int, default=3)
    own, rest = parser.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    args = speed.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = speed.Runner(own.model, args, torch.device("cpu"))
    run = {"train": runner.train_step, "greedy": lambda: runner.generate(1)}
    run["beam"] = lambda: runner.generate(args.num_beams)
    task = run[own.task]
    for _ in range(2):
        task()
    walls, plain, totals = [], [], {}
    for _ in range(own.profiles):
        start = time.perf_counter()
        task()
        plain.append(time.perf_counter() - start)
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            start = time.perf_counter()
            task()
            walls.append(time.perf_counter() - start)
        per_category: dict[str, float] = {}
        for event in profiler.key_averages():
            label = category(event.key)
            per_category[label] = per_category.get(label, 0.0) + event.self_cpu_time_total / 1e3
        for label, ms in per_category.items():
            totals.setdefault(label, []).append(ms)
    wall = statistics.median(walls) * 1e3
    operators = sum(statistics.median(values) for values in totals.values())
    print(f"{own.model} {own.task}: {statistics.median(plain) * 1e3:.0f} ms without the profiler, {wall:.0f} ms with")
    for label, values in sorted(totals.items(), key=lambda item: -statistics.median(item[1])):
        ms = statistics.median(values)
        print(f"  {label:<30} {ms:8.1f} ms {ms / wall:6.1%}")
    print(f"  {'Python and dispatch between':<30} {wall - operators:8.1f} ms {(wall - operators) / wall:6.1%}")


if __name__ == "__main__":
    main()
