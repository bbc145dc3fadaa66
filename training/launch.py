"""The check that the processes a launcher started form one process group."""

import os
from pathlib import Path


def processes_the_launcher_asked_for() -> int:
    """`--num_processes N` of an `accelerate launch` that started this process (Linux), else 1."""
    try:
        arguments = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return 1
    if "launch" not in arguments:
        return 1
    for flag in ("--num_processes", "--num-processes"):
        if flag in arguments[:-1]:
            return int(arguments[arguments.index(flag) + 1])
    return 1


def check_processes_see_each_other(world_size: int) -> None:
    """Refuse N processes that do not form one process group: they would be N independent runs writing one
    folder. `accelerate launch --cpu --num_processes 2`, for one, starts a single process; a torchrun whose
    rendezvous failed starts several that each think they are alone. Call it after TrainingArguments exist:
    they set up the process group."""
    for asked, source in (
        (int(os.environ.get("WORLD_SIZE", "1")), "WORLD_SIZE"),
        (processes_the_launcher_asked_for(), "accelerate launch --num_processes"),
    ):
        if asked > 1 and asked != world_size:
            raise SystemExit(
                f"{source} asks for {asked} processes, but they do not see each other (this one sees "
                f"{world_size}). On CPUs use `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes "
                f"{asked}` or --config_file training/accelerate_configs/cpu_2proc.yaml (`--cpu` starts one "
                "process), or `torchrun --nproc_per_node N` with --use_cpu."
            )
