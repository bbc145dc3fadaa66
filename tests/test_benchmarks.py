"""The speed benchmark runs (on a tiny shape: CI shows it works; the real numbers are in benchmarks/RESULTS.md)."""

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

SPEED = str(REPO_ROOT / "benchmarks" / "speed.py")


def run_speed(*flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, SPEED, "--tiny", "--repetitions", "1", "--warmup", "0", *flags]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def test_speed_benchmark_runs_on_a_tiny_shape(tmp_path):
    results_file, plot = tmp_path / "speed.json", tmp_path / "speed.svg"
    completed = run_speed(
        "--models", "ours-sdpa,marian-sdpa,bart-sdpa,nn", "--json", str(results_file), "--plot", str(plot)
    )
    assert "vs best of Marian/BART" in completed.stdout
    results = json.loads(results_file.read_text())
    for name in ("ours-sdpa", "marian-sdpa", "bart-sdpa"):
        entry = results["models"][name]
        assert entry["train"]["median"] > 0 and entry["greedy"]["median"] > 0 and entry["beam2"]["median"] > 0
        # Peak memory comes from one fresh process per model, for every task the model runs.
        assert set(entry["peak_memory_mb"]) == {"train", "greedy", "beam2"}
    assert "greedy" not in results["models"]["nn"]  # nn.Transformer has no generate()
    assert set(results["models"]["nn"]["peak_memory_mb"]) == {"train"}
    assert {"train", "greedy", "beam2"} <= set(results["ratios"]["ours-sdpa"])
    assert plot.read_text().startswith("<svg") and "ours-sdpa" in plot.read_text()


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
