"""`hf-scratch-transformer`: the training scripts as one command with subcommands, as `accelerate` and `trl` have.

    hf-scratch-transformer --help
    hf-scratch-transformer finetune-translation --help
    hf-scratch-transformer finetune-translation --train_file train.jsonl ...
    accelerate launch --config_file cpu_2proc.yaml -m hf_scratch_transformer.training.cli finetune-translation ...

Each subcommand is one module of `hf_scratch_transformer.training` (training/ in the repository), run with the rest
of the command line: its `--help` lists its flags, and its docstring says what it does. The commands need the
`train` extra (pip install "hf-scratch-transformer[train]"), and `export-ctranslate2` the `export` extra.
"""

import importlib
import sys

from hf_scratch_transformer import __version__
from hf_scratch_transformer.extras import missing_extra_says_which

PROGRAM = "hf-scratch-transformer"
COMMANDS = {  # subcommand -> (module of hf_scratch_transformer.training, what it does)
    "demo": ("demo", "train and evaluate a small translator on generated data, offline, in minutes"),
    "train-tokenizer": ("train_tokenizer", "train the shared source/target subword vocabulary"),
    "pretrain": ("pretrain", "pretrain on raw text with a denoising objective"),
    "finetune-translation": ("finetune_translation", "train or fine-tune a translator (Seq2SeqTrainer)"),
    "finetune-sentiment": ("finetune_sentiment", "fine-tune the encoder for sentence classification (Trainer)"),
    "average-checkpoints": ("average_checkpoints", "average a run's last checkpoints into one model"),
    "plot-attention": ("plot_attention", "draw a model's attention for one sentence"),
    "push-to-hub": ("push_to_hub", "push a run to the Hugging Face Hub with its model card"),
    "export-ctranslate2": ("export_ctranslate2", "export a translator to CTranslate2, to serve it (`export` extra)"),
}
EXTRAS = {"export-ctranslate2": "export"}  # the extra a command needs, when it is not `train`


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    return (
        f"usage: {PROGRAM} <command> [flags]   ({PROGRAM} <command> --help lists a command's flags)\n\n"
        f"commands:\n{rows}"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    if argv[0] == "--version":
        print(f"{PROGRAM} {__version__}")
        return
    command, *arguments = argv
    if command not in COMMANDS:
        raise SystemExit(f"{PROGRAM}: no command {command!r}.\n\n{usage()}")
    module_name, _ = COMMANDS[command]
    try:
        with missing_extra_says_which(EXTRAS.get(command, "train"), f"`{PROGRAM} {command}`"):
            module = importlib.import_module(f"hf_scratch_transformer.training.{module_name}")
    except ModuleNotFoundError as error:
        raise SystemExit(f"{PROGRAM}: {error}") from None
    # The script parses sys.argv, and names itself in its --help and errors by sys.argv[0].
    sys.argv = [f"{PROGRAM} {command}", *arguments]
    module.main()


if __name__ == "__main__":
    main()
