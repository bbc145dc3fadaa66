"""A web app for the scratch Transformer: try a model, and fine-tune one from a CSV or JSON Lines file.

    make app                                  # or: python app/app.py [--port 7860] [--runs_dir runs/app]

- Try: load a model (a run folder, or a Hub id), translate with a beam size and a length limit, or classify
  (every label with its score), and see the attention of that input beside the output.
- Fine-tune: upload a file, pick the task and the columns (offered from the file's header), a starting model (a new
  small one, or a folder / Hub id), steps and learning rate, and start. The run is the package's own training script
  in a child process (a crash ends the run, never the app); the page follows its loss, then shows the validation
  metric, a few predictions and a button that pushes the model to the Hub.

Runs go to `--runs_dir` (app/fine_tuning.py lists what a run folder holds), and so do Gradio's copies of the
uploads (`uploads/`): GRADIO_TEMP_DIR is set before Gradio is imported, which is when Gradio reads it. Every page
shares the one run that may be going; the HTTP API (`gradio_client`) reaches every button (see the footer's
"Use via API").
"""

import argparse
import atexit
import json
import os
import signal
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
from huggingface_hub import constants  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from hf_scratch_transformer.training.plot_attention import load_model_and_tokenizer  # noqa: E402
from hf_scratch_transformer.training.push_to_hub import PushError, push_run  # noqa: E402
from hf_scratch_transformer.visualization import attention_maps, draw_attention  # noqa: E402

MANAGER = RunManager(ARGS.runs_dir.resolve(), max_file_bytes=int(ARGS.max_file_mb * 1e6))
LOADED: dict[str, tuple] = {}  # the model last loaded in the Try tab: name -> (model, tokenizer)
PREDICTIONS: dict[Path, pd.DataFrame] = {}  # run folder -> its validation predictions, made once
# task -> (name, key in all_results.json, format) of the validation metrics shown
METRICS = {"classification": [("accuracy", "eval_accuracy", "{:.1%}"), ("F1", "eval_f1", "{:.3f}")],
           "translation": [("chrF", "eval_chrf", "{:.1f}"), ("BLEU", "eval_bleu", "{:.1f}")]}  # fmt: skip
SAMPLE_COLUMN_WIDTHS = {"classification": ["60%", "20%", "20%"], "translation": ["34%", "33%", "33%"]}
DEMO_MODEL = REPO_ROOT / "runs" / "demo" / "model"  # what `make demo` trains, offered first when it is there


# ---------------------------------------------------------------------------------------------------------------
# Try
# ---------------------------------------------------------------------------------------------------------------


def get_model(name: str) -> tuple:
    """The model and tokenizer of a folder or Hub id, loaded once (only the last one stays in memory)."""
    name = name.strip()
    if not name:
        raise gr.Error("Enter a model: a run folder such as runs/demo/model, or a Hub id such as user/name.")
    if name not in LOADED:
        try:
            loaded = load_model_and_tokenizer(name)
        except (OSError, ValueError) as error:  # no such folder or repo, not a model, no tokenizer
            raise gr.Error(f"Could not load {name!r}: {str(error).splitlines()[0]}") from None
        LOADED.clear()
        LOADED[name] = loaded
    return LOADED[name]


def load_model(name: str):
    """Load the model; say what it is, and show the controls of its task."""
    try:
        model, _ = get_model(name)
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


def load_named_model(name: str):
    """On opening the page: load the model already named (the demo's), or leave the page as it is."""
    return load_model(name) if name.strip() else ("", gr.Button(), gr.Row())


def run_model(name: str, text: str, num_beams: int, max_new_tokens: int):
    """Translate or classify `text`: the translation (or the labels with their scores), and the attention map of
    that input: the cross-attention of the translation, or the encoder's self-attention."""
    model, tokenizer = get_model(name)
    if not text.strip():
        raise gr.Error("Enter a text.")
    if model.can_generate():
        # max_length counts the start token; it replaces the saved one (max_new_tokens would leave both set)
        maps = attention_maps(model, tokenizer, text, num_beams=int(num_beams), max_length=int(max_new_tokens) + 1)
        return gr.Textbox(maps.output_text, visible=True), gr.Label(None, visible=False), draw_attention(maps)
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


def start_run(path, task, text_column, label_column, start_from, start_model, steps, learning_rate):
    """Start a run; a message for the page (what started, or why nothing did) and the timer that follows it."""
    if path is None:
        return "⚠️ Upload a CSV or JSON Lines file first.", gr.Timer(active=False)
    if start_from == "existing" and not (start_model or "").strip():
        return "⚠️ Enter the starting model (a folder or a Hub id), or choose a new small model.", gr.Timer()
    settings = RunSettings(
        task=task,
        text_column=text_column or "",
        label_column=label_column or "",
        start_model=(start_model or "").strip() if start_from == "existing" else "",
        steps=int(steps or 0),
        learning_rate=float(learning_rate or 0),
    )
    try:
        run = MANAGER.start(path, settings)
    except (DataError, RunRefused) as error:
        return f"⚠️ {error}", gr.Timer()
    return (
        f"Started **{run.folder.name}**: {run.train_rows} rows to train on, {run.validation_rows} held out.",
        gr.Timer(active=True),
    )


def stop_run() -> str:
    run = MANAGER.current
    if run is None or not run.active:
        return "No run is going."
    run.stop()
    return f"Stopped {run.folder.name}."


def progress_html(run: Run, done_steps: int) -> str:
    steps = run.settings.steps
    bar = f'<progress value="{done_steps}" max="{steps}" style="width:100%;height:14px"></progress>'
    return f"{bar}<div>step {done_steps} of {steps}</div>"


def run_status():
    """Everything the page shows of the current run: a status line, a progress bar, the loss curve, and, once it
    is done, the validation metric, a few predictions, the attention picture (translation) and the push form."""
    run = MANAGER.current
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
    where = f"Run folder: `{run.folder}`"
    if run.phase in ("starting", "tokenizer") or (run.phase == "training" and not losses):
        doing = "Training a tokenizer on the file" if run.phase == "tokenizer" else "Loading the data and the model"
        status = f"**{doing}** ({elapsed:.0f} s). {where}"
    elif run.phase == "training":
        doing = "Evaluating on the held-out rows" if done_steps >= run.settings.steps else "Training"
        status = f"**{doing}**: step {done_steps} of {run.settings.steps}, loss {losses[-1][1]:.3f} ({elapsed:.0f} s)."
        status += f" {where}"
    elif run.phase == "failed":
        status = f"**The run failed** after {elapsed:.0f} s: {run.error}\n\nThe whole log: `{run.log_path}`"
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


def push(repo_id: str, token: str) -> str:
    """Push the finished run to the Hub as `repo_id`, with `token` (or the server's HF_TOKEN). The token is
    neither shown nor logged, and the message never holds it."""
    run = MANAGER.current
    if run is None or run.phase != "done":
        return "⚠️ There is no finished run to push."
    if not repo_id.strip():
        return "⚠️ Enter a repo id such as your-name/scratch-sentiment."
    start = run.settings.start_model  # the card's base_model must be a Hub id, not a folder of this machine
    base_model = start if start and not Path(start).exists() else None
    try:
        sha = push_run(run.model_dir, repo_id.strip(), token=token.strip() or None, base_model=base_model)
    except (PushError, ValueError) as error:  # ValueError: a repo id the Hub would refuse
        return f"⚠️ {error}"
    return f"Pushed to [{repo_id.strip()}]({constants.ENDPOINT}/{repo_id.strip()}) at commit `{sha[:10]}`."


def try_run_model(current_name: str):
    """Open the finished run's model in the Try tab."""
    run = MANAGER.current
    name = str(run.model_dir) if run is not None and run.phase == "done" else current_name
    return gr.Tabs(selected="try"), name, *load_model(name)


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------


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
                        str(DEMO_MODEL) if DEMO_MODEL.is_dir() else "",
                        label="Model",
                        placeholder="a run folder such as runs/demo/model, or a Hub id such as your-name/model",
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
                            [("A new small model", "new"), ("A folder or Hub id", "existing")],
                            value="new",
                            label="Starting model",
                        )
                        start_model = gr.Textbox(
                            label="Folder or Hub id", placeholder="runs/demo/model", visible=False
                        )
                        with gr.Row():
                            steps = gr.Number(100, label="Steps", precision=0, minimum=1)
                            learning_rate = gr.Number(1e-3, label="Learning rate", minimum=0)
                        with gr.Row():
                            start_button = gr.Button("Start", variant="primary")
                            stop_button = gr.Button("Stop", variant="stop")
                        start_message = gr.Markdown()
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
                            label="Hub token (write access; empty: the server's HF_TOKEN)",
                            type="password",
                            placeholder="hf_...",
                        )
                    with gr.Row():
                        push_button = gr.Button("Push to the Hub", variant="primary")
                        try_button = gr.Button("Try this model")
                    push_message = gr.Markdown()
        timer = gr.Timer(1.0, active=False)

        load_outputs = [model_info, run_button, generation_options]
        load_button.click(load_model, model_name, load_outputs, api_name="load_model")
        model_name.submit(load_model, model_name, load_outputs, api_visibility="private")
        run_inputs = [model_name, text, num_beams, max_new_tokens]
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
    atexit.register(MANAGER.stop_current)  # a run outlives no app: its child is in a process group of its own
    # `kill` stops the app as Ctrl+C does: Gradio closes its server, then the atexit handler stops the run.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    build().launch(server_name=ARGS.host, server_port=ARGS.port, show_error=False)


if __name__ == "__main__":
    main()
