"""How every script reads its data: the train split and, when there is one, the validation split, from a Hub data set
(--dataset_name) or from local files (--train_file, --validation_file). Each way this can fail stops the script with
one line that names the file and the fix. Also the column check and the tokenize step the scripts share."""

import gzip
import logging
from pathlib import Path

import datasets

from .arguments import DataArguments

# The file extensions the scripts read and the `datasets` builder of each. "<name>.gz" is read too, as
# `datasets.load_dataset` reads it: ../shared/data/imdb/train.jsonl.gz needs no unpacking.
DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text"}
# What each builder expects, for the message when a file does not parse.
FORMATS = {
    "json": "JSON (JSON Lines: one object a line)",
    "csv": "CSV (a header row, then one row a line)",
    "text": "text (one text a line)",
}
logger = logging.getLogger(__name__)
LIMIT_FLAGS = {"train": "--max_train_samples", "validation": "--max_eval_samples"}


def load_raw_datasets(
    data_args: DataArguments, streaming: bool = False, needs_train: bool = True
) -> dict[str, datasets.Dataset | datasets.IterableDataset]:
    """{"train": ..., "validation": ...}, validation only where there is one, each cut to --max_train_samples or
    --max_eval_samples rows. With `streaming` the train split is a stream, read as training goes and never held
    whole; validation is always held in memory, since every evaluation reads all of it. A run that only evaluates
    (`needs_train=False`) may pass --validation_file alone."""
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples}
    for split, limit in limits.items():
        if limit is not None and limit <= 0:
            raise SystemExit(f"{LIMIT_FLAGS[split]} {limit}: give a positive number of rows, or leave it out.")
    files = {"train": data_args.train_file, "validation": data_args.validation_file}
    files = {split: path for split, path in files.items() if path is not None}
    if data_args.dataset_name is not None and files:
        raise SystemExit("Pass either --dataset_name or data files (--train_file, --validation_file), not both.")

    if data_args.dataset_name is not None:
        sources = {split: f"The {split} split of --dataset_name {data_args.dataset_name}" for split in LIMIT_FLAGS}
        raw = load_hub_splits(data_args, streaming)
    elif "train" in files or (not needs_train and "validation" in files):
        sources = {split: f"--{split}_file {path}" for split, path in files.items()}
        raw = {
            split: load_data_file(sources[split], path, streaming and split == "train", data_args.cache_dir)
            for split, path in files.items()
        }
    else:
        raise SystemExit("No training data: pass --dataset_name, or --train_file (and --validation_file).")

    for split, dataset in raw.items():
        if first_row(dataset) is None:
            raise SystemExit(f"{sources[split]} has no rows: there is nothing to read.")
    if "train" in files and "validation" in files:
        train_columns, validation_columns = column_names(raw["train"]), column_names(raw["validation"])
        if set(train_columns) != set(validation_columns):
            raise SystemExit(
                f"{sources['validation']} has the columns {validation_columns} but {sources['train']} has "
                f"{train_columns}: give both files the same columns."
            )
    for split, limit in limits.items():
        if split in raw and limit is not None:
            raw[split] = first_rows(raw[split], limit)
    if isinstance(raw.get("validation"), datasets.IterableDataset):  # a Hub stream
        raw["validation"] = datasets.Dataset.from_list(list(raw["validation"]), features=raw["validation"].features)
    return raw


def load_hub_splits(data_args: DataArguments, streaming: bool) -> dict:
    """The train and validation splits of a Hub data set; other splits are left out."""
    name = data_args.dataset_name
    try:
        hub = datasets.load_dataset(
            name, data_args.dataset_config_name, streaming=streaming, cache_dir=data_args.cache_dir
        )
    except Exception as error:  # not found, offline, a config to choose: datasets says which, in many types
        raise SystemExit(f"--dataset_name {name}: could not load it ({one_line(error)}).") from None
    if "train" not in hub:
        raise SystemExit(f"--dataset_name {name} has no train split; it has {sorted(hub)}.")
    return {split: hub[split] for split in ("train", "validation") if split in hub}


def load_data_file(source: str, path: str, streaming: bool, cache_dir: str | None):
    """One local file as a `Dataset` (a stream with `streaming`). `source` names it in messages: "--train_file x"."""
    extension = Path(Path(path).name.lower().removesuffix(".gz")).suffix
    if extension not in DATA_FILE_BUILDERS:
        raise SystemExit(
            f"{source}: cannot tell how to read a {extension or 'nameless'!r} file. Name it with one of the "
            f"extensions {', '.join(DATA_FILE_BUILDERS)}, or one of them and .gz."
        )
    if not Path(path).is_file():
        raise SystemExit(f"{source}: no such file. Check the path.")
    if is_empty_file(path):
        raise SystemExit(f"{source} is empty: there is nothing to read.")
    check_utf8(source, path)
    builder = DATA_FILE_BUILDERS[extension]
    try:
        dataset = datasets.load_dataset(
            builder, data_files={"data": path}, split="data", streaming=streaming, cache_dir=cache_dir
        )
        if streaming:  # a stream reads nothing until iterated: fail on a malformed start here, not in training
            first_row(dataset)
    except Exception as error:  # datasets raises many types for a malformed file; all mean the same here
        if "corresponds to no data" in str(error):  # a CSV header alone, or blank lines: no rows, reported above
            return datasets.Dataset.from_dict({})
        raise SystemExit(f"Could not read {source} as {FORMATS[builder]}: {one_line(error)}.") from None
    return dataset


def is_empty_file(path: str) -> bool:
    """Nothing in the file, or in what a .gz file unpacks to."""
    try:
        with (gzip.open if path.lower().endswith(".gz") else open)(path, "rb") as file:
            return not file.read(1)
    except (OSError, EOFError):  # not gzip after all, or cut short: the loader says why
        return False


def check_utf8(source: str, path: str) -> None:
    """Every format here is text in UTF-8 (JSON requires it). A file saved in another encoding (Latin-1, cp1252)
    would otherwise load, and fail at the first row read with an error that names neither the file nor the line."""
    try:
        with (gzip.open if path.lower().endswith(".gz") else open)(path, "rb") as file:
            for line_number, line in enumerate(file, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    byte = line[error.start : error.start + 1].hex()
                    raise SystemExit(
                        f"{source} is not UTF-8: line {line_number} has the byte 0x{byte} at column {error.start + 1} "
                        "(Latin-1 or Windows-1252 text, say). Save the file as UTF-8, e.g. "
                        f"`iconv -f latin1 -t utf-8 {Path(path).name} > utf8_{Path(path).name}`."
                    ) from None
    except (OSError, EOFError):  # not gzip after all, or cut short: the loader says why
        return


def one_line(error: Exception) -> str:
    """The reason behind a `datasets` error (it wraps parse errors), on one line."""
    cause = error.__cause__ or error
    return " ".join(f"{type(cause).__name__}: {cause}".split())


def first_row(dataset: datasets.Dataset | datasets.IterableDataset) -> dict | None:
    if isinstance(dataset, datasets.IterableDataset):
        return next(iter(dataset), None)
    return dataset[0] if len(dataset) else None


def first_rows(dataset: datasets.Dataset | datasets.IterableDataset, count: int):
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.take(count)
    return dataset.select(range(min(count, len(dataset))))


def column_names(dataset: datasets.Dataset | datasets.IterableDataset) -> list[str]:
    """The columns; a stream that does not declare them (csv, text) shows them in its first row."""
    return dataset.column_names or list(first_row(dataset) or {})


def require_columns(dataset: datasets.Dataset | datasets.IterableDataset, columns: list[str], fix: str) -> None:
    """Stop with the columns the data does have when one of `columns` is missing; `fix` says which flag to set."""
    present = column_names(dataset)
    missing = [column for column in columns if column not in present]
    if missing:
        raise SystemExit(f"The data has no column {missing[0]!r}; it has {present}. {fix}")


def drop_rows_without_text(raw: dict, keep, missing: str, none_left: str) -> None:
    """Filter every split with the batched predicate `keep`, warn how many rows of each went ("Dropped 2 train rows
    whose {missing}."), and stop where a split has none left (`none_left`, with {split} in it)."""
    for split in list(raw):
        before = len(raw[split])
        raw[split] = raw[split].filter(keep, batched=True, desc="Dropping rows without text")
        if len(raw[split]) < before:
            logger.warning("Dropped %d %s rows whose %s.", before - len(raw[split]), split, missing)
        if len(raw[split]) == 0:
            raise SystemExit(none_left.format(split=split))


def tokenize_splits(raw: dict, preprocess, data_args: DataArguments, training_args) -> dict[str, datasets.Dataset]:
    """Every split through the batched `preprocess`, keeping only the columns it makes. The main process goes
    first and the others read its cache, so that N processes do not tokenize N times."""
    with training_args.main_process_first(desc="tokenizing"):
        return {
            split: dataset.map(
                preprocess,
                batched=True,
                remove_columns=dataset.column_names,
                num_proc=data_args.preprocessing_num_workers,
                desc=f"Tokenizing {split}",
            )
            for split, dataset in raw.items()
        }
