#!/usr/bin/env bash
# Sentiment fine-tuning on SST-2 or IMDB, from the masked-LM checkpoint of pretrain_reviews.sh or from a new model
# of the same shape, fully or through a LoRA adapter, on 2 CPU cores: one command each.
#
#   bash training/recipes/pretrain_reviews.sh                      # first: the checkpoint and its tokenizer
#   TASK=sst2 bash training/recipes/sentiment.sh                   # full fine-tuning of the checkpoint
#   TASK=sst2 INIT=scratch bash training/recipes/sentiment.sh      # the same fine-tuning of a new model
#   TASK=sst2 PEFT=lora bash training/recipes/sentiment.sh         # LoRA on the checkpoint
#   TASK=imdb ... (the same three)
#   TASK=imdb TRUNCATE=end ...                                    # a long review's first tokens, not its start and end
#   TASK=sst2 CONFIG=dropout=0.3 ...                              # other fine-tuning config (default: dropout=0.1)
#
# Expected validation accuracy and wall time, from pretrain_reviews.sh's checkpoint, seed 0 and, where given,
# TRAIN_FLAGS="--seed 1", on 2 idle cores (docs/results.md has the curves and what each choice gave):
#
#   TASK  start            accuracy (seed 0, seed 1)   wall time
#   sst2  the checkpoint   79.1 %, 79.8 %              7 min
#   sst2  INIT=scratch     79.7 %, 78.4 %              7 min
#   sst2  PEFT=lora        77.3 %, 79.4 %              8 min
#   imdb  the checkpoint   88.7 %, 88.8 %              27 min
#   imdb  INIT=scratch     87.9 %, 88.0 %              27 min
#   imdb  PEFT=lora        88.3 %, 88.1 %              26 min
#
# Other settings, measured the same way: CONFIG=dropout=0.1,classifier_pooling=first on SST-2 80.9 % and 79.5 %,
# a new model 79.6 %; a learned-query pooler SST-2 79.5 %, IMDB 88.6 % (no gain: no longer offered); LoRA with
# LORA_EMBEDDING=full (the whole embedding trained: 4.7 M weights instead of 1.1 M, an 18.7 MB adapter instead of
# 4.4 MB) SST-2 78.7 %, IMDB 89.0 % in 29 min; LORA_EMBEDDING=frozen SST-2 76.8 % (3 epochs), IMDB 85.2 % (1.7
# epochs); IMDB over one epoch (TRAIN_FLAGS="--num_train_epochs 1") 88.3 % in 18 min; IMDB reading 512 tokens a
# review 87.4 % (at lr 1e-4). SST-2 falls short of 86 % and IMDB of 91 %; LoRA is within 2 points of full
# fine-tuning on both, with the embedding trained or low-rank. The numbers land in $OUT/all_results.json.
#
# SST-2 (59,452 phrases and sentences, about 10 tokens each): 1 epoch of 32 (1,858 steps), texts up to 128 tokens.
# IMDB (22,527 reviews, about 300 tokens each): 1.7 epochs of 32 (1,197 steps, what 30 minutes allow here), batches
# grouped by length, 256 tokens of each review: its first 64 and its last 192 when it is longer (Sun et al. 2019: the
# head and the tail, where the verdict often is). Both: lr 3e-4, 6% warmup then linear decay, weight decay 0.01, the
# mean of the encoder's states as the sentence vector; LoRA: lr 1e-3, rank 32 on every projection of the encoder and
# on the token embedding, the head trained fully, no dropout on the adapters' input, IMDB over 1.4 epochs.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
TASK=${TASK:-sst2}              # sst2 or imdb
INIT=${INIT:-pretrained}        # pretrained (the checkpoint) or scratch (a new model of the same shape)
PEFT=${PEFT:-}                  # lora: train an adapter on the frozen checkpoint
LORA_RANK=${LORA_RANK:-32}      # the adapter's rank (its alpha is twice that)
LORA_EMBEDDING=${LORA_EMBEDDING:-lora}  # the token embedding under LoRA: lora (a low-rank update), full or frozen
TRUNCATE=${TRUNCATE:-}          # what a long text loses: end, or middle (its first quarter and last three kept): by TASK
PRETRAINED=${PRETRAINED:-runs/recipes/pretrain_reviews}
OUT=${OUT:-runs/recipes/${TASK}_${INIT}${PEFT:+_$PEFT}}
CONFIG=${CONFIG:-dropout=0.1}     # config changes for the fine-tuning, e.g. CONFIG=dropout=0.3,classifier_pooling=first
TRAIN_FLAGS=(${TRAIN_FLAGS:-})  # more flags, e.g. TRAIN_FLAGS="--max_train_samples 256" (the CI test's tiny size)
# IMDB at 3e-4 too: at 1e-4 its training loss stayed high, and 3e-4 gave +0.9 from the checkpoint (88.7 % against
# 87.75 %) and +1.4 for a new model (87.9 % against 86.5 %).
RATE=(--learning_rate 3e-4)
case $TASK in
    sst2) FILES=(--train_file "$DATA/sst2/train.jsonl" --validation_file "$DATA/sst2/validation.jsonl")
          EPOCHS=1 SIZE=(--max_source_length 128) TRUNCATE=${TRUNCATE:-end} ;;
    imdb) FILES=(--train_file "$DATA/imdb/train.jsonl.gz" --validation_file "$DATA/imdb/validation.jsonl.gz")
          EPOCHS=1.7 SIZE=(--max_source_length 256 --train_sampling_strategy group_by_length)
          TRUNCATE=${TRUNCATE:-middle} ;;
    *) echo "TASK must be sst2 or imdb, not '$TASK'." >&2; exit 2 ;;
esac
# Both fine-tune with dropout 0.1 by default: the checkpoint was pretrained without it (pretrain_reviews.sh).
case $INIT in
    pretrained) START=(--model_name_or_path "$PRETRAINED/model" --config_overrides "$CONFIG") ;;
    # A new model: the checkpoint's config (its shape, written once, in pretrain_reviews.sh), new weights.
    scratch) START=(--config_name "$PRETRAINED/model" --tokenizer_name "$PRETRAINED/tokenizer" --config_overrides "$CONFIG") ;;
    *) echo "INIT must be pretrained or scratch, not '$INIT'." >&2; exit 2 ;;
esac
if [[ $PEFT == lora ]]; then
    # No dropout on the adapters' input (finetune_sentiment.py's default is 0.05): PEFT draws a mask for each
    # adapted layer, and drawing them made a step 1.45x as slow on a 2-core CPU, for an adapter
    # that underfits. Without them an adapter's step costs what full fine-tuning's does.
    # Rank 32 rather than 8: +2.1 on SST-2 and +0.8 on IMDB (one seed each), in about the same time.
    # The token embedding adapted too: full fine-tuning moves it as much as any other weight, and a frozen one held
    # the adapter's training loss up. Trained whole beside the adapter (LORA_EMBEDDING=full) it gave +0.8 on SST-2
    # and +3.7 on IMDB over a frozen one, but it is 4.1 M weights and an 18.7 MB adapter. A low-rank update of it
    # (the default) trains 1.1 M weights in all and saves 4.4 MB, and stays within 2 points of full
    # fine-tuning (the table above; the whole embedding gains 0.35 on SST-2 and 0.8 on IMDB over it).
    RATE=(--learning_rate 1e-3 --peft lora --lora_r "$LORA_RANK" --lora_alpha "$((2 * LORA_RANK))" --lora_dropout 0)
    TARGETS=q_proj,k_proj,v_proj,out_proj,fc1,fc2
    case $LORA_EMBEDDING in
        full) RATE+=(--lora_target_modules "$TARGETS" --lora_modules_to_save embed_tokens) ;;
        lora) RATE+=(--lora_target_modules "$TARGETS,embed_tokens") ;;
        frozen) RATE+=(--lora_target_modules "$TARGETS") ;;
        *) echo "LORA_EMBEDDING must be full, lora or frozen, not '$LORA_EMBEDDING'." >&2; exit 2 ;;
    esac
    # SST-2 over one epoch, as full fine-tuning: with the whole embedding trained, 3 epochs overfit (77.6 % against
    # 78.7 %).
    # On IMDB, 1.4 epochs: 26 minutes, and 29 with the whole embedding trained, whose steps are slower.
    if [[ $TASK == imdb ]]; then EPOCHS=1.4; fi
fi
if [[ ! -d $PRETRAINED/tokenizer ]]; then
    echo "No $PRETRAINED/tokenizer: run training/recipes/pretrain_reviews.sh first (INIT=scratch needs its tokenizer and config)." >&2
    exit 2
fi
mkdir -p "$OUT"
start=$SECONDS
$PY -m hf_scratch_transformer.training.cli finetune-sentiment "${START[@]}" "${FILES[@]}" --num_train_epochs "$EPOCHS" "${SIZE[@]}" "${RATE[@]}" \
    --truncate "$TRUNCATE" \
    --output_dir "$OUT" --overwrite_output_dir \
    --per_device_train_batch_size 32 --per_device_eval_batch_size 64 \
    --warmup_steps 0.06 --lr_scheduler_type linear --weight_decay 0.01 \
    --eval_strategy steps --eval_steps 500 --save_strategy steps --save_steps 500 --save_total_limit 1 \
    --logging_steps 50 --use_cpu --report_to none --disable_tqdm true --seed 0 "${TRAIN_FLAGS[@]}" \
    > "$OUT.log" 2>&1
echo "wall time: $((SECONDS - start)) s" | tee "$OUT.time"
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from hf_scratch_transformer.training.model_card import training_curves_svg
out = Path(sys.argv[1])
results = json.loads((out / "all_results.json").read_text())
print(f"validation accuracy {100 * results['eval_accuracy']:.2f} %, F1 {100 * results['eval_f1']:.2f} %")
log_history = json.loads((out / "trainer_state.json").read_text())["log_history"]
(out.parent / f"{out.name}_curves.svg").write_text(training_curves_svg(log_history, "eval_accuracy"))
PY
