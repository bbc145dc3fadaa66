"""What the training scripts share: their common arguments, and the few steps every one of them takes the same way
(read the arguments, load the data, load or build the model, check the run directory, save the results).

Plain functions over `transformers` and `datasets`; each script still reads top to bottom. One addition to
`Trainer`: `AtomicTrainer` / `AtomicSeq2SeqTrainer`, whose checkpoints appear only complete.
"""

import copy
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from peft import (
    LoraConfig,
    PeftConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptTuningConfig,
    get_peft_model,
    get_peft_model_state_dict,
)
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser, PreTrainedTokenizerBase, Seq2SeqTrainer, Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
import hf_scratch_transformer  # noqa: E402, F401  (registers the Auto classes)

logger = logging.getLogger(__name__)

# File extensions that `datasets.load_dataset` reads, and the builder that reads each.
DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text", ".text": "text"}


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
        metadata={"help": 'Changes to the config of a new model, e.g. "d_model=256,encoder_layers=3,dropout=0.1".'},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id; defaults to the one saved with the model."}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": '"eager", "sdpa" or a flash kernel.'})


@dataclass
class DataArguments:
    """Where the data comes from: a Hub data set, or local files (json, jsonl, csv, txt)."""

    dataset_name: str | None = field(default=None, metadata={"help": "A data set on the Hub (or a local folder)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration, e.g. de-en."})
    train_file: str | None = field(default=None, metadata={"help": "Training data: .json, .jsonl, .csv or .txt."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, same formats."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only this many validation rows."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})


@dataclass
class RunArguments:
    """What to do with a run already in --output_dir (Trainer's own flags cover everything else)."""

    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a run already in --output_dir."})


def parse_arguments(*dataclass_types):
    """Flags, or a single .json/.yaml file holding them: the same dataclasses either way."""
    parser = HfArgumentParser(dataclass_types)
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(sys.argv[1]))
    if len(sys.argv) == 2 and sys.argv[1].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(sys.argv[1]))
    return parser.parse_args_into_dataclasses()


def start_run(task_arguments, training_arguments, *more_arguments):
    """How every script starts: read the flags (or one .json/.yaml file) into the shared dataclasses, the
    script's own `task_arguments` and `training_arguments` (TrainingArguments or Seq2SeqTrainingArguments), and
    any `more_arguments` (e.g. `PeftArguments`); set up logging; check the launch and the output folder. Returns
    the model, data, task and training arguments, the checkpoint to resume from (None for a new run), then one
    instance of each of `more_arguments`."""
    model_args, data_args, task_args, run_args, training_args, *more = parse_arguments(
        ModelArguments, DataArguments, task_arguments, RunArguments, training_arguments, *more_arguments
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    check_processes_see_each_other(training_args.world_size)
    if training_args.world_size > 1 and training_args.ddp_find_unused_parameters is None:
        training_args.ddp_find_unused_parameters = False  # every parameter gets a gradient: skip DDP's search
    resume_from = check_output_dir(
        training_args.output_dir, training_args.resume_from_checkpoint, run_args.overwrite_output_dir
    )
    if training_args.push_to_hub:
        check_hub_token(training_args.hub_token)
    return model_args, data_args, task_args, training_args, resume_from, *more


def load_raw_datasets(data_args: DataArguments) -> datasets.DatasetDict:
    """The train and validation splits, from the Hub or from files, with a clear error for an unreadable file
    and for an empty split."""
    if data_args.dataset_name is not None:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name)
    else:
        files = {"train": data_args.train_file, "validation": data_args.validation_file}
        files = {split: path for split, path in files.items() if path is not None}
        if not files:
            raise SystemExit("No data: pass --dataset_name, or --train_file (and --validation_file).")
        builders = set()
        for split, path in files.items():
            suffix = Path(path).suffix.lower()
            if suffix not in DATA_FILE_BUILDERS:
                raise SystemExit(
                    f"--{split}_file {path}: unknown extension {suffix!r}; use one of {sorted(DATA_FILE_BUILDERS)}."
                )
            if not Path(path).is_file():
                raise SystemExit(f"--{split}_file {path}: no such file.")
            builders.add(DATA_FILE_BUILDERS[suffix])
        if len(builders) > 1:
            raise SystemExit(f"The data files must share one format, got {sorted(builders)}.")
        try:
            raw = datasets.load_dataset(builders.pop(), data_files=files)
        except Exception as error:  # datasets raises many types for a malformed file; all mean the same here
            raise SystemExit(f"Could not read the data files {files}: {error}") from error

    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples}
    for split, limit in limits.items():
        if split in raw and limit is not None:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    for split, dataset in raw.items():
        if len(dataset) == 0:
            raise SystemExit(f"The {split} split is empty: check the data file or --max_{split}_samples.")
    return raw


def tokenize_splits(raw: datasets.DatasetDict, preprocess, data_args: DataArguments, training_args):
    """Every split through the batched `preprocess`, keeping only the columns it makes. The main process goes
    first and the others read its cache, so that N processes do not tokenize N times."""
    with training_args.main_process_first(desc="tokenizing"):
        return raw.map(
            preprocess,
            batched=True,
            remove_columns=raw["train"].column_names,
            num_proc=data_args.preprocessing_num_workers,
            desc="Tokenizing",
        )


def require_columns(dataset: datasets.Dataset, columns: list[str], flag_hint: str) -> None:
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise SystemExit(f"The data has no column {missing[0]!r}; it has {dataset.column_names}. {flag_hint}")


def load_tokenizer(model_args: ModelArguments) -> PreTrainedTokenizerBase:
    source = model_args.tokenizer_name or model_args.model_name_or_path
    if source is None:
        raise SystemExit(
            "No tokenizer: pass --tokenizer_name (a folder made by training/train_tokenizer.py) or "
            "--model_name_or_path of a run that saved one."
        )
    return AutoTokenizer.from_pretrained(source)


def parse_config_overrides(overrides: str | None) -> dict:
    """ "d_model=256,dropout=0.1,normalize_before=true" -> {"d_model": 256, "dropout": 0.1, ...}."""
    values = {}
    for item in (overrides or "").split(","):
        if not item.strip():
            continue
        key, separator, text = item.partition("=")
        if not separator:
            raise SystemExit(f"--config_overrides: {item!r} is not key=value.")
        try:
            values[key.strip()] = json.loads(
                text.strip().lower() if text.strip().lower() in ("true", "false") else text
            )
        except json.JSONDecodeError:
            values[key.strip()] = text.strip()  # a string such as position_embedding=learned
    return values


def load_model(model_class, model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase, **config_kwargs):
    """A checkpoint to fine-tune, or a new model whose vocabulary and special tokens are the tokenizer's."""
    kwargs = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    if model_args.model_name_or_path is not None:
        model = model_class.from_pretrained(model_args.model_name_or_path, **config_kwargs, **kwargs)
    else:
        config_source = model_args.config_name
        config = (
            AutoConfig.from_pretrained(config_source) if config_source else AutoConfig.for_model("scratch_transformer")
        )
        special_tokens = {
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "decoder_start_token_id": tokenizer.bos_token_id,
        }
        for key, value in {
            **special_tokens,
            **config_kwargs,
            **parse_config_overrides(model_args.config_overrides),
        }.items():
            setattr(config, key, value)
        config = config.__class__(**config.to_dict())  # validates the overridden values
        model = model_class.from_config(config, **kwargs)
    if len(tokenizer) > model.config.vocab_size:
        raise SystemExit(
            f"The tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}: "
            "ids past the vocabulary cannot be embedded. Use the tokenizer the model was trained with."
        )
    return model


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
    num_virtual_tokens: int = field(
        default=20, metadata={"help": "Prefix or prompt length (prefix and prompt tuning)."}
    )
    adapter_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue training this saved adapter (--model_name_or_path is its base model)."},
    )


def lora_target_modules(model, requested: str) -> list[str] | str:
    """The --lora_target_modules names, each checked to match a linear layer: PEFT ignores a name that matches
    nothing as long as another one matches, which would train fewer layers than asked without a word."""
    if requested.strip() == "all-linear":
        return "all-linear"  # PEFT's own shorthand: every linear layer except the output (LM) head
    linear_names = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    short_names = sorted({name.rsplit(".", 1)[-1] for name in linear_names})
    names = [name.strip() for name in requested.split(",") if name.strip()]
    for name in names:
        if not any(full == name or full.endswith(f".{name}") for full in linear_names):
            raise SystemExit(
                f"--lora_target_modules {name!r} matches no linear layer of the model. Its linear layers are "
                f"{short_names}; or use all-linear."
            )
    return names


def peft_config(model, peft_args: PeftArguments, task_type: str) -> PeftConfig:
    """The PEFT configuration of a new adapter of the kind --peft names."""
    if peft_args.peft == "lora":
        return LoraConfig(
            task_type=task_type,
            r=peft_args.lora_r,
            lora_alpha=peft_args.lora_alpha,
            lora_dropout=peft_args.lora_dropout,
            target_modules=lora_target_modules(model, peft_args.lora_target_modules),
        )
    if peft_args.peft == "prefix":
        # PEFT sizes the prefix from the config; name the decoder's sizes, which may differ from the encoder's.
        return PrefixTuningConfig(
            task_type=task_type,
            num_virtual_tokens=peft_args.num_virtual_tokens,
            num_layers=model.config.decoder_layers,
            token_dim=model.config.d_model,
            num_attention_heads=model.config.decoder_attention_heads,
        )
    return PromptTuningConfig(task_type=task_type, num_virtual_tokens=peft_args.num_virtual_tokens)


def add_adapter(model, peft_args: PeftArguments, task_type: str, training_args):
    """The model wrapped by PEFT for --peft (a new adapter, or --adapter_name_or_path), or the model itself."""
    if peft_args.peft is None:
        if peft_args.adapter_name_or_path is not None:
            raise SystemExit("--adapter_name_or_path needs --peft, the kind of adapter it is.")
        return model
    if not model.name_or_path:
        raise SystemExit(
            f"--peft {peft_args.peft} adapts a trained model and leaves it frozen: pass --model_name_or_path (e.g. "
            "a run of training/pretrain.py). To train a new model, leave out --peft."
        )
    if peft_args.peft == "prefix" and training_args.gradient_checkpointing:
        raise SystemExit(
            "--peft prefix does not work with --gradient_checkpointing: the prefix lives in the decoder's key/value "
            "cache, which checkpointing would fill twice. Drop --gradient_checkpointing, or use --peft lora."
        )
    if peft_args.peft == "prefix" and task_type == "SEQ_CLS":
        raise SystemExit(
            "--peft prefix puts trained keys and values in front of the decoder's; the classifier is the encoder "
            "alone and has no cache to hold them. Use --peft lora or --peft prompt."
        )
    if peft_args.adapter_name_or_path is not None:
        model = load_adapter(model, peft_args.adapter_name_or_path, is_trainable=True)
    else:
        model = get_peft_model(model, peft_config(model, peft_args, task_type))
    trainable, total = model.get_nb_trainable_parameters()
    logger.info(
        "PEFT %s: %d trainable parameters of %d (%.3f%%)", peft_args.peft, trainable, total, 100 * trainable / total
    )
    return model


def load_adapter(base_model, adapter_dir: str, is_trainable: bool = False):
    """A saved adapter on `base_model`, or a clear error naming each weight whose shape differs (an adapter made
    for another base model), before PEFT's loader fails with a torch size-mismatch report."""
    config = PeftConfig.from_pretrained(adapter_dir)
    named_base = config.base_model_name_or_path  # get_peft_model overwrites it with the model it wraps
    shadow = get_peft_model(copy.deepcopy(base_model), config)
    expected = {name: tuple(tensor.shape) for name, tensor in get_peft_model_state_dict(shadow).items()}
    with safe_open(os.path.join(adapter_dir, "adapter_model.safetensors"), "pt") as saved:
        found = {name: tuple(saved.get_slice(name).get_shape()) for name in saved.keys()}
    mismatches = [
        f"{name}: {found[name]} in the adapter, {expected[name]} for this base"
        for name in sorted(found.keys() & expected.keys())
        if found[name] != expected[name]
    ]
    missing = sorted(expected.keys() - found.keys())
    if mismatches or missing:
        raise SystemExit(
            f"The adapter {adapter_dir} was trained for another base model (it names {named_base!r}); "
            f"{len(mismatches)} weights have other shapes and {len(missing)} are missing, e.g. "
            f"{(mismatches + missing)[:3]}. Pass that base as --model_name_or_path."
        )
    return PeftModel.from_pretrained(base_model, adapter_dir, is_trainable=is_trainable)


def check_output_dir(output_dir: str, resume_from_checkpoint: str | bool | None, overwrite: bool) -> str | None:
    """Refuse to write over another run. Returns the checkpoint to resume from: `--resume_from_checkpoint` as
    given, or the last checkpoint in `output_dir` for `--resume_from_checkpoint true`."""
    path = Path(output_dir)
    holds_a_run = path.is_dir() and any(path.iterdir())
    if resume_from_checkpoint in (True, "true", "True"):
        last = get_last_checkpoint(output_dir) if path.is_dir() else None
        if last is None:
            raise SystemExit(f"--resume_from_checkpoint true: {output_dir} holds no checkpoint-* folder to resume.")
        return last
    if resume_from_checkpoint:
        return resume_from_checkpoint
    if holds_a_run and overwrite:
        # Old checkpoints would otherwise outlive the new run, and a later --resume_from_checkpoint true could
        # pick one of them as the last. Several processes may race here: a folder already gone is fine.
        for checkpoint in path.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    if holds_a_run and not overwrite:
        raise SystemExit(
            f"{output_dir} already holds a run ({sorted(p.name for p in path.iterdir())[:5]}). Pass "
            "--resume_from_checkpoint true to continue it, --overwrite_output_dir to replace it, or another "
            "--output_dir."
        )
    return None


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


def check_hub_token(token: str | None) -> None:
    """--push_to_hub: stop before training, not after, when there is no token or the Hub rejects it."""
    from huggingface_hub import HfApi
    from push_to_hub import PushError, explain, require_token

    try:
        api = HfApi(token=require_token(token))
        try:
            api.whoami()
        except Exception as error:  # rejected, or unreachable: explain() tells which
            raise PushError(explain(error, api.endpoint)) from error
    except PushError as error:
        raise SystemExit(f"--push_to_hub: {error}") from None


def push_run_to_hub(trainer, model_args: ModelArguments, data_args: DataArguments) -> None:
    """--push_to_hub: Trainer has pushed its own files (at each save, and in save_model with its own card); wait
    for those pushes, then commit what training/push_to_hub.py pushes, with our card. The repo ends as that script
    leaves it; Trainer's extra files (training_args.bin, its card) are replaced or deleted."""
    if not trainer.args.push_to_hub or not trainer.is_world_process_zero():
        return
    from push_to_hub import PushError, push_run

    if trainer.push_in_progress is not None:
        trainer.push_in_progress.wait_until_done()
    # The card's base_model is a Hub id; a local folder would mean nothing on the Hub.
    start = model_args.model_name_or_path
    base_model = start if start and not os.path.exists(start) else None
    try:
        push_run(
            trainer.args.output_dir,
            trainer.hub_model_id,
            revision=trainer.args.hub_revision,
            token=trainer.args.hub_token,
            datasets=[data_args.dataset_name] if data_args.dataset_name else None,
            base_model=base_model,
            commit_message="End of training",
        )
    except PushError as error:
        raise SystemExit(f"--push_to_hub: {error} The run is saved in {trainer.args.output_dir}.") from None


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
