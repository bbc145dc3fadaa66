"""The Hub round trip against `hub_server.py` on 127.0.0.1: push runs with `training/push_to_hub.py` and with a
training script's `--push_to_hub`, pull them into fresh caches with the Auto classes, `pipeline`, `AutoPeftModel`
and `trust_remote_code` (in a process without this package), read a data set pushed with `Dataset.push_to_hub`
through `--dataset_name`, and check the failures: a server dying mid-push, no token, a rejected token, a folder
that is not a run.

Every Hub call runs in a child process: the HF libraries read HF_ENDPOINT, HF_HOME and the token when they are
imported, and this process imported them long ago. Each child gets a fresh HF_HOME, so each pull starts from an
empty cache.
"""

import hashlib
import json
import shutil
import socket
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import command, toy_reviews, word_level_tokenizer, write_jsonl
from hub_server import TOKEN, HubServer, files_at_head, hub_env, run, run_python
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

PUSH_SCRIPT = command("push-to-hub")
TINY_MODEL = (
    "d_model=16,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,decoder_attention_heads=2,"
    "encoder_ffn_dim=32,decoder_ffn_dim=32,normalize_before=true,dropout=0.0,label_smoothing=0.0"
)
QUIET = ["--use_cpu", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--seed", "0"]
SOURCES = ["the movie was good", "a plot really dull", "the acting was quite lovely"]


def folder_digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def greedy_ids(model, tokenizer) -> list:
    batch = tokenizer(SOURCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.eval().generate(**batch, num_beams=1, do_sample=False, max_new_tokens=8).tolist()


@pytest.fixture(scope="module")
def runs(hub, tmp_path_factory):
    """A toy translation data set pushed with Dataset.push_to_hub, a translation run that reads it with
    --dataset_name, and a sentiment run that starts from that model on the Hub (--model_name_or_path) and is pushed
    by the script's own --push_to_hub."""
    folder = tmp_path_factory.mktemp("runs")
    rows = toy_reviews(160, seed=0)
    words = sorted({word for row in rows for word in row["sentence"].split()})
    tokenizer_dir = folder / "tokenizer"
    word_level_tokenizer(words, num_sentinels=2, append_eos=True).save_pretrained(tokenizer_dir)

    # The "translation" is the sentence backwards: a task a tiny model starts to learn in a few steps.
    pairs = [{"translation": {"en": r["sentence"], "xx": " ".join(r["sentence"].split()[::-1])}} for r in rows]
    write_jsonl(folder / "pairs.jsonl", pairs)
    push_dataset = """
        import sys, datasets
        pairs = datasets.load_dataset("json", data_files=sys.argv[1])["train"]
        splits = {"train": pairs.select(range(128)), "validation": pairs.select(range(128, 160))}
        datasets.DatasetDict(splits).push_to_hub("user/reversed-reviews")
        print("{}")
    """
    run_python(push_dataset, hub_env(hub, folder / "home_dataset"), folder / "pairs.jsonl")

    translation = folder / "translation"
    run([*command("finetune-translation"), "--dataset_name", "user/reversed-reviews",
         "--source_lang", "en", "--target_lang", "xx", "--tokenizer_name", tokenizer_dir,
         "--config_overrides", TINY_MODEL, "--output_dir", translation, "--max_steps", 60, "--learning_rate", 3e-3,
         "--per_device_train_batch_size", 16, "--eval_strategy", "steps", "--eval_steps", 20, "--logging_steps", 5,
         "--predict_with_generate", "--num_beams", 1, "--max_target_length", 16, "--num_samples_to_write", 3,
         *QUIET], hub_env(hub, folder / "home_translation"))  # fmt: skip

    # The classifier starts from the translation model's encoder, taken from the Hub by --model_name_or_path.
    run([*PUSH_SCRIPT, translation, "--repo_id", "user/translation-base"], hub_env(hub, folder / "home_base"))
    sentiment_data = write_jsonl(folder / "reviews.jsonl", rows)
    sentiment = folder / "sentiment"
    run([*command("finetune-sentiment"), "--train_file", sentiment_data,
         "--validation_file", sentiment_data, "--max_eval_samples", 32, "--model_name_or_path",
         "user/translation-base", "--class_names", "negative,positive", "--output_dir", sentiment,
         "--max_steps", 60, "--learning_rate", 3e-3, "--per_device_train_batch_size", 16, "--eval_strategy", "steps",
         "--eval_steps", 20, "--logging_steps", 5, "--push_to_hub", "--hub_model_id", "user/sentiment",
         *QUIET], hub_env(hub, folder / "home_sentiment"))  # fmt: skip
    return SimpleNamespace(folder=folder, translation=translation, sentiment=sentiment)


PULL = """
    import json, sys
    import torch
    import hf_scratch_transformer  # noqa: F401
    from safetensors.torch import save_file
    from transformers import (AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification,
                              AutoTokenizer)
    from huggingface_hub import hf_hub_download

    repo_id, out, sources = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    report = {}
    for revision in sys.argv[4:]:
        config = AutoConfig.from_pretrained(repo_id, revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(repo_id, revision=revision)
        model = AutoModelForSeq2SeqLM.from_pretrained(repo_id, revision=revision).eval()
        bare = AutoModel.from_pretrained(repo_id, revision=revision)
        classifier = AutoModelForSequenceClassification.from_pretrained(repo_id, revision=revision, num_labels=2)
        save_file({k: v.clone() for k, v in model.state_dict().items()}, f"{out}/{revision}.safetensors")
        batch = tokenizer(sources, return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=8).tolist()
        report[revision] = {
            "config": type(config).__name__,
            "classes": [type(bare).__name__, type(classifier).__name__],
            "ids": ids,
            "readme": open(hf_hub_download(repo_id, "README.md", revision=revision)).read(),
        }
    print(json.dumps(report))
"""


def test_push_to_hub_script_then_pull_with_each_auto_class_at_two_revisions(hub, runs, tmp_path):
    before = folder_digest(runs.translation)
    pushed = run([*PUSH_SCRIPT, runs.translation, "--repo_id", "user/translation",
                  "--dataset_name", "user/reversed-reviews"], hub_env(hub, tmp_path / "home_push"))  # fmt: skip
    first = pushed.stdout.split("at commit ")[-1].strip()
    assert folder_digest(runs.translation) == before  # nothing written into the run
    assert files_at_head(hub, "user/translation") == {
        ".gitattributes", "README.md", "all_results.json", "config.json", "generation_config.json",
        "model.safetensors", "configuration_scratch_transformer.py", "modeling_scratch_transformer.py",
        "tokenizer.json", "tokenizer_config.json", "training_curves.svg", "attention.png",
    }  # fmt: skip

    # A second run (other weights) pushed to the same repo: a new commit, and the first still loads.
    second_run = tmp_path / "second_run"
    second_run.mkdir()
    for path in runs.translation.iterdir():
        if path.is_file():
            (second_run / path.name).write_bytes(path.read_bytes())
    model = AutoModelForSeq2SeqLM.from_pretrained(runs.translation)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(second_run)
    pushed = run([*PUSH_SCRIPT, second_run, "--repo_id", "user/translation", "--commit_message", "Second run"],
                 hub_env(hub, tmp_path / "home_push2"))  # fmt: skip
    second = pushed.stdout.split("at commit ")[-1].strip()
    assert second != first

    report = run_python(PULL, hub_env(hub, tmp_path / "home_pull"), "user/translation", tmp_path,
                        json.dumps(SOURCES), first, "main")  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(runs.translation)
    for revision, local in ((first, runs.translation), ("main", second_run)):
        model = AutoModelForSeq2SeqLM.from_pretrained(local)
        pulled = load_file(tmp_path / f"{revision}.safetensors")
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(pulled[name], tensor, rtol=0, atol=0)
        assert report[revision]["ids"] == greedy_ids(model, tokenizer)
        assert report[revision]["config"] == "ScratchTransformerConfig"
        assert report[revision]["classes"] == [
            "ScratchTransformerModel",
            "ScratchTransformerForSequenceClassification",
        ]

    # The card parses, and its model-index holds the run's real numbers.
    card = ModelCard(report[first]["readme"])
    results = json.loads((runs.translation / "all_results.json").read_text())
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "translation"
    assert data["datasets"] == ["user/reversed-reviews"] and data["license"] == "apache-2.0"
    metrics = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"bleu": results["eval_bleu"], "chrf": results["eval_chrf"], "loss": results["eval_loss"]}
    assert "![Training loss" in card.text and "trust_remote_code=True" in card.text and "Vaswani" in card.text
    assert "Second run" not in report[first]["readme"]


def test_script_push_to_hub_gives_the_same_files_and_a_working_pipeline(hub, runs, tmp_path):
    # The script pushed user/sentiment itself (Trainer's push, then ours): the same files as push_to_hub.py.
    run([*PUSH_SCRIPT, runs.sentiment, "--repo_id", "user/sentiment-cli"], hub_env(hub, tmp_path / "home_push"))
    assert files_at_head(hub, "user/sentiment") == files_at_head(hub, "user/sentiment-cli")
    assert "training_args.bin" not in files_at_head(hub, "user/sentiment")

    pulled = """
        import json
        import hf_scratch_transformer  # noqa: F401
        from huggingface_hub import ModelCard
        from transformers import pipeline

        classify = pipeline("text-classification", model="user/sentiment")
        outputs = [classify(text)[0] for text in ["the film was really wonderful", "the film was really awful"]]
        card = ModelCard.load("user/sentiment")
        print(json.dumps({"outputs": outputs, "card": card.data.to_dict()}))
    """
    report = run_python(pulled, hub_env(hub, tmp_path / "home_pull"))
    local = pipeline("text-classification", model=str(runs.sentiment))
    expected = [local(text)[0] for text in ["the film was really wonderful", "the film was really awful"]]
    assert [o["label"] for o in report["outputs"]] == [o["label"] for o in expected]
    assert {o["label"] for o in report["outputs"]} <= {"positive", "negative"}  # the run's id2label came along
    assert [o["score"] for o in report["outputs"]] == pytest.approx([o["score"] for o in expected], abs=1e-6)
    results = json.loads((runs.sentiment / "all_results.json").read_text())
    metrics = {m["type"]: m["value"] for m in report["card"]["model-index"][0]["results"][0]["metrics"]}
    assert metrics["accuracy"] == results["eval_accuracy"] and metrics["f1"] == results["eval_f1"]
    assert report["card"]["pipeline_tag"] == "text-classification"
    assert report["card"]["base_model"] == "user/translation-base"


def test_trust_remote_code_pull_without_the_package(hub, runs, tmp_path):
    run([*PUSH_SCRIPT, runs.translation, "--repo_id", "user/remote-code"], hub_env(hub, tmp_path / "home_push"))
    without_package = """
        import json, sys
        sys.modules["hf_scratch_transformer"] = None  # installed in editable mode: make sure it cannot be used
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

        tokenizer = AutoTokenizer.from_pretrained("user/remote-code", trust_remote_code=True)
        model = AutoModelForSeq2SeqLM.from_pretrained("user/remote-code", trust_remote_code=True).eval()
        batch = tokenizer(json.loads(sys.argv[1]), return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=8).tolist()
            logits = model(**batch, decoder_input_ids=batch["input_ids"][:, :4]).logits.tolist()
        print(json.dumps({"module": type(model).__module__, "ids": ids, "logits": logits}))
    """
    env = hub_env(hub, tmp_path / "home_pull")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = run_python(without_package, env, json.dumps(SOURCES), cwd=elsewhere)
    assert report["module"].startswith("transformers_modules")
    local = AutoModelForSeq2SeqLM.from_pretrained(runs.translation).eval()
    tokenizer = AutoTokenizer.from_pretrained(runs.translation)
    assert report["ids"] == greedy_ids(local, tokenizer)
    batch = tokenizer(SOURCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = local(**batch, decoder_input_ids=batch["input_ids"][:, :4]).logits
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, rtol=1e-5, atol=1e-5)


def test_an_adapter_pushed_and_pulled_with_auto_peft_model(hub, runs, tmp_path):
    from peft import LoraConfig, get_peft_model

    run([*PUSH_SCRIPT, runs.translation, "--repo_id", "user/base"], hub_env(hub, tmp_path / "home_base"))
    model = AutoModelForSeq2SeqLM.from_pretrained(runs.translation)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="SEQ_2_SEQ_LM", init_lora_weights=False
    )  # fmt: skip  (random B: the adapter changes the output)
    peft_model = get_peft_model(model, lora)
    peft_model.peft_config["default"].base_model_name_or_path = "user/base"
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir, save_embedding_layers=False)  # no lookup of user/base from here
    run([*PUSH_SCRIPT, adapter_dir, "--repo_id", "user/adapter"], hub_env(hub, tmp_path / "home_push"))
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= files_at_head(hub, "user/adapter")

    pulled = """
        import json, sys
        import torch
        import hf_scratch_transformer  # noqa: F401
        from huggingface_hub import ModelCard
        from peft import AutoPeftModelForSeq2SeqLM
        from transformers import AutoTokenizer

        model = AutoPeftModelForSeq2SeqLM.from_pretrained("user/adapter").eval()
        tokenizer = AutoTokenizer.from_pretrained("user/base")
        batch = tokenizer(json.loads(sys.argv[1]), return_tensors="pt", padding=True)
        with torch.no_grad():
            logits = model(**batch, decoder_input_ids=batch["input_ids"][:, :4]).logits
        print(json.dumps({"logits": logits.tolist(), "card": ModelCard.load("user/adapter").data.to_dict()}))
    """
    report = run_python(pulled, hub_env(hub, tmp_path / "home_pull"), json.dumps(SOURCES))
    batch = AutoTokenizer.from_pretrained(runs.translation)(SOURCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = peft_model.eval()(**batch, decoder_input_ids=batch["input_ids"][:, :4]).logits
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, rtol=1e-5, atol=1e-5)
    assert report["card"]["base_model"] == "user/base" and report["card"]["library_name"] == "peft"


# ---------------------------------------------------------------------------------------------------------------
# Failures: a clear message, no traceback, the run folder untouched
# ---------------------------------------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_run_is_refused_before_any_network_call(hub, tmp_path):
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "not_a_run" / "notes.txt").write_text("hello")
    requests_before = len(hub.requests)
    completed = run([*PUSH_SCRIPT, tmp_path / "not_a_run", "--repo_id", "user/nothing"],
                    hub_env(hub, tmp_path / "home"), check=False)  # fmt: skip
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert "is not a finished run" in completed.stderr and "config.json" in completed.stderr
    assert len(hub.requests) == requests_before


@pytest.mark.parametrize(
    ("token", "message"),
    [(None, "No Hugging Face token: set HF_TOKEN, or run `hf auth login`"), ("hf_wrong", "rejected the token (401)")],
    ids=["missing token", "rejected token"],
)
def test_a_missing_or_rejected_token_gets_a_clear_message(hub, runs, tmp_path, token, message):
    completed = run([*PUSH_SCRIPT, runs.translation, "--repo_id", "user/refused"],
                    hub_env(hub, tmp_path / "home", token=token), check=False)  # fmt: skip
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert message in completed.stderr, completed.stderr[-2000:]
    assert "hf_wrong" not in completed.stderr + completed.stdout  # the token is never printed
    assert hub.store.load("model", "user/refused") is None


def test_a_training_script_with_a_rejected_token_stops_before_training(hub, runs, tmp_path):
    arguments = ["--train_file", runs.folder / "reviews.jsonl", "--tokenizer_name", runs.folder / "tokenizer",
                 "--config_overrides", TINY_MODEL, "--output_dir", tmp_path / "run", "--max_steps", 1,
                 "--push_to_hub", "--hub_model_id", "user/never", *QUIET]  # fmt: skip
    script = command("finetune-sentiment")
    completed = run([*script, *arguments], hub_env(hub, tmp_path / "home", token="hf_wrong"), check=False)
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert "--push_to_hub: The Hub at" in completed.stderr and "rejected the token (401)" in completed.stderr
    assert not (tmp_path / "run").exists()


def test_the_server_dying_mid_push_gives_a_clear_error_and_a_second_push_succeeds(runs, tmp_path):
    storage = tmp_path / "storage"
    server = HubServer(storage, token=TOKEN).start()
    port = server.server_address[1]
    server.fail_on = lambda method, path: method == "POST" and "/commit/" in path
    before = folder_digest(runs.translation)
    completed = run([*PUSH_SCRIPT, runs.translation, "--repo_id", "user/interrupted"],
                    hub_env(server, tmp_path / "home"), check=False)  # fmt: skip
    server.thread.join(timeout=30)  # it stopped itself; free the port for the restart
    server.server_close()
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert "Lost the connection to the Hub" in completed.stderr and "run the same command again" in completed.stderr
    assert folder_digest(runs.translation) == before
    assert files_at_head(server, "user/interrupted") == {".gitattributes"}  # no partial commit

    restarted = HubServer(storage, token=TOKEN, port=port).start()
    try:
        run([*PUSH_SCRIPT, runs.translation, "--repo_id", "user/interrupted"], hub_env(restarted, tmp_path / "home"))
        assert "model.safetensors" in files_at_head(restarted, "user/interrupted")
        assert restarted.unknown_requests == []
    finally:
        restarted.stop()


@pytest.mark.parametrize(
    ("damage", "message"),
    [("weights cut short", "model.safetensors is"), ("config not JSON", "config.json is not valid JSON")],
)
def test_a_damaged_file_is_never_published(hub, runs, tmp_path, damage, message):
    """A truncated weights file (an interrupted copy) or a damaged JSON file stops the push before any network
    call, naming the file; nothing reaches the Hub."""
    run_dir = tmp_path / "run"
    shutil.copytree(runs.translation, run_dir)
    if damage == "weights cut short":
        weights = run_dir / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        (run_dir / "config.json").write_text('{"model_type": "scratch_transformer", ')
    requests_before = len(hub.requests)
    completed = run([*PUSH_SCRIPT, run_dir, "--repo_id", "user/damaged"], hub_env(hub, tmp_path / "home"), check=False)
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert message in completed.stderr and "Nothing was pushed" in completed.stderr, completed.stderr[-2000:]
    assert len(hub.requests) == requests_before and hub.store.load("model", "user/damaged") is None


def test_a_namespace_the_token_cannot_write_to_gets_the_hubs_reason(hub, runs, tmp_path):
    completed = run([*PUSH_SCRIPT, runs.translation, "--repo_id", "someone-else/model"],
                    hub_env(hub, tmp_path / "home"), check=False)  # fmt: skip
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert "refused the push to the namespace 'someone-else' (403)" in completed.stderr, completed.stderr[-2000:]
    assert "You don't have the rights" in completed.stderr and "set HF_TOKEN" not in completed.stderr


def test_a_hub_that_stops_answering_ends_the_push_with_a_message(runs, tmp_path):
    """A server that accepts the connection and never answers: the push ends after the read timeout
    (HF_HUB_DOWNLOAD_TIMEOUT, 2 s here), not never."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    env = {**hub_env(SimpleNamespace(url=f"http://127.0.0.1:{silent.getsockname()[1]}"), tmp_path / "home"),
           "HF_HUB_DOWNLOAD_TIMEOUT": "2", "HF_HUB_ETAG_TIMEOUT": "2"}  # fmt: skip
    try:
        started = time.time()
        completed = run([*PUSH_SCRIPT, runs.translation, "--repo_id", "user/silent"], env, check=False, timeout=120)
        assert time.time() - started < 90
    finally:
        silent.close()
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert "did not answer in time" in completed.stderr, completed.stderr[-2000:]


CT2_PULL = """
    import json, sys
    import ctranslate2
    from huggingface_hub import snapshot_download
    from transformers import AutoTokenizer

    folder = snapshot_download(sys.argv[1], allow_patterns=["ctranslate2/*", "tokenizer*"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    translator = ctranslate2.Translator(f"{folder}/ctranslate2")
    sources = [tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids) for text in json.loads(sys.argv[2])]
    results = translator.translate_batch(sources, beam_size=2, max_decoding_length=8, min_decoding_length=0,
                                         length_penalty=1.0, num_hypotheses=1)
    print(json.dumps([tokenizer.convert_tokens_to_ids(result.hypotheses[0]) for result in results]))
"""


def test_a_translator_is_pushed_with_its_ctranslate2_export_which_translates_as_generate(hub, runs, tmp_path):
    """`--ctranslate2 int8`: the export goes into the repo's ctranslate2/ folder in the same commit, the card says
    how to serve it, and what a user pulls translates as the model's generate() does."""
    pytest.importorskip("ctranslate2")
    run([*PUSH_SCRIPT, runs.translation, "--repo_id", "user/translation-ct2", "--ctranslate2", "int8"],
        hub_env(hub, tmp_path / "home_push"))  # fmt: skip
    files = files_at_head(hub, "user/translation-ct2")
    assert {"model.safetensors", "ctranslate2/model.bin", "ctranslate2/config.json",
            "ctranslate2/shared_vocabulary.json"} <= files  # fmt: skip
    pulled = run(["-c", textwrap.dedent(CT2_PULL), "user/translation-ct2", json.dumps(SOURCES)],
                 hub_env(hub, tmp_path / "home_pull"))  # fmt: skip
    ids = json.loads(pulled.stdout.strip().splitlines()[-1])
    tokenizer = AutoTokenizer.from_pretrained(runs.translation)
    model = AutoModelForSeq2SeqLM.from_pretrained(runs.translation).eval()
    batch = tokenizer(SOURCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model.generate(**batch, num_beams=2, max_new_tokens=8, do_sample=False)
    assert [tokenizer.decode(row, skip_special_tokens=True) for row in ids] == tokenizer.batch_decode(
        expected, skip_special_tokens=True
    )
    repo = hub.store.load("model", "user/translation-ct2")
    readme = repo["commits"][repo["branches"]["main"]]["files"]["README.md"]
    card = hub.store.blob_path(readme["blob"]).read_text()
    assert "### Serving with CTranslate2" in card and "(int8" in card
    assert 'snapshot_download("user/translation-ct2"' in card
