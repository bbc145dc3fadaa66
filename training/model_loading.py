"""The tokenizer and the model a run starts from: a checkpoint to fine-tune, or a new model sized to the tokenizer,
and the check that the lengths a run asks for fit a model with learned positions.

Every load passes `trust_remote_code=False`: the scripts train this package's model, which is installed, so they
never need code from a checkpoint folder, and transformers then never stops a run to ask whether to execute it. A
folder whose config or weights are damaged ends the script with one line that names the file and the fix
(`explained_load_errors`)."""

import contextlib
import difflib
import json
import re
from pathlib import Path

from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

import hf_scratch_transformer  # noqa: F401  (registers the Auto classes)

from .arguments import ModelArguments


def load_tokenizer(model_args: ModelArguments) -> PreTrainedTokenizerBase:
    source = model_args.tokenizer_name or model_args.model_name_or_path
    if source is None:
        raise SystemExit(
            "No tokenizer: pass --tokenizer_name (a folder made by `hf-scratch-transformer train-tokenizer`) or "
            "--model_name_or_path of a run that saved one."
        )
    flag = "--tokenizer_name" if model_args.tokenizer_name else "--model_name_or_path"
    with explained_load_errors(flag, source):
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)


@contextlib.contextmanager
def explained_load_errors(flag: str, source: str):
    """Loading from `source`, given as `flag`, ends the script with one line on failure. A folder: its config.json
    is checked first (JSON, a model type transformers knows), then what fails to load (weights cut short, a damaged
    tokenizer file) is named with transformers' own reason. A name that is no folder here is looked up on the Hub,
    whose errors speak of repo ids and connections: say first that the folder does not exist, and what the Hub said
    only when the name could be a Hub id."""
    if Path(source).is_dir():
        check_model_type(flag, source)
        try:
            yield
        except (OSError, ValueError) as error:
            reason = str(error).strip().splitlines()[0]
            fix = "" if "again" in reason else " If a file of it was cut short or damaged, save or copy it again."
            raise SystemExit(f"{flag} {source}: {reason}{fix}") from None
        return
    could_be_hub_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source) and not source.startswith(".")
    if not could_be_hub_id:
        raise SystemExit(f"{flag} {source}: there is no such folder. Give a folder that a training script saved.")
    try:
        yield
    except OSError as error:
        reason = str(error).strip().splitlines()[0]
        raise SystemExit(
            f"{flag} {source}: there is no such folder here, and loading it as a Hub id failed ({reason}). Give a "
            "folder that a training script saved, or a Hub id (user/name) with the network up."
        ) from None


def check_model_type(flag: str, source: str) -> None:
    """A folder whose config.json names a model type transformers does not know (a typo, most often): name it and
    the nearest known one, instead of transformers' advice to pass `trust_remote_code=True`."""
    config_file = Path(source) / "config.json"
    if not config_file.is_file():
        return
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise SystemExit(
            f"{flag} {source}: its config.json is not a JSON object ({error}). Restore the file from the run (or the "
            "Hub) it came from."
        ) from None
    if model_type not in CONFIG_MAPPING:
        nearest = difflib.get_close_matches(str(model_type), list(CONFIG_MAPPING.keys()), n=1)
        hint = f"Did you mean {nearest[0]!r}? " if nearest else ""
        raise SystemExit(
            f"{flag} {source}: its config.json says model_type {model_type!r}, which is no model type transformers "
            f"knows. {hint}Set \"model_type\" in config.json (this project's models are 'scratch_transformer')."
        )


# Config fields that shape no weight of the checkpoint, so that it may be fine-tuned with other values (as
# transformers' `from_pretrained(..., hidden_dropout_prob=0.2)`): a pretraining run without dropout, fine-tuned with
# it; a pretrained encoder given a classifier that pools its first token rather than the mean (a classifier already
# trained on one pooling would have to learn the other).
WEIGHTLESS_FIELDS = (
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "classifier_dropout",
    "label_smoothing",
    "classifier_pooling",
)


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
        overrides = parse_config_overrides(model_args.config_overrides)
        fixed = sorted(set(overrides) - set(WEIGHTLESS_FIELDS))
        if fixed:
            raise SystemExit(
                f"--config_overrides {', '.join(fixed)}: a checkpoint (--model_name_or_path) keeps the config its "
                f"weights were trained with; only {', '.join(WEIGHTLESS_FIELDS)} can change when fine-tuning it. "
                "Drop the others, or leave out --model_name_or_path to train a new model."
            )
        with explained_load_errors("--model_name_or_path", model_args.model_name_or_path):
            config = AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=False)
        architectures = config.architectures or []
        if model_class is AutoModelForSeq2SeqLM and any("SequenceClassification" in name for name in architectures):
            raise SystemExit(
                f"--model_name_or_path {model_args.model_name_or_path} is a classifier: the encoder alone, with no "
                "decoder to translate with. Start from a sequence-to-sequence checkpoint (pretrain.py or "
                "finetune_translation.py), or from a new model."
            )
        with explained_load_errors("--model_name_or_path", model_args.model_name_or_path):
            model = model_class.from_pretrained(
                model_args.model_name_or_path, trust_remote_code=False, **config_kwargs, **overrides, **kwargs
            )
    else:
        config_source = model_args.config_name
        if config_source:
            with explained_load_errors("--config_name", config_source):
                config = AutoConfig.from_pretrained(config_source, trust_remote_code=False)
        else:
            config = AutoConfig.for_model("scratch_transformer")
        special_tokens = {
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "decoder_start_token_id": tokenizer.bos_token_id,
        }
        overrides = parse_config_overrides(model_args.config_overrides)
        unknown = [key for key in overrides if key not in config.to_dict() and not hasattr(config, key)]
        if unknown:
            known = sorted(config.to_dict())
            hints = {key: difflib.get_close_matches(key, known, n=1) for key in unknown}
            raise SystemExit(
                "--config_overrides: "
                + "; ".join(
                    f"{key!r} is not a config field" + (f" (did you mean {m[0]!r}?)" if m else "")
                    for key, m in hints.items()
                )
                + f". The fields are: {', '.join(known)}."
            )
        try:  # the config checks each value as it is set, and all of them together when built
            for key, value in {**special_tokens, **config_kwargs, **overrides}.items():
                setattr(config, key, value)
            config = config.__class__(**config.to_dict())
        except (ValueError, TypeError, StrictDataclassError) as error:
            raise SystemExit(f"--config_overrides: {str(error).strip().splitlines()[-1].strip()}") from None
        model = model_class.from_config(config, **kwargs)
    if len(tokenizer) > model.config.vocab_size:
        raise SystemExit(
            f"The tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}: "
            "ids past the vocabulary cannot be embedded. Use the tokenizer the model was trained with."
        )
    return model


def check_lengths_fit_learned_positions(config: PretrainedConfig, lengths: dict[str, int]) -> None:
    """Learned positions stop at max_position_embeddings. The model says so itself, but only when a sequence that
    long arrives, which may be hours into training or at the first evaluation: check the longest sequence each
    flag allows (`lengths`: flag -> tokens) before anything runs."""
    if config.position_embedding != "learned":
        return
    for flag, length in lengths.items():
        if length > config.max_position_embeddings:
            raise SystemExit(
                f"{flag} gives sequences of up to {length} tokens, more than the model's max_position_embeddings "
                f"({config.max_position_embeddings}), the number of learned positions. Lower it (sinusoidal "
                "positions, position_embedding=sinusoidal, extend past max_position_embeddings)."
            )
