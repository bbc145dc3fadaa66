"""The quality recipes of training/recipes/ run from end to end at a tiny size on the real data (the sizes come from
the environment; the recipe's own defaults are the full runs that docs/results.md reports)."""

import json
import os
import subprocess

import pytest
import torch
from conftest import REPO_ROOT, SHARED_DATA, command
from hub_server import hub_env, run, run_python
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

# The slow tier (make test-slow): each test runs a quality recipe from end to end, on the real data.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SHARED_DATA / "multi30k").is_dir(), reason="needs ../shared/data/multi30k"),
]

# A child process (HF_ENDPOINT is read at import) pulls a repo with a loader and saves the weights it got.
PULL = """
import json, sys
import hf_scratch_transformer, peft, transformers  # the package installed: its Auto classes, no remote code
from safetensors.torch import save_file

loader = getattr(transformers, sys.argv[2], None) or getattr(peft, sys.argv[2])
model = loader.from_pretrained(sys.argv[1])
save_file({name: tensor.clone() for name, tensor in model.state_dict().items()}, sys.argv[3])
print(json.dumps({"class": type(model).__name__}))
"""


def push_and_pull_back(hub, run_dir, repo_id: str, loader: str, tmp_path) -> str:
    """Push a recipe's output with training/push_to_hub.py, pull it into a fresh cache with `loader` (an Auto class
    of transformers or PEFT), and check that every weight came back exactly; the pulled class's name."""
    home = tmp_path / f"home_{repo_id.replace('/', '_')}"
    run([*command("push-to-hub"), run_dir, "--repo_id", repo_id], hub_env(hub, home / "push"))
    pulled_file = tmp_path / f"{repo_id.replace('/', '_')}.safetensors"
    report = run_python(PULL, hub_env(hub, home / "pull"), repo_id, loader, pulled_file)
    local = getattr(__import__("transformers"), loader, None) or getattr(__import__("peft"), loader)
    pulled = load_file(pulled_file)
    expected = local.from_pretrained(run_dir).state_dict()
    assert set(pulled) == set(expected)
    for name, tensor in expected.items():
        if ".original_module." in name:
            continue  # PEFT keeps the base's own head beside the trained one; the base has none, so it is random
        torch.testing.assert_close(pulled[name], tensor, rtol=0, atol=0)
    return report["class"]


TINY = {
    "MODEL": "d_model=32,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,decoder_attention_heads=2,"
    "encoder_ffn_dim=64,decoder_ffn_dim=64",
    "VOCAB": "400",
    "EPOCHS": "3",
    "AVERAGE": "2",
    "BATCH": "32",
    "TRAIN_FLAGS": "--max_train_samples 128",
    "EVAL_FLAGS": "--max_eval_samples 8",
}


def test_multi30k_recipe_trains_averages_evaluates_and_pushes(hub, tmp_path):
    out = tmp_path / "multi30k"
    env = {**os.environ, **TINY, "OUT": str(out), "DATA": str(SHARED_DATA), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        ["bash", REPO_ROOT / "training" / "recipes" / "multi30k.sh"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    # One checkpoint an epoch (4 steps of 32 pairs), of which the last AVERAGE were kept and averaged.
    checkpoints = sorted(path.name for path in (out / "model").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-12", "checkpoint-8"], checkpoints
    assert "Saved the average of 2 checkpoints" in (out / "average.log").read_text()
    model = AutoModelForSeq2SeqLM.from_pretrained(out / "averaged")
    tokenizer = AutoTokenizer.from_pretrained(out / "averaged")
    assert len(tokenizer) <= model.config.vocab_size == 400
    # The model that gets pushed decodes as it was evaluated: 5 beams (the package's default is the paper's 4).
    assert model.generation_config.num_beams == 5

    # The evaluation runs trained nothing: their results hold evaluation numbers only, of the 8 validation pairs
    # (all of which the samples file holds) decoded with 5 beams, and the printed summary quotes them.
    for name in ("model", "averaged"):
        results = json.loads((out / f"{name}_eval" / "all_results.json").read_text())
        assert "train_loss" not in results and "13a" in results["eval_bleu_signature"], results
        assert f"{name:>9}: sacreBLEU {results['eval_bleu']:.2f}" in completed.stdout
        assert json.loads((out / f"{name}_eval" / "generation_config.json").read_text())["num_beams"] == 5
        assert len((out / f"{name}_eval" / "translation_samples.jsonl").read_text().splitlines()) == 8

    # The averaged model goes to the Hub (the test server) and comes back whole.
    pulled = push_and_pull_back(hub, out / "averaged", "user/multi30k", "AutoModelForSeq2SeqLM", tmp_path)
    assert pulled == "ScratchTransformerForConditionalGeneration"


TINY_SENTIMENT = {
    "MODEL": TINY["MODEL"],
    "VOCAB": "600",
    "MAX_TEXTS": "200",  # of each of the three sources of pretraining text
    "STEPS": "4",
    "LENGTH": "64",
    "BATCH": "32",
    "OMP_NUM_THREADS": "1",
    "LORA_RANK": "4",  # the recipe's 32 would be wider than the tiny model
}


@pytest.mark.skipif(not (SHARED_DATA / "imdb").is_dir(), reason="needs ../shared/data/imdb and sst2")
def test_sentiment_recipes_pretrain_then_fine_tune_fully_from_scratch_and_with_lora(hub, tmp_path):
    pretrained = tmp_path / "pretrain"
    env = {**os.environ, **TINY_SENTIMENT, "DATA": str(SHARED_DATA), "PRETRAINED": str(pretrained)}
    completed = subprocess.run(
        ["bash", REPO_ROOT / "training" / "recipes" / "pretrain_reviews.sh"],
        capture_output=True, text=True, timeout=600, env={**env, "OUT": str(pretrained),
                                                          "TRAIN_FLAGS": "--eval_steps 2 --save_steps 2"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    # 200 unlabelled reviews + 200 training reviews + 200 sentences; 200 validation reviews (of the 500 at full size)
    assert len((pretrained / "text_train.jsonl").read_text().splitlines()) == 600
    tokenizer = AutoTokenizer.from_pretrained(pretrained / "tokenizer")
    assert tokenizer.decode(tokenizer("A <br /><br />Great film")["input_ids"], skip_special_tokens=True) == (
        "a   great film"
    )  # lower-cased, and each <br /> read as a space, by the saved normalizer
    assert tokenizer("it does n't work , it 's bad .").input_ids == tokenizer("It doesn't work, it's bad.").input_ids
    results = json.loads((pretrained / "model" / "all_results.json").read_text())
    assert f"held-out reviews {results['eval_loss']:.3f}" in completed.stdout
    # One checkpoint both Auto classes load: the seq2seq model with nothing missing, the classifier's encoder.
    AutoModelForSeq2SeqLM.from_pretrained(pretrained / "model")

    runs = {}
    every_start = (("pretrained", ""), ("scratch", ""), ("pretrained", "lora"))
    for task, starts in (("sst2", every_start), ("imdb", every_start[:1])):  # IMDB: its files and its lengths
        for init, peft in starts:
            out = tmp_path / f"{task}_{init}{peft}"
            # CONFIG changes the fine-tuning's config (the recipe's default: dropout=0.1).
            config = "dropout=0.3,classifier_pooling=first" if task == "sst2" and not peft else "dropout=0.1"
            completed = subprocess.run(
                ["bash", REPO_ROOT / "training" / "recipes" / "sentiment.sh"],
                capture_output=True, text=True, timeout=600,
                env={**env, "TASK": task, "INIT": init, "PEFT": peft, "OUT": str(out), "CONFIG": config,
                     "TRAIN_FLAGS": "--max_train_samples 64 --max_eval_samples 32 --eval_steps 1"},
            )  # fmt: skip
            assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
            if not peft:  # (a LoRA run saves the adapter's config; its base is the checkpoint)
                saved = json.loads((out / "config.json").read_text())
                expected = dict(item.split("=") for item in config.split(","))
                assert {key: str(saved[key]) for key in expected} == expected, saved
            runs[task, init, peft] = json.loads((out / "all_results.json").read_text())
            assert f"validation accuracy {100 * runs[task, init, peft]['eval_accuracy']:.2f} %" in completed.stdout
            assert (tmp_path / f"{out.name}_curves.svg").read_text().startswith("<svg")
    # The LoRA run trained a part of the model: the adapter (the token embedding's low-rank update included) and
    # the head.
    lora, full = runs["sst2", "pretrained", "lora"], runs["sst2", "pretrained", ""]
    assert lora["trainable_params"] < full["trainable_params"], (lora, full)
    assert lora["total_params"] > full["total_params"], (lora, full)  # the adapter's weights come on top
    # The adapter trains without dropout on its input (its masks cost a step 1.45x on a CPU), at the rank LORA_RANK
    # gives and alpha twice that, on every projection and on the token embedding (a low-rank update, not the whole
    # embedding trained: a quarter of the weights and of the file, within 2 points of full fine-tuning); on SST-2
    # over one epoch, as full fine-tuning.
    adapter_config = json.loads((tmp_path / "sst2_pretrainedlora" / "adapter_config.json").read_text())
    assert (adapter_config["lora_dropout"], adapter_config["r"], adapter_config["lora_alpha"]) == (0, 4, 8)
    assert sorted(adapter_config["target_modules"]) == [
        "embed_tokens", "fc1", "fc2", "k_proj", "out_proj", "q_proj", "v_proj"]  # fmt: skip
    assert "embed_tokens" not in adapter_config["modules_to_save"], adapter_config["modules_to_save"]
    assert (lora["epoch"], full["epoch"]) == (1, 1), (lora, full)

    # What the recipes make goes to the Hub (the test server) and comes back whole: the pretrained checkpoint, the
    # fine-tuned classifier, and the LoRA adapter (its base, the checkpoint, named in adapter_config.json).
    pushes = [
        (pretrained / "model", "user/pretrained-reviews", "AutoModelForSeq2SeqLM"),
        (tmp_path / "sst2_pretrained", "user/sst2", "AutoModelForSequenceClassification"),
        (tmp_path / "sst2_pretrainedlora", "user/sst2-lora", "AutoPeftModelForSequenceClassification"),
    ]
    pulled = [push_and_pull_back(hub, *push, tmp_path) for push in pushes]
    assert pulled == [
        "ScratchTransformerForConditionalGeneration",
        "ScratchTransformerForSequenceClassification",
        "PeftModelForSequenceClassification",
    ]
