#!/usr/bin/env bash
# Quality runs on the real data beside the checkout (../shared/data), on 2 CPU cores: a shared tokenizer, a
# 30-minute Multi30k EN->DE run, a denoising pretraining run, and SST-2 fine-tuning from scratch and from the
# pretrained checkpoint. Results go to $RUNS (default runs/quality); benchmarks/QUALITY.md records them.
#   bash benchmarks/quality_runs.sh            # about an hour on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/quality}
PY=${PY:-.venv/bin/python}
mkdir -p "$RUNS"
# The shape of the speed benchmark (issue 6): d_model 256, 3+3 layers, 4 heads, ffn 1024; pre-LN.
MODEL="d_model=256,encoder_layers=3,decoder_layers=3,encoder_attention_heads=4,decoder_attention_heads=4,encoder_ffn_dim=1024,decoder_ffn_dim=1024,normalize_before=true"
COMMON=(--use_cpu --report_to none --disable_tqdm true --seed 0 --save_strategy no)
timed() { local name=$1; shift; local start=$SECONDS; "$@" > "$RUNS/$name.log" 2>&1; echo "$name: $((SECONDS - start)) s" | tee -a "$RUNS/times.txt"; }

# 1. One byte-level BPE vocabulary for everything: English and German sides of Multi30k plus SST-2 phrases.
timed tokenizer $PY -m hf_scratch_transformer.training.cli train-tokenizer --train_file "$DATA/pretrain/corpus.txt" \
    --output_dir "$RUNS/tokenizer" --vocab_size 8000 --num_sentinel_tokens 100

# 2. Multi30k EN->DE, a new model, 2000 steps of batch 64 (about 30 minutes here), beam-4 validation BLEU.
timed multi30k $PY -m hf_scratch_transformer.training.cli finetune-translation --source_lang en --target_lang de \
    --train_file "$DATA/multi30k/train.jsonl" --validation_file "$DATA/multi30k/validation.jsonl" \
    --tokenizer_name "$RUNS/tokenizer" --config_overrides "$MODEL,dropout=0.1,label_smoothing=0.1" \
    --output_dir "$RUNS/multi30k" --overwrite_output_dir --max_steps 2000 --per_device_train_batch_size 64 \
    --learning_rate 1e-3 --warmup_steps 400 --lr_scheduler_type inverse_sqrt --adam_beta2 0.98 \
    --weight_decay 0.0 --logging_steps 50 --eval_strategy no --predict_with_generate --num_beams 4 \
    --max_target_length 64 --per_device_eval_batch_size 64 "${COMMON[@]}"

# 3. Denoising pretraining (span corruption) on the corpus.
timed pretrain $PY -m hf_scratch_transformer.training.cli pretrain --train_file "$DATA/pretrain/corpus.txt" \
    --tokenizer_name "$RUNS/tokenizer" --config_overrides "$MODEL,dropout=0.1" \
    --output_dir "$RUNS/pretrain" --overwrite_output_dir --max_seq_length 64 --max_steps 600 \
    --per_device_train_batch_size 32 --learning_rate 1e-3 --warmup_steps 100 --lr_scheduler_type inverse_sqrt \
    --adam_beta2 0.98 --logging_steps 20 "${COMMON[@]}"

# 4. SST-2, the same recipe from scratch and from the pretrained checkpoint.
for start in scratch pretrained; do
    if [ "$start" = scratch ]; then FROM=(--tokenizer_name "$RUNS/tokenizer" --config_overrides "$MODEL"); else FROM=(--model_name_or_path "$RUNS/pretrain"); fi
    timed "sst2_$start" $PY -m hf_scratch_transformer.training.cli finetune-sentiment "${FROM[@]}" \
        --train_file "$DATA/sst2/train.jsonl" --validation_file "$DATA/sst2/validation.jsonl" \
        --output_dir "$RUNS/sst2_$start" --overwrite_output_dir --max_steps 1000 --per_device_train_batch_size 32 \
        --learning_rate 3e-4 --warmup_steps 100 --logging_steps 50 --eval_strategy no "${COMMON[@]}"
done
# 5. SST-2 from the same checkpoint through a LoRA adapter (issue 4): rank 8 on q_proj and v_proj, plus the
#    classification head; the same steps and batch as step 4, a learning rate suited to the few weights that train.
timed sst2_lora $PY -m hf_scratch_transformer.training.cli finetune-sentiment --model_name_or_path "$RUNS/pretrain" \
    --peft lora --lora_r 8 --lora_alpha 16 --lora_dropout 0.05 --lora_target_modules q_proj,v_proj \
    --train_file "$DATA/sst2/train.jsonl" --validation_file "$DATA/sst2/validation.jsonl" \
    --output_dir "$RUNS/sst2_lora" --overwrite_output_dir --max_steps 1000 --per_device_train_batch_size 32 \
    --learning_rate 2e-3 --warmup_steps 100 --logging_steps 50 --eval_strategy no "${COMMON[@]}"
echo "done" | tee -a "$RUNS/times.txt"
