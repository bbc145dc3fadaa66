"""A web app for the scratch Transformer: try a model, and fine-tune one from a CSV or JSON Lines file.

    make app                                  # or: python app/app.py [--port 7860] [--runs_dir runs/app]

- Try: load a model (a run folder, or a Hub id), translate with a beam size and a length limit, or classify
  (every label with its score), and see the attention of that input beside the output. A translator runs through
  `generate()` or, with the `export` extra installed, through CTranslate2 in int8 (what serving would use: the
  model is exported once, on its first such Try).
- Fine-tune: upload a file, pick the task and the columns (offered from the file's header), a starting model (a new
  small one, or a folder / Hub id), steps and learning rate, and start. The run is the package's own training script
  in a child process (a crash ends the run, never the app); the page follows its loss, then shows the validation
  metric, a few predictions and a button that pushes the model to the Hub.

Runs go to `--runs_dir` (app/fine_tuning.py lists what a run folder holds), and so do Gradio's copies of the
uploads (`uploads/`): GRADIO_TEMP_DIR is set before Gradio is imported, which is when Gradio reads it. The HTTP API
(`gradio_client`) reaches every button (see the footer's "Use via API").

Safe to serve to strangers (a public Space), as every visitor is one:
- a visitor's runs are theirs (their page's session): nobody else sees, stops or pushes them; at most `--max_runs`
  go at once, one a visitor; old runs are deleted (`--keep_runs`, a day);
- models come from the public Hub, loaded anonymously (app/model_access.py), from the folders listed with
  `--model_dir`, or from the visitor's own runs; no other path of the server is read, and no message shows one;
- a push uses the token the visitor types. The server's own HF_TOKEN is used only with `--owner_namespace NS`, and
  then only for repos under NS/ (the page says so): for a Space its owner alone uses;
- work is bounded: uploads (`--max_file_mb`, checked before they are written), columns, input length, beams and
  output tokens.
"""

import argparse
import atexit
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

# Where `make demo` and the runs of a checkout live; a Space runs this file from its own root (app/space.py), whose
# runs/ is then the one beside it.
REPO_ROOT = Path(__file__).resolve().parents[1] if Path(__file__).parent.name == "app" else Path(__file__).parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--runs_dir", type=Path, default=REPO_ROOT / "runs" / "app", help="Where runs are written.")
    parser.add_argument("--max_file_mb", type=float, default=50, help="The largest file a user may fine-tune on.")
    parser.add_argument(
        "--model_dir",
        type=Path,
        action="append",
        default=[],
        help="A model folder visitors may load and start from, by its folder name (repeatable).",
    )
    parser.add_argument(
        "--owner_namespace",
        default=None,
        help="Let pushes without a visitor token use the server's HF_TOKEN, for repos under this "
        "namespace only: for a private deployment.",
    )
    parser.add_argument("--max_runs", type=int, default=1, help="Runs that may go at once (one a visitor).")
    parser.add_argument("--keep_runs", type=int, default=20, help="Finished runs kept (each for a day at most).")
    parser.add_argument("--max_hub_model_mb", type=float, default=500, help="The largest Hub model loaded.")
    return parser.parse_args()


ARGS = parse_args()
os.environ["GRADIO_TEMP_DIR"] = str(ARGS.runs_dir.resolve() / "uploads")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a machine that may be offline

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from fine_tuning import (  # noqa: E402
    SAMPLES,
    TASKS,
    DataError,
    Run,
    RunManager,
    RunRefused,
    RunSettings,
    pick_columns,
    read_table,
)
from huggingface_hub import constants, get_token  # noqa: E402
from model_access import ModelAccess, ModelRefused  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from hf_scratch_transformer.training.plot_attention import load_model_and_tokenizer  # noqa: E402
from hf_scratch_transformer.training.push_to_hub import PushError, push_run  # noqa: E402
from hf_scratch_transformer.visualization import attention_maps, draw_attention  # noqa: E402

MANAGER = RunManager(
    ARGS.runs_dir.resolve(), max_file_bytes=int(ARGS.max_file_mb * 1e6), max_runs=ARGS.max_runs,
    keep_runs=ARGS.keep_runs,
)  # fmt: skip
DEMO_MODEL = REPO_ROOT / "runs" / "demo" / "model"  # what `make demo` trains, offered first when it is there
ACCESS = ModelAccess(
    listed={**({"demo": DEMO_MODEL} if DEMO_MODEL.is_dir() else {}),
            **{folder.resolve().name: folder.resolve() for folder in ARGS.model_dir}},
    hub_cache=ARGS.runs_dir.resolve() / "hub",
    max_hub_bytes=int(ARGS.max_hub_model_mb * 1e6),
)  # fmt: skip
LOADED: dict[str, tuple] = {}  # the model last loaded in the Try tab: folder -> (model, tokenizer)
# The engines a translator can run on in the Try tab; CTranslate2 where the `export` extra is installed.
PYTORCH, CTRANSLATE2 = "PyTorch generate()", "CTranslate2 int8"
ENGINES = [PYTORCH] + ([CTRANSLATE2] if importlib.util.find_spec("ctranslate2") else [])
EXPORTED: dict[str, object] = {}  # the translator last exported for CTranslate2: folder -> its ctranslate2.Translator
EXPORT_LOCK = threading.Lock()  # two visitors trying one model at once export it once
MAX_INPUT_CHARS, MAX_BEAMS, MAX_NEW_TOKENS = 1000, 8, 256  # what one Try may cost: bounded whatever the API sends
PREDICTIONS: dict[Path, pd.DataFrame] = {}  # run folder -> its validation predictions, made once
# task -> (name, key in all_results.json, format) of the validation metrics shown
METRICS = {"classification": [("accuracy", "eval_accuracy", "{:.1%}"), ("F1", "eval_f1", "{:.3f}")],
           "translation": [("chrF", "eval_chrf", "{:.1f}"), ("BLEU", "eval_bleu", "{:.1f}")]}  # fmt: skip
SAMPLE_COLUMN_WIDTHS = {"classification": ["60%", "20%", "20%"], "translation": ["34%", "33%", "33%"]}


# ---------------------------------------------------------------------------------------------------------------
# Try
# ---------------------------------------------------------------------------------------------------------------


def visitor(request: gr.Request) -> str:
    """Who is asking: the page's session (each browser tab, each API client has its own)."""
    return request.session_hash or ""


def own_models(request: gr.Request) -> dict[str, Path]:
    """The visitor's finished runs, by name -> their model folder."""
    owner = visitor(request)
    return {run.folder.name: run.model_dir for run in MANAGER.runs if run.owner == owner and run.phase == "done"}


def get_model(name: str, request: gr.Request) -> tuple:
    """The model, tokenizer and folder a visitor named (see model_access.py), loaded once (only the last one
    stays)."""
    name = name.strip()
    if not name:
        raise gr.Error("Enter a model: a public Hub id such as user/name, a listed model, or one of your runs.")
    try:
        folder, _ = ACCESS.resolve(name, own_models(request))
    except ModelRefused as error:
        raise gr.Error(str(error)) from None
    if str(folder) not in LOADED:
        try:
            loaded = load_model_and_tokenizer(str(folder))
        except (OSError, ValueError):  # a file missing or damaged: the message would name the server's folder
            raise gr.Error(
                f"Could not load {name!r}: its weights, config or tokenizer are missing or damaged."
            ) from None
        LOADED.clear()
        LOADED[str(folder)] = loaded
    return (*LOADED[str(folder)], folder)


def load_model(name: str, request: gr.Request):
    """Load the model; say what it is, and show the controls of its task."""
    try:
        model, _, _ = get_model(name, request)
    except gr.Error as error:
        return f"⚠️ {error.message}", gr.Button(), gr.Row()
    config = model.config
    parameters = sum(parameter.numel() for parameter in model.parameters())
    if model.can_generate():
        kind = f"a translator ({config.encoder_layers} + {config.decoder_layers} layers"
    else:
        kind = f"a classifier into {', '.join(config.id2label.values())} ({config.encoder_layers} encoder layers"
    description = f"**{name.strip()}**: {kind}, d_model {config.d_model}, {parameters / 1e6:.2f} M parameters)."
    translator = model.can_generate()
    return description, gr.Button("Translate" if translator else "Classify"), gr.Row(visible=translator)


def load_named_model(name: str, request: gr.Request):
    """On opening the page: load the model already named (the demo's), or leave the page as it is."""
    return load_model(name, request) if name.strip() else ("", gr.Button(), gr.Row())


def bounded_input(text: str, tokenizer, max_tokens: int) -> str:
    """The text cut to MAX_INPUT_CHARS characters and to the tokens the model has positions for."""
    ids = tokenizer(text[:MAX_INPUT_CHARS], truncation=True, max_length=max_tokens)["input_ids"]
    return tokenizer.decode(ids, skip_special_tokens=True)


def ctranslate2_translator(folder: Path):
    """The translator in `folder` exported to CTranslate2 in int8 (under --runs_dir, named by the weights it was
    made from), and loaded; only the last one stays, on disk and in memory."""
    import ctranslate2

    from hf_scratch_transformer.export import export_ctranslate2

    weights = folder / "model.safetensors"
    key = hashlib.sha256(f"{folder}:{weights.stat().st_mtime_ns}:{weights.stat().st_size}".encode()).hexdigest()
    with EXPORT_LOCK:
        if key not in EXPORTED:
            exports = ARGS.runs_dir.resolve() / "ctranslate2"
            shutil.rmtree(exports, ignore_errors=True)
            try:
                exported = export_ctranslate2(folder, exports / key[:16], quantization="int8")
            except ValueError as error:  # an option CTranslate2 cannot express: the message says which
                raise gr.Error(f"This model cannot run on CTranslate2: {without_server_paths(str(error))}") from None
            EXPORTED.clear()
            threads = torch.get_num_threads()
            EXPORTED[key] = ctranslate2.Translator(exported, device="cpu", intra_threads=1)
            torch.set_num_threads(threads)  # intra_threads=1 set the process's OpenMP threads, torch's too, to 1
        return EXPORTED[key]


def translate_with_ctranslate2(folder: Path, tokenizer, text: str, num_beams: int, max_new_tokens: int) -> str:
    from hf_scratch_transformer.export import decoding_options

    source = tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids)
    options = decoding_options(num_beams=num_beams, max_new_tokens=max_new_tokens)
    (result,) = ctranslate2_translator(folder).translate_batch([source], **options)
    return tokenizer.decode(tokenizer.convert_tokens_to_ids(result.hypotheses[0]), skip_special_tokens=True)


def run_model(
    name: str, text: str, num_beams: int, max_new_tokens: int, engine: str = PYTORCH, request: gr.Request = None
):
    """Translate or classify `text`: the translation (or the labels with their scores), and the attention map of
    that input: the cross-attention of the translation, or the encoder's self-attention. Beams and output tokens
    are held to the sliders' ranges, and the input to MAX_INPUT_CHARS and the model's positions, whatever the API
    sends. A translation by CTranslate2 is drawn with the model's attention over that translation."""
    model, tokenizer, folder = get_model(name, request)
    if not text.strip():
        raise gr.Error("Enter a text.")
    if engine not in ENGINES:
        raise gr.Error(f"The engine is one of {', '.join(ENGINES)}.")
    positions = model.config.max_position_embeddings
    text = bounded_input(text, tokenizer, positions)
    if model.can_generate():
        num_beams = min(max(int(num_beams), 1), MAX_BEAMS)
        max_new_tokens = min(max(int(max_new_tokens), 1), MAX_NEW_TOKENS, positions - 1)
        if engine == CTRANSLATE2:
            output = translate_with_ctranslate2(folder, tokenizer, text, num_beams, max_new_tokens)
            maps = attention_maps(model, tokenizer, text, target=output)
        else:  # max_length counts the start token; it replaces the saved one (max_new_tokens would leave both)
            maps = attention_maps(model, tokenizer, text, num_beams=num_beams, max_length=max_new_tokens + 1)
        translation = gr.Textbox(maps.output_text, label=f"Translation ({engine})", visible=True)
        return translation, gr.Label(None, visible=False), draw_attention(maps)
    maps = attention_maps(model, tokenizer, text, kind="encoder")
    with torch.no_grad():
        probabilities = model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0]
    scores = {model.config.id2label[index]: float(p) for index, p in enumerate(probabilities)}
    return gr.Textbox(None, visible=False), gr.Label(scores, visible=True), draw_attention(maps)


# ---------------------------------------------------------------------------------------------------------------
# Fine-tune
# ---------------------------------------------------------------------------------------------------------------


def column_names(task: str) -> tuple[str, str]:
    return ("Text column", "Label column") if task == "classification" else ("Source column", "Target column")


def inspect_file(path: str | None, task: str):
    """Offer the uploaded file's columns, or say what is wrong with the file."""
    text_name, label_name = column_names(task)
    columns, text, label, message = [], None, None, ""
    if path is not None:
        try:
            table = read_table(path, MANAGER.max_file_bytes)
            columns = list(table.columns)
            text, label = pick_columns(table, task)
            message = f"**{Path(path).name}**: {len(table)} rows; columns {', '.join(columns)}."
        except DataError as error:
            message = f"⚠️ {error}"
    return (
        gr.Dropdown(choices=columns, value=text, label=text_name),
        gr.Dropdown(choices=columns, value=label, label=label_name),
        message,
    )


def choose_start(start_from: str):
    """Show the folder / Hub id field for a trained model, and offer a learning rate that suits the start: a model
    that already knows its task is fine-tuned ten times more gently than a new one is trained."""
    existing = start_from == "existing"
    return gr.Textbox(visible=existing), gr.Number(1e-4 if existing else 1e-3)


def start_run(path, task, text_column, label_column, start_from, start_model, steps, learning_rate,
              request: gr.Request):  # fmt: skip
    """Start a run; a message for the page (what started, or why nothing did) and the timer that follows it."""
    if path is None:
        return "⚠️ Upload a CSV or JSON Lines file first.", gr.Timer(active=False)
    start_model = (start_model or "").strip() if start_from == "existing" else ""
    if start_from == "existing" and not start_model:
        return "⚠️ Enter the starting model (a Hub id, a listed model or one of your runs), or a new one.", gr.Timer()
    folder, hub_id = "", None
    if start_model:
        try:
            folder, hub_id = ACCESS.resolve(start_model, own_models(request))
        except ModelRefused as error:
            return f"⚠️ {error}", gr.Timer()
    settings = RunSettings(
        task=task,
        text_column=text_column or "",
        label_column=label_column or "",
        start_model=start_model,
        start_model_path=str(folder),
        base_model=hub_id,
        steps=int(steps or 0),
        learning_rate=float(learning_rate or 0),
    )
    try:
        run = MANAGER.start(visitor(request), path, settings)
    except (DataError, RunRefused) as error:
        return f"⚠️ {error}", gr.Timer()
    return (
        f"Started **{run.folder.name}**: {run.train_rows} rows to train on, {run.validation_rows} held out.",
        gr.Timer(active=True),
    )


def stop_run(request: gr.Request) -> str:
    run = MANAGER.latest(visitor(request))
    if run is None or not run.active:
        return "You have no run going."
    run.stop()
    return f"Stopped {run.folder.name}."


def progress_html(run: Run, done_steps: int) -> str:
    steps = run.settings.steps
    bar = f'<progress value="{done_steps}" max="{steps}" style="width:100%;height:14px"></progress>'
    return f"{bar}<div>step {done_steps} of {steps}</div>"


def run_status(request: gr.Request):
    """Everything the page shows of the visitor's run: a status line, a progress bar, the loss curve, and, once it
    is done, the validation metric, a few predictions, the attention picture (translation) and the push form."""
    run = MANAGER.latest(visitor(request))
    empty_curve = pd.DataFrame({"step": [], "loss": []})
    if run is None:
        nothing = ("No run yet: upload a file, pick the columns and press Start.", "", empty_curve, "")
        return (
            *nothing,
            gr.Dataframe(visible=False),
            gr.Image(visible=False),
            gr.Group(visible=False),
            gr.Timer(active=False),
        )
    losses = run.losses()
    curve = pd.DataFrame(losses, columns=["step", "loss"]) if losses else empty_curve
    done_steps = losses[-1][0] if losses else 0
    elapsed = (run.finished or time.time()) - run.started
    where = f"Run: `{run.folder.name}`"
    if run.phase in ("starting", "tokenizer") or (run.phase == "training" and not losses):
        doing = "Training a tokenizer on the file" if run.phase == "tokenizer" else "Loading the data and the model"
        status = f"**{doing}** ({elapsed:.0f} s). {where}"
    elif run.phase == "training":
        doing = "Evaluating on the held-out rows" if done_steps >= run.settings.steps else "Training"
        status = f"**{doing}**: step {done_steps} of {run.settings.steps}, loss {losses[-1][1]:.3f} ({elapsed:.0f} s)."
        status += f" {where}"
    elif run.phase == "failed":
        status = f"**The run failed** after {elapsed:.0f} s: {without_server_paths(run.error)}\n\n{where}"
    elif run.phase == "stopped":
        status = f"**Stopped** after {elapsed:.0f} s. {where}"
    else:
        status = f"**Done** in {elapsed:.0f} s. {where}"
    done = run.phase == "done"
    attention = run.model_dir / "attention.png"
    return (
        status,
        progress_html(run, done_steps if run.active or not done else run.settings.steps),
        curve,
        results_text(run) if done else "",
        gr.Dataframe(
            predictions(run) if done else None, visible=done, column_widths=SAMPLE_COLUMN_WIDTHS[run.settings.task]
        ),
        gr.Image(str(attention) if done and attention.is_file() else None, visible=done and attention.is_file()),
        gr.Group(visible=done),
        gr.Timer(active=run.active),
    )


def without_server_paths(message: str) -> str:
    """A script's message with each absolute path cut to its last part: the page shows no folder of the server."""
    return re.sub(r"(?<![\w.])(?:/[\w.+~-]+)+/([\w.+~-]+)", r"\1", message)


def results_text(run: Run) -> str:
    results = run.results()
    scores = ", ".join(
        f"{name} {style.format(results[key])}" for name, key, style in METRICS[run.settings.task] if key in results
    )
    text = (
        f"### Validation {scores}\n\non the {run.validation_rows} held-out rows, after {run.settings.steps} steps "
        f"on {run.train_rows} rows (training loss {results.get('train_loss', float('nan')):.3f})."
    )
    if results.get("eval_bleu") == 0 and results.get("eval_chrf", 0) > 0:
        text += (
            " BLEU counts the word sequences of up to four words that the output shares with the reference: outputs "
            "shorter than four words score 0 whatever their quality; chrF counts characters."
        )
    return text


def predictions(run: Run) -> pd.DataFrame:
    """A few held-out rows with the model's output: the run's own translation samples, or the classifier's labels."""
    if run.folder not in PREDICTIONS:
        if run.settings.task == "translation":
            samples_file = run.model_dir / "translation_samples.jsonl"
            samples = [json.loads(line) for line in samples_file.read_text(encoding="utf-8").splitlines()]
            table = pd.DataFrame(samples, columns=["source", "reference", "hypothesis"])
            table.columns = ["source", "reference", "model"]
        else:
            rows = [json.loads(line) for line in (run.folder / "data" / "validation.jsonl").open(encoding="utf-8")]
            rows = rows[:SAMPLES]
            tokenizer = AutoTokenizer.from_pretrained(run.model_dir)
            model = AutoModelForSequenceClassification.from_pretrained(run.model_dir).eval()
            batch = tokenizer([row["text"] for row in rows], padding=True, truncation=True, return_tensors="pt")
            with torch.no_grad():
                predicted = model(**batch).logits.argmax(-1).tolist()
            table = pd.DataFrame(
                {"text": [row["text"] for row in rows], "label": [row["label"] for row in rows],
                 "model": [model.config.id2label[index] for index in predicted]}
            )  # fmt: skip
        PREDICTIONS[run.folder] = table
    return PREDICTIONS[run.folder]


def push(repo_id: str, token: str, request: gr.Request) -> str:
    """Push the visitor's finished run to the Hub as `repo_id` with the token they typed, or, with
    `--owner_namespace`, with the server's token to a repo of that namespace. The token is neither shown nor
    logged, and no message holds it."""
    run = MANAGER.latest(visitor(request))
    if run is None or run.phase != "done":
        return "⚠️ You have no finished run to push."
    repo_id, token = repo_id.strip(), token.strip()
    if not repo_id:
        return "⚠️ Enter a repo id such as your-name/scratch-sentiment."
    if token and not re.fullmatch(r"[\x21-\x7e]+", token):
        return "⚠️ The token holds spaces, line breaks or other characters no Hub token has: copy it again."
    if not token:
        namespace = ARGS.owner_namespace
        if namespace is None or not repo_id.startswith(f"{namespace}/"):
            mine = f", or push to {namespace}/... with the server's token" if namespace else ""
            return f"⚠️ Enter your Hub token (with write access): this app pushes with your own token{mine}."
        token = get_token()  # HF_TOKEN, or the owner's saved login
        if not token:
            return "⚠️ The server has no token of its own: enter yours."
    try:
        sha = push_run(run.model_dir, repo_id, token=token, base_model=run.settings.base_model)
    except (PushError, ValueError) as error:  # ValueError: a repo id the Hub would refuse
        return f"⚠️ {without_server_paths(str(error))}"
    return f"Pushed to [{repo_id}]({constants.ENDPOINT}/{repo_id}) at commit `{sha[:10]}`."


def try_run_model(current_name: str, request: gr.Request):
    """Open the visitor's finished run's model in the Try tab."""
    run = MANAGER.latest(visitor(request))
    name = run.folder.name if run is not None and run.phase == "done" else current_name
    return gr.Tabs(selected="try"), name, *load_model(name, request)


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------


def model_placeholder() -> str:
    listed = ", ".join(ACCESS.listed)
    return "a public Hub id such as your-name/model" + (f", or {listed}" if listed else "") + ", or one of your runs"


def build() -> gr.Blocks:
    # Gradio deletes its upload copies older than a day, hourly; each run keeps its own copy.
    with gr.Blocks(title="Scratch Transformer", analytics_enabled=False, delete_cache=(3600, 86400)) as page:
        gr.Markdown(
            "# Scratch Transformer\nThe encoder-decoder of *Attention Is All You Need*, written from scratch: try a "
            "model and see where it looks, or fine-tune one on your own data."
        )
        with gr.Tabs() as tabs:
            with gr.Tab("Try", id="try"):
                with gr.Row(equal_height=False):
                    model_name = gr.Textbox(
                        "demo" if "demo" in ACCESS.listed else "",
                        label="Model",
                        placeholder=model_placeholder(),
                        scale=5,
                    )
                    load_button = gr.Button("Load", scale=1, min_width=120, size="md")
                model_info = gr.Markdown()
                with gr.Row():
                    with gr.Column(scale=2):
                        text = gr.Textbox(label="Input", lines=3, placeholder="three hundred forty-two")
                        with gr.Row() as generation_options:
                            num_beams = gr.Slider(1, 8, value=4, step=1, label="Beam size")
                            max_new_tokens = gr.Slider(1, 256, value=64, step=1, label="Max output tokens")
                            engine = gr.Radio(ENGINES, value=PYTORCH, label="Engine", visible=len(ENGINES) > 1)
                        run_button = gr.Button("Run", variant="primary")
                        translation = gr.Textbox(label="Translation", interactive=False)
                        scores = gr.Label(label="Labels and scores", visible=False)
                    with gr.Column(scale=3):
                        attention = gr.Plot(show_label=False)  # the figure has a title of its own

            with gr.Tab("Fine-tune", id="fine-tune"):
                with gr.Row():
                    with gr.Column(scale=2):
                        upload = gr.File(
                            label="Data: a CSV or JSON Lines file", file_types=[".csv", ".jsonl", ".json"]
                        )
                        file_message = gr.Markdown()
                        task = gr.Radio(
                            [(label, key) for key, label in TASKS.items()], value="classification", label="Task"
                        )
                        with gr.Row():
                            text_column = gr.Dropdown([], label="Text column", allow_custom_value=True)
                            label_column = gr.Dropdown([], label="Label column", allow_custom_value=True)
                        start_from = gr.Radio(
                            [("A new small model", "new"), ("A trained model", "existing")],
                            value="new",
                            label="Starting model",
                        )
                        start_model = gr.Textbox(
                            label="Hub id, listed model or one of your runs",
                            placeholder=model_placeholder(),
                            visible=False,
                        )
                        with gr.Row():
                            steps = gr.Number(100, label="Steps", precision=0, minimum=1)
                            learning_rate = gr.Number(1e-3, label="Learning rate", minimum=0)
                        with gr.Row():
                            start_button = gr.Button("Start", variant="primary")
                            stop_button = gr.Button("Stop", variant="stop")
                        start_message = gr.Markdown()
                        gr.Markdown(
                            "Your runs are yours: other visitors neither see nor touch them. This server trains "
                            f"{'one run' if ARGS.max_runs == 1 else f'{ARGS.max_runs} runs'} at a time; old runs "
                            "are deleted."
                        )
                    with gr.Column(scale=3):
                        status = gr.Markdown()
                        progress = gr.HTML()
                        loss_curve = gr.LinePlot(x="step", y="loss", title="Training loss", height=260)
                # The results, the width of the page: the held-out rows and the attention picture are wide.
                results = gr.Markdown()
                samples = gr.Dataframe(label="Held-out rows and the model's output", visible=False, wrap=True)
                run_attention = gr.Image(show_label=False, visible=False)  # the picture has a heading of its own
                with gr.Group(visible=False) as push_form:
                    with gr.Row(equal_height=True):
                        repo_id = gr.Textbox(label="Hub repo id", placeholder="your-name/scratch-model")
                        token = gr.Textbox(
                            label="Your Hub token (write access)"
                            + (f"; empty: the server's, for {ARGS.owner_namespace}/ repos only"
                               if ARGS.owner_namespace else ""),
                            type="password",
                            placeholder="hf_...",
                        )  # fmt: skip
                    with gr.Row():
                        push_button = gr.Button("Push to the Hub", variant="primary")
                        try_button = gr.Button("Try this model")
                    push_message = gr.Markdown()
        timer = gr.Timer(1.0, active=False)

        load_outputs = [model_info, run_button, generation_options]
        load_button.click(load_model, model_name, load_outputs, api_name="load_model")
        model_name.submit(load_model, model_name, load_outputs, api_visibility="private")
        run_inputs = [model_name, text, num_beams, max_new_tokens, engine]
        run_button.click(run_model, run_inputs, [translation, scores, attention], api_name="run_model")
        text.submit(run_model, run_inputs, [translation, scores, attention], api_visibility="private")

        upload.upload(inspect_file, [upload, task], [text_column, label_column, file_message], api_name="inspect_file")
        upload.clear(inspect_file, [upload, task], [text_column, label_column, file_message], api_visibility="private")
        task.change(inspect_file, [upload, task], [text_column, label_column, file_message], api_visibility="private")
        start_from.change(choose_start, start_from, [start_model, learning_rate], api_visibility="private")
        start_inputs = [upload, task, text_column, label_column, start_from, start_model, steps, learning_rate]
        start_button.click(start_run, start_inputs, [start_message, timer], api_name="start_run")
        stop_button.click(stop_run, None, start_message, api_name="stop_run")
        status_outputs = [status, progress, loss_curve, results, samples, run_attention, push_form, timer]
        timer.tick(run_status, None, status_outputs, api_name="run_status", show_progress="hidden")
        page.load(run_status, None, status_outputs, api_visibility="private")
        page.load(load_named_model, model_name, load_outputs, api_visibility="private")
        push_button.click(push, [repo_id, token], push_message, api_name="push")
        try_button.click(try_run_model, model_name, [tabs, model_name, *load_outputs], api_name="try_run_model")
    return page


def main() -> None:
    atexit.register(MANAGER.stop_all)  # a run outlives no app: its child is in a process group of its own
    # `kill` stops the app as Ctrl+C does: Gradio closes its server, then the atexit handler stops the run.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # max_file_size: Gradio refuses a larger upload as it arrives, before writing it whole to disk.
    build().launch(server_name=ARGS.host, server_port=ARGS.port, show_error=False,
                   max_file_size=MANAGER.max_file_bytes)  # fmt: skip


if __name__ == "__main__":
    main()
