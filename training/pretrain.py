"""Pretrain the scratch Transformer on raw text with a denoising objective, with `Trainer`: T5 span corruption
(the default) or BART text infilling.

    python training/pretrain.py \
        --tokenizer_name tokenizer/ --train_file ../shared/data/pretrain/corpus.txt \
        --config_overrides "d_model=256,encoder_layers=3,decoder_layers=3,encoder_ffn_dim=1024,decoder_ffn_dim=1024" \
        --output_dir runs/pretrain --max_steps 5000 --per_device_train_batch_size 32 --learning_rate 5e-4 \
        --warmup_steps 500 --logging_steps 50

    # a corpus read as a stream, never held whole (its length is unknown, so --max_steps is required)
    python training/pretrain.py ... --streaming --max_steps 20000

The text comes from `--train_file` (.txt: one document a line; .json/.jsonl/.csv: the column `--text_column`) or
from `--dataset_name`, with an optional `--validation_file` whose loss is reported at the end (and during
training with `--eval_strategy steps`). The tokenizer must be one made by `train_tokenizer.py` (or another with
`</s>`, `<pad>`, and `<mask>` or the sentinels `<extra_id_N>`).

The texts are tokenized without special tokens, joined with `</s>` after each, and cut into chunks; the piece
left over at the end of every 1000 texts is dropped. The chunk length is chosen so that a corrupted input, `</s>`
included, is exactly `--max_seq_length` tokens: with the defaults (128, density 0.15, spans of 3) a span-corrupted
chunk is 141 raw tokens and its target 29; a text-infilling chunk is 127 tokens, its input shorter than 128 and its
target (the whole chunk and `</s>`) 128. The validation chunks are corrupted once, with `--seed`, so every
evaluation scores the same task. Training chunks are corrupted afresh at every step, by the data collator.

A new model is built from `--config_name` / `--config_overrides` (sized to the tokenizer), or training continues
from `--model_name_or_path`. The output folder holds the model, tokenizer, generation config, `all_results.json`
and `loss_curve.json` (`[{"step": ..., "loss": ...}, ...]`, the logged training loss); `finetune_sentiment.py`
(the encoder) and the translation script start from it with `--model_name_or_path`.
"""

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from script_utils import (
    DATA_FILE_BUILDERS,
    AtomicTrainer,
    DataArguments,
    load_model,
    load_raw_datasets,
    load_tokenizer,
    push_run_to_hub,
    save_results,
    start_run,
)
from transformers import AutoModelForSeq2SeqLM, TrainingArguments, set_seed

from hf_scratch_transformer.data_collators import (
    DataCollatorForSpanCorruption,
    DataCollatorForTextInfilling,
    compute_input_and_target_lengths,
)

logger = logging.getLogger(__name__)

OBJECTIVES = ("span_corruption", "text_infilling")
# (noise_density, mean_noise_span_length) of each objective's paper: T5 (Raffel et al., 2020) and BART (Lewis et
# al., 2020), whose span lengths are Poisson(3) and which masks 30% of the tokens.
DEFAULT_NOISE = {"span_corruption": (0.15, 3.0), "text_infilling": (0.3, 3.0)}
PACKING_BATCH_SIZE = 1000  # texts joined at once; one partial chunk per this many texts is dropped


@dataclass
class PretrainArguments:
    objective: str = field(
        default="span_corruption",
        metadata={"help": "T5 span corruption, or BART text infilling.", "choices": OBJECTIVES},
    )
    text_column: str = field(default="text", metadata={"help": "The text column of json/jsonl/csv data."})
    max_seq_length: int = field(
        default=128, metadata={"help": "Encoder input length, </s> included; chunks are cut to fill it."}
    )
    noise_density: float | None = field(
        default=None, metadata={"help": "Fraction of tokens corrupted; 0.15 (span corruption) or 0.3 (infilling)."}
    )
    mean_noise_span_length: float | None = field(
        default=None, metadata={"help": "Mean corrupted span length (the Poisson mean for infilling); 3."}
    )
    streaming: bool = field(default=False, metadata={"help": "Read the training text as a stream; needs --max_steps."})
    shuffle_buffer_size: int = field(
        default=10_000, metadata={"help": "With --streaming: texts shuffled at a time before packing."}
    )


def load_text(data_args: DataArguments, streaming: bool) -> dict:
    """The train split (a stream with `streaming`) and the validation split, if any, in memory."""
    if not streaming:
        return dict(load_raw_datasets(data_args))
    if data_args.dataset_name is not None:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name, streaming=True)
    else:
        files = {"train": data_args.train_file, "validation": data_args.validation_file}
        files = {split: path for split, path in files.items() if path is not None}
        if "train" not in files:
            raise SystemExit("No data: pass --dataset_name, or --train_file (and --validation_file).")
        suffixes = {Path(path).suffix.lower() for path in files.values()}
        for split, path in files.items():
            if Path(path).suffix.lower() not in DATA_FILE_BUILDERS:
                raise SystemExit(f"--{split}_file {path}: unknown extension; use one of {sorted(DATA_FILE_BUILDERS)}.")
            if not Path(path).is_file():
                raise SystemExit(f"--{split}_file {path}: no such file.")
        if len({DATA_FILE_BUILDERS[suffix] for suffix in suffixes}) > 1:
            raise SystemExit(f"The data files must share one format, got {sorted(suffixes)}.")
        raw = datasets.load_dataset(DATA_FILE_BUILDERS[suffixes.pop()], data_files=files, streaming=True)
    raw = dict(raw)
    if data_args.max_train_samples is not None:
        raw["train"] = raw["train"].take(data_args.max_train_samples)
    if "validation" in raw:  # evaluation reads all of it each time anyway: hold it in memory
        validation = raw["validation"]
        if data_args.max_eval_samples is not None:
            validation = validation.take(data_args.max_eval_samples)
        raw["validation"] = datasets.Dataset.from_list(list(validation))
    return raw


def main() -> None:
    model_args, data_args, pretrain_args, training_args, resume_from = start_run(PretrainArguments, TrainingArguments)
    if pretrain_args.streaming and training_args.max_steps <= 0:
        raise SystemExit(
            "--streaming reads the text as a stream of unknown length, so the Trainer cannot tell how many steps "
            "an epoch is: pass --max_steps N (the stream is read again from the start when it runs out)."
        )
    set_seed(training_args.seed)

    # 1. Tokenizer, model, and the corruption, which fixes the length of the raw chunks.
    tokenizer = load_tokenizer(model_args)
    model = load_model(AutoModelForSeq2SeqLM, model_args, tokenizer)
    density, span_length = DEFAULT_NOISE[pretrain_args.objective]
    density = density if pretrain_args.noise_density is None else pretrain_args.noise_density
    span_length = span_length if pretrain_args.mean_noise_span_length is None else pretrain_args.mean_noise_span_length
    max_length = pretrain_args.max_seq_length
    try:
        if pretrain_args.objective == "span_corruption":
            collator = DataCollatorForSpanCorruption(
                tokenizer, model=model, noise_density=density, mean_noise_span_length=span_length
            )
            chunk_length, target_length = compute_input_and_target_lengths(max_length, density, span_length)
            collator.check_length(chunk_length)  # enough sentinels? Better now than at the first batch.
        else:
            collator = DataCollatorForTextInfilling(
                tokenizer, model=model, mask_ratio=density, poisson_lambda=span_length
            )
            chunk_length, target_length = max_length - 1, max_length  # room for </s>; masking only shortens
    except ValueError as error:
        raise SystemExit(f"--objective {pretrain_args.objective}: {error}") from error
    if max(max_length, target_length) > model.config.max_position_embeddings and (
        model.config.position_embedding == "learned"
    ):
        raise SystemExit(
            f"--max_seq_length {max_length} gives sequences of up to {max(max_length, target_length)} tokens, more "
            f"than the model's max_position_embeddings ({model.config.max_position_embeddings}) for learned "
            "positions. Lower it."
        )
    logger.info(
        "%s: chunks of %d tokens -> inputs of <= %d, targets of <= %d (noise %.2f, spans %.1f)",
        pretrain_args.objective, chunk_length, max_length, target_length, density, span_length,
    )  # fmt: skip

    # 2. Data: tokenize, join with </s>, cut into chunks of chunk_length tokens.
    raw = load_text(data_args, pretrain_args.streaming)
    text_column, eos = pretrain_args.text_column, tokenizer.eos_token_id
    columns = raw["train"].column_names or list(next(iter(raw["train"]), {}))  # a stream may not name them
    if text_column not in columns:
        raise SystemExit(f"The data has no column {text_column!r}; it has {columns}. Set --text_column.")

    def tokenize_and_pack(batch: dict) -> dict:
        ids = []
        texts = [text or "" for text in batch[text_column]]
        for text_ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
            if text_ids:  # blank lines add nothing, not a lone </s>
                ids += text_ids + [eos]
        usable = len(ids) // chunk_length * chunk_length
        return {"input_ids": [ids[start : start + chunk_length] for start in range(0, usable, chunk_length)]}

    def pack(dataset):
        if isinstance(dataset, datasets.IterableDataset):
            return dataset.map(tokenize_and_pack, batched=True, batch_size=PACKING_BATCH_SIZE, remove_columns=columns)
        packed = dataset.map(
            tokenize_and_pack,
            batched=True,
            batch_size=PACKING_BATCH_SIZE,
            remove_columns=dataset.column_names,
            num_proc=data_args.preprocessing_num_workers,
            desc="Tokenizing and packing",
        )
        if len(packed) == 0:
            raise SystemExit(
                f"The text gives no full chunk of {chunk_length} tokens (from {len(dataset)} rows): use more text "
                "or a smaller --max_seq_length."
            )
        return packed

    with training_args.main_process_first(desc="tokenizing and packing"):
        if pretrain_args.streaming:
            train = pack(raw["train"].shuffle(seed=training_args.seed, buffer_size=pretrain_args.shuffle_buffer_size))
        else:
            train = pack(raw["train"])
        validation = None
        if "validation" in raw:
            # Corrupted once, with --seed, so that every evaluation scores the same inputs and targets. The
            # collator then only pads these rows, which already hold labels.
            corruptor, rng = dataclasses.replace(collator, model=None), np.random.default_rng(training_args.seed)

            def corrupt_once(batch: dict) -> dict:
                pairs = [corruptor.corrupt(ids, rng) for ids in batch["input_ids"]]
                return {key: [pair[key] for pair in pairs] for key in ("input_ids", "labels")}

            validation = pack(raw["validation"]).map(corrupt_once, batched=True, desc="Corrupting validation")

    example = collator([next(iter(train))])
    logger.info("A training input:  %s", tokenizer.decode(example["input_ids"][0]))
    logger.info("Its target:        %s", tokenizer.decode(example["labels"][0][example["labels"][0] >= 0]))

    # 3. Train, evaluate, save.
    training_args.remove_unused_columns = False  # the chunks hold only what the model takes; a stream names nothing
    trainer = AtomicTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        data_collator=collator,
    )
    metrics = trainer.train(resume_from_checkpoint=resume_from).metrics
    if not pretrain_args.streaming:
        metrics["train_chunks"] = len(train)
    if validation is not None:
        metrics.update(trainer.evaluate())
    save_results(trainer, tokenizer, metrics)
    push_run_to_hub(trainer, model_args, data_args)
    if trainer.is_world_process_zero():
        curve = [{"step": log["step"], "loss": log["loss"]} for log in trainer.state.log_history if "loss" in log]
        with open(os.path.join(training_args.output_dir, "loss_curve.json"), "w") as file:
            json.dump(curve, file, indent=1)
    logger.info("Results: %s", metrics)


if __name__ == "__main__":
    main()
