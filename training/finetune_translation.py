"""Train the scratch Transformer for translation, or fine-tune a checkpoint, with `Seq2SeqTrainer` (whose
checkpoints appear only complete: `AtomicSeq2SeqTrainer` of training/atomic_checkpoints.py).

    hf-scratch-transformer finetune-translation \
        --tokenizer_name runs/tokenizer --config_overrides "d_model=256,encoder_layers=3,decoder_layers=3" \
        --train_file ../shared/data/multi30k/train.jsonl --validation_file ../shared/data/multi30k/validation.jsonl \
        --source_lang en --target_lang de --output_dir runs/multi30k \
        --per_device_train_batch_size 64 --num_train_epochs 10 --eval_strategy epoch \
        --adam_beta2 0.98 --warmup_steps 4000 --paper_schedule --predict_with_generate

The data holds a `translation` column, a dict of language -> text (the convention of the Hub's translation data
sets such as wmt16, and of the files in ../shared/data), from a Hub data set (`--dataset_name`) or local files.
Every `Seq2SeqTrainingArguments` flag works (`--report_to`, `--resume_from_checkpoint`, `--generation_max_length`,
...), and all flags can come from one .json or .yaml file instead.

The paper's recipe (section 5), flag by flag:

- Adam with beta2 = 0.98: `--adam_beta2 0.98` (beta1 0.9 and epsilon 1e-9: `--adam_epsilon 1e-9`).
- The learning rate lrate = d_model^-0.5 * min(step_num^-0.5, step_num * warmup_steps^-1.5): `--paper_schedule`
  with `--warmup_steps 4000`. `--learning_rate` then multiplies the formula; left at its default it is 1.0, the
  paper's formula exactly. Trainer's `--lr_scheduler_type inverse_sqrt`
  has the same shape (a linear warmup, then 1/sqrt(step)) with its peak at `--learning_rate`:
  `--learning_rate` d_model^-0.5 * warmup_steps^-0.5 gives the paper's peak.
- Label smoothing 0.1: the model's own loss applies `config.label_smoothing`, which a new model gets from
  `--config_overrides label_smoothing=0.1` (the config's default is 0.0, the plain cross-entropy every Hugging Face
  model returns); `--label_smoothing` sets it on a checkpoint being fine-tuned.
  (Trainer's `--label_smoothing_factor` also works but replaces the model's loss with its own.)

Evaluation with `--predict_with_generate` decodes with beam search (`--num_beams`, 4 as in the paper) and
reports corpus sacreBLEU (tokenized by `--bleu_tokenize`) and chrF of the detokenized text (the project's own
`evaluate` module, offline), and the mean generated length. The run's `generation_config.json` keeps
`--num_beams` and `max_length` = `--max_target_length`, so `generate()` on the reloaded model decodes the same
way; `translation_samples.jsonl` holds the first `--num_samples_to_write` validation sources with their
references and translations, and `attention.png` the cross-attention of the shortest three of those translations
(the model card shows it).

`--peft lora|prefix|prompt` fine-tunes a checkpoint (`--model_name_or_path`) through a PEFT adapter: the
checkpoint stays frozen, only the adapter is saved, evaluation and the samples go through it, and
`AutoPeftModelForSeq2SeqLM.from_pretrained(output_dir)` loads it onto the checkpoint named in
`adapter_config.json`.
"""

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

import datasets
import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, Seq2SeqTrainingArguments, set_seed

from hf_scratch_transformer.metrics import load_metric
from hf_scratch_transformer.visualization import plot_translation_attention

from .adapters import add_adapter
from .arguments import DataArguments, ModelArguments, OutputDirArguments, PeftArguments, parse_arguments
from .atomic_checkpoints import AtomicSeq2SeqTrainer
from .data import drop_rows_without_text, load_raw_datasets, require_columns, tokenize_splits
from .launch import start_run
from .model_loading import check_lengths_fit_learned_positions, load_model, load_tokenizer
from .output_dir import save_results, validation_metrics
from .push_to_hub import push_trainer_run

logger = logging.getLogger(__name__)

TRANSLATION_COLUMN = "translation"
SAMPLES_FILE = "translation_samples.jsonl"
ATTENTION_FILE, ATTENTION_SENTENCES = "attention.png", 3
# Trainer's default --learning_rate; with --paper_schedule it means "not given", and the multiplier is 1.0.
DEFAULT_LEARNING_RATE = next(f.default for f in fields(Seq2SeqTrainingArguments) if f.name == "learning_rate")


@dataclass
class TranslationArguments:
    source_lang: str = field(
        metadata={"help": "Language of the source texts: a key of the translation dict, e.g. en."}
    )
    target_lang: str = field(metadata={"help": "Language of the target texts, e.g. de."})
    max_source_length: int = field(default=128, metadata={"help": "Longer sources are truncated (in tokens)."})
    max_target_length: int = field(
        default=128,
        metadata={
            "help": "Longer targets are truncated; also the max_length of generate() (which counts the start <s>)."
        },
    )
    num_beams: int = field(
        default=4,
        metadata={"help": "Beam size for evaluation and generation (the paper: 4); sets --generation_num_beams."},
    )
    paper_schedule: bool = field(
        default=False,
        metadata={
            "help": "The paper's learning rate d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), times "
            "--learning_rate (1.0 when not given). Needs --warmup_steps (the paper: 4000)."
        },
    )
    label_smoothing: float | None = field(
        default=None,
        metadata={"help": "Set the model's label smoothing (e.g. 0.1) when fine-tuning a checkpoint."},
    )
    num_samples_to_write: int = field(
        default=20, metadata={"help": f"Validation translations to write to {SAMPLES_FILE} (0: none)."}
    )
    eval_only: bool = field(
        default=False,
        metadata={
            "help": "Evaluate --model_name_or_path on the validation data (BLEU, chrF, samples, attention map) and "
            "train nothing: e.g. a model that `hf-scratch-transformer average-checkpoints` made. No --train_file."
        },
    )
    bleu_tokenize: str = field(
        default="13a",
        metadata={
            "help": "sacreBLEU's tokenization for BLEU: 13a (the WMT standard) for text in words; char where a "
            "sentence is one or two words (word BLEU then has no 2- to 4-grams to count: it is 0); intl, zh, ..."
        },
    )

    def __post_init__(self):
        """Checked before anything is loaded or trained: a bad value here would otherwise surface at the first
        evaluation, after the training it was meant to measure."""
        if self.source_lang == self.target_lang:
            raise ValueError(
                f"--source_lang and --target_lang are both {self.source_lang!r}: a translation run needs two "
                "different languages of the translation column."
            )
        for name in ("max_source_length", "max_target_length", "num_beams"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}.")
        if self.label_smoothing is not None and not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label_smoothing must be in [0, 1), got {self.label_smoothing}.")


def paper_learning_rate(step_num: int, d_model: int, warmup_steps: int) -> float:
    """lrate = d_model^-0.5 * min(step_num^-0.5, step_num * warmup_steps^-1.5), section 5.3; step_num from 1.

    It rises linearly for `warmup_steps` steps, peaks at step_num == warmup_steps, then decays as 1/sqrt(step_num).
    """
    return d_model**-0.5 * min(step_num**-0.5, step_num * warmup_steps**-1.5)


def paper_schedule(optimizer: torch.optim.Optimizer, d_model: int, warmup_steps: int) -> LambdaLR:
    """The paper's schedule as a multiplier of the optimizer's learning rate. LambdaLR counts the updates done so
    far from 0 and the paper's step_num counts from 1, so update k (from 1) uses lrate(step_num=k)."""
    return LambdaLR(optimizer, lambda updates_done: paper_learning_rate(updates_done + 1, d_model, warmup_steps))


class PaperScheduleTrainer(AtomicSeq2SeqTrainer):
    """The run's `Seq2SeqTrainer` with the paper's learning rate schedule (Trainer's documented way: override
    `create_scheduler`)."""

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None:
            warmup_steps = self.args.get_warmup_steps(num_training_steps)  # --warmup_steps may be a ratio
            self.lr_scheduler = paper_schedule(optimizer or self.optimizer, self.model.config.d_model, warmup_steps)
        return self.lr_scheduler


def translation_languages(dataset: datasets.Dataset) -> list[str]:
    """The languages of the `translation` column: a `datasets.Translation` (Hub), or dicts of strings (json)."""
    feature = dataset.features[TRANSLATION_COLUMN]
    if isinstance(feature, datasets.Translation):
        return list(feature.languages)
    if isinstance(feature, dict):
        return list(feature)
    # datasets >= 5 keeps dicts whose keys differ from row to row (a language missing in some) as Json.
    if isinstance(feature, getattr(datasets, "Json", ())):
        return sorted(set().union(*(pair for pair in dataset[TRANSLATION_COLUMN] if isinstance(pair, dict))))
    raise SystemExit(
        f"The {TRANSLATION_COLUMN!r} column holds {feature}, not a dict of language -> text such as "
        '{"en": "Hello.", "de": "Hallo."}.'
    )


def translate(model, tokenizer, sources: list[str], max_source_length: int, batch_size: int) -> list[str]:
    """`generate()` with the model's generation config (the run's beams and max_length), batch by batch."""
    model.eval()
    hypotheses = []
    for start in range(0, len(sources), batch_size):
        batch = tokenizer(
            sources[start : start + batch_size],
            max_length=max_source_length,
            truncation=True,
            padding=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            generated = model.generate(
                input_ids=batch["input_ids"].to(model.device), attention_mask=batch["attention_mask"].to(model.device)
            )
        hypotheses += [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    return hypotheses


def generated_lengths(predictions: np.ndarray, eos_token_id: int, pad_token_id: int) -> np.ndarray:
    """Tokens generated per row, up to and including the first </s> (all non-padding ones where there is none);
    column 0 is the decoder start token generate() puts first. Counting up to </s> rather than counting non-padding:
    transformers' beam search fills the rest of a finished row with </s>, not padding, when the pad id is 0
    (`pad_token_id or eos_token_id` in `_beam_search`), which made a Multi30k run report 39.6 tokens a sentence for
    translations of about 14."""
    generated = predictions[:, 1:]
    is_eos = generated == eos_token_id
    up_to_eos = is_eos.argmax(axis=1) + 1
    return np.where(is_eos.any(axis=1), up_to_eos, np.count_nonzero(generated != pad_token_id, axis=1))


def main() -> None:
    # 0. The run: its flags, its processes, its folder (a checkpoint to resume, or a new run), the Hub token.
    model_args, data_args, task_args, peft_args, output_args, training_args = parse_arguments(
        ModelArguments, DataArguments, TranslationArguments, PeftArguments, OutputDirArguments,
        Seq2SeqTrainingArguments,
    )  # fmt: skip
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    resume_from = start_run(training_args, output_args.overwrite_output_dir)
    if task_args.paper_schedule:
        if training_args.warmup_steps <= 0:
            raise SystemExit("--paper_schedule needs --warmup_steps above 0 (the paper: 4000).")
        if training_args.learning_rate == DEFAULT_LEARNING_RATE:
            training_args.learning_rate = 1.0  # the formula as printed
    # Evaluation decodes with the same beams and length as generate() on the saved model.
    if training_args.generation_num_beams is None:
        training_args.generation_num_beams = task_args.num_beams
    if training_args.generation_max_length is None:
        training_args.generation_max_length = task_args.max_target_length
    if task_args.eval_only and (model_args.model_name_or_path is None or peft_args.peft is not None):
        raise SystemExit(
            "--eval_only evaluates a trained model as it is: pass it as --model_name_or_path, without --peft "
            "(which would add a new, untrained adapter)."
        )
    set_seed(training_args.seed)

    # 1. Data: a translation column holding both languages.
    source_lang, target_lang = task_args.source_lang, task_args.target_lang
    raw = load_raw_datasets(data_args, needs_train=not task_args.eval_only)
    if task_args.eval_only and "validation" not in raw:
        raise SystemExit(
            "--eval_only evaluates on the validation data: pass --validation_file (or a --dataset_name "
            "with a validation split)."
        )
    for split, dataset in raw.items():
        require_columns(dataset, [TRANSLATION_COLUMN], "Parallel data holds a dict of language -> text in it.")
        languages = translation_languages(dataset)
        for flag, language in (("--source_lang", source_lang), ("--target_lang", target_lang)):
            if language not in languages:
                raise SystemExit(
                    f"{flag} {language}: the {split} data's {TRANSLATION_COLUMN!r} column has the languages "
                    f"{languages}. Choose {flag} among them."
                )

    def has_both_sides(batch):
        return [bool(pair and pair.get(source_lang) and pair.get(target_lang)) for pair in batch[TRANSLATION_COLUMN]]

    drop_rows_without_text(
        raw,
        has_both_sides,
        "source or target is missing",
        f"No {{split}} row has both a {source_lang} and a {target_lang} text.",
    )

    # 2. Tokenizer and model.
    tokenizer = load_tokenizer(model_args)
    model = load_model(AutoModelForSeq2SeqLM, model_args, tokenizer)
    if task_args.label_smoothing is not None:
        model.config.label_smoothing = task_args.label_smoothing
    check_lengths_fit_learned_positions(
        model.config,
        {
            "--max_source_length": task_args.max_source_length,
            "--max_target_length": task_args.max_target_length,
            "--generation_max_length": training_args.generation_max_length,
        },
    )
    model.generation_config.num_beams = training_args.generation_num_beams
    model.generation_config.max_length = training_args.generation_max_length  # saved with the run
    model = add_adapter(model, peft_args, "SEQ_2_SEQ_LM", training_args)  # --peft: train an adapter only

    def preprocess(batch):
        sources = [pair[source_lang] for pair in batch[TRANSLATION_COLUMN]]
        targets = [pair[target_lang] for pair in batch[TRANSLATION_COLUMN]]
        # Tokenizers from train_tokenizer.py end every sequence with </s>, labels included.
        encoded = tokenizer(sources, max_length=task_args.max_source_length, truncation=True)
        labels = tokenizer(text_target=targets, max_length=task_args.max_target_length, truncation=True)
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": labels.input_ids,
        }

    tokenized = tokenize_splits(raw, preprocess, data_args, training_args)

    # 3. Metrics of generated text: sacreBLEU and chrF of the detokenized strings, and the generated length.
    metric = load_metric("sacrebleu_chrf")
    signatures = {}

    def compute_metrics(prediction):
        predictions = (
            prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        )
        # -100 pads the batches of different lengths (and processes) that Trainer gathers; decode it as padding.
        predictions = np.where(predictions != -100, predictions, tokenizer.pad_token_id)
        labels = np.where(prediction.label_ids != -100, prediction.label_ids, tokenizer.pad_token_id)
        hypotheses = [text.strip() for text in tokenizer.batch_decode(predictions, skip_special_tokens=True)]
        references = [text.strip() for text in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        result = metric.compute(predictions=hypotheses, references=references, tokenize=task_args.bleu_tokenize)
        signatures.update(bleu_signature=result["bleu_signature"], chrf_signature=result["chrf_signature"])
        generated = generated_lengths(predictions, tokenizer.eos_token_id, tokenizer.pad_token_id)
        return {"bleu": result["bleu"], "chrf": result["chrf"], "gen_len": float(np.mean(generated))}

    # 4. Train, evaluate, save.
    trainer_class = PaperScheduleTrainer if task_args.paper_schedule else AtomicSeq2SeqTrainer
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=tokenized.get("train"),
        eval_dataset=tokenized.get("validation"),
        processing_class=tokenizer,
        # Pads sources with <pad> and labels with -100 (ignored by the loss), and makes decoder_input_ids by
        # shifting the labels right behind decoder_start_token_id.
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        compute_metrics=compute_metrics if training_args.predict_with_generate else None,
    )
    metrics = {} if task_args.eval_only else trainer.train(resume_from_checkpoint=resume_from).metrics
    if "validation" in tokenized:
        metrics.update(validation_metrics(trainer))
        metrics.update({f"eval_{name}": value for name, value in signatures.items()})
    save_results(trainer, tokenizer, metrics)
    logger.info("Results: %s", metrics)

    # 5. A few translations to read, from the saved generation settings.
    if "validation" in raw and task_args.num_samples_to_write > 0 and trainer.is_world_process_zero():
        rows = raw["validation"].select(range(min(task_args.num_samples_to_write, len(raw["validation"]))))
        sources = [pair[source_lang] for pair in rows[TRANSLATION_COLUMN]]
        references = [pair[target_lang] for pair in rows[TRANSLATION_COLUMN]]
        hypotheses = translate(
            trainer.model, tokenizer, sources, task_args.max_source_length, training_args.per_device_eval_batch_size
        )
        path = Path(training_args.output_dir) / SAMPLES_FILE
        with path.open("w", encoding="utf-8") as samples:
            for source, reference, hypothesis in zip(sources, references, hypotheses, strict=True):
                sample = {"source": source, "reference": reference, "hypothesis": hypothesis}
                samples.write(json.dumps(sample, ensure_ascii=False) + "\n")
        logger.info("Wrote %d translations to %s", len(sources), path)
        # The cross-attention of the shortest few (long sentences make unreadable maps), for the model card.
        shortest = sorted(sources, key=len)[:ATTENTION_SENTENCES]
        figure = plot_translation_attention(trainer.model, tokenizer, shortest)
        figure.savefig(Path(training_args.output_dir) / ATTENTION_FILE, dpi=100)

    # 6. The run and its card (which quotes a few of these translations) to the Hub, with --push_to_hub.
    push_trainer_run(trainer, model_args.model_name_or_path, data_args.dataset_name)


if __name__ == "__main__":
    main()
