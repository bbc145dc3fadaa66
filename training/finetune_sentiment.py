"""Fine-tune the scratch Transformer's encoder for sentence classification (sentiment), with `Trainer`.

    hf-scratch-transformer finetune-sentiment \
        --model_name_or_path runs/pretrain --train_file ../shared/data/sst2/train.jsonl \
        --validation_file ../shared/data/sst2/validation.jsonl --output_dir runs/sst2 \
        --per_device_train_batch_size 32 --learning_rate 1e-4 --num_train_epochs 1 --eval_strategy epoch

Every `TrainingArguments` flag works (`--report_to`, `--resume_from_checkpoint`, `--push_to_hub`, ...), and all
flags can come from one .json or .yaml file instead. The model is `AutoModelForSequenceClassification`: the
encoder of a checkpoint made by `pretrain.py` or `finetune_translation.py` (the decoder is left out), or a new
model (`--config_overrides`, with `--tokenizer_name`). Accuracy and F1 are computed by the project's own
`evaluate` module, offline. The run's `id2label` is saved, so `pipeline("text-classification")` prints label
names.

With `--peft lora` (or `prompt`) the checkpoint stays frozen and an adapter trains, with the classification head;
only they are saved, and `AutoPeftModelForSequenceClassification.from_pretrained(output_dir)` loads them onto the
checkpoint named in `adapter_config.json`.

A text longer than `--max_source_length` tokens loses its end (`--truncate end`), or its middle (`--truncate
middle`: the first quarter of the budget from its start, the rest from its end, where a review's verdict often is;
Sun et al., 2019, found this best on IMDB, keeping 128 + 382 of 512 tokens).
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, TrainingArguments, set_seed

from hf_scratch_transformer.metrics import load_metric

from .adapters import add_adapter
from .arguments import DataArguments, ModelArguments, OutputDirArguments, PeftArguments, parse_arguments
from .atomic_checkpoints import AtomicTrainer
from .data import drop_rows_without_text, load_raw_datasets, require_columns, tokenize_splits
from .launch import start_run
from .model_loading import check_lengths_fit_learned_positions, load_model, load_tokenizer
from .output_dir import save_results, validation_metrics
from .push_to_hub import push_trainer_run

logger = logging.getLogger(__name__)

HEAD_SHARE = 0.25  # --truncate middle: the share of the tokens kept from a long text's start (Sun et al.: 128/512)


@dataclass
class SentimentArguments:
    text_column: str = field(default="sentence", metadata={"help": 'The text; "text" (as in IMDB) is found too.'})
    label_column: str = field(default="label", metadata={"help": "Integer class ids, or label names."})
    max_source_length: int = field(default=128, metadata={"help": "Longer texts are truncated (see --truncate)."})
    truncate: str = field(
        default="end",
        metadata={
            "help": "What a longer text loses: its end, or its middle (a quarter of the tokens kept from the start, "
            "the rest from the end).",
            "choices": ("end", "middle"),
        },
    )
    class_names: str | None = field(
        default=None, metadata={"help": 'Names of the classes in id order, e.g. "negative,positive".'}
    )


def main() -> None:
    # 0. The run: its flags, its processes, its folder (a checkpoint to resume, or a new run), the Hub token.
    model_args, data_args, task_args, peft_args, output_args, training_args = parse_arguments(
        ModelArguments, DataArguments, SentimentArguments, PeftArguments, OutputDirArguments, TrainingArguments
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    resume_from = start_run(training_args, output_args.overwrite_output_dir)
    set_seed(training_args.seed)

    # 1. Data: find the text and label columns, and the classes.
    raw = load_raw_datasets(data_args)
    train_columns = raw["train"].column_names
    if task_args.text_column not in train_columns and "text" in train_columns:
        task_args.text_column = "text"
    require_columns(
        raw["train"], [task_args.text_column, task_args.label_column], "Set --text_column / --label_column."
    )
    # A row without text (null in JSON, an empty CSV cell) has nothing to classify: dropped, and counted.
    drop_rows_without_text(
        raw,
        lambda batch: [bool(text and text.strip()) for text in batch[task_args.text_column]],
        f"{task_args.text_column!r} is empty or missing",
        f"No {{split}} row has a text in the {task_args.text_column!r} column.",
    )
    label_feature = raw["train"].features[task_args.label_column]
    if task_args.class_names:
        label_names = task_args.class_names.split(",")
    elif hasattr(label_feature, "names"):  # a datasets.ClassLabel knows its names
        label_names = label_feature.names
    else:
        values = set(raw["train"][task_args.label_column])
        if None in values:
            raise SystemExit(
                f"Some training rows have no {task_args.label_column!r}: give every row a class id or name, or drop "
                "the rows without one."
            )
        fractions = sorted(value for value in values if isinstance(value, float) and not value.is_integer())
        if fractions:
            raise SystemExit(
                f"The {task_args.label_column!r} column holds {fractions[:3]}, which are not class ids: a classifier "
                "needs integer ids (0, 1, ...) or class names. Round or map the labels to classes first."
            )
        if len(values) < 2:
            raise SystemExit(
                f"The training labels hold one class ({sorted(values, key=str)}): a classifier needs examples of two "
                "or more. Check --label_column, or add rows of the other classes."
            )
        if all(isinstance(value, int | float) for value in values):  # ids, also as 1.0 from a CSV of floats
            label_names = [str(value) for value in range(int(max(values)) + 1)]
        else:  # the data holds label names: ids in sorted order
            label_names = sorted(str(value) for value in values)
    if len(label_names) < 2:
        raise SystemExit(f"--class_names names one class ({label_names}): a classifier needs two or more.")
    label_to_id = {name: i for i, name in enumerate(label_names)}

    def label_id(label) -> int:
        """Class ids stay as they are; label names get their id (-1 for a name that is not a class)."""
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        return label if isinstance(label, int) else label_to_id.get(str(label), -1)

    for split, dataset in raw.items():
        unknown = {label for label in dataset[task_args.label_column] if not 0 <= label_id(label) < len(label_names)}
        if unknown:
            raise SystemExit(
                f"Labels {sorted(unknown, key=str)[:5]} in the {split} split are outside the {len(label_names)} "
                f"classes {label_names}. Pass --class_names with every class, in id order."
            )

    # 2. Tokenizer and model.
    tokenizer = load_tokenizer(model_args)
    model = load_model(
        AutoModelForSequenceClassification,
        model_args,
        tokenizer,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id=label_to_id,
    )
    check_lengths_fit_learned_positions(model.config, {"--max_source_length": task_args.max_source_length})
    model = add_adapter(model, peft_args, "SEQ_CLS", training_args)  # --peft: train an adapter and the head

    def preprocess(batch):
        texts, length = batch[task_args.text_column], task_args.max_source_length
        encoded = encode_truncated(tokenizer, texts, length, task_args.truncate)
        encoded["labels"] = [label_id(label) for label in batch[task_args.label_column]]
        return encoded

    tokenized = tokenize_splits(raw, preprocess, data_args, training_args)

    # 3. Metrics: accuracy and F1 (binary for two classes, macro otherwise).
    metric = load_metric("accuracy_f1")
    average = "binary" if len(label_names) == 2 else "macro"

    def compute_metrics(prediction):
        predicted = np.argmax(prediction.predictions, axis=-1)
        return metric.compute(predictions=predicted, references=prediction.label_ids, average=average)

    # 4. Train, evaluate, save.
    trainer = AtomicTrainer(
        model=model,
        args=training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized.get("validation"),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    metrics = trainer.train(resume_from_checkpoint=resume_from).metrics
    if "validation" in tokenized:
        metrics.update(validation_metrics(trainer))
    save_results(trainer, tokenizer, metrics)
    push_trainer_run(trainer, model_args.model_name_or_path, data_args.dataset_name)
    logger.info("Results: %s", metrics)


def encode_truncated(tokenizer, texts: list[str], length: int, truncate: str) -> dict:
    """The tokenizer's output for `texts`, each at most `length` tokens: a long text loses its end (`truncate`
    "end") or its middle ("middle")."""
    if truncate == "end":
        return dict(tokenizer(texts, max_length=length, truncation=True))
    encoded = tokenizer(texts, verbose=False)  # whole, then the middle of each long text is cut out
    return {key: [keep_head_and_tail(row, length) for row in rows] for key, rows in encoded.items()}


def keep_head_and_tail(tokens: list, length: int) -> list:
    """`tokens` if they fit in `length`; otherwise the first HEAD_SHARE of `length` and the last of them (`</s>`
    included)."""
    if len(tokens) <= length:
        return tokens
    head = round(length * HEAD_SHARE)
    return tokens[:head] + tokens[len(tokens) - (length - head) :]


if __name__ == "__main__":
    main()
