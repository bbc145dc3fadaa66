"""What the app's Fine-tune tab does, without the page: read an uploaded table and check it, make a run folder,
and run the package's own training scripts on it in a child process, reading their progress from the log.

Each run belongs to the visitor who started it (`owner`, the page's session): only they see it, stop it or push it.
At most `max_runs` runs go at once, one a visitor (the machine's cores are shared); a start beyond that is refused
with a message (`RunRefused`). Finished runs beyond the newest `keep_runs`, or older than `max_age_s`, are deleted.
The runs start with no Hub token in their environment: a Hub model they start from was downloaded anonymously by
the app (model_access.py). A run's folder, under the app's runs folder, holds everything the run makes:

    upload/<the file as uploaded>   the user's file, unchanged
    data/train.jsonl, data/validation.jsonl   the chosen columns, with a tenth of the rows held out
    tokenizer/   a new model's tokenizer (training/train_tokenizer.py)
    model/       the trained model, its results and, for a translator, translation_samples.jsonl and attention.png
    cache/       the datasets cache of the scripts
    log.txt      what the scripts printed
"""

import ast
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

import hf_scratch_transformer

COMMAND = [sys.executable, "-m", "hf_scratch_transformer.training.cli"]  # `hf-scratch-transformer` in this Python
# The runs start there, so that `-m` finds the package also where it is a folder and not installed (a Space).
PACKAGE_PARENT = Path(hf_scratch_transformer.__file__).resolve().parents[1]
TASKS = {"classification": "Sentiment / classification", "translation": "Translation"}
FILE_TYPES = (".csv", ".jsonl", ".json")
MIN_ROWS = 10  # a tenth is held out to evaluate on: fewer rows leave it nothing to say
MAX_COLUMNS = 1000  # a wider file is refused before it is parsed: pandas would spend minutes and gigabytes on it
VALIDATION_SHARE, MAX_VALIDATION_ROWS = 0.1, 500
# A new model: the demo's shape (training/demo.py), which learns a small task on two CPU cores in minutes.
NEW_MODEL = (
    "d_model=128,encoder_layers=3,decoder_layers=3,encoder_attention_heads=4,decoder_attention_heads=4,"
    "encoder_ffn_dim=512,decoder_ffn_dim=512,normalize_before=true,dropout=0.1"
)
NEW_TOKENIZER_VOCAB = 4000  # byte-level BPE stops merging earlier on a small file
BATCH_SIZE = 16
LOSS_POINTS = 50  # log the loss about this many times a run, for the live curve
SAMPLES = 5  # validation predictions shown at the end


class DataError(Exception):
    """A file or a choice of columns the app cannot train on; the message says why, for the page."""


class RunRefused(Exception):
    """A run asked for while the visitor's own run, or as many runs as the server allows, are going."""


def read_table(path: str | Path, max_bytes: int) -> pd.DataFrame:
    """The rows of a .csv, .jsonl or .json file (nested JSON objects become columns such as translation.en),
    every value as text; empty cells are "". Raises DataError with a message for the page."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        raise DataError(f"{path.name}: a {suffix or 'file without extension'} file; upload {', '.join(FILE_TYPES)}.")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(
            f"{path.name} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. Upload a sample of it."
        )
    if size == 0:
        raise DataError(f"{path.name} is empty.")
    try:
        if suffix == ".csv":
            check_csv_width(path)
            table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        else:
            table = pd.json_normalize(json_records(path))
    except RecursionError:
        raise DataError(f"{path.name} nests its JSON too deeply: give each row flat fields, as in "
                        '{"text": ..., "label": ...}.') from None  # fmt: skip
    except UnicodeDecodeError:
        raise DataError(
            f"{path.name} is not UTF-8 text (Latin-1 or Windows-1252, say): save it as UTF-8 and upload it again."
        ) from None
    except (ValueError, pd.errors.ParserError) as error:
        raise DataError(f"{path.name} could not be read as {suffix[1:].upper()}: {error}") from None
    if table.empty:
        raise DataError(f"{path.name} has no rows.")
    if len(table.columns) > MAX_COLUMNS:
        raise too_wide(path)
    return table.fillna("").astype(str)


def too_wide(path: Path) -> DataError:
    """Checked before parsing where the file's shape allows (a CSV's header, each JSON row's fields), and on the
    table in the end (nested JSON objects become columns of their own)."""
    return DataError(f"{path.name} has more than {MAX_COLUMNS} columns; the app reads at most {MAX_COLUMNS}.")


def check_csv_width(path: Path) -> None:
    """Refuse a CSV whose header has more than MAX_COLUMNS fields, reading only its first line (up to 1 MB)."""
    with path.open(encoding="utf-8", newline="") as file:
        header = file.readline(1_000_000)
    fields = next(csv.reader([header]), [])
    if len(fields) > MAX_COLUMNS:
        raise too_wide(path)


def json_records(path: Path) -> list[dict]:
    """The objects of a JSON Lines file, or of a .json file holding one list of objects."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"line {number} is not JSON ({error.msg})") from None
    if not all(isinstance(record, dict) for record in records):
        raise ValueError('each row must be an object such as {"text": ..., "label": ...}')
    if any(len(record) > MAX_COLUMNS for record in records):
        raise too_wide(path)
    return records


def pick_columns(table: pd.DataFrame, task: str) -> tuple[str, str]:
    """The text and label (or source and target) columns to offer first: one with a usual name, else the first
    column and the last."""
    columns = list(table.columns)
    text_names = ("text", "sentence", "review", "source", "en", "translation.en")
    label_names = (
        ("label", "labels", "sentiment", "class") if task == "classification" else ("target", "de", "translation.de")
    )
    text = next((column for column in columns if column.lower() in text_names), columns[0])
    others = [column for column in columns if column != text] or columns
    label = next((column for column in others if column.lower() in label_names), others[-1])
    return text, label


def training_rows(table: pd.DataFrame, task: str, text_column: str, label_column: str) -> list[dict]:
    """The rows to train on, checked: both columns exist and differ, rows with an empty cell are left out, enough
    remain, and a classifier has two classes or more. Raises DataError."""
    for role, column in (("text" if task == "classification" else "source", text_column),
                         ("label" if task == "classification" else "target", label_column)):  # fmt: skip
        if column not in table.columns:
            raise DataError(
                f"The file has no column named {column!r} (the {role} column); it has {list(table.columns)}."
            )
    if text_column == label_column:
        raise DataError(f"The two columns must differ; both are {text_column!r}.")
    rows = table[(table[text_column].str.strip() != "") & (table[label_column].str.strip() != "")]
    if len(rows) < MIN_ROWS:
        raise DataError(
            f"Only {len(rows)} rows have both {text_column!r} and {label_column!r} filled in; fine-tuning needs at "
            f"least {MIN_ROWS} (a tenth is held out to evaluate the model)."
        )
    if task == "classification":
        classes = sorted(rows[label_column].unique())
        if len(classes) < 2:
            raise DataError(
                f"The label column {label_column!r} has a single class ({classes[0]!r}): a classifier needs two or "
                "more. Pick the column that holds the labels."
            )
        if len(classes) > len(rows) // 2:
            raise DataError(
                f"The label column {label_column!r} has {len(classes)} different values in {len(rows)} rows: it looks "
                "like text, not labels. Pick the column that holds the labels."
            )
        with_comma = [label for label in classes if "," in label]
        if with_comma:  # finetune_sentiment.py's --class_names is a comma-separated list
            raise DataError(f"The label {with_comma[0]!r} holds a comma; rename the labels without commas.")
        return [
            {"text": text, "label": label} for text, label in zip(rows[text_column], rows[label_column], strict=True)
        ]
    return [
        {"translation": {text_column: source, label_column: target}}
        for source, target in zip(rows[text_column], rows[label_column], strict=True)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


@dataclass
class RunSettings:
    task: str  # a key of TASKS
    text_column: str  # the source column for translation
    label_column: str  # the target column for translation
    start_model: str  # "" for a new model, else the name the visitor gave (a Hub id, a listed model, a run)
    steps: int
    learning_rate: float
    start_model_path: str = ""  # the folder it was resolved to: a listed model, a run's model, a Hub download
    base_model: str | None = None  # its Hub id, for the card of a push, when it came from the Hub


def run_commands(folder: Path, settings: RunSettings, classes: list[str]) -> list[list[str]]:
    """The scripts the run executes, in order: a new model's tokenizer, then the fine-tuning script."""
    train, validation = str(folder / "data" / "train.jsonl"), str(folder / "data" / "validation.jsonl")
    commands = []
    if settings.start_model:
        model_flags = ["--model_name_or_path", settings.start_model_path]
    else:
        tokenizer = ["train-tokenizer", "--train_file", train,
                     "--output_dir", str(folder / "tokenizer"), "--vocab_size", str(NEW_TOKENIZER_VOCAB)]  # fmt: skip
        if settings.task == "classification":
            tokenizer += ["--text_columns", "text"]  # not the labels
        commands.append([*COMMAND, *tokenizer])
        model_flags = ["--tokenizer_name", str(folder / "tokenizer"), "--config_overrides", NEW_MODEL]
    if settings.task == "classification":
        # One argument with "=": a value that starts with "-" (labels -1 and 1) is not read as a flag.
        script = ["finetune-sentiment", "--text_column", "text", "--label_column", "label",
                  f"--class_names={','.join(classes)}"]  # fmt: skip
    else:
        script = ["finetune-translation", "--source_lang", settings.text_column,
                  "--target_lang", settings.label_column, "--predict_with_generate",
                  "--num_samples_to_write", str(SAMPLES)]  # fmt: skip
    training = [
        "--train_file", train, "--validation_file", validation, "--output_dir", str(folder / "model"),
        "--max_steps", str(settings.steps), "--learning_rate", str(settings.learning_rate),
        "--warmup_steps", str(settings.steps // 10), "--per_device_train_batch_size", str(BATCH_SIZE),
        "--logging_steps", str(logging_steps(settings.steps)), "--eval_strategy", "no", "--save_strategy", "no",
        "--report_to", "none", "--disable_tqdm", "true", "--seed", "0",
    ]  # fmt: skip
    return [*commands, [*COMMAND, *script, *training, *model_flags]]


def logging_steps(steps: int) -> int:
    return max(1, steps // LOSS_POINTS)


@dataclass
class Run:
    """One fine-tuning run: its folder and settings, and where its child processes are."""

    folder: Path
    owner: str  # the visitor's session
    settings: RunSettings
    train_rows: int
    validation_rows: int
    commands: list[list[str]]
    phase: str = "starting"  # starting, tokenizer, training, done, failed, stopped
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    process: subprocess.Popen | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # between starting a child and stopping the run

    @property
    def log_path(self) -> Path:
        return self.folder / "log.txt"

    @property
    def model_dir(self) -> Path:
        return self.folder / "model"

    @property
    def active(self) -> bool:
        return self.phase in ("starting", "tokenizer", "training")

    def losses(self) -> list[tuple[int, float]]:
        """(step, training loss) of each line Trainer printed so far ({'loss': '2.31', ...}, one per
        --logging_steps steps)."""
        if not self.log_path.is_file():
            return []
        points = []
        every = logging_steps(self.settings.steps)
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{'loss'"):
                logged = ast.literal_eval(line)
                points.append((every * (len(points) + 1), float(logged["loss"])))
        return points

    def results(self) -> dict:
        path = self.model_dir / "all_results.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def execute(self) -> None:
        """Run the commands one after the other (in a thread of the app), each in its own process group, so that
        a crash stays in the child and `stop` ends the child with everything it started."""
        environment = child_environment(self.folder / "cache")
        with self.log_path.open("a", encoding="utf-8") as log:
            for command in self.commands:
                with self.lock:
                    if self.phase == "stopped":
                        return
                    self.phase = "tokenizer" if "train-tokenizer" in command else "training"
                    log.write(f"$ hf-scratch-transformer {' '.join(command[len(COMMAND) :])}\n")
                    log.flush()
                    self.process = subprocess.Popen(
                        command, stdout=log, stderr=subprocess.STDOUT, cwd=PACKAGE_PARENT, env=environment,
                        start_new_session=True,
                    )  # fmt: skip
                returncode = self.process.wait()
                if self.phase == "stopped":
                    return
                if returncode != 0:
                    self.phase, self.finished = "failed", time.time()
                    self.error = last_message(self.log_path) or f"the script ended with exit code {returncode}"
                    return
        self.phase, self.finished = "done", time.time()

    def stop(self) -> None:
        """End the run: its current child and whatever that child started (its process group)."""
        with self.lock:
            if not self.active:
                return
            self.phase, self.finished = "stopped", time.time()
            if self.process is not None and self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)


def last_message(log_path: Path) -> str | None:
    """The last line a failed script printed: its SystemExit message, or the exception line of a traceback."""
    lines = [line.strip() for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), None)


class RunManager:
    """The app's runs, each its visitor's own: at most `max_runs` going at once and one a visitor; the newest
    `keep_runs` finished runs are kept for at most `max_age_s`."""

    def __init__(
        self, runs_dir: Path, max_file_bytes: int, max_runs: int = 1, keep_runs: int = 20, max_age_s: float = 86400
    ):
        self.runs_dir = runs_dir
        self.max_file_bytes = max_file_bytes
        self.max_runs, self.keep_runs, self.max_age_s = max_runs, keep_runs, max_age_s
        self.lock = threading.Lock()
        self.runs: list[Run] = []  # oldest first

    def latest(self, owner: str) -> Run | None:
        """The visitor's newest run, or None: all the page shows them."""
        return next((run for run in reversed(self.runs) if run.owner == owner), None)

    def start(self, owner: str, upload: str | Path, settings: RunSettings) -> Run:
        """Check the file and the settings, make the run folder, and start the run in a thread. Raises DataError
        for a bad file or setting, RunRefused while the visitor's run or `max_runs` runs are going."""
        if not 1 <= settings.steps <= 100_000:
            raise DataError(f"Steps must be between 1 and 100000, got {settings.steps}.")
        if not 0 < settings.learning_rate < 1:
            raise DataError(f"The learning rate must be between 0 and 1, got {settings.learning_rate}.")
        rows = training_rows(read_table(upload, self.max_file_bytes), settings.task, settings.text_column,
                             settings.label_column)  # fmt: skip
        with self.lock:
            going = [run for run in self.runs if run.active]
            if any(run.owner == owner for run in going):
                raise RunRefused("Your run is still going: wait for it to finish, or stop it.")
            if len(going) >= self.max_runs:
                raise RunRefused(
                    f"The server is busy: it trains {self.max_runs} run{'s' if self.max_runs > 1 else ''} at a time, "
                    "and other visitors' runs are going. Try again in a few minutes."
                )
            self.clean_up()
            folder = self.new_folder(settings.task)
            (folder / "upload").mkdir()
            shutil.copy2(upload, folder / "upload" / Path(upload).name)
            random.Random(0).shuffle(rows)
            held_out = min(MAX_VALIDATION_ROWS, max(1, round(VALIDATION_SHARE * len(rows))))
            (folder / "data").mkdir()
            write_jsonl(folder / "data" / "train.jsonl", rows[held_out:])
            write_jsonl(folder / "data" / "validation.jsonl", rows[:held_out])
            classes = sorted({row["label"] for row in rows}) if settings.task == "classification" else []
            commands = run_commands(folder, settings, classes)
            run = Run(folder, owner, settings, len(rows) - held_out, held_out, commands)
            self.runs.append(run)
        threading.Thread(target=run.execute, name=f"run {folder.name}", daemon=True).start()
        return run

    def clean_up(self) -> None:
        """Delete the finished runs beyond the newest `keep_runs` and those older than `max_age_s`, folders and all
        (called under the lock)."""
        finished = [run for run in self.runs if not run.active]
        expired = finished[: max(0, len(finished) - self.keep_runs)]
        expired += [run for run in finished if time.time() - run.started > self.max_age_s and run not in expired]
        for run in expired:
            self.runs.remove(run)
            shutil.rmtree(run.folder, ignore_errors=True)

    def new_folder(self, task: str) -> Path:
        """runs_dir/<date>-<time>-<task>, numbered when a run started in the same second (called under the lock)."""
        base = self.runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{task}"
        folder, number = base, 1
        while folder.exists():
            folder, number = base.with_name(f"{base.name}-{number}"), number + 1
        folder.mkdir(parents=True)
        return folder

    def stop_all(self) -> None:
        for run in self.runs:
            run.stop()


def child_environment(datasets_cache: Path) -> dict:
    """The environment of a run's scripts: the app's, without any Hub token (a run reads only what the app fetched
    for it, and pushes through the app), and with no implicit use of a saved login either."""
    environment = {
        key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    }
    environment.update(
        PYTHONUNBUFFERED="1", HF_DATASETS_CACHE=str(datasets_cache), HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
        HF_TOKEN_PATH=str(datasets_cache / "no-token"),
    )  # fmt: skip
    return environment
