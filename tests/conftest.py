"""Shared fixtures: tiny configurations, in the spirit of transformers' ModelTester (vocab 99, width 16)."""

import importlib
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from filelock import FileLock
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

import hf_scratch_transformer  # noqa: F401  (registers the Auto classes)
from hf_scratch_transformer import ScratchTransformerConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Under `make test`'s pytest-xdist workers, each worker gets its share of the cores, in this process and in every
# script a test starts (OMP_NUM_THREADS is inherited). With two OpenMP threads per worker on two cores, a thread
# waits at each barrier for one the other worker has preempted: the demo's training took 78 s instead of 51 s
# beside one busy core.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    THREADS_PER_WORKER = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(THREADS_PER_WORKER)
    torch.set_num_threads(THREADS_PER_WORKER)

PAD, BOS, EOS = 0, 1, 2
VOCAB_SIZE = 99


def tiny_config(**overrides) -> ScratchTransformerConfig:
    """A model small enough that a test runs in well under a second. Dropout is off so outputs are deterministic,
    and the larger init_std makes a random model's outputs depend visibly on its inputs."""
    values = dict(
        vocab_size=VOCAB_SIZE,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        dropout=0.0,
        label_smoothing=0.0,
        classifier_dropout=0.0,
        init_std=0.3,
        tie_word_embeddings=False,
    )
    values.update(overrides)
    return ScratchTransformerConfig(**values)


def random_batch(batch_size: int = 3, source_length: int = 9, target_length: int = 7, seed: int = 0):
    """Source ids with right padding of different lengths, its attention mask, and target labels."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB_SIZE, (batch_size, source_length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row in range(1, batch_size):
        real_length = max(2, source_length - 2 * row)
        input_ids[row, real_length:] = PAD
        attention_mask[row, real_length:] = 0
    labels = torch.randint(3, VOCAB_SIZE, (batch_size, target_length), generator=generator)
    labels[:, -1] = EOS
    return input_ids, attention_mask, labels


@pytest.fixture
def config():
    return tiny_config()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def word_level_tokenizer(
    words: list[str], num_sentinels: int = 0, append_eos: bool = False
) -> PreTrainedTokenizerFast:
    """One id a word, with the special ids training/train_tokenizer.py gives: <pad>=0 <s>=1 </s>=2 <unk>=3
    <mask>=4, then `num_sentinels` <extra_id_N> from 5, then `words`. With `append_eos`, every sequence ends in
    </s>, as the trained tokenizers do."""
    sentinels = [f"<extra_id_{i}>" for i in range(num_sentinels)]
    tokens = ["<pad>", "<s>", "</s>", "<unk>", "<mask>", *sentinels, *words]
    backend = Tokenizer(models.WordLevel({token: i for i, token in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if append_eos:
        backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        extra_special_tokens=sentinels,
        model_input_names=["input_ids", "attention_mask"],
    )


def toy_reviews(count: int, seed: int, neutral_words: tuple[int, int] = (4, 4), text_key: str = "sentence"):
    """Rows {text_key: sentence, "label": 0|1} alternating labels, whose label is given by one sentiment word among
    `neutral_words` (a min-max range) neutral ones: a task a tiny model learns in a few dozen steps."""
    rng = random.Random(seed)
    neutral = ["the", "movie", "was", "really", "quite", "plot", "acting", "a", "film", "story"]
    sentiment = (
        ["bad", "awful", "poor", "terrible", "dull", "boring"],
        ["good", "great", "lovely", "wonderful", "superb", "charming"],
    )
    rows = []
    for i in range(count):
        words = rng.sample(neutral, rng.randint(*neutral_words)) + [rng.choice(sentiment[i % 2])]
        rng.shuffle(words)
        rows.append({text_key: " ".join(words), "label": i % 2})
    return rows


def command(name: str) -> list[str]:
    """The arguments of Python that run `hf-scratch-transformer <name>`: `python -m` of the installed command."""
    return ["-m", "hf_scratch_transformer.training.cli", name]


def run_script(script: str, *arguments) -> None:
    """training/<script>.py's main() in this process, with `arguments` as its command line. A script started as a
    process spends 7-10 s importing torch, transformers, datasets and peft before its first step; the tests of what
    a user sees at the command line (the exit status, a message and no traceback) start one, the others call main()."""
    module = importlib.import_module(f"hf_scratch_transformer.training.{script}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [f"training/{script}.py", *map(str, arguments)])
        module.main()


def script_stops_with(script: str, *arguments) -> str:
    """The message training/<script>.py's main() stops with (a SystemExit), run in this process."""
    with pytest.raises(SystemExit) as stop:
        run_script(script, *arguments)
    return str(stop.value.code)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


# The documentation's Python snippets: tests/test_readme.py runs them, tests/test_demo.py those that use the model
# `make demo` leaves in DEMO_MODEL. Snippets that load HUB_REPO from the Hub are not run: tests/test_hub.py does the
# same against its test Hub.
DEMO_MODEL = "runs/demo/model"
HUB_REPO = '"your-name/'


def documentation_pages() -> list[Path]:
    """README.md, then the pages of docs/ by name: the order in which their snippets run."""
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def python_snippets(page: Path) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.DOTALL)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`training/demo.py` shortened to 500 steps and 40 test numbers, run once for the session: tests/test_demo.py
    checks the run, the attention test that its model has learned the alignment of number words (150 steps, the
    demo's --quick, have not), and the app test starts a fine-tuning run from it (`demo_run.model`).

    Under `make test`'s two workers (pytest-xdist) each worker is a session of its own: the first to need the demo
    trains it in the folder both share, the other waits for it on a file lock."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the workers' common base folder
    folder, outputs = shared / "demo", shared / "demo_outputs.json"
    with FileLock(str(shared / "demo.lock")):
        if not outputs.exists():
            completed = subprocess.run(
                [sys.executable, *command("demo"), "--max_steps", "500", "--test_size", "40",
                 "--output_dir", str(folder)],
                capture_output=True, text=True, timeout=1200,
            )  # fmt: skip
            assert completed.returncode == 0, completed.stderr[-4000:]
            outputs.write_text(json.dumps({"stdout": completed.stdout, "stderr": completed.stderr}))
    printed = json.loads(outputs.read_text())
    return SimpleNamespace(folder=folder, model=folder / "model", stdout=printed["stdout"], stderr=printed["stderr"])


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hub on 127.0.0.1 (`hub_server.py`) for one test module. A route it lacks fails the module at the end."""
    from hub_server import TOKEN, HubServer

    server = HubServer(tmp_path_factory.mktemp("hub_storage"), token=TOKEN).start()
    yield server
    server.stop()
    assert server.unknown_requests == [], f"clients called routes hub_server lacks: {server.unknown_requests}"
