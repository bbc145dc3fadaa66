"""The run folder, --output_dir: which checkpoint a run resumes from, what a new run does to a folder that holds
another one, and what every run leaves there at its end."""

import shutil
from pathlib import Path

from transformers import PreTrainedTokenizerBase
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .atomic_checkpoints import remove_incomplete_checkpoints


def checkpoint_to_resume(output_dir: str, resume_from_checkpoint: str | bool | None) -> str | None:
    """`--resume_from_checkpoint` as given, the last complete checkpoint in `output_dir` for
    `--resume_from_checkpoint true`, or None for a new run."""
    if resume_from_checkpoint in (True, "true", "True"):
        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            raise SystemExit(
                f"--resume_from_checkpoint true: {output_dir} holds no checkpoint-* folder to resume (a run killed "
                "during its first save has none). Start the run again without --resume_from_checkpoint."
            )
        return last
    return resume_from_checkpoint or None


def refuse_used_output_dir_or_delete_its_checkpoints(output_dir: str, overwrite: bool) -> None:
    """A new run goes into an empty (or new) folder. One that holds another run is refused, unless `overwrite`:
    then its checkpoint-* folders are deleted, since a later --resume_from_checkpoint true could otherwise pick
    one of them as the new run's last. What a run killed while saving left (never a checkpoint) is deleted first:
    a folder that holds only an interrupted first checkpoint is an empty one."""
    path = Path(output_dir)
    remove_incomplete_checkpoints(output_dir)
    if not (path.is_dir() and any(path.iterdir())):
        return
    if not overwrite:
        raise SystemExit(
            f"{output_dir} already holds a run ({sorted(p.name for p in path.iterdir())[:5]}). Pass "
            "--resume_from_checkpoint true to continue it, --overwrite_output_dir to replace it, or another "
            "--output_dir."
        )
    for checkpoint in path.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)  # several processes may race here: one already gone is fine


def validation_metrics(trainer) -> dict:
    """The trained model's metrics on the validation set. Trainer evaluates at the last step of a run that
    evaluates every N steps or every epoch: those are then the final model's metrics, and a second pass (half a
    minute on IMDB, minutes of beam search on Multi30k) would repeat them. A run that did not evaluate at its last
    step, or whose --load_best_model_at_end has since loaded another checkpoint, is evaluated now."""
    evaluations = [entry for entry in trainer.state.log_history if "eval_runtime" in entry]
    if (
        evaluations
        and evaluations[-1]["step"] == trainer.state.global_step
        and not trainer.args.load_best_model_at_end
    ):
        return {key: value for key, value in evaluations[-1].items() if key != "step"}
    return trainer.evaluate()


def save_results(trainer, tokenizer: PreTrainedTokenizerBase, metrics: dict) -> None:
    """Model (or, with --peft, the adapter alone), tokenizer, generation config, all_results.json and
    trainer_state.json in --output_dir, loadable by the Auto (or AutoPeftModel) classes. The results include how
    many parameters trained."""
    metrics["trainable_params"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    metrics["total_params"] = sum(p.numel() for p in trainer.model.parameters())
    trainer.save_model()
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(trainer.args.output_dir)
        if getattr(trainer.model, "generation_config", None) is not None:
            trainer.model.generation_config.save_pretrained(trainer.args.output_dir)
    trainer.save_metrics("all", metrics)
    trainer.save_state()  # trainer_state.json: the logged losses and metrics, drawn in the model card's curves
