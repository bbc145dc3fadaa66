"""Fine-tune the scratch Transformer's encoder for sentence classification (sentiment), with `Trainer`.

    python training/finetune_sentiment.py \
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
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from script_utils import (
    AtomicTrainer,
    PeftArguments,
    add_adapter,
    load_model,
    load_raw_datasets,
    load_tokenizer,
    push_run_to_hub,
    require_columns,
    save_results,
    start_run,
    tokenize_splits,
)
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    TrainingArguments,
    set_seed,
)

from hf_scratch_transformer.metrics import load_metric

logger = logging.getLogger(__name__)


@dataclass
class SentimentArguments:
    text_column: str = field(default="sentence", metadata={"help": 'The text; "text" (as in IMDB) is found too.'})
    label_column: str = field(default="label", metadata={"help": "Integer class ids, or label names."})
    max_source_length: int = field(default=128, metadata={"help": "Longer texts are truncated."})
    class_names: str | None = field(
        default=None, metadata={"help": 'Names of the classes in id order, e.g. "negative,positive".'}
    )


def main() -> None:
    model_args, data_args, task_args, training_args, resume_from, peft_args = start_run(
        SentimentArguments, TrainingArguments, PeftArguments
    )
    set_seed(training_args.seed)

    # 1. Data: find the text and label columns, and the classes.
    raw = load_raw_datasets(data_args)
    train_columns = raw["train"].column_names
    if task_args.text_column not in train_columns and "text" in train_columns:
        task_args.text_column = "text"
    require_columns(
        raw["train"], [task_args.text_column, task_args.label_column], "Set --text_column / --label_column."
    )
    label_feature = raw["train"].features[task_args.label_column]
    if task_args.class_names:
        label_names = task_args.class_names.split(",")
    elif hasattr(label_feature, "names"):  # a datasets.ClassLabel knows its names
        label_names = label_feature.names
    else:
        values = sorted(set(raw["train"][task_args.label_column]))
        if all(isinstance(value, int) for value in values):
            label_names = [str(value) for value in range(max(values) + 1)]
        else:  # the data holds label names: ids in sorted order
            label_names = [str(value) for value in values]
    label_to_id = {name: i for i, name in enumerate(label_names)}

    def label_id(label) -> int:
        """Class ids stay as they are; label names get their id (-1 for a name that is not a class)."""
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
    if (
        task_args.max_source_length > model.config.max_position_embeddings
        and model.config.position_embedding == "learned"
    ):
        raise SystemExit(
            f"--max_source_length {task_args.max_source_length} is above the model's max_position_embeddings "
            f"({model.config.max_position_embeddings}) for learned positions. Lower it."
        )
    model = add_adapter(model, peft_args, "SEQ_CLS", training_args)  # --peft: train an adapter and the head

    def preprocess(batch):
        encoded = tokenizer(batch[task_args.text_column], max_length=task_args.max_source_length, truncation=True)
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
        metrics.update(trainer.evaluate())
    save_results(trainer, tokenizer, metrics)
    push_run_to_hub(trainer, model_args, data_args)
    logger.info("Results: %s", metrics)


if __name__ == "__main__":
    main()
