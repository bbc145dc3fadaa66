"""The wheel is the product: `pip wheel .` builds it; installed alone in a fresh environment, outside any checkout,
it loads, generates, saves and reloads a model with torch and transformers only; its command says which extra a
subcommand needs, and with the `train` and `export` extras every subcommand answers --help.

The fresh environment installs from the package index (or pip's cache) with constraints.txt, as a user would. A few
minutes: the slowest test file, and the one that proves what a user of the published package gets.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from hf_scratch_transformer.training.cli import COMMANDS

SYS_PATH_EDIT = r"sys\.path(\[[^]]*\])?\s*(=|\.(insert|append|extend)\()"
TRAINING_LIBRARIES = {"accelerate", "datasets", "evaluate", "peft", "sacrebleu", "matplotlib", "gradio"}

# Run by the fresh environment's Python in an empty folder: a tiny model through the Auto classes, generate(), a
# save and a reload that generates the same tokens.
ROUND_TRIP = """
import json, sys, torch
import hf_scratch_transformer
from hf_scratch_transformer import ScratchTransformerConfig
from transformers import AutoModelForSeq2SeqLM

config = ScratchTransformerConfig(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1,
                                  encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                  decoder_ffn_dim=32, max_position_embeddings=32)
torch.manual_seed(0)
model = AutoModelForSeq2SeqLM.from_config(config).eval()
source = torch.tensor([[5, 6, 7, 8, 2]])
tokens = model.generate(source, max_new_tokens=6, num_beams=2, do_sample=False)
model.save_pretrained("model")
reloaded = AutoModelForSeq2SeqLM.from_pretrained("model").eval()
print(json.dumps({
    "package": hf_scratch_transformer.__file__,
    "tokens": tokens.tolist(),
    "same_after_reload": torch.equal(tokens, reloaded.generate(source, max_new_tokens=6, num_beams=2)),
    "modules": sorted(name.split(".")[0] for name in sys.modules),
}))
"""
# Then, without importing the package: the saved folder through trust_remote_code, the code saved beside the weights.
REMOTE_CODE = """
import json, torch
from transformers import AutoModelForSeq2SeqLM

model = AutoModelForSeq2SeqLM.from_pretrained("model", trust_remote_code=True).eval()
tokens = model.generate(torch.tensor([[5, 6, 7, 8, 2]]), max_new_tokens=6, num_beams=2)
print(json.dumps({"tokens": tokens.tolist(), "class_module": type(model).__module__}))
"""


def run(command: list, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict:
    """The wheel, and a fresh environment with only the base install of it."""
    folder = tmp_path_factory.mktemp("wheel")
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", folder / "dist", REPO_ROOT], folder
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (folder / "dist").glob("hf_scratch_transformer-*.whl")
    created = run([sys.executable, "-m", "venv", folder / "env"], folder)
    assert created.returncode == 0, created.stderr[-3000:]
    python = folder / "env" / "bin" / "python"
    installed = run([python, "-m", "pip", "install", "--quiet", "-c", REPO_ROOT / "constraints.txt", wheel], folder)
    assert installed.returncode == 0, installed.stderr[-3000:]
    work = folder / "work"
    work.mkdir()
    return {"wheel": wheel, "python": python, "bin": folder / "env" / "bin", "work": work}


def installed_packages(python: Path) -> set[str]:
    listed = run([python, "-m", "pip", "list", "--format", "json"], python.parent)
    return {package["name"].lower() for package in json.loads(listed.stdout)}


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_no_top_level_training(fresh):
    import zipfile

    names = zipfile.ZipFile(fresh["wheel"]).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"hf_scratch_transformer"}
    for needed in ("modeling_scratch_transformer.py", "training/cli.py", "training/finetune_translation.py",
                   "training/accelerate_configs/cpu_2proc.yaml", "model_cards/translation.md",
                   "metrics/sacrebleu_chrf/sacrebleu_chrf.py"):  # fmt: skip
        assert f"hf_scratch_transformer/{needed}" in names, needed


@pytest.mark.slow
def test_the_base_install_runs_the_model_without_the_training_libraries(fresh):
    assert not TRAINING_LIBRARIES & installed_packages(fresh["python"])
    result = run([fresh["python"], "-c", ROUND_TRIP], fresh["work"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["package"]).is_relative_to(fresh["bin"].parent)  # the installed wheel, not this checkout
    assert report["same_after_reload"]
    assert not TRAINING_LIBRARIES & set(report["modules"])
    result = run([fresh["python"], "-c", REMOTE_CODE], fresh["work"])
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["class_module"].startswith("transformers_modules")  # the files saved beside the weights
    assert remote["tokens"] == report["tokens"]


@pytest.mark.slow
def test_the_command_names_the_extra_it_needs_then_answers_help_with_it(fresh):
    command = fresh["bin"] / "hf-scratch-transformer"
    listed = run([command, "--help"], fresh["work"])
    assert listed.returncode == 0 and all(name in listed.stdout for name in COMMANDS)
    refused = run([command, "finetune-translation", "--help"], fresh["work"])
    assert refused.returncode == 1
    assert "pip install 'hf-scratch-transformer[train]'" in refused.stderr and "Traceback" not in refused.stderr
    plots = run([fresh["python"], "-c", "import hf_scratch_transformer.visualization"], fresh["work"])
    assert "pip install 'hf-scratch-transformer[train]'" in plots.stderr
    export = run([fresh["python"], "-c", "import hf_scratch_transformer.export"], fresh["work"])
    assert "needs `ctranslate2`" in export.stderr and "pip install 'hf-scratch-transformer[export]'" in export.stderr

    with_train = f"{fresh['wheel']}[train,export]"
    installed = run([fresh["python"], "-m", "pip", "install", "--quiet", "-c", REPO_ROOT / "constraints.txt",
                     with_train], fresh["work"])  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    for name in COMMANDS:
        helped = run([command, name, "--help"], fresh["work"], timeout=300)
        assert helped.returncode == 0, (name, helped.stderr[-2000:])
        assert f"hf-scratch-transformer {name}" in helped.stdout, name  # the usage line names the command


def test_no_code_edits_sys_path_or_imports_the_scripts_folder_as_a_package():
    """The checkout runs as installed: the scripts are `hf_scratch_transformer.training`, never a top-level
    `training` (which `python -m pytest` in the checkout would otherwise find), and nothing edits `sys.path`."""
    offenders = []
    for path in sorted(REPO_ROOT.glob("*/**/*.py")):
        if path.parts[len(REPO_ROOT.parts)].startswith("."):  # .venv, .transformers-tests
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0].strip()
            if re.match(r"(from|import) training\b", code) or re.search(SYS_PATH_EDIT, code):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert offenders == []
