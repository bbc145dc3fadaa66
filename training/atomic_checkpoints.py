"""Checkpoints that appear in --output_dir only once complete: `AtomicTrainer` and `AtomicSeq2SeqTrainer`, the
`Trainer` and `Seq2SeqTrainer` of every script.

They override three private `Trainer` methods (`_get_output_dir`, `_save_checkpoint`, `_push_from_checkpoint`), as
transformers 5.23 and every later release so far call them (CI's `make test-newest` runs the checkpoint tests on the
newest release). A release that renames one of them stops this module's import, and one that no longer writes
through `_get_output_dir` stops the first save: either way a run never goes on with checkpoints that are silently
no longer atomic.
"""

import os
import shutil

import transformers
from transformers import Seq2SeqTrainer, Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints


def require_trainer_methods(names: tuple[str, ...], purpose: str) -> None:
    """Stop an import that overrides private `Trainer` methods this transformers no longer has: an override of a
    renamed method is never called, and the run would go on without what it was written for."""
    missing = [name for name in names if not callable(getattr(Trainer, name, None))]
    if missing:
        raise ImportError(
            f"transformers {transformers.__version__}: Trainer has no {missing}, which are overridden {purpose}. "
            "Install the newest transformers release that has them, and report this at the project's issue tracker."
        )


require_trainer_methods(
    ("_get_output_dir", "_save_checkpoint", "_push_from_checkpoint"),
    "by AtomicCheckpointsMixin to make checkpoints atomic",
)

# Where a checkpoint is written before it is renamed to output_dir/checkpoint-N. The name matches neither
# `^checkpoint-\d+$` (so `get_last_checkpoint` and checkpoint rotation never see it) nor is it uploaded: Trainer's
# pushes to the Hub leave out paths that start with "_".
STAGING_DIR_NAME = "_incomplete_checkpoints"


def remove_incomplete_checkpoints(run_dir: str) -> None:
    """Delete what a run killed while saving left in `run_dir`'s staging folder."""
    shutil.rmtree(os.path.join(run_dir, STAGING_DIR_NAME), ignore_errors=True)


def _fsync(path: str) -> None:
    if os.name != "posix":  # Windows cannot open a folder to flush it: no power-cut guarantee, the rename stays atomic
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def publish_checkpoint(staged: str, final: str) -> None:
    """Move a complete checkpoint folder from staging to its real name in one rename, durably."""
    if not os.path.isdir(staged):  # another node's process published it (save_on_each_node, shared filesystem)
        return
    for folder, _, files in os.walk(staged):  # file contents reach the disk before the name that points to them
        for name in files:
            _fsync(os.path.join(folder, name))
        _fsync(folder)
    replaced = None
    if os.path.isdir(final):  # the same step saved again: move the old copy aside, never write into it
        replaced = f"{staged}.replaced"
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
    os.replace(staged, final)  # atomic on one filesystem: final is absent or complete, never partial
    _fsync(os.path.dirname(final))
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(staged))  # the staging folder, now empty
    except OSError:
        pass


class AtomicCheckpointsMixin:
    """Checkpoints that appear in `output_dir` only once complete, so a run killed at any moment resumes.

    Why: `Trainer._save_checkpoint` (transformers 5.23) writes `output_dir/checkpoint-N/` in place, file by file
    (model, optimizer, scheduler, RNG states, trainer_state.json). A run killed while saving leaves a folder with
    some of them, and `get_last_checkpoint` (hence `--resume_from_checkpoint true`) picks it as the latest: the
    resume fails, or silently starts without optimizer or RNG state.

    How, overriding as little of `Trainer` as possible:
    - during `_save_checkpoint`, `_get_output_dir` answers `output_dir/_incomplete_checkpoints`, so Trainer's own
      code writes the whole checkpoint (every rank's `rng_state_{rank}.pth` included) into
      `output_dir/_incomplete_checkpoints/checkpoint-N`; nothing else of the save changes;
    - then, when all processes are done writing (a barrier), the processes that save (`args.should_save`) fsync
      the files and rename the folder to `output_dir/checkpoint-N` with `os.replace`, which is atomic on one
      filesystem, and fsync `output_dir`. A SIGKILL leaves either no `checkpoint-N` or a complete one; the
      fsyncs make the same true of a power cut;
    - `state.best_model_checkpoint`, which Trainer set to the staged path, is pointed at the real one (and the
      staged trainer_state.json rewritten before the rename); the Hub push Trainer would start from the staged
      folder is started from the real one; checkpoint rotation (`save_total_limit`), which Trainer ran on the
      staging folder where it has nothing to do, runs on `output_dir`;
    - leftovers of a killed save are deleted when training starts and before each save. They are never read.
    """

    _saving_checkpoint = False
    _push_after_publishing = False

    def _get_output_dir(self, trial) -> str:  # Trainer's: output_dir, or a hyperparameter-search trial's folder
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR_NAME) if self._saving_checkpoint else run_dir

    def train(self, *args, **kwargs):  # -> TrainOutput
        if self.args.should_save:
            remove_incomplete_checkpoints(self.args.output_dir)
        return super().train(*args, **kwargs)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if self._saving_checkpoint:  # the staged folder is about to be renamed: push the published one
            self._push_after_publishing = True
            return
        super()._push_from_checkpoint(checkpoint_folder)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = self._get_output_dir(trial)
        staging = os.path.join(run_dir, STAGING_DIR_NAME)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = os.path.join(staging, name), os.path.join(run_dir, name)
        if self.args.should_save:
            remove_incomplete_checkpoints(run_dir)
        self.accelerator.wait_for_everyone()  # no rank writes into staging before it was cleared

        self._saving_checkpoint, self._push_after_publishing = True, False
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._saving_checkpoint = False
        if self.args.should_save and not os.path.isdir(staged):
            raise RuntimeError(
                f"transformers {transformers.__version__} saved {name} without asking _get_output_dir where, so not "
                f"into {staging}: this checkpoint, and every later one, would not be atomic. Install an "
                "earlier transformers release (5.23 or later), and report this at the project's issue tracker."
            )

        best = self.state.best_model_checkpoint
        if best is not None and os.path.dirname(os.path.normpath(best)) == os.path.normpath(staging):
            self.state.best_model_checkpoint = os.path.join(run_dir, os.path.basename(os.path.normpath(best)))
            if self.args.should_save:  # the staged trainer_state.json names the staged path: rewrite it
                self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))

        self.accelerator.wait_for_everyone()  # every rank has written its files (rng_state_{rank}.pth)
        if self.args.should_save:
            publish_checkpoint(staged, final)
        self.accelerator.wait_for_everyone()  # every rank sees checkpoint-N before training goes on

        if self._push_after_publishing:
            self._push_from_checkpoint(final)
        if self.args.should_save:
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )


class AtomicTrainer(AtomicCheckpointsMixin, Trainer):
    """`Trainer` whose checkpoints appear only complete (see `AtomicCheckpointsMixin`)."""


class AtomicSeq2SeqTrainer(AtomicCheckpointsMixin, Seq2SeqTrainer):
    """`Seq2SeqTrainer` whose checkpoints appear only complete (see `AtomicCheckpointsMixin`)."""
