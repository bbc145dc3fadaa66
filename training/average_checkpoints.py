"""Average the weights of a run's last checkpoints into one model, as fairseq's `average_checkpoints.py` does.

    hf-scratch-transformer average-checkpoints --run_dir runs/multi30k --last 5 --output_dir runs/multi30k/averaged

The average of the weights of the last few checkpoints (one per epoch, say) of a run is a model that usually
translates better than any of them: the optimizer ends each epoch at a different point around a minimum, and their
mean lies nearer its centre. It is what the small Transformer recipes on Multi30k and IWSLT do (fairseq's
`--num-epoch-checkpoints 10`).

The checkpoints are the run's `checkpoint-<step>` folders (Trainer's `--save_strategy epoch` or `steps`; keep as many
as you average with `--save_total_limit`), or the folders named with `--checkpoints`. Every floating-point weight is
averaged in float64 and stored back in its own dtype; integer buffers must be equal in all of them. The output folder
is a model like any other: the config, generation config, code for `trust_remote_code`, the averaged
`model.safetensors`, and the tokenizer of the last checkpoint; `AutoModelForSeq2SeqLM` (or the head the run trained)
loads it.
"""

import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    HfArgumentParser,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

import hf_scratch_transformer  # noqa: F401  (registers the Auto classes)

from .model_loading import explained_load_errors

logger = logging.getLogger(__name__)
CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


@dataclass
class AverageArguments:
    run_dir: str | None = field(
        default=None, metadata={"help": "A run folder holding checkpoint-<step> folders (or use --checkpoints)."}
    )
    output_dir: str = field(default=None, metadata={"help": "Where to save the averaged model."})
    last: int = field(default=5, metadata={"help": "Average the last this many checkpoints of --run_dir."})
    checkpoints: str | None = field(
        default=None, metadata={"help": "Comma-separated checkpoint folders to average instead of --run_dir."}
    )


def last_checkpoints(run_dir: Path, count: int) -> list[Path]:
    """The `count` checkpoints with the highest step numbers, oldest first."""
    if not run_dir.is_dir():
        raise SystemExit(f"{run_dir} is not a folder. Give the run's --output_dir, which holds its checkpoints.")
    steps = sorted(
        (int(match.group(1)), path)
        for path in run_dir.iterdir()
        if path.is_dir() and (match := CHECKPOINT_NAME.match(path.name))
    )
    if len(steps) < count:
        raise SystemExit(
            f"{run_dir} holds {len(steps)} checkpoints ({[path.name for _, path in steps]}), fewer than --last "
            f"{count}. Average fewer, or train with --save_total_limit {count} (or more) and a --save_strategy."
        )
    return [path for _, path in steps[-count:]]


def model_class_of(checkpoint: Path):
    """The head the checkpoint was saved with: a classifier, or the sequence-to-sequence model."""
    with explained_load_errors("checkpoint", str(checkpoint)):
        architectures = AutoConfig.from_pretrained(checkpoint, trust_remote_code=False).architectures or []
    if any("SequenceClassification" in name for name in architectures):
        return AutoModelForSequenceClassification
    return AutoModelForSeq2SeqLM


def average_state_dicts(checkpoints: list[Path], model_class) -> dict[str, torch.Tensor]:
    """The mean of every floating-point weight of the checkpoints, each loaded by transformers (so a sharded or tied
    checkpoint reads as it would for inference). Integer buffers must agree."""
    sums: dict[str, torch.Tensor] = {}
    first: dict[str, torch.Tensor] | None = None
    for checkpoint in checkpoints:
        with explained_load_errors("checkpoint", str(checkpoint)):
            state = model_class.from_pretrained(checkpoint, trust_remote_code=False).state_dict()
        first = state if first is None else first
        for name, tensor in state.items():
            if name not in first or tensor.shape != first[name].shape:
                raise SystemExit(
                    f"{name} differs in shape or presence between {checkpoint} and {checkpoints[0]}: the checkpoints "
                    "are not of one model."
                )
            if tensor.is_floating_point():
                sums[name] = sums.get(name, 0) + tensor.double()  # float64: no rounding builds up over many
            elif not torch.equal(tensor, first[name]):
                raise SystemExit(f"The integer buffer {name} differs between the checkpoints: it cannot be averaged.")
    return {
        name: (sums[name] / len(checkpoints)).to(tensor.dtype) if tensor.is_floating_point() else tensor
        for name, tensor in first.items()
    }


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (args,) = HfArgumentParser(AverageArguments).parse_args_into_dataclasses(args=argv)
    if args.output_dir is None:
        raise SystemExit("--output_dir is required: the folder to save the averaged model to.")
    if (args.run_dir is None) == (args.checkpoints is None):
        raise SystemExit("Give either a run folder (--run_dir DIR --last N) or --checkpoints a,b,c.")
    if args.checkpoints is not None:
        checkpoints = [Path(path) for path in args.checkpoints.split(",") if path]
        missing = [str(path) for path in checkpoints if not path.is_dir()]
        if missing:
            raise SystemExit(f"These checkpoints are not folders: {missing}.")
    else:
        if args.last < 1:
            raise SystemExit(f"--last must be at least 1, got {args.last}.")
        checkpoints = last_checkpoints(Path(args.run_dir), args.last)
    logger.info("Averaging %d checkpoints: %s", len(checkpoints), [str(path) for path in checkpoints])

    model_class = model_class_of(checkpoints[-1])
    averaged = average_state_dicts(checkpoints, model_class)
    model = model_class.from_pretrained(checkpoints[-1], trust_remote_code=False)
    model.load_state_dict(averaged)
    model.save_pretrained(args.output_dir)
    try:
        AutoTokenizer.from_pretrained(checkpoints[-1], trust_remote_code=False).save_pretrained(args.output_dir)
    except (OSError, ValueError):
        logger.warning("%s holds no tokenizer: the averaged model is saved without one.", checkpoints[-1])
    logger.info("Saved the average of %d checkpoints to %s", len(checkpoints), args.output_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
