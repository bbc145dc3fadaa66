#!/usr/bin/env bash
# The GPU checks in one command, for a machine with a CUDA GPU (run by hand; CI has no GPU):
#
#   OUT=runs/gpu bash benchmarks/gpu_checks.sh
#
# (1) the tests that need a GPU: a decoding step reads nothing back to the host
#     (`torch.cuda.set_sync_debug_mode("error")`); (2) which attention kernels each model's SDPA path runs in bf16
#     (flash, memory-efficient or math), from the profiler's kernel names; (3) benchmarks/speed.py in bf16 at the
#     benchmark shape (the rows of the CPU table in docs/results.md, and the compiled paths apart, since they
#     compile for minutes); (4) training MFU at the paper's base shape, where a step is big enough to fill a GPU.
# Each part is bounded by `timeout` and writes its own files under $OUT, so that a slow part loses only itself.
# speed.py sets its glibc malloc settings for the memory processes on the CPU only: with them, the memory processes
# of parts 3 and 4 did not finish in time on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
PY=${PY:-python3}
PEAK=${PEAK:-989}  # dense bf16 TFLOP/s of an H100/H200 SXM (NVIDIA's data sheet), the denominator of MFU
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

$PY - <<'EOF' 2>&1 | tee "$OUT/environment.txt"
import torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)
print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).multi_processor_count, "SMs")
EOF

# 1. The GPU-only tests.
timeout 90 $PY -m pytest -q -p no:cacheprovider tests/test_fast_paths.py -k gpu 2>&1 | tee "$OUT/tests.log"

# 2. The attention kernels SDPA picks, per model and task (one profiled call after a warm-up).
timeout 90 $PY - <<'EOF' 2>&1 | tee "$OUT/attention_kernels.txt"
import sys
import torch
sys.argv = ["speed.py", "--device", "cuda", "--dtype", "bf16"]
from benchmarks.speed import Runner, parse_args

args = parse_args()
for name in ["ours-sdpa", "marian-sdpa", "bart-sdpa"]:
    runner = Runner(name, args, torch.device("cuda"))
    for task, run in runner.tasks().items():
        run()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as profile:
            run()
            torch.cuda.synchronize()
        kernels = sorted(
            {event.key[:90] for event in profile.key_averages()
             if event.key.startswith("aten::_scaled_dot_product") or "fmha" in event.key or "flash_fwd" in event.key}
        )
        print(f"{name} {task}: {kernels}")
EOF

# 3. The benchmark shape in bf16: eager, SDPA and static-cache paths (with peak memory), then the compiled ones.
timeout 150 $PY benchmarks/speed.py --device cuda --dtype bf16 --peak_tflops "$PEAK" --repetitions 5 --warmup 2 \
    --models ours-eager,ours-sdpa,marian-eager,marian-sdpa,bart-sdpa,ours-sdpa+static,marian-sdpa+static,nn \
    --json "$OUT/speed_bf16.json" 2>&1 | tee "$OUT/speed_bf16.txt"
timeout 150 $PY benchmarks/speed.py --device cuda --dtype bf16 --peak_tflops "$PEAK" --repetitions 3 --warmup 1 \
    --no_memory --models ours-sdpa,marian-sdpa,ours-sdpa+compile,marian-sdpa+compile,bart-sdpa+compile \
    --json "$OUT/speed_bf16_compile.json" 2>&1 | tee "$OUT/speed_bf16_compile.txt"

# 4. The paper's base shape (d_model 512, 6+6 layers, ffn 2048, 8 heads), 64 pairs of 128 tokens: training MFU.
timeout 90 $PY benchmarks/speed.py --device cuda --dtype bf16 --peak_tflops "$PEAK" --repetitions 5 --warmup 2 \
    --vocab_size 32000 --d_model 512 --heads 8 --ffn_dim 2048 --layers 6 --max_positions 256 \
    --train_batch 64 --source_length 128 --target_length 128 --generate_batch 64 --new_tokens 64 \
    --models ours-sdpa,marian-sdpa,bart-sdpa --json "$OUT/speed_bf16_base.json" 2>&1 | tee "$OUT/speed_bf16_base.txt"
