"""`training/pretrain.py` end to end: the script runs as a program on a corpus made up here, in memory and as a
stream, with each objective; its loss falls; its output starts both a seq2seq model and a classifier. Bad
settings stop it early with a message that says what to do. One run uses ../shared/data/pretrain when present.

The corpus: English and German sentences from a few word lists, with numbers written out by
`hf_scratch_transformer.demo_data`, so the test ships no data. Its tokenizer is trained by
training/train_tokenizer.py (byte-level BPE, 400 ids, 20 sentinels). The model is tiny (d_model 32), and the runs
call the script's main() in this process, once each for the module.
"""

import io
import json
import logging
import random
import shutil

import pytest
import torch
from conftest import SHARED_DATA, run_script
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, AutoTokenizer

from hf_scratch_transformer.demo_data import english_words, german_words
from hf_scratch_transformer.training import train_tokenizer

CORPUS = SHARED_DATA / "pretrain" / "corpus.txt"
TINY_MODEL = (
    "d_model=32,encoder_layers=2,decoder_layers=2,encoder_attention_heads=4,decoder_attention_heads=4,"
    "encoder_ffn_dim=64,decoder_ffn_dim=64,dropout=0.0,label_smoothing=0.0"
)
COMMON = ["--report_to", "none", "--use_cpu", "--save_strategy", "no", "--disable_tqdm", "true"]
COMMON += ["--dataloader_pin_memory", "false", "--per_device_train_batch_size", "16", "--learning_rate", "3e-3"]
COMMON += ["--per_device_eval_batch_size", "32", "--max_seq_length", "64", "--config_overrides", TINY_MODEL]


# 40 steps, a loss logged every 5, a checkpoint at steps 20 and 40 (the resume test starts from the first).
MASKED_LM = ["--objective", "masked_lm", "--max_steps", 40, "--logging_steps", 5]
MASKED_LM += ["--save_strategy", "steps", "--save_steps", 20]


def sentences(count: int, seed: int) -> list[str]:
    """Sentences such as "The old man buys forty-two red apples." and "Die Bäckerin verkauft zwölf Brote."."""
    rng = random.Random(seed)
    english = (["The old man", "A young woman", "My neighbour", "The baker"], ["buys", "sells", "counts", "paints"])
    german = (["Der alte Mann", "Eine junge Frau", "Mein Nachbar", "Die Bäckerin"], ["kauft", "verkauft", "zählt"])
    rows = []
    for _ in range(count):
        n = rng.randint(2, 999)
        if rng.random() < 0.5:
            thing = rng.choice(["red apples", "small boats", "old bicycles"])
            rows.append(f"{rng.choice(english[0])} {rng.choice(english[1])} {english_words(n)} {thing}.")
        else:
            thing = rng.choice(["rote Äpfel", "kleine Boote", "alte Fahrräder"])
            rows.append(f"{rng.choice(german[0])} {rng.choice(german[1])} {german_words(n)} {thing}.")
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The corpus as .txt (train, validation) and as .jsonl with a `sentence` column, and its tokenizer."""
    folder = tmp_path_factory.mktemp("pretrain_data")
    train, validation = sentences(1500, seed=0), sentences(150, seed=1)
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "validation.txt").write_text("\n".join(validation) + "\n")
    with open(folder / "train.jsonl", "w") as file:
        for i, text in enumerate(train):
            file.write(json.dumps({"id": i, "sentence": text}) + "\n")
    tokenizer_args = ["--train_file", str(folder / "train.txt"), "--output_dir", str(folder / "tokenizer")]
    tokenizer_args += ["--vocab_size", "400", "--num_sentinel_tokens", "20"]
    train_tokenizer.main(tokenizer_args)
    return folder


def run_logged(*arguments) -> str:
    """Run pretrain.py's main() in this process; return what it logged."""
    log, root = io.StringIO(), logging.getLogger()
    handler, level = logging.StreamHandler(log), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        run_script("pretrain", *arguments)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return log.getvalue()


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """Every training run of this file; name -> (its log, its output folder)."""
    root = tmp_path_factory.mktemp("pretrain_runs")
    train, validation = ["--train_file", data / "train.txt"], ["--validation_file", data / "validation.txt"]
    arguments = {
        "in_memory": [*train, *validation, "--max_steps", 60, "--logging_steps", 5],
        "streaming": ["--train_file", data / "train.jsonl", "--text_column", "sentence", "--streaming"]
        + ["--max_steps", 12, "--logging_steps", 4, "--shuffle_buffer_size", 100],
        "text_infilling": [*train, *validation, "--objective", "text_infilling", "--max_steps", 8]
        + ["--logging_steps", 4],
        "masked_lm": [*train, *validation, *MASKED_LM],
    }
    if CORPUS.is_file():
        arguments["shared_corpus"] = ["--train_file", CORPUS, "--max_train_samples", 2000, "--max_steps", 30]
        arguments["shared_corpus"] += ["--logging_steps", 5, "--max_seq_length", 128]  # the last flag wins
    return {
        name: (
            run_logged("--tokenizer_name", data / "tokenizer", "--output_dir", root / name, *COMMON, *args),
            root / name,
        )
        for name, args in arguments.items()
    }


def losses(output_dir) -> list[float]:
    curve = json.loads((output_dir / "loss_curve.json").read_text())
    assert all(set(point) == {"step", "loss"} for point in curve)
    return [point["loss"] for point in curve]


# ---------------------------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------------------------


def test_in_memory_span_corruption_learns_and_saves_a_reusable_model(runs):
    output_dir = runs["in_memory"][1]
    curve = losses(output_dir)
    assert len(curve) == 12  # 60 steps, logged every 5
    assert sum(curve[-3:]) / 3 < curve[0] - 1.0, curve  # the loss falls
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["eval_loss"] < curve[0] and results["train_chunks"] > 0

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    seq2seq = AutoModelForSeq2SeqLM.from_pretrained(output_dir)
    assert seq2seq.config.vocab_size == len(tokenizer) == 400
    assert (output_dir / "generation_config.json").is_file()
    classifier = AutoModelForSequenceClassification.from_pretrained(output_dir, num_labels=2)
    encoder = seq2seq.get_encoder().state_dict()
    for name, weight in classifier.get_encoder().state_dict().items():
        assert torch.equal(weight, encoder[name]), f"{name} is not the pretrained encoder's"
    inputs = tokenizer(["Der alte Mann zählt zwölf Boote."], return_tensors="pt")
    assert classifier(**inputs).logits.shape == (1, 2)


def test_streaming_trains_for_max_steps(runs):
    output_dir = runs["streaming"][1]
    assert len(losses(output_dir)) == 3  # 12 steps, logged every 4
    results = json.loads((output_dir / "all_results.json").read_text())
    assert "train_chunks" not in results  # a stream has no length
    assert AutoModelForSeq2SeqLM.from_pretrained(output_dir).config.d_model == 32


def test_text_infilling_objective_runs(runs):
    output, output_dir = runs["text_infilling"]
    assert "<mask>" in output  # the logged example input
    curve = losses(output_dir)
    assert len(curve) == 2
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["eval_loss"] < curve[0], (curve, results)  # 8 steps of infilling already help on validation


def test_masked_lm_trains_the_encoder_alone_and_leaves_a_checkpoint_both_heads_load(runs, data):
    output, output_dir = runs["masked_lm"]
    assert "chunks of 63 tokens -> inputs of <= 64" in output
    assert "<mask>" in output  # the logged example input
    curve = losses(output_dir)
    assert len(curve) == 8 and sum(curve[-2:]) / 2 < curve[0] - 1.0, curve  # 40 steps, logged every 5; it learns
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["eval_loss"] < curve[0], (curve, results)
    # The decoder's own weights were frozen: every weight but them trained (the shared embedding, which the encoder
    # reads too, among those that trained).
    seq2seq = AutoModelForSeq2SeqLM.from_pretrained(output_dir)
    shared = seq2seq.get_input_embeddings().weight
    decoder_own = sum(p.numel() for p in seq2seq.get_decoder().parameters() if p is not shared)
    assert decoder_own > 0 and results["total_params"] - results["trainable_params"] == decoder_own, results
    classifier = AutoModelForSequenceClassification.from_pretrained(output_dir, num_labels=2)
    first_layer = classifier.get_encoder().layers[0].feed_forward.fc1.weight
    assert torch.equal(first_layer, seq2seq.get_encoder().layers[0].feed_forward.fc1.weight)

    # The masked-LM head predicts a hidden word from its context better than chance (1 in 400).
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    inputs = tokenizer(["The old man buys forty-two red apples."], return_tensors="pt")
    position = 2  # " man"
    target = inputs.input_ids[0, position].item()
    inputs.input_ids[0, position] = tokenizer.mask_token_id
    with torch.no_grad():
        hidden = seq2seq.get_encoder()(**inputs).last_hidden_state[0, position]
        probability = seq2seq.get_output_embeddings()(hidden).softmax(-1)[target].item()
    assert probability > 10 / len(tokenizer), probability


def test_masked_lm_resumes_to_the_weights_of_an_uninterrupted_run(runs, data, tmp_path):
    """Killed after step 20 and resumed, a run ends where the uninterrupted one did: each chunk is masked as a
    function of (seed, epoch, chunk), not of torch's RNG, which the data loader's lookahead has moved on when a
    checkpoint saves it."""
    _, uninterrupted = runs["masked_lm"]
    shutil.copytree(uninterrupted / "checkpoint-20", tmp_path / "checkpoint-20")
    train = ["--train_file", data / "train.txt", "--validation_file", data / "validation.txt"]
    run_logged("--tokenizer_name", data / "tokenizer", "--output_dir", tmp_path, *COMMON, *train,
               *MASKED_LM, "--resume_from_checkpoint", "true")  # fmt: skip
    resumed, reference = load_file(tmp_path / "model.safetensors"), load_file(uninterrupted / "model.safetensors")
    assert resumed.keys() == reference.keys()
    difference = max((resumed[key] - reference[key]).abs().max().item() for key in reference)
    assert difference < 1e-6, difference


@pytest.mark.skipif(not CORPUS.is_file(), reason=f"{CORPUS} is absent")
def test_pretrain_on_the_shared_corpus(runs):
    """2000 lines of real English and German text, 30 steps, chunks of 141 tokens (inputs of 128)."""
    output, output_dir = runs["shared_corpus"]
    assert "chunks of 141 tokens -> inputs of <= 128, targets of <= 29" in output
    curve = losses(output_dir)
    assert curve[-1] < curve[0] - 0.5, curve


# ---------------------------------------------------------------------------------------------------------------
# Errors (in this process: they stop before any training)
# ---------------------------------------------------------------------------------------------------------------


def run_main(data, tmp_path, *args):
    run_script("pretrain", "--tokenizer_name", data / "tokenizer", "--output_dir", tmp_path / "out",
               "--train_file", data / "train.txt", *COMMON, *args)  # fmt: skip


def test_streaming_without_max_steps_is_refused(data, tmp_path):
    with pytest.raises(SystemExit, match="--streaming reads the text as a stream.*pass --max_steps N"):
        run_main(data, tmp_path, "--streaming")


def test_too_few_sentinels_is_refused(data, tmp_path):
    # 64 input tokens, density 0.4, spans of 1: 63 raw tokens with 25 spans, and the tokenizer has 20 sentinels.
    with pytest.raises(SystemExit, match=r"makes 25 noise spans.*only 20 sentinels.*--num_sentinel_tokens 25"):
        run_main(data, tmp_path, "--noise_density", "0.4", "--mean_noise_span_length", "1")
