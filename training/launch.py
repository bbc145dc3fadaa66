"""How a training script's run starts (`start_run`): its processes form one process group, its --output_dir holds
the run it resumes or none, and a run that will push has a Hub token, all checked before any data is read.

Processes that do not form one group would each train alone and write one --output_dir; one process started where
several were asked for trains another global batch than the one asked for, without a word."""

import logging
import os

from transformers import TrainingArguments

from .output_dir import checkpoint_to_resume, refuse_used_output_dir_or_delete_its_checkpoints
from .push_to_hub import check_hub_token

logger = logging.getLogger(__name__)


def start_run(training_args: TrainingArguments, overwrite_output_dir: bool) -> str | None:
    """Check the run before it reads any data; the checkpoint it resumes from, or None for a new run."""
    check_processes_see_each_other(training_args.world_size)
    distributed_type = training_args.distributed_state.distributed_type
    logger.info("Launched: %s over %d process(es)", distributed_type.value, training_args.world_size)
    check_fsdp_was_set_up(distributed_type.value)
    if training_args.world_size > 1 and training_args.ddp_find_unused_parameters is None:
        training_args.ddp_find_unused_parameters = False  # every parameter gets a gradient: skip DDP's search
    resume_from = checkpoint_to_resume(training_args.output_dir, training_args.resume_from_checkpoint)
    if resume_from is None:
        refuse_used_output_dir_or_delete_its_checkpoints(training_args.output_dir, overwrite_output_dir)
    if training_args.push_to_hub:
        check_hub_token(training_args.hub_token)
    return resume_from


def check_processes_see_each_other(world_size: int) -> None:
    """Refuse a launch whose processes do not see each other. Call it after TrainingArguments exist: they set up
    the process group, and `world_size` is its size.

    Two launches do that. A torchrun whose rendezvous failed starts several processes that each think they are
    alone; WORLD_SIZE, which every launcher of a process group sets (torchrun, and accelerate's multi-GPU launcher,
    which is torchrun), says how many there should be. And accelerate's simple launcher, which `accelerate launch
    --cpu` (or a machine without GPUs) uses, runs the script once whatever --num_processes or the config file
    says. The one sign of that in the process's environment, however the command was spelled: asked for more than
    one process it sets MASTER_ADDR, the address of a process group, but no WORLD_SIZE. (ACCELERATE_MIXED_PRECISION,
    which every accelerate launcher sets, says accelerate started the process.)
    """
    asked = int(os.environ.get("WORLD_SIZE", "1"))
    if asked > 1 and asked != world_size:
        raise SystemExit(
            f"WORLD_SIZE asks for {asked} processes, but they do not see each other (this one sees {world_size}). "
            "Check the launcher's rendezvous (on CPUs: torchrun --nproc_per_node N ... --use_cpu)."
        )
    started_alone_by_accelerate = (
        "ACCELERATE_MIXED_PRECISION" in os.environ and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ
    )
    if started_alone_by_accelerate and world_size == 1:
        raise SystemExit(
            "accelerate launch was asked for several processes but started one: --cpu (or a machine without GPUs) "
            "runs the script once. On CPUs use --config_file training/accelerate_configs/cpu_2proc.yaml (or "
            "`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`), or `torchrun --nproc_per_node "
            "N` with --use_cpu. (Meant one process? Then MASTER_ADDR came from your shell: unset it.)"
        )


def check_fsdp_was_set_up(distributed_type: str) -> None:
    """Refuse a launch that asked for FSDP and got something else. Accelerate shards a model only over GPUs (or
    other accelerators): given an FSDP config with `use_cpu: true`, it sets up plain data parallelism (MULTI_CPU),
    and every process would hold the whole model, which is what FSDP was asked to avoid, without a word."""
    asked_for_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if asked_for_fsdp and distributed_type != "FSDP":
        raise SystemExit(
            f"The launch asked for FSDP, but Accelerate set up {distributed_type}: it shards a model over GPUs only, "
            "and on CPU processes each would hold the whole model. On CPUs launch with "
            "training/accelerate_configs/cpu_2proc.yaml (data parallel); use the FSDP config on GPUs."
        )
