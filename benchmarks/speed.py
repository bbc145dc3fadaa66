"""Speed, side by side: our model against Hugging Face's Marian and BART, and torch.nn.Transformer, at one shape.

Every model gets the same shape, the same inputs and the same measurement; models take turns within each
repetition so that drift of the machine (thermal, other load) spreads over all of them. Reported: medians with
min-max, ratios against the best of Marian/BART, model FLOP utilisation (MFU) against the measured matmul rate
(CPU) or the given peak (GPU), and the peak memory of each task, measured in one fresh process per model.

    python -m benchmarks.speed --plot benchmarks/speed.svg        # the issue's shape, CPU, fp32
    python -m benchmarks.speed --fresh                            # each model timed in fresh processes
    python -m benchmarks.speed --device cuda --dtype bf16 --peak_tflops 989
    python -m benchmarks.speed --tiny                             # seconds; what CI runs

Training: batch x (source, target) tokens, forward + backward + AdamW step; throughput in target tokens/s.
Generation: `generate()` of exactly `new_tokens` tokens, greedy and beam search; throughput in new tokens/s
(beam search counts the returned tokens, batch x new_tokens, not the beams).

The fast paths are variants of a model's name: `ours-sdpa+static` generates with a static (preallocated) cache,
`ours-sdpa+compile` also compiles: `generate()` compiles its decoding step (static cache, `compile_config`), and
training runs `torch.compile(model)`, as `Trainer(torch_compile=True)` does. The same suffixes work for Marian and
BART, so each path is compared with theirs. `+int8` (dynamic int8 quantization of every linear layer, CPU) and
`+bf16` (bf16 weights) are inference variants: they generate and do not train. The first call of each task (the
compile warm-up, for a compiled variant) is reported apart from the timings:

    python -m benchmarks.speed --models ours-sdpa,ours-sdpa+static,ours-sdpa+compile,marian-sdpa,marian-sdpa+compile

Serving engines: `ours-ct2` is the model exported to CTranslate2 (`hf_scratch_transformer.export`), `marian-ct2`
the Marian model converted by CTranslate2's own converter; `+int8` is CTranslate2's int8 compute type there. They
generate only, through `Translator.translate_batch` (the `export` extra). By default one translation uses all
`--threads`; `+inter` runs one translation per thread instead (`inter_threads`, `intra_threads=1`), the batch cut
into parts of `generate_batch / (2 x threads)` rows, which CTranslate2 spreads over them (its advice for CPU
throughput; at this shape one thread does more than two sharing one translation). A second such Translator in one
process runs at half the speed of the first, so several `+inter` rows need `--fresh`:

    python -m benchmarks.speed --fresh --models marian-sdpa,ours-ct2+int8,marian-ct2+int8+inter,ours-ct2+int8+inter
"""

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn
from transformers import BartConfig, BartForConditionalGeneration, MarianConfig, MarianMTModel
from transformers.generation import CompileConfig

from hf_scratch_transformer import ScratchTransformerConfig, ScratchTransformerForConditionalGeneration

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
    parser.add_argument(
        "--models",
        default="ours-eager,ours-sdpa,marian-eager,marian-sdpa,bart-eager,bart-sdpa,nn,"
        "ours-sdpa+static,marian-sdpa+static,ours-sdpa+compile,marian-sdpa+compile,bart-sdpa+compile,"
        "ours-sdpa+int8,marian-sdpa+int8,bart-sdpa+int8",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long run on a tiny shape (CI)")
    parser.add_argument("--fresh", action="store_true", help="time each model in its own fresh process per repetition")
    parser.add_argument("--no_memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--plot", type=Path, default=None, help="write an SVG of the throughputs here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one model in this process
    parser.add_argument("--worker_mode", choices=["time", "memory"], default="time", help=argparse.SUPPRESS)
    if parser.parse_known_args()[0].tiny:  # the tiny shape's defaults; flags given still win (--repetitions 1)
        parser.set_defaults(vocab_size=100, d_model=32, heads=2, ffn_dim=64, layers=1, train_batch=4, source_length=8)
        parser.set_defaults(target_length=8, generate_batch=2, new_tokens=4, num_beams=2, repetitions=2, warmup=1)
    return parser.parse_args()


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------------------------
# The models, all at one shape
# ---------------------------------------------------------------------------------------------------------------


def build(name: str, args: argparse.Namespace) -> nn.Module:
    """The model of a name such as `ours-sdpa` or `marian-eager` (any `+path` suffix is the Runner's)."""
    family, _, implementation = name.split("+")[0].partition("-")
    if implementation == "ct2":  # the converters read the weights of the eager model
        implementation = "eager"
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
        paths = set(name.split("+")[1:])
        self.translator = None
        if name.split("+")[0].endswith("-ct2"):
            if paths - {"int8", "inter"}:
                raise ValueError(f"{name!r}: a CTranslate2 row takes +int8 (its compute type) and +inter only")
            quantization = "int8" if "int8" in paths else None
            self.translator = CTranslate2Translator(self.model, quantization, args, device, "inter" in paths)
            paths = set()
        unknown = paths - {"static", "compile", "bf16", "int8"}
        if unknown:
            raise ValueError(f"unknown fast path {sorted(unknown)} in {name!r}: use +static, +compile, +bf16, +int8")
        # Low precision is for inference: such a variant generates only (training in bf16 needs autocast and fp32
        # master weights, a different recipe).
        self.inference_only = bool(paths & {"bf16", "int8"}) or self.translator is not None
        if "bf16" in paths:
            self.model = self.model.to(torch.bfloat16)
        if "int8" in paths:
            self.model = quantize_int8(self.model, device)
        self.compiled = "compile" in paths
        self.static_cache = "static" in paths or self.compiled  # generate() compiles only with a static cache
        self.train_model = torch.compile(self.model) if self.compiled else self.model
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.train_inputs = make_inputs(args, args.train_batch, device)
        self.generate_inputs = make_inputs(args, args.generate_batch, device, seed=1)

    def tasks(self) -> dict[str, Callable[[], None]]:
        """The measured tasks this model can run: training, and `generate()` where the model has it."""
        tasks = {} if self.inference_only else {"train": self.train_step}
        if self.translator is not None:
            inputs = self.generate_inputs["input_ids"]
            tasks["greedy"] = partial(self.translator.generate, inputs, 1)
            tasks[f"beam{self.args.num_beams}"] = partial(self.translator.generate, inputs, self.args.num_beams)
        elif hasattr(self.model, "generate"):
            tasks["greedy"] = partial(self.generate, 1)
            tasks[f"beam{self.args.num_beams}"] = partial(self.generate, self.args.num_beams)
        return tasks

    def train_step(self) -> None:
        self.model.train()
        out = self.train_model(**self.train_inputs)
        loss = out if isinstance(out, torch.Tensor) else out.loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def generate(self, num_beams: int) -> None:
        self.model.eval()
        fast_path = {}
        if self.static_cache:
            fast_path["cache_implementation"] = "static"
        if self.compiled:
            compile_config = CompileConfig(fullgraph=True, dynamic=False)
            compile_config._compile_all_devices = True  # generate() compiles on GPUs only, unless told to
            fast_path["compile_config"] = compile_config
        ids = self.model.generate(
            **fast_path,
            input_ids=self.generate_inputs["input_ids"],
            attention_mask=self.generate_inputs["attention_mask"],
            num_beams=num_beams,
            do_sample=False,
            max_new_tokens=self.args.new_tokens,
            min_new_tokens=self.args.new_tokens,
            early_stopping=False,
        )
        assert ids.shape[1] >= self.args.new_tokens, f"{self.name} stopped early: {ids.shape}"


class IdVocabulary:
    """A vocabulary of token strings `t0`, `t1`, ... (the last one `<pad>`, where Marian's converter expects its
    decoder-start token) for the converters, which need token strings; the benchmark's inputs are random ids."""

    def __init__(self, size: int):
        self.tokens = [f"t{index}" for index in range(size - 1)] + ["<pad>"]
        self.eos_token, self.unk_token = self.tokens[EOS], self.tokens[3]

    def __len__(self) -> int:
        return len(self.tokens)

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.tokens[index] for index in ids]

    def get_vocab(self) -> dict[str, int]:
        return {token: index for index, token in enumerate(self.tokens)}


class CTranslate2Translator:
    """A model converted to CTranslate2 (ours by `hf_scratch_transformer.export`, Marian by CTranslate2's own
    converter) in a temporary folder, and its `Translator` on the CPU with `--threads` threads: all of them on one
    translation, or, with `one_per_thread`, one translation each, on parts of the batch."""

    def __init__(
        self,
        model: nn.Module,
        quantization: str | None,
        args: argparse.Namespace,
        device: torch.device,
        one_per_thread: bool = False,
    ):
        import ctranslate2
        from ctranslate2.converters.converter import Converter
        from ctranslate2.converters.transformers import MarianMTLoader

        from hf_scratch_transformer.export import ScratchTransformerConverter

        if device.type != "cpu":
            raise ValueError("The CTranslate2 rows run on the CPU here; CTranslate2's GPU build is not installed.")
        vocabulary = IdVocabulary(args.vocab_size)
        if isinstance(model, MarianMTModel):

            class MarianConverter(Converter):
                def _load(self):
                    return MarianMTLoader()(model.eval(), vocabulary)

            converter = MarianConverter()
        else:
            converter = ScratchTransformerConverter(model.eval(), vocabulary)
        self.folder = tempfile.TemporaryDirectory(prefix="speed_ct2_")
        converter.convert(self.folder.name, quantization=quantization, force=True)
        threads = args.threads or torch.get_num_threads()
        if one_per_thread:
            self.translator = ctranslate2.Translator(
                self.folder.name, device="cpu", inter_threads=threads, intra_threads=1
            )
            torch.set_num_threads(threads)  # intra_threads=1 set the process's OpenMP threads, torch's too, to 1
            self.max_batch_size = max(1, args.generate_batch // (2 * threads))
        else:
            self.translator = ctranslate2.Translator(self.folder.name, device="cpu", intra_threads=threads)
            self.max_batch_size = args.generate_batch
        self.vocabulary, self.new_tokens = vocabulary, args.new_tokens

    def generate(self, input_ids: torch.Tensor, num_beams: int) -> None:
        sources = [self.vocabulary.convert_ids_to_tokens(row) for row in input_ids.tolist()]
        results = self.translator.translate_batch(
            sources,
            beam_size=num_beams,
            min_decoding_length=self.new_tokens,  # exactly new_tokens tokens, as generate() is made to return
            max_decoding_length=self.new_tokens,
            max_batch_size=self.max_batch_size,
        )
        lengths = {len(result.hypotheses[0]) for result in results}
        assert lengths == {self.new_tokens}, f"CTranslate2 returned {lengths} tokens, not {self.new_tokens}"


def quantize_int8(model: nn.Module, device: torch.device) -> nn.Module:
    """Dynamic int8 quantization of every `nn.Linear` (int8 weights, activations quantized per call), the CPU
    inference path PyTorch has built in (fbgemm/oneDNN kernels, AVX2 or AVX-512)."""
    if device.type != "cpu":
        raise ValueError("+int8 (torch's dynamic quantization) runs on the CPU only; on a GPU use +bf16.")
    with warnings.catch_warnings():  # torch points to torchao for new code; this API still ships and works
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def task_tokens(args: argparse.Namespace) -> dict[str, int]:
    """Tokens each task produces: target tokens for training, returned new tokens for generation."""
    return {
        "train": args.train_batch * args.target_length,
        "greedy": args.generate_batch * args.new_tokens,
        f"beam{args.num_beams}": args.generate_batch * args.new_tokens,
    }


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
    """The device's measured dense matmul rate at this dtype: the CPU's practical peak. The best of three tries,
    since a rate can only be disturbed downwards."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    seconds = min(timed(lambda: [a @ b for _ in range(repeats)], device) for _ in range(3))
    return 2 * size**3 * repeats / seconds / 1e12


# ---------------------------------------------------------------------------------------------------------------
# Peak memory, one fresh process per model
# ---------------------------------------------------------------------------------------------------------------


def resident_kib(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident since the last reset) of this process, from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def task_peak_memory_mb(run: Callable[[], None], device: torch.device) -> float:
    """Memory a task needs on top of what the process holds before it (weights, optimizer state, inputs).

    GPU: torch's `max_memory_allocated` above the allocation before. CPU: torch keeps no allocator statistics
    there, so the peak resident set size (VmHWM, whose mark Linux resets when "5" is written to
    /proc/self/clear_refs) above the resident size before. The worker runs with a fixed glibc mmap threshold,
    so a freed buffer goes back to the system at once and the resident size follows the live tensors; RSS also
    counts what torch allocates outside its tensors (oneDNN scratch, Python objects), which is memory the task
    really costs.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = resident_kib("VmRSS")
    run()
    return (resident_kib("VmHWM") - before) / 1024


def worker(args: argparse.Namespace) -> None:
    """One model in a fresh process: warm up, then one timing (or peak memory) per task, as a JSON line."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    runner = Runner(args.worker, args, device)
    tasks = runner.tasks()
    for _ in range(max(args.warmup, 1)):  # the first call allocates optimizer state, caches, kernels
        for run in tasks.values():
            run()
    if args.worker_mode == "memory":
        result = {task: task_peak_memory_mb(run, device) for task, run in tasks.items()}
    else:
        result = {task: timed(run, device) for task, run in tasks.items()}
    print("RESULT " + json.dumps(result))


def run_worker(name: str, mode: str, args: argparse.Namespace) -> dict[str, float]:
    environment = dict(os.environ)
    if mode == "memory" and torch.device(args.device).type == "cpu":
        # Large buffers from mmap, returned to the system when freed: see `task_peak_memory_mb`. CPU only: a GPU's
        # peak comes from torch's allocator. With this threshold, a memory process on an H200 machine did not finish
        # in 40 s where the timing of the same model took seconds (presumably CUDA's many large host allocations,
        # each an mmap then; not profiled).
        environment |= {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    command = [sys.executable, __file__, *sys.argv[1:], "--worker", name, "--worker_mode", mode]
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode != 0:
        raise RuntimeError(f"{name} ({mode}) failed:\n{completed.stderr[-3000:]}")
    line = next(line for line in reversed(completed.stdout.splitlines()) if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


# ---------------------------------------------------------------------------------------------------------------
# The run: timings (alternating order, in one process or in fresh ones), memory, the table
# ---------------------------------------------------------------------------------------------------------------


def time_in_one_process(names: list[str], args: argparse.Namespace, device: torch.device) -> tuple[dict, dict]:
    """Seconds of each timed call, {task: {model: [...]}}, and of each model's first call of each task (where a
    compiled variant compiles), {model: {task: seconds}}."""
    runners = [Runner(name, args, device) for name in names]
    seconds: dict[str, dict[str, list[float]]] = {}
    first_call: dict[str, dict[str, float]] = {}
    for repetition in range(max(args.warmup, 1) + args.repetitions):
        for task in task_tokens(args):
            for runner in runners if repetition % 2 == 0 else reversed(runners):
                run = runner.tasks().get(task)
                if run is None:
                    continue
                elapsed = timed(run, device)
                if repetition == 0:
                    first_call.setdefault(runner.name, {})[task] = elapsed
                if repetition >= max(args.warmup, 1):
                    seconds.setdefault(task, {}).setdefault(runner.name, []).append(elapsed)
            gc.collect()
    return seconds, first_call


def time_in_fresh_processes(names: list[str], args: argparse.Namespace) -> dict:
    seconds: dict[str, dict[str, list[float]]] = {}
    for repetition in range(args.repetitions):
        for name in names if repetition % 2 == 0 else reversed(names):
            for task, elapsed in run_worker(name, "time", args).items():
                seconds.setdefault(task, {}).setdefault(name, []).append(elapsed)
    return seconds


def summarise(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return
    device = torch.device(args.device)
    torch.manual_seed(0)
    names = args.models.split(",")
    if not args.fresh and sum("+inter" in name for name in names) > 1:
        raise SystemExit("Several +inter rows in one process slow each other down (CTranslate2): add --fresh.")
    started = time.time()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    dtype = DTYPES[args.dtype]
    # The matmul rate before and after the timings, the higher: a rate taken while other load ran is too low.
    measured_before = matmul_tflops(device, dtype) if not args.peak_tflops else None
    first_call = {}
    if args.fresh:
        seconds = time_in_fresh_processes(names, args)
    else:
        seconds, first_call = time_in_one_process(names, args, device)
    memory = {name: run_worker(name, "memory", args) for name in names} if not args.no_memory else {}

    peak = args.peak_tflops if args.peak_tflops else max(measured_before, matmul_tflops(device, dtype))
    flops = training_flops(args)
    tokens = task_tokens(args)
    results = {
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "command": " ".join(["python", *sys.argv]),
        "device": device_name(device),
        "torch": torch.__version__,
        "peak_tflops": peak,
        "load_average": {"before": load_before, "after": os.getloadavg()[0] if load_before is not None else None},
        "wall_seconds": time.time() - started,
        "models": {},
    }
    for name in names:
        entry = {}
        for task in tokens:
            samples = seconds.get(task, {}).get(name)
            if samples:
                entry[task] = summarise([tokens[task] / s for s in samples])
        if name in seconds.get("train", {}):
            entry["train_mfu"] = flops / statistics.median(seconds["train"][name]) / 1e12 / peak
        if name in memory:
            entry["peak_memory_mb"] = memory[name]
        if name in first_call:
            entry["first_call_seconds"] = first_call[name]
        results["models"][name] = entry
    results["ratios"] = ratios(results["models"], list(tokens))
    results["best_against_marian_default"] = best_against_default(results["models"], list(tokens))
    results["compile_pays_after_tokens"] = compile_payback(results["models"], tokens)
    print_table(results, list(tokens))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        args.plot.write_text(svg_plot(results, list(tokens)))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    # The hosts of this project's machines differ from one run to the next (AVX2 only, or AVX-512 with bf16 and
    # VNNI instructions), and the int8 and bf16 paths depend on them: the table says which one it ran on.
    capability = torch.backends.cpu.get_cpu_capability()  # the widest vector instructions: "AVX2", "AVX512"
    if torch.cpu._is_avx512_bf16_supported():
        capability += " + bf16"
    if torch.cpu._is_vnni_supported():  # int8 dot products
        capability += " + VNNI"
    return f"CPU ({capability}), {torch.get_num_threads()} threads"


def ratios(models: dict, tasks: list[str]) -> dict:
    """Each of our variants against the best of Marian/BART on the same path (the default path, or the same
    `+static` / `+compile`; a CTranslate2 row against CTranslate2's): throughput over the highest, memory over the
    lowest."""

    def path(name: str) -> tuple[bool, str]:
        return "-ct2" in name, name.partition("+")[2]

    result = {}
    for ours in (name for name in models if name.startswith("ours")):
        baselines = [name for name in models if name.startswith(("marian", "bart")) and path(name) == path(ours)]
        if not baselines:
            continue
        entry = {}
        for task in tasks:
            rates = [models[b][task]["median"] for b in baselines if task in models[b]]
            if rates and task in models[ours]:
                entry[task] = models[ours][task]["median"] / max(rates)
            memories = [
                models[b]["peak_memory_mb"][task] for b in baselines if task in models[b].get("peak_memory_mb", {})
            ]
            if memories and min(memories) > 0 and task in models[ours].get("peak_memory_mb", {}):
                entry[f"{task}_memory"] = models[ours]["peak_memory_mb"][task] / min(memories)
        result[ours] = entry
    return result


def compile_payback(models: dict, tokens: dict[str, int]) -> dict:
    """For each compiled variant and task, the tokens after which compiling has paid for itself: the first call's
    time beyond an ordinary call (the compilation), over the time each token saves against the same model without
    `+compile` (`ours-sdpa+compile` against `ours-sdpa`). None where the compiled path saves nothing."""
    result = {}
    for name, entry in models.items():
        base = name.replace("+compile", "")
        if "+compile" not in name or base not in models or "first_call_seconds" not in entry:
            continue
        result[name] = {}
        for task in tokens:
            if task not in entry or task not in models[base] or task not in entry["first_call_seconds"]:
                continue
            fast, slow = entry[task]["median"], models[base][task]["median"]
            compilation = entry["first_call_seconds"][task] - tokens[task] / fast
            saved_per_token = 1 / slow - 1 / fast
            result[name][task] = compilation / saved_per_token if saved_per_token > 0 else None
    return result


def best_against_default(models: dict, tasks: list[str], default: str = "marian-sdpa") -> dict:
    """For each generation task, our fastest variant against Marian's default `generate()` (SDPA, dynamic cache,
    fp32: what `MarianMTModel.from_pretrained(...).generate(...)` runs): {task: (our variant, ratio)}."""
    if default not in models:
        return {}
    result = {}
    for task in tasks:
        ours = {
            name: entry[task]["median"] for name, entry in models.items() if name.startswith("ours") and task in entry
        }
        if task == "train" or task not in models[default] or not ours:
            continue
        best = max(ours, key=ours.get)
        result[task] = (best, ours[best] / models[default][task]["median"])
    return result


def print_table(results: dict, tasks: list[str]) -> None:
    models = results["models"]
    print(f"device: {results['device']}; matmul peak used for MFU: {results['peak_tflops'] * 1000:.1f} GFLOP/s")
    print(f"load average before/after: {results['load_average']['before']}/{results['load_average']['after']}")
    width = max(20, *(len(name) + 1 for name in models))  # e.g. "marian-sdpa+bf16+compile"
    header = (
        f"{'model':<{width}}" + "".join(f"{task + ' tok/s (min-max)':>27}" for task in tasks) + f"{'train MFU':>10}"
    )
    header += "".join(f"{task + ' MB':>11}" for task in tasks)
    print(header)
    for name, entry in models.items():
        cells = []
        for task in tasks:
            if task in entry:
                s = entry[task]
                cells.append(f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f})".rjust(27))
            else:
                cells.append("—".rjust(27))
        cells.append(f"{entry['train_mfu']:>10.1%}" if "train_mfu" in entry else "—".rjust(10))
        memory = entry.get("peak_memory_mb", {})
        cells += [(f"{memory[task]:.0f}" if task in memory else "—").rjust(11) for task in tasks]
        print(f"{name:<{width}}" + "".join(cells))
    for name, entry in models.items():
        if "+" in name and "first_call_seconds" in entry:
            calls = ", ".join(f"{task} {seconds:.1f} s" for task, seconds in entry["first_call_seconds"].items())
            print(f"{name} first call (warm-up, compilation included): {calls}")
    for ours, entry in results["ratios"].items():
        label = "same path of Marian/BART" if "+" in ours or "-ct2" in ours else "best of Marian/BART"
        print(f"{ours} vs {label}: " + ", ".join(f"{key} {value:.2f}x" for key, value in entry.items()))
    for name, paybacks in results["compile_pays_after_tokens"].items():
        described = [f"{task} {'never' if n is None else f'{n:,.0f} tokens'}" for task, n in paybacks.items()]
        print(f"{name}: compiling pays for itself after " + ", ".join(described))
    for task, (ours, ratio) in results["best_against_marian_default"].items():
        print(f"{task}: our fastest path ({ours}) vs Marian's default generate() (marian-sdpa): {ratio:.2f}x")


def svg_plot(results: dict, tasks: list[str]) -> str:
    """Throughput bars (median, with a min-max whisker), one panel per task: a small SVG, no plotting library."""
    models = results["models"]
    names = list(models)
    panel_width, gap, bar_height, row, top = 250, 30, 16, 22, 52
    label_width = 12 + 7 * max(len(name) for name in names)  # 11 px sans-serif: under 7 px a character
    width = label_width + len(tasks) * (panel_width + gap)
    height = top + len(names) * row + 16
    colors = {"ours": "#d62728", "marian": "#1f77b4", "bart": "#2ca02c", "nn": "#7f7f7f"}
    args = results["args"]
    subtitle = (
        f"{results['device']}, {args['dtype']} unless the row says otherwise; "
        f"d_model {args['d_model']}, {args['layers']}+{args['layers']} layers, "
        f"vocab {args['vocab_size']}; medians of {args['repetitions']}, whiskers min-max"
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="8" y="16" font-size="13" font-weight="bold">Tokens per second (higher is better)</text>',
        f'<text x="8" y="31" fill="#555">{subtitle}</text>',
    ]
    for i, name in enumerate(names):
        y = top + i * row + bar_height - 4
        parts.append(f'<text x="{label_width - 6}" y="{y}" text-anchor="end">{name}</text>')
    for j, task in enumerate(tasks):
        x0 = label_width + j * (panel_width + gap)
        highest = max(entry[task]["max"] for entry in models.values() if task in entry)
        scale = (panel_width - 40) / highest
        parts.append(f'<text x="{x0}" y="{top - 6}" font-weight="bold">{task}</text>')
        parts.append(f'<line x1="{x0}" y1="{top - 2}" x2="{x0}" y2="{height - 12}" stroke="#999"/>')
        for i, name in enumerate(names):
            if task not in models[name]:
                continue
            s, y = models[name][task], top + i * row
            color = colors.get(name.partition("-")[0], "#7f7f7f")
            middle = y + bar_height / 2
            parts += [
                f'<rect x="{x0}" y="{y}" width="{s["median"] * scale:.1f}" height="{bar_height}" fill="{color}" '
                'fill-opacity="0.8"/>',
                f'<line x1="{x0 + s["min"] * scale:.1f}" y1="{middle}" x2="{x0 + s["max"] * scale:.1f}" '
                f'y2="{middle}" stroke="black"/>',
                f'<text x="{x0 + s["max"] * scale + 4:.1f}" y="{y + bar_height - 4}">{s["median"]:.0f}</text>',
            ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
