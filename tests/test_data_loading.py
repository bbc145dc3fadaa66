"""`training/data.py`, the one data loader of every script: each file format and its .gz read the same rows, in
memory or as a stream; --max_train_samples and --max_eval_samples cut the splits; a Hub data set gives its train and
validation splits; and every way a file can be wrong stops the script with one line that names the file and the
fix. One test reads ../shared/data/imdb/validation.jsonl.gz when it is there."""

import gzip
import json
import re

import datasets
import pytest
from conftest import SHARED_DATA

from hf_scratch_transformer.training.arguments import DataArguments
from hf_scratch_transformer.training.data import DATA_FILE_BUILDERS, load_raw_datasets, require_columns

ROWS = [{"text": "A good film.", "label": 1}, {"text": "A dull one.", "label": 0}, {"text": "Fine.", "label": 1}]


def write(path, rows: list[dict] = ROWS) -> str:
    """`rows` in the format of `path`'s extension (.json and .jsonl: JSON Lines; .csv with a header; .txt: the
    texts alone), gzip-compressed when it ends in .gz."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".txt"):
        content = "".join(f"{row['text']}\n" for row in rows)
    elif name.endswith(".csv"):
        lines = [",".join(rows[0])] + [",".join(f'"{value}"' for value in row.values()) for row in rows]
        content = "\n".join(lines) + "\n"
    else:
        content = "".join(json.dumps(row) + "\n" for row in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(content.encode()))
    else:
        path.write_text(content)
    return str(path)


def load(tmp_path, streaming: bool = False, **data_args) -> dict:
    return load_raw_datasets(DataArguments(cache_dir=str(tmp_path / "cache"), **data_args), streaming=streaming)


@pytest.mark.parametrize("extension", [*DATA_FILE_BUILDERS, *(f"{extension}.gz" for extension in DATA_FILE_BUILDERS)])
def test_every_format_and_its_gz_read_the_same_rows(tmp_path, extension):
    raw = load(tmp_path, train_file=write(tmp_path / f"train{extension}"))
    expected = [{"text": row["text"]} for row in ROWS] if ".txt" in extension else ROWS
    assert list(raw) == ["train"] and raw["train"].to_list() == expected


def test_a_jsonl_gz_file_as_a_stream_and_in_memory(tmp_path):
    train, validation = write(tmp_path / "train.jsonl.gz"), write(tmp_path / "validation.jsonl.gz", ROWS[:2])
    in_memory = load(tmp_path, train_file=train, validation_file=validation)
    streamed = load(tmp_path, streaming=True, train_file=train, validation_file=validation)
    assert isinstance(streamed["train"], datasets.IterableDataset)
    assert list(streamed["train"]) == in_memory["train"].to_list() == ROWS
    # Validation is held in memory either way: every evaluation reads all of it.
    assert isinstance(streamed["validation"], datasets.Dataset) and streamed["validation"].to_list() == ROWS[:2]


@pytest.mark.parametrize("streaming", [False, True])
def test_max_samples_cut_both_splits(tmp_path, streaming):
    raw = load(
        tmp_path,
        streaming=streaming,
        train_file=write(tmp_path / "train.jsonl"),
        validation_file=write(tmp_path / "validation.jsonl"),
        max_train_samples=2,
        max_eval_samples=1,
    )
    assert list(raw["train"]) == ROWS[:2] and raw["validation"].to_list() == ROWS[:1]


def test_a_hub_data_set_gives_its_train_and_validation_splits(tmp_path, monkeypatch):
    """The Hub is not reached: `datasets.load_dataset` is replaced by one that records how it is called."""
    splits = datasets.DatasetDict(
        {split: datasets.Dataset.from_list(ROWS) for split in ("train", "validation", "test")}
    )
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return splits

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    raw = load(tmp_path, dataset_name="user/reviews", dataset_config_name="en", max_eval_samples=2)
    assert calls == [(("user/reviews", "en"), {"streaming": False, "cache_dir": str(tmp_path / "cache")})]
    assert list(raw) == ["train", "validation"]  # the test split is left out
    assert raw["train"].to_list() == ROWS and raw["validation"].to_list() == ROWS[:2]


def test_require_columns_names_those_there_are(tmp_path):
    raw = load(tmp_path, streaming=True, train_file=write(tmp_path / "train.csv"))
    require_columns(raw["train"], ["text", "label"], "Set --text_column.")
    with pytest.raises(SystemExit, match=r"^The data has no column 'sentence'; it has \['text', 'label'\]\. Set"):
        require_columns(raw["train"], ["sentence"], "Set --text_column.")


def broken(name: str, content: str | bytes):
    """A function of tmp_path that writes `content` to the file `name` there and returns its path."""

    def make(tmp_path) -> str:
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    return make


@pytest.mark.parametrize(
    ("data_args", "message"),
    [
        (
            lambda tmp_path: {"train_file": str(tmp_path / "missing.jsonl")},
            r"--train_file .*missing.jsonl: no such file",
        ),
        (
            lambda tmp_path: {"train_file": broken("data.parquet", "x")(tmp_path)},
            r"--train_file .*data.parquet: cannot tell how to read a '.parquet' file\. Name it with one of the "
            r"extensions \.json, \.jsonl, \.csv, \.txt, or one of them and \.gz\.$",
        ),
        (lambda tmp_path: {"train_file": broken("empty.jsonl", "")(tmp_path)}, r"--train_file .*empty.jsonl is empty"),
        (
            lambda tmp_path: {"train_file": broken("empty.jsonl.gz", gzip.compress(b""))(tmp_path)},
            r"--train_file .*empty.jsonl.gz is empty",
        ),
        (
            lambda tmp_path: {"train_file": broken("header.csv", "text,label\n")(tmp_path)},
            r"--train_file .*header.csv has no rows",
        ),
        (
            lambda tmp_path: {"train_file": broken("blank_lines.jsonl", "\n\n")(tmp_path)},
            r"--train_file .*blank_lines.jsonl has no rows",
        ),
        (
            lambda tmp_path: {"train_file": broken("broken.jsonl", '{"text": "a"}\nnot JSON\n')(tmp_path)},
            r"Could not read --train_file .*broken.jsonl as JSON \(JSON Lines: one object a line\): ArrowInvalid: "
            r"JSON parse error: .* in row 1\.$",
        ),
        (
            lambda tmp_path: {"train_file": broken("not_gzip.jsonl.gz", '{"text": "a"}\n')(tmp_path)},
            r"Could not read --train_file .*not_gzip.jsonl.gz as JSON .*: \w+",
        ),
        (
            lambda tmp_path: {
                "train_file": write(tmp_path / "train.jsonl"),
                "validation_file": write(tmp_path / "validation.jsonl", [{"sentence": "Fine.", "label": 1}]),
            },
            r"--validation_file .*validation.jsonl has the columns \['sentence', 'label'\] but --train_file "
            r".*train.jsonl has \['text', 'label'\]: give both files the same columns\.$",
        ),
        (
            lambda tmp_path: {"validation_file": write(tmp_path / "validation.jsonl")},
            r"^No training data: pass --dataset_name, or --train_file",
        ),
        (
            lambda tmp_path: {"dataset_name": "user/reviews", "train_file": write(tmp_path / "train.jsonl")},
            r"^Pass either --dataset_name or data files .*, not both\.$",
        ),
        (
            lambda tmp_path: {"train_file": write(tmp_path / "train.jsonl"), "max_train_samples": 0},
            r"^--max_train_samples 0: give a positive number of rows",
        ),
    ],
    ids=[
        "missing file",
        "unknown extension",
        "empty file",
        "empty gz",
        "csv header only",
        "blank lines",
        "unparseable",
        "not gzip",
        "different columns",
        "no train file",
        "hub and files",
        "no rows asked for",
    ],
)
def test_each_bad_input_stops_with_one_line_that_names_it(tmp_path, data_args, message):
    with pytest.raises(SystemExit) as stopped:
        load(tmp_path, **data_args(tmp_path))
    assert "\n" not in str(stopped.value)
    assert re.search(message, str(stopped.value)), str(stopped.value)


@pytest.mark.skipif(not (SHARED_DATA / "imdb").is_dir(), reason="../shared/data/imdb is absent")
def test_real_imdb_validation_file_as_it_is(tmp_path):
    """../shared/data/imdb/validation.jsonl.gz, read without unpacking: its 2,473 reviews (the data README)."""
    path = SHARED_DATA / "imdb" / "validation.jsonl.gz"
    raw = load(tmp_path, train_file=str(path))
    assert len(raw["train"]) == 2473
    assert set(raw["train"].column_names) == {"text", "label", "rating", "id"}
    with gzip.open(path, "rt", encoding="utf-8") as file:
        first = json.loads(file.readline())
    assert raw["train"][0] == first
