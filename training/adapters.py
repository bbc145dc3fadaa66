"""PEFT for the fine-tuning scripts' --peft: a new adapter (LoRA, prefix or prompt tuning) on a frozen checkpoint,
or a saved one to continue, with clear errors for the combinations that cannot work."""

import copy
import logging
import os

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

from .arguments import PeftArguments

logger = logging.getLogger(__name__)


def checked_names(flag: str, requested: str, module_names: set[str], kind: str, hint: str) -> list[str]:
    """The comma-separated names of `requested`, each checked to match one of `module_names` (the full name or its
    end, as PEFT matches): PEFT ignores a name that matches nothing as long as another one matches, which would train
    less than asked without a word."""
    names = [name.strip() for name in requested.split(",") if name.strip()]
    for name in names:
        if not any(full == name or full.endswith(f".{name}") for full in module_names):
            raise SystemExit(f"{flag} {name!r} matches no {kind} of the model. {hint}")
    return names


def lora_target_modules(model, requested: str) -> list[str] | str:
    """The --lora_target_modules names, each a linear layer or an embedding of the model (PEFT adapts both)."""
    if requested.strip() == "all-linear":
        return "all-linear"  # PEFT's own shorthand: every linear layer except the output (LM) head
    modules = dict(model.named_modules())
    linear_names = {name for name, module in modules.items() if isinstance(module, torch.nn.Linear)}
    embedding_names = {name for name, module in modules.items() if isinstance(module, torch.nn.Embedding)}
    hint = (
        f"Its linear layers are {sorted({name.rsplit('.', 1)[-1] for name in linear_names})} and its token "
        f"embedding {sorted({name.rsplit('.', 1)[-1] for name in embedding_names})}; or use all-linear."
    )
    names = linear_names | embedding_names
    return checked_names("--lora_target_modules", requested, names, "linear layer or embedding", hint)


def lora_modules_to_save(model, requested: str | None) -> list[str]:
    """The --lora_modules_to_save names, each a module of the model (trained in full beside the adapter)."""
    if requested is None:
        return []
    modules = dict(model.named_modules())
    layer_norms = {
        name.rsplit(".", 1)[-1] for name, module in modules.items() if isinstance(module, torch.nn.LayerNorm)
    }
    hint = f"Its layer norms, for example, are {sorted(layer_norms)}."
    return checked_names("--lora_modules_to_save", requested, set(modules), "module", hint)


def peft_config(model, peft_args: PeftArguments, task_type: str) -> PeftConfig:
    """The PEFT configuration of a new adapter of the kind --peft names."""
    if peft_args.peft == "lora":
        return LoraConfig(
            task_type=task_type,
            r=peft_args.lora_r,
            lora_alpha=peft_args.lora_alpha,
            lora_dropout=peft_args.lora_dropout,
            target_modules=lora_target_modules(model, peft_args.lora_target_modules),
            modules_to_save=lora_modules_to_save(model, peft_args.lora_modules_to_save) or None,
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
            "a run of `hf-scratch-transformer pretrain`). To train a new model, leave out --peft."
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
    unexpected = sorted(found.keys() - expected.keys())
    if mismatches or missing or unexpected:
        raise SystemExit(
            f"The adapter {adapter_dir} was trained for another base model (it names {named_base!r}); "
            f"{len(mismatches)} weights have other shapes, {len(missing)} are missing and {len(unexpected)} have no "
            f"place in it, e.g. {(mismatches + missing + unexpected)[:3]}. Pass that base as --model_name_or_path."
        )
    return PeftModel.from_pretrained(base_model, adapter_dir, is_trainable=is_trainable)
