"""The flags the training scripts share, as `HfArgumentParser` dataclasses, and how every script reads them.

Each script adds its own dataclass (what its task needs) and `TrainingArguments` (or `Seq2SeqTrainingArguments`),
whose flags all work: `--report_to`, `--resume_from_checkpoint`, `--push_to_hub`, ...
"""

import os
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser


@dataclass
class ModelArguments:
    """Which model and tokenizer to start from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A checkpoint (local folder or Hub id) to fine-tune. Leave empty to train a new model."},
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": "Config of a new model (folder or Hub id); defaults to the paper's base model."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": 'Changes to the config of a new model, e.g. "d_model=256,encoder_layers=3,dropout=0.1"; of a '
            "checkpoint, only its dropouts and label_smoothing."
        },
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id; defaults to the one saved with the model."}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": '"eager", "sdpa" or a flash kernel.'})


@dataclass
class DataArguments:
    """Where the data comes from: a Hub data set, or local files."""

    dataset_name: str | None = field(default=None, metadata={"help": "A data set on the Hub (or a local folder)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration, e.g. de-en."})
    train_file: str | None = field(
        default=None,
        metadata={"help": "Training data instead of a Hub data set: .json, .jsonl, .csv or .txt, each also as .gz."},
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, in the same formats."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first this many rows."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first this many validation rows."}
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where `datasets` caches what it reads."})


@dataclass
class OutputDirArguments:
    """What to do with a run already in --output_dir (Trainer's own flags cover everything else)."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start a new run in an --output_dir that holds one, deleting its checkpoint-* folders."},
    )


@dataclass
class PeftArguments:
    """Parameter-efficient fine-tuning with PEFT: the checkpoint stays frozen, a small adapter trains, and only the
    adapter (with the tokenizer) is saved to --output_dir."""

    peft: str | None = field(
        default=None,
        metadata={
            "help": "Train an adapter instead of the whole model: lora, prefix (prefix tuning) or prompt (prompt "
            "tuning). Needs --model_name_or_path, the model to adapt.",
            "choices": ["lora", "prefix", "prompt"],
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scale numerator: updates are scaled by alpha / r."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default="q_proj,v_proj",
        metadata={"help": 'Layers LoRA wraps, e.g. "q_proj,k_proj,v_proj,out_proj,fc1,fc2", or "all-linear".'},
    )
    lora_modules_to_save: str | None = field(
        default=None,
        metadata={
            "help": "Modules trained fully beside the LoRA adapter and saved with it, comma-separated, e.g. the "
            'layer norms: "self_attn_layer_norm,final_layer_norm,layer_norm" (2 x d_model parameters each). The '
            "classification head always trains."
        },
    )
    num_virtual_tokens: int = field(
        default=20, metadata={"help": "Prefix or prompt length (prefix and prompt tuning)."}
    )
    adapter_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue training this saved adapter (--model_name_or_path is its base model)."},
    )


def parse_arguments(*dataclass_types, argv: list[str] | None = None) -> tuple:
    """One instance of each dataclass, in order, from the flags (`argv`, default the command line) or from a
    single .json or .yaml file that holds them all."""
    parser = HfArgumentParser(dataclass_types)
    argv = sys.argv[1:] if argv is None else argv
    # argparse keeps the last of a flag given twice, which is how a base list of flags is overridden; but a second
    # --config_overrides reads as more changes, and would silently drop the first ones.
    given = [word.split("=", 1)[0] for word in argv].count("--config_overrides")
    if given > 1:
        parser.error(f"--config_overrides given {given} times: join the changes in one, comma-separated.")
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            return parser.parse_json_file(os.path.abspath(argv[0]))
        if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
            return parser.parse_yaml_file(os.path.abspath(argv[0]))
        return parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # a dataclass's own check of its values (TrainingArguments' among them)
        parser.error(str(error).strip().splitlines()[-1] if str(error).strip() else repr(error))
