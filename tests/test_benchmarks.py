"""The benchmarks run (on a tiny shape or toy data: CI shows they work; the real numbers are in
docs/results.md)."""

import gzip
import importlib.util
import json
import re
import subprocess
import sys
from types import SimpleNamespace
from unittest.mock import ANY

import pytest
import torch
from conftest import REPO_ROOT, tiny_config, toy_reviews, word_level_tokenizer, write_jsonl

from benchmarks import nbsvm
from hf_scratch_transformer import (
    ScratchTransformerForConditionalGeneration,
)

SPEED = str(REPO_ROOT / "benchmarks" / "speed.py")


def benchmark(name: str, *flags) -> subprocess.CompletedProcess:
    """`python -m benchmarks.<name> ...` from the checkout, as the benchmarks are run."""
    command = [sys.executable, "-m", f"benchmarks.{name}", *map(str, flags)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


def run_speed(*flags: str) -> subprocess.CompletedProcess:
    completed = benchmark("speed", "--tiny", "--repetitions", "1", "--warmup", "0", *flags)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run of the default timing path with a row of each kind (the baselines, nn.Transformer, the int8 and bf16
    variants): every model measures its memory in fresh processes, so one run for the module saves a minute."""
    folder = tmp_path_factory.mktemp("speed")
    models = "ours-sdpa,ours-sdpa+int8,ours-sdpa+bf16,marian-sdpa,marian-sdpa+int8,bart-sdpa,nn"
    completed = run_speed(
        "--models", models, "--json", str(folder / "speed.json"), "--plot", str(folder / "speed.svg")
    )
    return SimpleNamespace(
        stdout=completed.stdout, results=json.loads((folder / "speed.json").read_text()), plot=folder / "speed.svg"
    )


@pytest.mark.slow  # the timing program in child processes, every row of the table
def test_speed_benchmark_runs_on_a_tiny_shape(tiny_run):
    assert "vs best of Marian/BART" in tiny_run.stdout
    results, plot = tiny_run.results, tiny_run.plot
    for name in ("ours-sdpa", "marian-sdpa", "bart-sdpa"):
        entry = results["models"][name]
        assert entry["train"]["median"] > 0 and entry["greedy"]["median"] > 0 and entry["beam2"]["median"] > 0
        # Peak memory comes from one fresh process per model, for every task the model runs.
        assert set(entry["peak_memory_mb"]) == {"train", "greedy", "beam2"}
    assert "greedy" not in results["models"]["nn"]  # nn.Transformer has no generate()
    assert set(results["models"]["nn"]["peak_memory_mb"]) == {"train"}
    assert {"train", "greedy", "beam2"} <= set(results["ratios"]["ours-sdpa"])
    assert plot.read_text().startswith("<svg") and "ours-sdpa" in plot.read_text()
    # The hosts differ in their vector instructions, on which the int8 and bf16 rows depend: the results say which.
    assert results["device"].startswith(f"CPU ({torch.backends.cpu.get_cpu_capability()}")


@pytest.mark.slow
def test_speed_benchmark_times_in_fresh_processes(tmp_path):
    results_file = tmp_path / "speed.json"
    run_speed("--fresh", "--no_memory", "--models", "ours-sdpa,marian-sdpa", "--json", str(results_file))
    results = json.loads(results_file.read_text())
    for name in ("ours-sdpa", "marian-sdpa"):
        entry = results["models"][name]
        # Every task timed (one fresh process per model and repetition), no memory measured (--no_memory).
        assert set(entry) == {"train", "greedy", "beam2", "train_mfu"}, entry
        # --repetitions 1 and no warmup repetition counted: each rate is one timing, so min = median = max.
        for task in ("train", "greedy", "beam2"):
            assert entry[task]["min"] == entry[task]["median"] == entry[task]["max"], (name, task, entry[task])
    # The ratios are ours over Marian, the one baseline here.
    for task in ("train", "greedy", "beam2"):
        ours, marian = results["models"]["ours-sdpa"][task], results["models"]["marian-sdpa"][task]
        assert results["ratios"]["ours-sdpa"][task] == pytest.approx(ours["median"] / marian["median"])


@pytest.mark.slow
def test_low_precision_variants_generate_only_and_are_compared_on_the_same_path(tiny_run):
    results = tiny_run.results
    models = results["models"]
    for name in ("ours-sdpa+int8", "ours-sdpa+bf16", "marian-sdpa+int8"):
        assert "train" not in models[name] and models[name]["greedy"]["median"] > 0, (name, models[name])
    int8 = results["ratios"]["ours-sdpa+int8"]
    assert int8["greedy"] == pytest.approx(
        models["ours-sdpa+int8"]["greedy"]["median"] / models["marian-sdpa+int8"]["greedy"]["median"]
    )
    assert "ours-sdpa+bf16" not in results["ratios"]  # no Marian/BART in bf16 in this run: nothing to compare with
    # Memory of the tasks each variant runs: generation only for int8, so no training memory ratio.
    assert set(models["ours-sdpa+int8"]["peak_memory_mb"]) == {"greedy", "beam2"}
    assert "train_memory" not in int8
    # Our fastest variant of each generation task against Marian's default generate().
    for task in ("greedy", "beam2"):
        best, ratio = results["best_against_marian_default"][task]
        rates = {name: entry[task]["median"] for name, entry in models.items() if name.startswith("ours")}
        assert best == max(rates, key=rates.get)
        assert ratio == pytest.approx(rates[best] / models["marian-sdpa"][task]["median"])
    assert "our fastest path" in tiny_run.stdout


@pytest.mark.slow
def test_ctranslate2_rows_generate_and_compare_with_marians_own_conversion(tmp_path):
    pytest.importorskip("ctranslate2")
    results_file = tmp_path / "speed.json"
    models = "marian-sdpa,marian-ct2,ours-ct2,ours-ct2+int8,ours-ct2+int8+inter"
    run_speed("--no_memory", "--models", models, "--json", str(results_file))
    results = json.loads(results_file.read_text())
    for name in ("marian-ct2", "ours-ct2", "ours-ct2+int8", "ours-ct2+int8+inter"):
        entry = results["models"][name]
        assert "train" not in entry and entry["greedy"]["median"] > 0 and entry["beam2"]["median"] > 0, (name, entry)
    # A CTranslate2 row is compared with Marian through CTranslate2, not with Marian's generate().
    ours, marian = results["models"]["ours-ct2"]["beam2"], results["models"]["marian-ct2"]["beam2"]
    assert results["ratios"]["ours-ct2"]["beam2"] == pytest.approx(ours["median"] / marian["median"])
    assert "ours-ct2+int8" not in results["ratios"]  # no Marian in int8 through CTranslate2 in this run
    # A Translator of one thread per translation sets the process's OpenMP threads to 1: torch's are set back.
    assert results["device"].endswith(f", {torch.get_num_threads()} threads"), results["device"]
    best, _ = results["best_against_marian_default"]["greedy"]  # CTranslate2 rows count among our paths
    assert best.startswith("ours-ct2")


def test_an_unknown_fast_path_is_named(monkeypatch):
    from benchmarks import speed

    monkeypatch.setattr(sys, "argv", [SPEED, "--tiny", "--no_memory", "--models", "ours-sdpa+fp8"])
    with pytest.raises(ValueError, match=re.escape("unknown fast path ['fp8'] in 'ours-sdpa+fp8': use +static, +")):
        speed.main()


def test_precision_bleu_scores_each_precision_against_the_references(tmp_path):
    """References that are the fp32 model's own translations (one sentence at a time): the script, which decodes
    in sorted, padded batches, must score fp32 at BLEU 100 with every sentence identical; int8 and bf16 decode too,
    and so does the model exported to CTranslate2, whose float32 translations are generate()'s."""
    words = [f"w{i}" for i in range(90)]
    tokenizer = word_level_tokenizer(words, append_eos=True)
    torch.manual_seed(0)
    model = ScratchTransformerForConditionalGeneration(tiny_config(eos_token_id=2, decoder_start_token_id=1)).eval()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    sources = [" ".join(words[i : i + length]) for i, length in [(0, 3), (10, 7), (20, 5), (30, 9), (40, 4), (50, 6)]]
    references = []
    for source in sources:
        ids = model.generate(**tokenizer(source, return_tensors="pt"), num_beams=2, max_new_tokens=6)
        references.append(tokenizer.decode(ids[0], skip_special_tokens=True).strip())
    assert len(set(references)) >= 3 and max(len(text.split()) for text in references) >= 4, references
    validation = write_jsonl(
        tmp_path / "validation.jsonl",
        [{"translation": {"en": s, "de": r}} for s, r in zip(sources, references, strict=True)],
    )
    results_file = tmp_path / "precision.json"
    completed = benchmark(
        "precision_bleu", "--model", tmp_path / "model", "--validation_file", validation, "--source_lang", "en",
        "--target_lang", "de", "--num_beams", 2, "--max_new_tokens", 6, "--batch_size", 4, "--json", results_file,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(results_file.read_text())
    assert results["fp32"]["bleu"] == pytest.approx(100.0) and results["fp32"]["identical_to_first"] == 1.0
    lines = {line.split()[0]: line.split() for line in completed.stdout.splitlines() if line.strip()}
    precisions = ["fp32", "bf16", "int8"]
    if importlib.util.find_spec("ctranslate2"):  # the export extra: its rows are on by default
        precisions += ["ct2-float32", "ct2-int8"]
        assert results["ct2-float32"]["identical_to_first"] == 1.0, results["ct2-float32"]
    assert list(results) == ["args", *precisions]
    for precision in precisions:
        entry = results[precision]
        # Every sentence the same as fp32's means the same score; the printed row is the JSON's.
        if entry["identical_to_first"] == 1.0:
            assert entry["bleu"] == pytest.approx(results["fp32"]["bleu"])
        bleu, change, chrf = map(float, lines[precision][1:4])
        assert bleu == pytest.approx(entry["bleu"], abs=0.005) and chrf == pytest.approx(entry["chrf"], abs=0.005)
        assert change == pytest.approx(entry["bleu"] - results["fp32"]["bleu"], abs=0.01)


def test_compile_payback_is_the_compilation_over_the_time_each_token_saves():
    from benchmarks.speed import compile_payback

    models = {
        # 1,000 tokens: 1 s eager, 0.5 s compiled; the compiled first call took 10.5 s, 10 s of it compiling.
        "ours-sdpa": {"greedy": {"median": 1000.0}, "beam4": {"median": 500.0}},
        "ours-sdpa+compile": {
            "greedy": {"median": 2000.0},
            "beam4": {"median": 400.0},  # slower compiled: it never pays
            "first_call_seconds": {"greedy": 10.5, "beam4": 30.0},
        },
    }
    payback = compile_payback(models, {"greedy": 1000, "beam4": 1000})
    # Each token saves 1/1000 - 1/2000 s: the 10 s are repaid after 20,000 tokens.
    assert payback["ours-sdpa+compile"]["greedy"] == pytest.approx(20_000)
    assert payback["ours-sdpa+compile"]["beam4"] is None
    assert set(payback) == {"ours-sdpa+compile"}


def test_nbsvm_baseline_learns_a_linear_task_and_counts_its_ngrams(tmp_path):
    """benchmarks/nbsvm.py on toy reviews (one sentiment word among neutral ones: linearly separable), read as IMDB's
    files are (gzipped, column `text`) and as SST-2's are (plain, column `sentence`)."""
    imdb_like, sst2_like = tmp_path / "imdb", tmp_path / "sst2"
    imdb_like.mkdir(), sst2_like.mkdir()
    for split, count, seed in (("train", 300, 0), ("validation", 100, 1)):
        with gzip.open(imdb_like / f"{split}.jsonl.gz", "wt") as file:
            file.writelines(json.dumps(row) + "\n" for row in toy_reviews(count, seed=seed, text_key="text"))
        with open(sst2_like / f"{split}.jsonl", "w") as file:
            file.writelines(json.dumps(row) + "\n" for row in toy_reviews(count, seed=seed, text_key="sentence"))
    results = nbsvm.main(["--data", str(imdb_like)])
    assert results["validation_accuracy"] >= 0.95, results
    assert (results["train_texts"], results["validation_texts"]) == (300, 100)
    assert nbsvm.main(["--data", str(sst2_like)]) == results | {"seconds": ANY}
    grams = set().union(*(nbsvm.ngrams(row["text"]) for row in toy_reviews(300, seed=0, text_key="text")))
    assert results["features"] == len(grams)
    assert nbsvm.ngrams("A film.<br />Great!") == {
        "a",
        "film",
        ".",
        "great",
        "!",
        "a film",
        "film .",
        ". great",
        "great !",
    }
