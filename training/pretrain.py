"""Pretrain the scratch Transformer on raw text with a denoising objective, with `Trainer`: T5 span corruption
(the default) or BART text infilling, which train the encoder and the decoder, or BERT's masked language modelling
(`--objective masked_lm`), which trains the encoder alone: what a classifier (`finetune_sentiment.py`) reads.

    hf-scratch-transformer pretrain \
        --tokenizer_name tokenizer/ --train_file ../shared/data/pretrain/corpus.txt \
        --config_overrides "d_model=256,encoder_layers=3,decoder_layers=3,encoder_ffn_dim=1024,decoder_ffn_dim=1024" \
        --output_dir runs/pretrain --max_steps 5000 --per_device_train_batch_size 32 --learning_rate 5e-4 \
        --warmup_steps 500 --logging_steps 50

    # a corpus read as a stream, never held whole (its length is unknown, so --max_steps is required)
    hf-scratch-transformer pretrain ... --streaming --max_steps 20000

The text comes from `--train_file` (.txt: one document a line; .json/.jsonl/.csv: the column `--text_column`) or
from `--dataset_name`, with an optional `--validation_file` whose loss is reported at the end (and during
training with `--eval_strategy steps`). The tokenizer must be one made by `train_tokenizer.py` (or another with
`</s>`, `<pad>`, and `<mask>` or the sentinels `<extra_id_N>`).

The texts are tokenized without special tokens, joined with `</s>` after each, and cut into chunks; the piece
left over at the end of every 1000 texts is dropped. The chunk length is chosen so that a corrupted input, `</s>`
included, is exactly `--max_seq_length` tokens: with the defaults (128, density 0.15, spans of 3) a span-corrupted
chunk is 141 raw tokens and its target 29; a text-infilling chunk is 127 tokens, its input shorter than 128 and its
target (the whole chunk and `</s>`) 128; a masked-LM chunk is 127 tokens and its input, `</s>` added, 128. The
validation chunks are corrupted once, with `--seed`, so every evaluation scores the same task. Training chunks are
corrupted by the data collator, each as a function of (`--seed`, epoch, chunk): anew every epoch, and the same in a
resumed run.

Masked LM: the encoder reads the masked chunk and the LM head (the shared embedding matrix, as in BERT) predicts
the chosen tokens from the encoder's states. The decoder is frozen and gets a one-token input, so the checkpoint is
still a whole encoder-decoder that `AutoModelForSeq2SeqLM` and `AutoModelForSequenceClassification` both load, but
its decoder (apart from the shared embeddings) is as initialised.

A new model is built from `--config_name` / `--config_overrides` (sized to the tokenizer), or training continues
from `--model_name_or_path`. The output folder holds the model, tokenizer, generation config, `all_results.json`
and `loss_curve.json` (`[{"step": ..., "loss": ...}, ...]`, the logged training loss); `finetune_sentiment.py`
(the encoder) and the translation script start from it with `--model_name_or_path`.
"""

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForSeq2SeqLM, TrainerCallback, TrainingArguments, set_seed

from hf_scratch_transformer.data_collators import (
    DataCollatorForMaskedLM,
    DataCollatorForSpanCorruption,
    DataCollatorForTextInfilling,
    compute_input_and_target_lengths,
)

from .arguments import DataArguments, ModelArguments, OutputDirArguments, parse_arguments
from .atomic_checkpoints import AtomicTrainer
from .data import column_names, load_raw_datasets, require_columns
from .launch import start_run
from .model_loading import check_lengths_fit_learned_positions, load_model, load_tokenizer
from .output_dir import save_results, validation_metrics
from .push_to_hub import push_trainer_run

logger = logging.getLogger(__name__)

OBJECTIVES = ("span_corruption", "text_infilling", "masked_lm")
# (noise_density, mean_noise_span_length) of each objective's paper: T5 (Raffel et al., 2020), BART (Lewis et al.,
# 2020), whose span lengths are Poisson(3) and which masks 30% of the tokens, BERT (Devlin et al., 2019), which
# predicts 15% of the tokens, each on its own (its span length is not used).
DEFAULT_NOISE = {
    "span_corruption": (0.15, 3.0),
    "text_infilling": (0.3, 3.0),
    "masked_lm": (0.15, 1.0),
}
PACKING_BATCH_SIZE = 1000  # texts joined at once; one partial chunk per this many texts is dropped


@dataclass
class PretrainArguments:
    objective: str = field(
        default="span_corruption",
        metadata={
            "help": "T5 span corruption or BART text infilling (encoder and decoder); BERT masked LM (the encoder).",
            "choices": OBJECTIVES,
        },
    )
    text_column: str = field(default="text", metadata={"help": "The text column of json/jsonl/csv data."})
    max_seq_length: int = field(
        default=128, metadata={"help": "Encoder input length, </s> included; chunks are cut to fill it."}
    )
    noise_density: float | None = field(
        default=None,
        metadata={"help": "Fraction of tokens corrupted: 0.15 (span corruption, masked LM) or 0.3 (infilling)."},
    )
    mean_noise_span_length: float | None = field(
        default=None, metadata={"help": "Mean corrupted span length (the Poisson mean for infilling); 3."}
    )
    streaming: bool = field(default=False, metadata={"help": "Read the training text as a stream; needs --max_steps."})
    shuffle_buffer_size: int = field(
        default=10_000, metadata={"help": "With --streaming: texts shuffled at a time before packing."}
    )


def main() -> None:
    # 0. The run: its flags, its processes, its folder (a checkpoint to resume, or a new run), the Hub token.
    model_args, data_args, pretrain_args, output_args, training_args = parse_arguments(
        ModelArguments, DataArguments, PretrainArguments, OutputDirArguments, TrainingArguments
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    resume_from = start_run(training_args, output_args.overwrite_output_dir)
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
        elif pretrain_args.objective == "text_infilling":
            collator = DataCollatorForTextInfilling(
                tokenizer, model=model, mask_ratio=density, poisson_lambda=span_length
            )
            chunk_length, target_length = max_length - 1, max_length  # room for </s>; masking only shortens
        else:  # masked LM
            collator = DataCollatorForMaskedLM(tokenizer, mlm_probability=density)
            chunk_length, target_length = max_length - 1, 1  # room for </s>; the decoder reads one token
            freeze_decoder(model)
    except ValueError as error:
        raise SystemExit(f"--objective {pretrain_args.objective}: {error}") from error
    # Each chunk's corruption is a function of (seed, epoch, chunk): a resumed run masks as the first run would have.
    collator.seed = training_args.seed
    check_lengths_fit_learned_positions(model.config, {"--max_seq_length": max(max_length, target_length)})
    logger.info(
        "%s: chunks of %d tokens -> inputs of <= %d, targets of <= %d (noise %.2f, spans %.1f)",
        pretrain_args.objective, chunk_length, max_length, target_length, density, span_length,
    )  # fmt: skip

    # 2. Data: tokenize, join with </s>, cut into chunks of chunk_length tokens.
    raw = load_raw_datasets(data_args, streaming=pretrain_args.streaming)
    text_column, eos = pretrain_args.text_column, tokenizer.eos_token_id
    require_columns(raw["train"], [text_column], "Set --text_column.")

    def tokenize_and_pack(batch: dict) -> dict:
        texts = [text or "" for text in batch[text_column]]
        token_ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return {"input_ids": pack_into_chunks(token_ids, eos, chunk_length)}

    def pack(dataset):
        if isinstance(dataset, datasets.IterableDataset):
            return dataset.map(
                tokenize_and_pack, batched=True, batch_size=PACKING_BATCH_SIZE, remove_columns=column_names(dataset)
            )
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
    training_args.prediction_loss_only = True  # pretraining is judged by its loss: evaluation keeps no logits
    trainer_class = EncoderMaskedLMTrainer if pretrain_args.objective == "masked_lm" else AtomicTrainer
    trainer = trainer_class(
        model=model, args=training_args, train_dataset=train, eval_dataset=validation, processing_class=tokenizer,
        data_collator=collator, callbacks=[CollatorEpoch(collator)],
    )  # fmt: skip
    metrics = trainer.train(resume_from_checkpoint=resume_from).metrics
    if not pretrain_args.streaming:
        metrics["train_chunks"] = len(train)
    if validation is not None:
        metrics.update(validation_metrics(trainer))
    save_results(trainer, tokenizer, metrics)
    push_trainer_run(trainer, model_args.model_name_or_path, data_args.dataset_name)
    if trainer.is_world_process_zero():
        curve = [{"step": log["step"], "loss": log["loss"]} for log in trainer.state.log_history if "loss" in log]
        with open(os.path.join(training_args.output_dir, "loss_curve.json"), "w") as file:
            json.dump(curve, file, indent=1)
    logger.info("Results: %s", metrics)


def pack_into_chunks(token_ids: list[list[int]], eos_token_id: int, chunk_length: int) -> list[list[int]]:
    """Each text's ids then </s>, joined, cut into chunks of `chunk_length` ids (the last partial one dropped)."""
    ids = []
    for text_ids in token_ids:
        if text_ids:  # blank lines add nothing, not a lone </s>
            ids += text_ids + [eos_token_id]
    usable = len(ids) // chunk_length * chunk_length
    return [ids[start : start + chunk_length] for start in range(0, usable, chunk_length)]


class CollatorEpoch(TrainerCallback):
    """Tells the collator which epoch begins, so that each epoch masks every chunk anew. `state.epoch` is a float
    (0.6: 60 % of the first epoch done, where a resumed run starts); the small margin absorbs its rounding at the
    start of an epoch."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = math.floor(state.epoch + 1e-6)


def freeze_decoder(model) -> None:
    """Masked LM trains the encoder alone: the decoder's own weights get no gradient
    (the shared embedding matrix, which the encoder and the LM head use too, still trains). DDP needs this: a
    trainable weight that gets no gradient would stop it."""
    shared = model.get_input_embeddings().weight
    for parameter in model.get_decoder().parameters():
        if parameter is not shared:
            parameter.requires_grad_(False)


class EncoderMaskedLMTrainer(AtomicTrainer):
    """`Trainer` with BERT's loss: cross-entropy of the LM head over the encoder's states at the chosen positions.

    The model is called through its own forward, with a one-token decoder input, so that DDP (which only
    synchronises gradients of a call to the model it wraps) sees the call; only `encoder_last_hidden_state` is used.
    The loss is a sum over the chosen tokens divided by `num_items_in_batch` (all chosen tokens of the step, across
    accumulation and processes), as the LM head's own loss is."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]  # (B, S): a token id at the chosen positions, -100 elsewhere
        start = self.accelerator.unwrap_model(model).config.decoder_start_token_id
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            decoder_input_ids=torch.full((labels.shape[0], 1), start, device=labels.device),  # (B, 1)
        )
        chosen = labels != -100
        lm_head = self.accelerator.unwrap_model(model).get_output_embeddings()
        logits = lm_head(outputs.encoder_last_hidden_state[chosen])  # (N, V): only the N chosen positions
        loss = F.cross_entropy(logits.float(), labels[chosen], reduction="sum")
        loss = loss / (num_items_in_batch if num_items_in_batch is not None else chosen.sum().clamp(min=1))
        return (loss, outputs) if return_outputs else loss


if __name__ == "__main__":
    main()
