"""Accelerate: the configs in training/accelerate_configs/ load, two CPU processes train exactly as one process with
the same global batch, and a launch whose processes cannot see each other is refused."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import launch_command_parser
from conftest import REPO_ROOT, run_script, toy_reviews, write_jsonl
from safetensors.torch import load_file
from transformers import AutoTokenizer

from hf_scratch_transformer import (
    ScratchTransformerConfig,
    ScratchTransformerForConditionalGeneration,
    modeling_scratch_transformer,
)
from hf_scratch_transformer.demo_data import make_translation_dataset
from hf_scratch_transformer.training.launch import check_processes_see_each_other
from hf_scratch_transformer.training.model_loading import parse_config_overrides

# The slow tier (make test-slow): every test launches several training processes.
pytestmark = pytest.mark.slow

CONFIGS = REPO_ROOT / "training" / "accelerate_configs"

# The installed command, as `python -m` and `accelerate launch -m` run it.
COMMAND = ["-m", "hf_scratch_transformer.training.cli"]
SCRIPTS = {
    "sentiment": [*COMMAND, "finetune-sentiment"],
    "translation": [*COMMAND, "finetune-translation", "--source_lang", "en", "--target_lang", "de"],
}
# `python -m accelerate.commands.accelerate_cli launch` is the `accelerate launch` command without relying on PATH.
ACCELERATE_LAUNCH = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--main_process_port", "0"]
# Dropout off: the two runs draw their masks from different RNG streams (one per process).
TINY_MODEL = (
    "d_model=32,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,decoder_attention_heads=2,"
    "encoder_ffn_dim=64,decoder_ffn_dim=64,dropout=0.0,classifier_dropout=0.0"
)
STEPS = 6


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_accelerate_config_loads_and_every_key_is_a_launch_option(path):
    config = load_config_from_file(str(path))  # raises on keys ClusterConfig does not know
    assert isinstance(config, ClusterConfig)
    assert config.num_processes >= 2 and config.num_processes % config.num_machines == 0
    launch_options = {action.dest for action in launch_command_parser()._actions}
    for key in yaml.safe_load(path.read_text()).get("fsdp_config", {}):
        assert key in launch_options, f"{path.name}: fsdp_config.{key} is no `accelerate launch` option"
    for name in config.fsdp_config.get("fsdp_transformer_layer_cls_to_wrap", "").split(","):
        assert not name or hasattr(modeling_scratch_transformer, name), name


def test_the_configs_say_what_they_are_for():
    cpu = load_config_from_file(str(CONFIGS / "cpu_2proc.yaml"))
    assert (cpu.distributed_type, cpu.use_cpu, cpu.num_processes) == ("MULTI_GPU", True, 2)
    for name in ("multi_gpu_ddp_bf16.yaml", "multi_gpu_fsdp_bf16.yaml", "multi_node_ddp.yaml"):
        assert load_config_from_file(str(CONFIGS / name)).mixed_precision == "bf16"
    fsdp = load_config_from_file(str(CONFIGS / "multi_gpu_fsdp_bf16.yaml"))
    assert fsdp.distributed_type == "FSDP"
    assert fsdp.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",") == [
        "ScratchTransformerEncoderLayer",
        "ScratchTransformerDecoderLayer",
    ]
    multi_node = load_config_from_file(str(CONFIGS / "multi_node_ddp.yaml"))
    assert (multi_node.num_machines, multi_node.num_processes) == (2, 16)
    lines = (CONFIGS / "multi_node_ddp.yaml").read_text().splitlines()
    for field in ("num_machines", "num_processes", "machine_rank", "main_process_ip", "main_process_port"):
        line = next(line for line in lines if line.startswith(f"{field}:"))
        assert "# EDIT" in line, f"multi_node_ddp.yaml: {field} is not marked as a field to edit"


def train_tokenizer(folder: Path) -> None:
    run_script("train_tokenizer", "--train_file", folder / "train.jsonl", "--output_dir", folder / "tokenizer",
               "--vocab_size", 400, "--num_sentinel_tokens", 10)  # fmt: skip


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    """48 one-word-sentiment sentences (six batches of 8) and a 400-token tokenizer."""
    folder = tmp_path_factory.mktemp("multiprocess")
    write_jsonl(folder / "train.jsonl", toy_reviews(48, seed=0, neutral_words=(2, 6)))  # ragged lengths
    train_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def translation(tmp_path_factory):
    """48 number translations of ragged lengths (so each process holds a different number of target tokens: the
    loss must be divided by the count over all processes) and a 400-token tokenizer."""
    folder = tmp_path_factory.mktemp("multiprocess_translation")
    rows = make_translation_dataset(48, seed=0, max_number=99_999)
    with open(folder / "train.jsonl", "w") as file:
        for row in rows:
            file.write(json.dumps({"translation": row["translation"]}) + "\n")
    train_tokenizer(folder)
    return folder


def run(command, check=True) -> subprocess.CompletedProcess:
    # One thread a process: two processes on a shared CPU, and the same kernels as the single-process run.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, env=env
    )
    if check:
        assert completed.returncode == 0, completed.stderr[-4000:]
    return completed


def script_arguments(script: str, data: Path, output_dir: Path, batch_size: int, new_model: bool = True) -> list:
    """`STEPS` steps in file order (sequential sampler): with 2 processes of 4 rows, rank 0 takes rows 0-3 and
    rank 1 rows 4-7 of each 8, the batch of the single process. A new model is the tiny one; without `new_model`
    the caller passes `--model_name_or_path`."""
    return [
        *SCRIPTS[script], "--train_file", data / "train.jsonl", "--tokenizer_name", data / "tokenizer",
        *(["--config_overrides", TINY_MODEL] if new_model else []),
        "--output_dir", output_dir, "--per_device_train_batch_size", batch_size,
        "--max_steps", STEPS, "--save_steps", STEPS, "--logging_steps", 1, "--train_sampling_strategy", "sequential",
        "--learning_rate", 1e-3, "--seed", 0, "--use_cpu", "--report_to", "none", "--disable_tqdm", "true",
        "--ddp_find_unused_parameters", "false",
    ]  # fmt: skip


def training_logs(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


@pytest.mark.parametrize("script", ["sentiment", "translation"])
def test_two_cpu_processes_train_as_one_process_with_the_same_global_batch(script, request, tmp_path):
    data = request.getfixturevalue(script)
    two, one = tmp_path / "two_processes", tmp_path / "one_process"
    launched = run(
        [*ACCELERATE_LAUNCH, "--config_file", CONFIGS / "cpu_2proc.yaml", *script_arguments(script, data, two, 4)]
    )
    run([sys.executable, *script_arguments(script, data, one, 8)])

    assert "Launched: MULTI_CPU over 2 process(es)" in launched.stderr  # what accelerate set up, in the log
    # Two processes ran, in one process group: each wrote its RNG state into the one (atomic) checkpoint.
    checkpoint = {path.name for path in (two / f"checkpoint-{STEPS}").iterdir()}
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= checkpoint, launched.stderr[-4000:]
    assert not (two / "_incomplete_checkpoints").exists()

    two_logs, one_logs = training_logs(two), training_logs(one)
    assert [entry["step"] for entry in two_logs] == [entry["step"] for entry in one_logs] == list(range(1, STEPS + 1))
    for key in ("loss", "grad_norm"):  # a loss scaled by the number of processes would show here
        difference = max(abs(a[key] - b[key]) for a, b in zip(two_logs, one_logs, strict=True))
        assert difference <= 1e-5, (key, [a[key] for a in two_logs], [b[key] for b in one_logs])

    # The weights agree to within one Adam step (the learning rate, 1e-3): Adam divides each gradient by its running
    # RMS, so a gradient at rounding level (an embedding row the batch hardly uses, summed in another order across
    # processes) can move its weight by a visible fraction of a step; losing a process's rows moves them by many.
    first, second = load_file(two / "model.safetensors"), load_file(one / "model.safetensors")
    difference = max((first[name] - second[name]).abs().max().item() for name in first)
    assert difference <= 1e-3, difference


def test_two_machines_launched_on_one_host_train_as_one_process(translation, tmp_path):
    """multi_node_ddp.yaml with its EDIT lines set for two "machines" on this host (machine_rank 0 and 1, a static
    rendezvous on 127.0.0.1) and the CPU: the two launches form one process group and train as one process with the
    same global batch. A real multi-node run edits the same lines (docs/training.md, "Several machines")."""
    config = yaml.safe_load((CONFIGS / "multi_node_ddp.yaml").read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config.update(num_machines=2, num_processes=2, main_process_ip="127.0.0.1", main_process_port=port,
                  use_cpu=True, mixed_precision="no")  # fmt: skip
    config.pop("gpu_ids")
    config_file = tmp_path / "two_machines.yaml"
    config_file.write_text(yaml.safe_dump(config))
    two, one = tmp_path / "two_machines", tmp_path / "one_process"
    launch = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--config_file", config_file]
    arguments = script_arguments("translation", translation, two, 4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    second = subprocess.Popen([str(part) for part in [*launch, "--machine_rank", 1, *arguments]], env=env,
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    first = run([*launch, "--machine_rank", 0, *arguments])
    assert second.wait(timeout=300) == 0, second.stdout.read()[-3000:]
    assert "Launched: MULTI_CPU over 2 process(es)" in first.stderr
    run([sys.executable, *script_arguments("translation", translation, one, 8)])
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {path.name for path in (two / f"checkpoint-{STEPS}").iterdir()}
    two_logs, one_logs = training_logs(two), training_logs(one)
    difference = max(abs(a["loss"] - b["loss"]) for a, b in zip(two_logs, one_logs, strict=True))
    assert difference <= 1e-5, ([a["loss"] for a in two_logs], [b["loss"] for b in one_logs])


def test_accelerate_launch_cpu_with_two_processes_is_refused(sentiment, tmp_path):
    # `--cpu` makes accelerate start a single process, which would train alone and call itself the whole run.
    # The flag is spelled `--num-processes=2` here: the check reads the environment, not the command line.
    completed = run(
        [
            *ACCELERATE_LAUNCH,
            "--cpu",
            "--num-processes=2",
            *script_arguments("sentiment", sentiment, tmp_path / "run", 8),
        ],
        check=False,
    )
    assert completed.returncode != 0
    assert "accelerate launch was asked for several processes but started one" in completed.stderr, completed.stderr
    assert "cpu_2proc.yaml" in completed.stderr
    assert not (tmp_path / "run").exists()


def test_an_fsdp_launch_on_cpu_processes_is_refused(translation, tmp_path):
    """The FSDP config with use_cpu: true. Accelerate would train the two processes as plain data parallelism, each
    holding the whole model: the script says so and stops before it reads any data."""
    config = yaml.safe_load((CONFIGS / "multi_gpu_fsdp_bf16.yaml").read_text())
    config.update(num_processes=2, use_cpu=True, mixed_precision="no")
    config.pop("gpu_ids")
    config_file = tmp_path / "fsdp_cpu.yaml"
    config_file.write_text(yaml.safe_dump(config))
    arguments = script_arguments("translation", translation, tmp_path / "run", 4)
    completed = run([*ACCELERATE_LAUNCH, "--config_file", config_file, *arguments], check=False)
    assert completed.returncode != 0
    assert "The launch asked for FSDP, but Accelerate set up MULTI_CPU" in completed.stderr, completed.stderr[-3000:]
    assert "cpu_2proc.yaml" in completed.stderr
    assert not (tmp_path / "run").exists()


ACCELERATE = {"ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_USE_CPU": "True"}
RENDEZVOUS = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


@pytest.mark.parametrize(
    ("environment", "world_size", "refused"),
    [
        ({}, 1, None),  # python script.py
        (ACCELERATE, 1, None),  # accelerate launch --cpu (one process asked for)
        ({**ACCELERATE, **RENDEZVOUS}, 1, "accelerate launch was asked for several processes but started one"),
        ({**RENDEZVOUS, "WORLD_SIZE": "1", "RANK": "0"}, 1, None),  # torchrun --nproc_per_node 1
        ({**ACCELERATE, **RENDEZVOUS, "WORLD_SIZE": "2", "RANK": "1"}, 2, None),  # cpu_2proc.yaml
        ({**RENDEZVOUS, "WORLD_SIZE": "2", "RANK": "0"}, 1, "WORLD_SIZE asks for 2 processes, but they do not see"),
    ],
    ids=["plain", "accelerate one", "accelerate --cpu two", "torchrun one", "accelerate multi-cpu two", "no group"],
)
def test_launches_whose_processes_do_not_see_each_other_are_refused(monkeypatch, environment, world_size, refused):
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", *ACCELERATE):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if refused is None:
        check_processes_see_each_other(world_size)
    else:
        with pytest.raises(SystemExit, match=refused):
            check_processes_see_each_other(world_size)


def test_two_cpu_processes_train_a_lora_adapter_as_one_process(translation, tmp_path):
    """`--peft lora` under the 2-process launch: the adapter both runs save is the same to 1e-5."""
    base = tmp_path / "base"
    tokenizer = AutoTokenizer.from_pretrained(translation / "tokenizer")
    config = ScratchTransformerConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id,
        **parse_config_overrides(TINY_MODEL),
    )  # fmt: skip
    ScratchTransformerForConditionalGeneration(config).save_pretrained(base)
    peft = ["--model_name_or_path", base, "--peft", "lora", "--lora_dropout", 0.0, "--learning_rate", 1e-2]

    two, one = tmp_path / "two_processes", tmp_path / "one_process"
    launched = run(
        [*ACCELERATE_LAUNCH, "--config_file", CONFIGS / "cpu_2proc.yaml",
         *script_arguments("translation", translation, two, 4, new_model=False), *peft]
    )  # fmt: skip
    run([sys.executable, *script_arguments("translation", translation, one, 8, new_model=False), *peft])

    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in (two / f"checkpoint-{STEPS}").iterdir()}
    two_logs, one_logs = training_logs(two), training_logs(one)
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(two_logs, one_logs, strict=True)) <= 1e-5
    first, second = load_file(two / "adapter_model.safetensors"), load_file(one / "adapter_model.safetensors")
    assert first.keys() == second.keys() and all("lora_" in name for name in first), launched.stderr[-2000:]
    assert max((first[name] - second[name]).abs().max().item() for name in first) <= 1e-5
    assert not (two / "model.safetensors").exists()
