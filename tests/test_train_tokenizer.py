"""`training/train_tokenizer.py`: special token ids, exact round trips for byte-level BPE and Unigram, `</s>` at
the end, padding, translation columns, config files, clear errors, and one run of the script as a program.

The corpora are English and German sentences made up here from a few word lists, so the tests ship no data;
one test also trains on the first rows of Multi30k from `../shared/data` when that folder exists.
"""

import json
import random
import subprocess
import sys
import unicodedata

import datasets
import pytest
from conftest import SHARED_DATA, command
from transformers import AutoTokenizer

from hf_scratch_transformer import ScratchTransformerConfig
from hf_scratch_transformer.training import train_tokenizer as tt
from hf_scratch_transformer.training.arguments import DataArguments, parse_arguments
from hf_scratch_transformer.training.data import load_raw_datasets

SCRIPT = command("train-tokenizer")
MULTI30K = SHARED_DATA / "multi30k"
VOCAB_SIZE = 500  # 105 special tokens + 256 bytes (BPE) or ~190 seed characters (Unigram) + some subwords
TYPES = ("bpe", "unigram")


# ---------------------------------------------------------------------------------------------------------------
# A made-up bilingual corpus, with capitals, accents, digits and punctuation
# ---------------------------------------------------------------------------------------------------------------

ENGLISH = (
    ["The old man", "A young woman", "Two children", "My neighbour", "The café owner", "Émile", "A brown dog"],
    ["sees", "paints", "repairs", "sells", "buys", "visits", "greets", "walks past"],
    ["the red house", "a small boat", "the bakery on Main Street", "an old bicycle", "the museum", "the river"],
    [".", "!", "?", " at {n} o'clock.", " (again).", ", doesn't she?", " in {n}.", " – really!"],
)
GERMAN = (
    ["Der alte Mann", "Eine junge Frau", "Zwei Kinder", "Mein Nachbar", "Die Bäckerin", "Jürgen", "Ein brauner Hund"],
    ["sieht", "malt", "repariert", "verkauft", "kauft", "besucht", "grüßt", "läuft über"],
    ["das rote Haus", "ein kleines Boot", "die Bäckerei in der Hauptstraße", "ein altes Fahrrad", "die Brücke"],
    [".", "!", "?", " um {n} Uhr.", " (schon wieder).", ", oder?", " im Jahr {n}.", " – wirklich schön!"],
)
# Held out: not made by the generator, with letters the corpus lacks (É, ö, Ü, ë, ç) that both models must keep.
HELD_OUT = [
    "Größere Straßen führen über die Brücke, sagt Jürgen Müller.",
    "Émile's café opens at 9:30 – isn't that early?",
    "Zoë und François trinken 2 Tassen Kaffee (mit Milch).",
    "ÄÖÜ äöü ß: 100% korrekt!",
    'The Über-driver said: "Schön, 42 Grad!"',
    "Two children and 3 dogs walk past the museum; nobody sees them.",
]


def sentences(words: tuple[list[str], ...], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(part) for part in words[:3]) + rng.choice(words[3]).format(n=rng.randint(1, 2025))
        for _ in range(count)
    ]


def corpus(count: int = 300, seed: int = 0) -> list[str]:
    return sentences(ENGLISH, count, seed) + sentences(GERMAN, count, seed + 1)


def write_jsonl(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module", params=TYPES)
def trained(request, tmp_path_factory):
    """A tokenizer of each type trained on the made-up corpus, saved, and loaded back with AutoTokenizer."""
    backend = tt.train_tokenizer(iter(corpus()), request.param, VOCAB_SIZE)
    output_dir = tmp_path_factory.mktemp(request.param)
    tt.to_transformers(backend).save_pretrained(output_dir)
    return AutoTokenizer.from_pretrained(output_dir)


# ---------------------------------------------------------------------------------------------------------------
# The saved tokenizer
# ---------------------------------------------------------------------------------------------------------------


def test_special_token_ids_are_fixed(trained):
    named = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
    sentinels = [f"<extra_id_{i}>" for i in range(100)]
    assert tt.special_tokens(100) == named + sentinels
    assert trained.convert_tokens_to_ids(named + sentinels) == list(range(105))
    assert (trained.pad_token, trained.bos_token, trained.eos_token) == ("<pad>", "<s>", "</s>")
    assert (trained.unk_token, trained.mask_token) == ("<unk>", "<mask>")
    assert list(trained.extra_special_tokens) == sentinels
    assert 400 < len(trained) <= VOCAB_SIZE  # Unigram may stop short of the size asked for


def test_ids_match_model_config_defaults(trained):
    config = ScratchTransformerConfig()
    assert trained.pad_token_id == config.pad_token_id == 0
    assert trained.bos_token_id == config.bos_token_id == config.decoder_start_token_id == 1
    assert trained.eos_token_id == config.eos_token_id == 2
    assert trained.model_max_length == 512
    assert trained.padding_side == "right"


@pytest.mark.parametrize("text", HELD_OUT)
def test_round_trip_is_exact(trained, text):
    ids = trained(text).input_ids
    assert trained.unk_token_id not in ids
    assert trained.decode(ids, skip_special_tokens=True) == text


def test_round_trip_of_generated_sentences(trained):
    texts = corpus(count=50, seed=7)
    decoded = trained.batch_decode(trained(texts).input_ids, skip_special_tokens=True)
    assert decoded == texts


def test_case_and_accents_are_kept(trained):
    """NFKC only: no lowercasing and no accent stripping, so these encode differently."""
    assert trained("Straße").input_ids != trained("strasse").input_ids
    assert trained("Café").input_ids != trained("Cafe").input_ids


def test_every_sequence_ends_with_eos(trained):
    assert trained("x").input_ids[-1] == 2
    assert trained("Ein Hund.").input_ids[-1] == 2
    pair = trained("A dog.", "Ein Hund.").input_ids
    assert pair.count(2) == 2 and pair[-1] == 2
    assert trained("Ein Hund.", add_special_tokens=False).input_ids[-1] != 2


def test_batch_padding_uses_pad_id_on_the_right(trained):
    batch = trained(["Hallo", "Die Bäckerin verkauft das rote Haus um 7 Uhr."], padding=True)
    short, long = batch.input_ids
    short_length = len(trained("Hallo").input_ids)
    assert len(short) == len(long) > short_length
    assert short[short_length - 1] == 2 and set(short[short_length:]) == {0}
    assert batch.attention_mask[0] == [1] * short_length + [0] * (len(long) - short_length)
    assert 0 not in long


def test_min_frequency_changes_bpe_merges():
    texts = corpus(count=100)
    low = tt.train_tokenizer(iter(texts), "bpe", VOCAB_SIZE, min_frequency=1).get_vocab_size()
    high = tt.train_tokenizer(iter(texts), "bpe", VOCAB_SIZE, min_frequency=50).get_vocab_size()
    assert high < low <= VOCAB_SIZE


@pytest.mark.parametrize("tokenizer_type", TYPES)
def test_lowercase_and_html_line_breaks_options_live_in_the_saved_normalizer(tmp_path, tokenizer_type):
    """IMDB reviews are cased and hold `<br />` tags; SST-2 is lower-cased. With both options the saved tokenizer
    reads them alike, and so does every later user of the saved folder."""
    texts = [text + " <br /><br />" + text.upper() for text in corpus(count=200)]
    normalizer = tt.build_normalizer(lowercase=True, html_line_breaks_to_spaces=True)
    backend = tt.train_tokenizer(iter(texts), tokenizer_type, VOCAB_SIZE, normalizer=normalizer)
    tt.to_transformers(backend).save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    review = "The OLD man sees the red house.<br /><br/>It's GREAT<BR>"
    assert tokenizer(review).input_ids == tokenizer("the old man sees the red house.  it's great ").input_ids
    assert not any("<" in token or "br" == token.strip("Ġ▁") for token in tokenizer.tokenize(review))

    plain = tt.train_tokenizer(iter(texts), tokenizer_type, VOCAB_SIZE)  # the default: NFKC alone, exact round trip
    assert plain.decode(plain.encode(review).ids, skip_special_tokens=True) == review


@pytest.mark.parametrize(
    ("treebank", "raw"),
    [
        ("it does n't work , and it 's bad .", "it doesn't work, and it's bad."),
        ("they 're sure i 've , we 'll , you 'd , i 'm", "they're sure i've, we'll, you'd, i'm"),
        ("wo n't ; ca n't : fine ! really ?", "won't; can't: fine! really?"),
        ("a `` gem '' ( maybe ) costs $ 5 , 90 %", 'a "gem" (maybe) costs $5, 90%'),
    ],
)
def test_join_ptb_tokens_reads_treebank_text_as_raw_text_writes_it(treebank, raw):
    """SST-2 is split the Penn Treebank way, IMDB is raw: with the option, both spellings normalize to the raw one,
    so a vocabulary trained on reviews reads SST-2's `does n't` as the `doesn't` it learned."""
    normalizer = tt.build_normalizer(join_ptb_tokens=True)
    assert normalizer.normalize_str(treebank) == raw
    assert normalizer.normalize_str(raw) == raw  # raw text is left as it is
    assert tt.build_normalizer().normalize_str(treebank) == treebank  # off by default: exact round trip


def test_join_ptb_tokens_lives_in_the_saved_tokenizer(tmp_path):
    texts = corpus(count=200) + ["It doesn't work, it's bad."] * 20
    normalizer = tt.build_normalizer(lowercase=True, join_ptb_tokens=True)
    backend = tt.train_tokenizer(iter(texts), "bpe", VOCAB_SIZE, normalizer=normalizer)
    tt.to_transformers(backend).save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer("it does n't work , it 's bad .").input_ids == tokenizer("It doesn't work, it's bad.").input_ids


# ---------------------------------------------------------------------------------------------------------------
# Choosing text columns
# ---------------------------------------------------------------------------------------------------------------


def test_default_text_columns_are_the_string_columns():
    dataset = datasets.Dataset.from_dict({"title": ["A b."], "label": [1], "body": ["C d."]})
    fields = tt.text_fields(dataset.features)
    assert fields == [("title", None), ("body", None)]
    assert list(tt.text_iterator(dataset, fields)) == ["A b.", "C d."]
    assert tt.text_fields(dataset.features, ["body"]) == [("body", None)]


def test_translation_column_yields_both_languages(tmp_path):
    rows = [{"translation": {"en": en, "de": de}} for en, de in zip(corpus(50)[:50], corpus(50)[50:], strict=True)]
    data_args = DataArguments(train_file=write_jsonl(tmp_path / "pairs.jsonl", rows), cache_dir=str(tmp_path))
    dataset = load_raw_datasets(data_args)["train"]
    fields = tt.text_fields(tt.dataset_features(dataset))
    assert sorted(fields) == [("translation", "de"), ("translation", "en")]
    texts = list(tt.text_iterator(dataset, fields))
    assert sorted(texts) == sorted(text for row in rows for text in row["translation"].values())
    assert tt.text_fields(tt.dataset_features(dataset), languages=["en"]) == [("translation", "en")]

    # The Hub's `Translation` feature type reads the same way.
    hub_style = datasets.Features({"translation": datasets.Translation(languages=["de", "en"])})
    assert tt.text_fields(hub_style) == [("translation", "de"), ("translation", "en")]


@pytest.mark.parametrize("tokenizer_type", TYPES)
def test_training_on_translation_uses_both_sides(tmp_path, tokenizer_type):
    """A word that only the German side holds takes fewer tokens than when training on English alone (BPE: one
    token), and never <unk>."""
    rng = random.Random(0)
    rows = [
        {"translation": {"en": english, "de": f"{german[:-1]} an der Straßenbahnhaltestelle{german[-1]}"}}
        for english, german in zip(sentences(ENGLISH, 200, 1), sentences(GERMAN, 200, 2), strict=True)
    ]
    rng.shuffle(rows)
    train_file = write_jsonl(tmp_path / "pairs.jsonl", rows)
    common = ["--train_file", train_file, "--cache_dir", str(tmp_path), "--vocab_size", str(VOCAB_SIZE)]
    common += ["--tokenizer_type", tokenizer_type]
    both = tt.main(common + ["--output_dir", str(tmp_path / "both")])
    english_only = tt.main(common + ["--output_dir", str(tmp_path / "en"), "--languages", "en"])

    text = "Jürgen wartet an der Straßenbahnhaltestelle."
    ids = both(text, add_special_tokens=False).input_ids
    assert both.unk_token_id not in ids
    if tokenizer_type == "bpe":
        assert "Straßenbahnhaltestelle" in [both.decode([i]).strip() for i in ids]
    assert len(ids) < len(english_only(text, add_special_tokens=False).input_ids)
    assert both.decode(ids) == text


def test_hub_dataset_goes_through_load_dataset(monkeypatch):
    """The Hub cannot be reached here, so `datasets.load_dataset` is replaced by one that records its arguments."""
    calls = []
    hub_rows = datasets.Dataset.from_dict(
        {"translation": [{"de": "Ein Hund.", "en": "A dog."}] * 5},
        features=datasets.Features({"translation": datasets.Translation(languages=["de", "en"])}),
    )

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.DatasetDict(train=hub_rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data_args, text_args, _ = parse_arguments(
        DataArguments, tt.TextArguments, tt.TokenizerArguments,
        argv=["--dataset_name", "wmt16", "--dataset_config_name", "de-en", "--max_train_samples", "3",
              "--output_dir", "out"],
    )  # fmt: skip
    dataset = load_raw_datasets(data_args)["train"]
    assert calls == [(("wmt16", "de-en"), {"streaming": False, "cache_dir": None})]
    fields = tt.text_fields(tt.dataset_features(dataset), languages=tt.split_names(text_args.languages))
    assert list(tt.text_iterator(dataset, fields)) == ["Ein Hund.", "A dog."] * 3


def test_streaming_reads_the_same_texts(tmp_path):
    train_file = write_jsonl(tmp_path / "pairs.jsonl", [{"translation": {"en": "A b.", "de": "Ä ö."}}] * 3)
    texts = {}
    for streaming in (False, True):
        data_args = DataArguments(train_file=train_file, max_train_samples=2, cache_dir=str(tmp_path))
        dataset = load_raw_datasets(data_args, streaming=streaming)["train"]
        texts[streaming] = list(tt.text_iterator(dataset, tt.text_fields(tt.dataset_features(dataset))))
    assert texts[True] == texts[False] == ["A b.", "Ä ö."] * 2


# ---------------------------------------------------------------------------------------------------------------
# Arguments and errors
# ---------------------------------------------------------------------------------------------------------------


def test_arguments_from_json_and_yaml_files(tmp_path):
    values = {"train_file": "corpus.txt", "output_dir": "out", "tokenizer_type": "unigram", "vocab_size": 1000}
    json_file = tmp_path / "args.json"
    json_file.write_text(json.dumps(values))
    yaml_file = tmp_path / "args.yaml"
    yaml_file.write_text("".join(f"{key}: {value}\n" for key, value in values.items()))

    def parse(argv: list[str]) -> tuple:
        return parse_arguments(DataArguments, tt.TextArguments, tt.TokenizerArguments, argv=argv)

    from_command_line = parse([f"--{key}={value}" for key, value in values.items()])
    assert parse([str(json_file)]) == parse([str(yaml_file)]) == from_command_line
    data_args, _, tokenizer_args = from_command_line
    assert data_args.train_file == "corpus.txt"
    assert (tokenizer_args.tokenizer_type, tokenizer_args.vocab_size, tokenizer_args.num_sentinel_tokens) == (
        "unigram",
        1000,
        100,
    )
    assert tt.split_names("en, de") == tt.split_names(["en", "de"]) == ["en", "de"]


def test_missing_text_column_lists_the_columns():
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.Value("int64")})
    with pytest.raises(SystemExit, match=r"'text' is not in the dataset; its columns are \['sentence', 'label'\]"):
        tt.text_fields(features, ["text"])
    with pytest.raises(SystemExit, match="not text"):
        tt.text_fields(features, ["label"])
    with pytest.raises(SystemExit, match=r"no string column.*\['label'\].*--text_columns"):
        tt.text_fields(datasets.Features({"label": datasets.Value("int64")}))
    with pytest.raises(SystemExit, match="--languages"):
        tt.text_fields(features, languages=["en"])


def test_unknown_language_lists_the_languages():
    features = datasets.Features({"translation": {"de": datasets.Value("string"), "en": datasets.Value("string")}})
    with pytest.raises(SystemExit, match=r"'fr' is not in column 'translation', which holds \['de', 'en'\]"):
        tt.text_fields(features, languages=["en", "fr"])


def test_missing_text_column_from_the_command_line(tmp_path):
    train_file = write_jsonl(tmp_path / "data.jsonl", [{"sentence": "A b.", "label": 1}])
    with pytest.raises(SystemExit, match=r"'text' is not in the dataset.*\['sentence', 'label'\]"):
        tt.main(["--train_file", train_file, "--text_columns", "text", "--output_dir", str(tmp_path / "out")])


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", "", "is empty"),  # the loader's messages: tests/test_data_loading.py has them all
        ("blank_texts.jsonl", '{"text": ""}\n{"text": null}\n', "rows but no text"),
        ("blank_lines.txt", "\n \n", "rows but no text"),
    ],
)
def test_data_without_text_is_an_error(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    args = ["--train_file", str(tmp_path / name), "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path)]
    with pytest.raises(SystemExit, match=message):
        tt.main(args)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tokenizer_type", TYPES)
def test_vocab_size_too_small_is_an_error(tokenizer_type):
    with pytest.raises(ValueError, match=r"--vocab_size 50` is too small.*105 special tokens"):
        tt.TokenizerArguments(output_dir="out", tokenizer_type=tokenizer_type, vocab_size=50)
    minimum = tt.minimum_vocab_size(tokenizer_type, 105)
    with pytest.raises(ValueError, match=f"more than {minimum}"):
        tt.build_tokenizer(tokenizer_type, minimum)
    tt.build_tokenizer(tokenizer_type, minimum + 1)
    tt.build_tokenizer(tokenizer_type, 300, num_sentinel_tokens=0)  # fewer sentinels leave room


# ---------------------------------------------------------------------------------------------------------------
# The script as a program, and on real data
# ---------------------------------------------------------------------------------------------------------------


def test_script_end_to_end(tmp_path):
    rows = [{"id": i, "text": text} for i, text in enumerate(corpus())]
    train_file = write_jsonl(tmp_path / "corpus.jsonl", rows)
    output_dir = tmp_path / "tokenizer"
    command = [sys.executable, *SCRIPT, "--train_file", train_file, "--output_dir", str(output_dir)]
    command += ["--vocab_size", str(VOCAB_SIZE), "--cache_dir", str(tmp_path / "cache"), "--model_max_length", "128"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"vocab_size: {VOCAB_SIZE}" in result.stdout
    assert f"sample: {rows[0]['text']!r}" in result.stdout
    assert "decoded back exactly: True" in result.stdout

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert tokenizer.model_max_length == 128
    assert tokenizer(HELD_OUT[0]).input_ids[-1] == tokenizer.eos_token_id == 2
    assert tokenizer.decode(tokenizer(HELD_OUT[0]).input_ids, skip_special_tokens=True) == HELD_OUT[0]


@pytest.mark.skipif(not MULTI30K.is_dir(), reason=f"{MULTI30K} is absent")
@pytest.mark.parametrize("tokenizer_type", TYPES)
def test_multi30k(tmp_path, tokenizer_type):
    """2000 sentence pairs of Multi30k; validation sentences (never seen) come back exactly, without <unk>."""
    args = ["--train_file", str(MULTI30K / "train.jsonl"), "--max_train_samples", "2000", "--vocab_size", "2000"]
    args += ["--tokenizer_type", tokenizer_type, "--output_dir", str(tmp_path), "--cache_dir", str(tmp_path / "c")]
    tt.main(args)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tokenizer) == 2000

    with open(MULTI30K / "validation.jsonl", encoding="utf-8") as file:
        pairs = [json.loads(line)["translation"] for line in file][:300]
    texts = [pair[language] for pair in pairs for language in ("en", "de")]
    ids = tokenizer(texts).input_ids
    assert all(row[-1] == 2 and tokenizer.unk_token_id not in row for row in ids)
    # Exact, except where NFKC folds a character: one of these sentences has "120\xa0cm" (a no-break space).
    expected = [unicodedata.normalize("NFKC", text) for text in texts]
    assert sum(text != normalized for text, normalized in zip(texts, expected, strict=True)) == 1
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == expected
    # A shared EN-DE vocabulary of 2000 should cost only a few tokens a word.
    tokens_per_word = sum(len(row) - 1 for row in ids) / sum(len(text.split()) for text in texts)
    assert tokens_per_word < 2.0
