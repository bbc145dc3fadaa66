"""The web app (app/app.py), driven through its HTTP API with `gradio_client` as a browser drives it: a real server on
127.0.0.1 with real uploads, fine-tuning runs to their end (the package's scripts in child processes), a push to
the test Hub (`hub_server.py`), the Try tab on the pushed model and on a run's model, and the files a user gets
wrong, each with its message on the page.

The server runs in a child process for the module, with its own runs folder, Hugging Face cache and the test Hub
as HF_ENDPOINT, and, as a Space's owner would set it, HF_TOKEN: the tests probe it as hostile visitors would (two
clients, each a visitor), and check that the server's token never reaches one of them.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO_ROOT, toy_reviews, word_level_tokenizer, write_jsonl
from gradio_client import Client, handle_file
from hub_server import TOKEN, files_at_head, hub_env

from hf_scratch_transformer.demo_data import make_demo_splits

# The slow tier (make test-slow): a served app, real fine-tuning runs and two visitors.
pytestmark = pytest.mark.slow

MAX_FILE_MB = 1
RUN_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app(hub, demo_run, tmp_path_factory):
    """The app serving on a free port, with HF_TOKEN set on the server, listing two model folders: the demo's
    model (as "model") and a damaged one ("broken_model"). Its log is checked for the token when the module ends."""
    folder = tmp_path_factory.mktemp("app")
    broken = folder / "broken_model"  # a tokenizer, and a config.json that the script cannot read
    word_level_tokenizer(["good", "bad"]).save_pretrained(broken)
    (broken / "config.json").write_text("{not json")
    port = free_port()
    env = hub_env(hub, folder / "home", token=TOKEN)
    # The runs' training may use the cores this process has: all of them, or its share under pytest-xdist.
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "app" / "app.py"), "--port", str(port), "--runs_dir",
             str(folder / "runs"), "--max_file_mb", str(MAX_FILE_MB), "--model_dir", str(demo_run.model),
             "--model_dir", str(broken)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            assert server.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "the app did not start in 3 minutes"
            time.sleep(1)
    yield SimpleNamespace(url=url, runs=folder / "runs", home=folder / "home")
    server.terminate()  # as Ctrl+C: Gradio closes, and a run still going is stopped
    assert server.wait(timeout=60) == 0
    assert TOKEN not in log_path.read_text()


@pytest.fixture
def client(app):
    return Client(app.url, verbose=False)


def wait_for_the_run(client) -> tuple:
    """Poll the status endpoint (the page's timer) until the run is no longer going; returns the last status:
    (status, progress, loss curve, results, predictions, attention picture, timer)."""
    deadline = time.time() + RUN_TIMEOUT_S
    while True:
        status = client.predict(api_name="/run_status")
        if not status[-1]["active"]:
            return status
        assert time.time() < deadline, status[0]
        time.sleep(1)


def run_folders(app) -> set:
    return {path.name for path in app.runs.iterdir() if path.name != "uploads"} if app.runs.is_dir() else set()


def reviews_csv(path, count: int = 200):
    rows = toy_reviews(count, seed=0)
    lines = ["review,sentiment"] + [f"{row['sentence']},{['negative', 'positive'][row['label']]}" for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_becomes_a_fine_tuned_evaluated_pushed_model(app, client, hub, tmp_path):
    upload = reviews_csv(tmp_path / "reviews.csv")
    text_column, label_column, message = client.predict(
        handle_file(upload), "classification", api_name="/inspect_file"
    )
    assert [choice for choice, _ in text_column["choices"]] == ["review", "sentiment"]
    assert (text_column["value"], label_column["value"]) == ("review", "sentiment")
    assert "200 rows" in message

    settings = ["classification", "review", "sentiment", "new", "", 30, 3e-3]
    started, _ = client.predict(handle_file(upload), *settings, api_name="/start_run")
    assert started.startswith("Started") and "180 rows to train on, 20 held out" in started, started
    refused, _ = client.predict(handle_file(upload), *settings, api_name="/start_run")
    assert "Your run is still going" in refused
    folder_name = started.split("**")[1]

    status, progress, curve, results, samples, picture, _ = wait_for_the_run(client)
    assert status.startswith("**Done**"), status
    assert 'value="30" max="30"' in progress
    steps = [step for step, _ in curve["data"]]
    assert steps == list(range(1, 31))  # the loss of every step, for the live curve
    assert "Validation accuracy" in results and "20 held-out rows" in results
    assert samples["value"]["headers"] == ["text", "label", "model"] and len(samples["value"]["data"]) == 5
    assert not picture["visible"]  # a classifier: no translation to draw

    # Everything the run made is in its folder, the upload unchanged; the scripts' data cache too.
    folder = app.runs / folder_name
    assert (folder / "upload" / "reviews.csv").read_bytes() == upload.read_bytes()
    assert sum(1 for _ in (folder / "data" / "train.jsonl").open()) == 180
    assert (folder / "model" / "model.safetensors").is_file() and (folder / "cache").is_dir()
    assert not (app.home / "datasets").exists()

    # Push: a wrong token is refused and not echoed; the right one pushes the run with its card.
    refused = client.predict("user/app-sentiment", "hf_wrong_token", api_name="/push")
    assert "rejected the token" in refused and "hf_wrong_token" not in refused
    pushed = client.predict("user/app-sentiment", TOKEN, api_name="/push")
    assert pushed.startswith("Pushed to [user/app-sentiment]"), pushed
    assert TOKEN not in pushed
    assert {"model.safetensors", "README.md", "tokenizer.json"} <= files_at_head(hub, "user/app-sentiment")
    assert not any(TOKEN.encode() in path.read_bytes() for path in folder.rglob("*") if path.is_file())

    # The Try tab loads the pushed model from the Hub and classifies with it, attention beside.
    description = client.predict("user/app-sentiment", api_name="/load_model")
    assert "a classifier into negative, positive" in description
    translation, scores, attention = client.predict(
        "user/app-sentiment", "the film was really wonderful", 4, 32, api_name="/run_model"
    )
    assert {item["label"] for item in scores["value"]["confidences"]} == {"negative", "positive"}
    assert not translation["visible"] and attention["type"] == "matplotlib"


def test_a_translation_from_json_lines_starting_from_a_folder(app, client, demo_run, tmp_path):
    pairs = make_demo_splits(train_size=100, validation_size=0, test_size=0, seed=1)["train"]["translation"]
    upload = write_jsonl(tmp_path / "numbers.jsonl", [{"translation": pair} for pair in pairs])
    text_column, label_column, _ = client.predict(handle_file(upload), "translation", api_name="/inspect_file")
    assert (text_column["value"], label_column["value"]) == ("translation.en", "translation.de")
    assert text_column["label"] == "Source column"

    settings = ["translation", "translation.en", "translation.de", "existing", "model", 10, 1e-4]  # a listed one
    started, _ = client.predict(handle_file(upload), *settings, api_name="/start_run")
    assert started.startswith("Started") and "90 rows to train on, 10 held out" in started, started
    status, _, _, results, samples, picture, _ = wait_for_the_run(client)
    assert status.startswith("**Done**"), status
    assert "Validation chrF" in results and "BLEU" in results
    assert samples["value"]["headers"] == ["source", "reference", "model"] and len(samples["value"]["data"]) == 5
    assert picture["visible"] and Path(picture["value"]).read_bytes().startswith(b"\x89PNG")  # the run's attention

    # "Try this model" opens the run's model in the Try tab: a translator, with its attention map.
    model_name, description = client.predict("", api_name="/try_run_model")
    assert model_name.endswith("-translation") and "a translator" in description  # the run's name, no path
    translation, scores, attention = client.predict(model_name, "three hundred", 2, 16, api_name="/run_model")
    assert translation["visible"] and translation["value"] and not scores["visible"]
    assert attention["type"] == "matplotlib" and attention["plot"].startswith("data:image")


def test_a_crashing_run_leaves_the_app_running_and_a_run_can_be_stopped(app, client, tmp_path):
    upload = reviews_csv(tmp_path / "reviews.csv", count=40)
    settings = ["classification", "review", "sentiment", "existing", "broken_model", 10, 1e-3]
    started, _ = client.predict(handle_file(upload), *settings, api_name="/start_run")
    assert started.startswith("Started"), started
    status = wait_for_the_run(client)[0]
    assert status.startswith("**The run failed**") and "config.json is not a JSON object" in status, status
    assert "Traceback" not in status and str(app.runs.parent) not in status  # no folder of the server

    started, _ = client.predict(handle_file(upload), "classification", "review", "sentiment", "new", "", 1000, 1e-3,
                                api_name="/start_run")  # fmt: skip
    assert started.startswith("Started"), started
    folder = app.runs / started.split("**")[1]
    assert client.predict(api_name="/stop_run") == f"Stopped {folder.name}."
    assert wait_for_the_run(client)[0].startswith("**Stopped**")
    deadline = time.time() + 30  # the child's process group has had SIGTERM: nothing of the run may go on
    while processes_mentioning(str(folder)) and time.time() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(str(folder)) == []


def processes_mentioning(text: str) -> list[str]:
    """The command lines of the running processes that contain `text`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # it ended meanwhile
        if text in command:
            found.append(command)
    return found


BAD_FILES = {
    "empty": ("data.csv", b"", "data.csv is empty."),
    "header only": ("data.csv", b"text,label\n", "data.csv has no rows."),
    "too many columns": (
        "data.csv",
        ",".join(f"c{i}" for i in range(1001)).encode() + b"\n" + b"1," * 1000 + b"1\n",
        "more than 1000 columns",
    ),
    "nested too deeply": (
        "data.jsonl",
        b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"\n",
        "nests its JSON too deeply",
    ),
    "not UTF-8": ("data.csv", "text,label\nüber,1\n".encode("latin-1"), "is not UTF-8 text"),
    "not JSON": ("data.jsonl", b'{"text": "good", "label": 1}\n{"text": oops\n', "line 2 is not JSON"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_file_gets_a_clear_message_and_no_run(app, client, tmp_path, case):
    name, content, expected = BAD_FILES[case]
    upload = tmp_path / name
    upload.write_bytes(content)
    before = run_folders(app)
    *_, message = client.predict(handle_file(upload), "classification", api_name="/inspect_file")
    assert message.startswith("⚠️") and expected in message and "Traceback" not in message, message
    started, _ = client.predict(handle_file(upload), "classification", "text", "label", "new", "", 10, 1e-3,
                                api_name="/start_run")  # fmt: skip
    assert started.startswith("⚠️") and expected in started, started
    assert run_folders(app) == before


BAD_CHOICES = {
    "no such column": (["review", "stars"], "The file has no column named 'stars' (the label column)"),
    "one class": (["review", "one_class"], "has a single class ('same')"),
    "text as labels": (["sentiment", "review"], "it looks like text, not labels"),
    "same column twice": (["review", "review"], "The two columns must differ"),
}


@pytest.mark.parametrize("case", BAD_CHOICES)
def test_a_bad_choice_of_columns_gets_a_clear_message_and_no_run(app, client, tmp_path, case):
    columns, expected = BAD_CHOICES[case]
    rows = toy_reviews(30, seed=0)
    lines = ["review,sentiment,one_class"] + [f"{row['sentence']},{row['label']},same" for row in rows]
    upload = tmp_path / "reviews.csv"
    upload.write_text("\n".join(lines) + "\n")
    before = run_folders(app)
    started, _ = client.predict(handle_file(upload), "classification", *columns, "new", "", 10, 1e-3,
                                api_name="/start_run")  # fmt: skip
    assert started.startswith("⚠️") and expected in started, started
    assert run_folders(app) == before


def server_paths(app) -> list[str]:
    """Folders of the server that a visitor might probe: an empty one, a real model folder, one that does not exist,
    a system folder, and ones relative to the server's working folder."""
    empty = app.runs.parent / "empty_folder"
    empty.mkdir(exist_ok=True)
    return [str(empty), str(app.runs.parent / "broken_model"), "/no/such/folder", "/etc", "../../etc/passwd",
            "runs/demo/model", "~/.cache/huggingface"]  # fmt: skip


def test_no_path_of_the_server_is_loaded_or_told_apart(app, client, tmp_path):
    """Try and the starting model take Hub ids, listed models and the visitor's runs only: every path of the server
    gets the same message, whether it exists or not, holds a model or not."""
    upload = reviews_csv(tmp_path / "reviews.csv", count=20)
    for path in server_paths(app):
        started, _ = client.predict(handle_file(upload), "classification", "review", "sentiment", "existing",
                                    path, 10, 1e-3, api_name="/start_run")  # fmt: skip
        described = client.predict(path, api_name="/load_model")
        for message in (started, described):
            assert message.startswith("⚠️") and f"{path!r} is not a model this app loads" in message, message
            assert "config.json" not in message and "There is no folder" not in message
    assert run_folders(app).isdisjoint({"empty_folder"})


def test_the_api_shows_no_path_of_the_server(app):
    """The page's API description (what gradio_client reads) names no folder of the server."""
    info = Client(app.url, verbose=False).view_api(print_info=False, return_format="dict")
    assert str(app.runs.parent) not in json.dumps(info)


def test_too_few_rows_are_refused(app, client, tmp_path):
    upload = reviews_csv(tmp_path / "reviews.csv", count=6)
    started, _ = client.predict(handle_file(upload), "classification", "review", "sentiment", "new", "", 10, 1e-3,
                                api_name="/start_run")  # fmt: skip
    assert "Only 6 rows have both 'review' and 'sentiment' filled in" in started, started


def test_the_space_files_and_their_requirements(hub, tmp_path):
    out = tmp_path / "space"
    subprocess.run([sys.executable, REPO_ROOT / "app" / "space.py", "--out", out], check=True, timeout=120)
    constraints = {
        line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
        for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    requirements = [line for line in (out / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    pinned = dict(line.split("==") for line in requirements)
    assert {"torch", "transformers", "matplotlib", "peft", "datasets", "pandas"} <= set(pinned)
    assert not {"pytest", "ruff", "gradio"} & set(pinned)  # dev tools stay home; the Space installs its Gradio
    assert all(constraints[name] == version for name, version in pinned.items())
    card = (out / "README.md").read_text()
    assert "sdk: gradio" in card and f"sdk_version: {constraints['gradio']}" in card and "app_file: app.py" in card
    # The Space's own copy of the package is what its app imports (Python looks beside app.py first), whole.
    imported = subprocess.run(
        [sys.executable, "-c", "import fine_tuning, hf_scratch_transformer.training.finetune_sentiment as script; "
         "from hf_scratch_transformer.training.model_card import TEMPLATES; "
         "print(script.__file__); print(TEMPLATES / 'sentiment.md')"],
        cwd=out, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr[-3000:]
    script, template = map(Path, imported.stdout.split())
    assert script.is_relative_to(out) and template.is_relative_to(out) and template.is_file()

    pushed = subprocess.run(
        [sys.executable, REPO_ROOT / "app" / "space.py", "--repo_id", "user/scratch-app"],
        env=hub_env(hub, tmp_path / "home"), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    written = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()}
    assert files_at_head(hub, "user/scratch-app", repo_type="space") == written | {".gitattributes"}


def owner_pushes(hub, demo_run, tmp_path, repo_id: str, private: bool) -> None:
    """The server's owner pushes the demo model with their token (the one the server holds too)."""
    command = [sys.executable, "-m", "hf_scratch_transformer.training.cli", "push-to-hub", str(demo_run.model),
               "--repo_id", repo_id, *(["--private"] if private else [])]  # fmt: skip
    pushed = subprocess.run(command, env=hub_env(hub, tmp_path / "owner"), capture_output=True, text=True, timeout=300)
    assert pushed.returncode == 0, pushed.stderr[-3000:]


def test_hub_models_load_anonymously_so_the_owners_private_model_stays_private(app, hub, demo_run, tmp_path):
    owner_pushes(hub, demo_run, tmp_path, "user/public-numbers", private=False)
    owner_pushes(hub, demo_run, tmp_path, "user/secret-numbers", private=True)
    visitor = Client(app.url, verbose=False)
    assert "a translator" in visitor.predict("user/public-numbers", api_name="/load_model")
    for name in ("user/secret-numbers", "user/no-such-model"):
        described = visitor.predict(name, api_name="/load_model")
        assert described.startswith("⚠️") and "is not a public model on the Hub" in described, described
    upload = reviews_csv(tmp_path / "reviews.csv", count=20)
    started, _ = visitor.predict(handle_file(upload), "classification", "review", "sentiment", "existing",
                                 "user/secret-numbers", 10, 1e-3, api_name="/start_run")  # fmt: skip
    assert "is not a public model on the Hub" in started


def test_each_visitor_has_their_own_run_and_the_server_runs_one_at_a_time(app, hub, tmp_path):
    """Two visitors (two clients, two sessions): the second sees nothing of the first one's run, can neither stop
    nor push it, and is told the server is busy; the first stops their own."""
    first, second = Client(app.url, verbose=False), Client(app.url, verbose=False)
    upload = reviews_csv(tmp_path / "reviews.csv", count=40)
    settings = ["classification", "review", "sentiment", "new", "", 5000, 1e-3]
    started, _ = first.predict(handle_file(upload), *settings, api_name="/start_run")
    assert started.startswith("Started"), started
    name = started.split("**")[1]

    status = second.predict(api_name="/run_status")
    assert status[0].startswith("No run yet") and name not in json.dumps(status)
    assert second.predict(api_name="/stop_run") == "You have no run going."
    assert second.predict("user/stolen", "", api_name="/push") == "⚠️ You have no finished run to push."
    refused, _ = second.predict(handle_file(upload), *settings, api_name="/start_run")
    assert refused.startswith("⚠️ The server is busy") and name not in refused
    assert hub.store.load("model", "user/stolen") is None

    assert name in first.predict(api_name="/run_status")[0]
    assert str(app.runs) not in first.predict(api_name="/run_status")[0]
    assert first.predict(api_name="/stop_run") == f"Stopped {name}."
    assert wait_for_the_run(first)[0].startswith("**Stopped**")


def test_pushes_use_the_visitors_token_never_the_servers(app, client, hub, tmp_path):
    """The server holds HF_TOKEN, and a visitor who types none (or only spaces) is refused: nothing is pushed.
    A token with a line break is refused without being echoed."""
    upload = reviews_csv(tmp_path / "reviews.csv", count=40)
    started, _ = client.predict(handle_file(upload), "classification", "review", "sentiment", "new", "", 5, 3e-3,
                                api_name="/start_run")  # fmt: skip
    assert wait_for_the_run(client)[0].startswith("**Done**")
    for token in ("", "   "):
        refused = client.predict("user/owners-repo", token, api_name="/push")
        assert refused.startswith("⚠️ Enter your Hub token"), refused
    injected = client.predict("user/owners-repo", f"{TOKEN}\nX-Injected: 1", api_name="/push")
    assert injected.startswith("⚠️ The token holds") and TOKEN not in injected and "X-Injected" not in injected
    assert hub.store.load("model", "user/owners-repo") is None


def test_labels_that_look_like_flags_train(app, client, tmp_path):
    """Labels -1 and 1 reach the script as one argument (`--class_names=-1,1`), not as a flag."""
    rows = toy_reviews(40, seed=0)
    upload = tmp_path / "signed.csv"
    upload.write_text("text,label\n" + "".join(f"{row['sentence']},{2 * row['label'] - 1}\n" for row in rows))
    started, _ = client.predict(handle_file(upload), "classification", "text", "label", "new", "", 5, 3e-3,
                                api_name="/start_run")  # fmt: skip
    assert started.startswith("Started"), started
    status = wait_for_the_run(client)
    assert status[0].startswith("**Done**"), status[0]
    assert {row[1] for row in status[4]["value"]["data"]} <= {"-1", "1"}


def test_a_try_costs_what_the_sliders_allow_whatever_the_api_sends(app, client):
    """Beams and new tokens beyond the sliders are refused; 20,000 characters at the sliders' maxima are cut to the
    app's limit and the model's positions, and the answer comes in seconds (it grew the app to 22 GB before)."""
    for beams, tokens in ((99, 64), (4, 10_000)):
        with pytest.raises(Exception, match="greater than maximum value"):
            client.predict("model", "seven", beams, tokens, api_name="/run_model")
    started = time.time()
    translation, _, _ = client.predict("model", "seven " * 3400, 8, 256, api_name="/run_model")
    assert time.time() - started < 120
    assert translation["visible"] and translation["value"]


def test_a_translator_runs_through_ctranslate2_as_through_generate(app, client):
    """The Engine choice: the model exported to CTranslate2 in int8 (once, on its first such Try) translates as
    generate() does, greedy and beam, and the attention is drawn over that translation."""
    pytest.importorskip("ctranslate2")
    for source, beams in (("three hundred forty-two", 1), ("seven thousand and five", 4)):
        by_torch, _, _ = client.predict("model", source, beams, 32, "PyTorch generate()", api_name="/run_model")
        by_ctranslate2, _, attention = client.predict(
            "model", source, beams, 32, "CTranslate2 int8", api_name="/run_model"
        )
        assert by_ctranslate2["value"] == by_torch["value"] and by_torch["value"], (by_torch, by_ctranslate2)
        assert by_ctranslate2["label"] == "Translation (CTranslate2 int8)"
        assert attention["type"] == "matplotlib"
    exports = list((app.runs / "ctranslate2").iterdir())
    assert len(exports) == 1 and (exports[0] / "model.bin").is_file()
    with pytest.raises(Exception, match="(?i)engine|choices"):
        client.predict("model", "seven", 1, 8, "TensorRT", api_name="/run_model")


def test_an_upload_over_the_limit_is_refused_before_it_is_stored(app, client, tmp_path):
    upload = tmp_path / "huge.csv"
    upload.write_bytes(b"text,label\n" + b"a long review,1\n" * 80_000)  # 1.3 MB, over the 1 MB limit
    with pytest.raises(Exception, match="(?i)file size|too large|exceeds|413"):
        client.predict(handle_file(upload), "classification", api_name="/inspect_file")
    stored = [path for path in (app.runs / "uploads").rglob("huge.csv")] if (app.runs / "uploads").is_dir() else []
    assert stored == []


def test_old_and_surplus_finished_runs_are_deleted_when_a_run_starts(tmp_path):
    """RunManager.clean_up, as a start calls it: finished runs beyond the newest `keep_runs`, and those older than
    `max_age_s`, go with their folders; a run that is going stays whatever its age."""
    spec = importlib.util.spec_from_file_location("app_fine_tuning", REPO_ROOT / "app" / "fine_tuning.py")
    fine_tuning = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fine_tuning)
    manager = fine_tuning.RunManager(tmp_path, max_file_bytes=1, keep_runs=2, max_age_s=3600)
    settings = fine_tuning.RunSettings("classification", "text", "label", "", 10, 1e-3)
    ages = {"oldest": 30, "old": 20, "recent": 10, "expired": 7200, "going": 9000}
    for name, age in ages.items():
        (tmp_path / name).mkdir()
        run = fine_tuning.Run(tmp_path / name, "visitor", settings, 9, 1, [], phase="done")
        run.started = time.time() - age
        manager.runs.append(run)
    manager.runs[-1].phase = "training"  # "going" is active
    manager.runs.sort(key=lambda run: run.started)  # oldest first, as they were started
    manager.clean_up()
    assert sorted(run.folder.name for run in manager.runs) == ["going", "old", "recent"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["going", "old", "recent"]


def test_a_file_of_another_type_is_refused_by_the_upload_field(app, client, tmp_path):
    """Only .csv, .jsonl and .json reach the app's code: Gradio's file field checks the type on the server too."""
    upload = tmp_path / "tool.exe"
    upload.write_bytes(b"MZ" + b"\0" * 100)
    with pytest.raises(Exception, match="Invalid file type"):
        client.predict(handle_file(upload), "classification", api_name="/inspect_file")
