#!/usr/bin/env python
"""Train the shared source/target subword vocabulary of the scratch Transformer, and save it as a Hugging Face
tokenizer that `AutoTokenizer.from_pretrained` loads.

Examples:

    # a local file: .json / .jsonl (one JSON object a line), .csv, or .txt (one text a line), each also as .gz
    hf-scratch-transformer train-tokenizer --train_file ../shared/data/multi30k/train.jsonl --output_dir tokenizer/

    # a Hub dataset with a `translation` column ({"de": ..., "en": ...}): both sides train one shared vocabulary
    hf-scratch-transformer train-tokenizer --dataset_name wmt16 --dataset_config_name de-en --languages de,en \
        --vocab_size 37000 --output_dir tokenizer/

    # every argument from one file
    hf-scratch-transformer train-tokenizer tokenizer_args.yaml

The data flags are those of every training script (`--dataset_name`, `--train_file`, `--max_train_samples`, ...,
read by training/data.py); the tokenizer trains on the train split. Which columns are read: `--text_columns` if
given; otherwise a `translation` column (the Hub's convention for parallel data, a dict of language -> text) on all
its languages or on `--languages`; otherwise every string column.

Two subword models (`--tokenizer_type`):

- `bpe` (the default): byte-level BPE, as in GPT-2 and RoBERTa. The paper itself used byte-pair encoding, with a
  shared EN-DE vocabulary of about 37000 tokens. Text is first mapped to bytes, and all 256 bytes are in the
  vocabulary, so no input ever becomes `<unk>` and decoding gives back exactly the text that was encoded:
  spaces, tabs, newlines and characters never seen in training included. The price: 256 ids go to the byte
  alphabet, and a rare non-ASCII character (two to four bytes in UTF-8) can cost as many tokens.
- `unigram`: a Unigram language model over words marked with `Metaspace` (a space becomes "▁", as in
  SentencePiece and T5). Its pieces are whole characters, so an accented letter is one token; but a character
  that is neither in the training text nor in the seed alphabet below becomes `<unk>` and is lost on decoding.
  The seed alphabet (printable ASCII, Latin-1 and typographic quotes and dashes) covers English, German and
  French. Like SentencePiece, it drops a space at the very start of a text.

Both normalize with NFKC only: case and accents are kept, and compatibility characters are folded ("…" -> "...",
"²" -> "2", full-width letters -> ASCII). So the round trip `decode(encode(text), skip_special_tokens=True) == text`
is exact for text that is already NFKC, which ordinary English and German prose is. Three options add to the
normalizer, for text classification, where the round trip does not matter: `--lowercase` (SST-2 is lower-cased;
one vocabulary then serves it and cased IMDB reviews), `--html_line_breaks_to_spaces` (IMDB's reviews hold raw
`<br />` tags, which would otherwise take a token or two each, about 4 a review), and `--join_ptb_tokens`: SST-2 is
split the Penn Treebank way (`does n't`, `it 's`, `great , but`, ``` `` a gem '' ```), where raw text such as IMDB's
writes `doesn't`, `it's`, `great, but`, `"a gem"`; byte-level BPE reads the two spellings as different tokens
(`Ġn 't` against `'t`, `Ġ' s` against `'s`, `Ġ,` against `,`), so what a model learns about one does not carry to
the other. The option rejoins the clitics and punctuation before anything is split. The normalizer is saved with the
tokenizer, so fine-tuning and inference normalize exactly as training did.

Special tokens have fixed ids, those that `ScratchTransformerConfig` defaults to: `<pad>` = 0 (`pad_token_id`),
`<s>` = 1 (`bos_token_id` and `decoder_start_token_id`), `</s>` = 2 (`eos_token_id`), `<unk>` = 3, `<mask>` = 4,
then `--num_sentinel_tokens` T5-style sentinels `<extra_id_0>`, `<extra_id_1>`, ... for span-corruption
pretraining. Every encoded sequence ends with `</s>` (a pair: `A </s> B </s>`); padding is on the right.
"""

import logging
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

import datasets
import pyarrow as pa
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from .arguments import DataArguments, parse_arguments
from .data import load_raw_datasets

logger = logging.getLogger(__name__)

# The ids 0..4 are the defaults of `ScratchTransformerConfig`: pad_token_id=0, bos_token_id=1, eos_token_id=2.
PAD, BOS, EOS, UNK, MASK = "<pad>", "<s>", "</s>", "<unk>", "<mask>"
NAMED_SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, MASK)
TOKENIZER_TYPES = ("bpe", "unigram")
TRANSLATION_COLUMN = "translation"

# Characters the Unigram model keeps even when the training text lacks them, so that held-out English, German or
# French text does not hit `<unk>`. Only characters that NFKC leaves alone: the others never reach the model.
UNIGRAM_SEED_ALPHABET = [
    char
    for char in dict.fromkeys(
        [chr(code) for code in range(0x21, 0x7F)]  # printable ASCII without the space (that is "▁")
        + [chr(code) for code in range(0xA1, 0x100)]  # Latin-1: äöüß, é, ç, «», °, ...
        + list("€–—„“”‚‘’\t\n")
    )
    if unicodedata.normalize("NFKC", char) == char
]


@dataclass
class TextArguments:
    """Which texts of the data to train on, and how to read them."""

    text_columns: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated columns to read, e.g. `title,body`. Default: a `translation` column if there is "
            "one, otherwise every string column."
        },
    )
    languages: str | None = field(
        default=None,
        metadata={"help": "Comma-separated languages of a `translation` column to read, e.g. `en,de`. Default: all."},
    )
    streaming: bool = field(
        default=False, metadata={"help": "Read the data as a stream instead of downloading and caching it whole."}
    )


@dataclass
class TokenizerArguments:
    """What to train, and where to save it."""

    output_dir: str = field(metadata={"help": "Directory to save the tokenizer to (`save_pretrained`)."})
    tokenizer_type: str = field(
        default="bpe",
        metadata={
            "help": "`bpe` (byte-level BPE, lossless) or `unigram` (Unigram with Metaspace).",
            "choices": TOKENIZER_TYPES,
        },
    )
    vocab_size: int = field(
        default=8000, metadata={"help": "Size of the vocabulary, special tokens included; the model's `vocab_size`."}
    )
    min_frequency: int = field(
        default=2, metadata={"help": "BPE only: merge a pair only if it occurs at least this often."}
    )
    num_sentinel_tokens: int = field(
        default=100, metadata={"help": "Number of T5-style sentinels `<extra_id_N>` for span-corruption pretraining."}
    )
    model_max_length: int = field(
        default=512, metadata={"help": "Longest input the model takes (its `max_position_embeddings`)."}
    )
    lowercase: bool = field(default=False, metadata={"help": "Lower-case every text (in the saved normalizer)."})
    html_line_breaks_to_spaces: bool = field(
        default=False, metadata={"help": "Read HTML line breaks (`<br />`, `<br>`) as spaces (saved normalizer)."}
    )
    join_ptb_tokens: bool = field(
        default=False,
        metadata={
            "help": "Rejoin Penn Treebank tokenization as raw text writes it: `does n't` -> `doesn't`, `it 's` -> "
            "`it's`, `a , b .` -> `a, b.`, `` and '' -> \" (saved normalizer; for SST-2 beside raw text)."
        },
    )

    def __post_init__(self):
        if self.num_sentinel_tokens < 0:
            raise ValueError(f"`--num_sentinel_tokens` cannot be negative, got {self.num_sentinel_tokens}.")
        check_vocab_size(self.tokenizer_type, self.vocab_size, self.num_sentinel_tokens)


def split_names(names: str | list[str] | None) -> list[str] | None:
    """`"en, de"` (command line) or `["en", "de"]` (a YAML list) -> `["en", "de"]`."""
    if names is None:
        return None
    if isinstance(names, str):
        names = names.split(",")
    return [name.strip() for name in names if name.strip()]


def special_tokens(num_sentinel_tokens: int = 100) -> list[str]:
    """The special tokens in id order: `<pad> <s> </s> <unk> <mask>` then `<extra_id_0>` ... (ids 5, 6, ...)."""
    return list(NAMED_SPECIAL_TOKENS) + [f"<extra_id_{i}>" for i in range(num_sentinel_tokens)]


def minimum_vocab_size(tokenizer_type: str, num_special_tokens: int) -> int:
    """The special tokens plus the alphabet the model always keeps: 256 bytes (BPE), or the seed characters and
    the word-boundary mark "▁" (Unigram)."""
    alphabet = len(pre_tokenizers.ByteLevel.alphabet()) if tokenizer_type == "bpe" else len(UNIGRAM_SEED_ALPHABET) + 1
    return num_special_tokens + alphabet


def check_vocab_size(tokenizer_type: str, vocab_size: int, num_sentinel_tokens: int) -> None:
    """Raise a `ValueError` if the vocabulary has no room left after the special tokens and the alphabet."""
    if tokenizer_type not in TOKENIZER_TYPES:
        raise ValueError(f"`--tokenizer_type` must be one of {TOKENIZER_TYPES}, got {tokenizer_type!r}.")
    num_special_tokens = len(NAMED_SPECIAL_TOKENS) + num_sentinel_tokens
    minimum = minimum_vocab_size(tokenizer_type, num_special_tokens)
    if vocab_size <= minimum:
        alphabet = "256 byte symbols" if tokenizer_type == "bpe" else f"{minimum - num_special_tokens} seed characters"
        raise ValueError(
            f"`--vocab_size {vocab_size}` is too small for {tokenizer_type}: its {num_special_tokens} special tokens "
            f"({len(NAMED_SPECIAL_TOKENS)} named + {num_sentinel_tokens} sentinels) and {alphabet} already take "
            f"{minimum} ids, which leaves no room for subwords. Ask for more than {minimum} (8000 to 37000 are "
            "usual), or lower `--num_sentinel_tokens`."
        )


# -----------------------------------------------------------------------------------------------------------------
# Data (loaded by training/data.py): choose its text columns, and read the texts
# -----------------------------------------------------------------------------------------------------------------


def dataset_features(dataset: datasets.Dataset | datasets.IterableDataset) -> datasets.Features:
    """The column types; a stream whose types are not declared is typed from its first row."""
    if dataset.features is not None:
        return dataset.features
    return datasets.Features.from_arrow_schema(pa.Table.from_pylist([next(iter(dataset))]).schema)


def is_text(feature) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def translation_languages(feature) -> list[str] | None:
    """The languages of a translation column (a dict of language -> text), or None if `feature` is not one."""
    if isinstance(feature, datasets.Translation):
        return list(feature.languages)
    if isinstance(feature, dict) and feature and all(is_text(value) for value in feature.values()):
        return list(feature)
    return None


def text_fields(
    features: datasets.Features, text_columns: list[str] | None = None, languages: list[str] | None = None
) -> list[tuple[str, str | None]]:
    """Where the texts are: `(column, None)` for a string column, `(column, language)` for one side of a
    translation column. Stops with a message that lists the columns when the asked-for ones are not there."""
    columns = list(features)
    if text_columns is None:
        if TRANSLATION_COLUMN in features:
            text_columns = [TRANSLATION_COLUMN]
        else:
            text_columns = [name for name in columns if is_text(features[name])]
            if not text_columns:
                raise SystemExit(
                    f"The dataset has no string column to read text from; its columns are {columns}. "
                    "Name the text with `--text_columns`."
                )

    fields, used_translation = [], False
    for column in text_columns:
        if column not in features:
            raise SystemExit(
                f"Text column '{column}' is not in the dataset; its columns are {columns}. "
                "Pass some of them with `--text_columns` (comma-separated)."
            )
        feature = features[column]
        if is_text(feature):
            fields.append((column, None))
            continue
        column_languages = translation_languages(feature)
        if column_languages is None:
            raise SystemExit(
                f"Column '{column}' holds {feature}, not text. Choose string columns with `--text_columns`; "
                f"the dataset's columns are {columns}."
            )
        used_translation = True
        for language in languages or column_languages:
            if language not in column_languages:
                raise SystemExit(
                    f"Language '{language}' is not in column '{column}', which holds {column_languages}. "
                    "Fix `--languages`."
                )
            fields.append((column, language))
    if languages and not used_translation:
        raise SystemExit(
            f"`--languages {','.join(languages)}` applies to a translation column, but the columns read "
            f"({text_columns}) hold plain text. Drop `--languages` or read a translation column."
        )
    return fields


def text_iterator(
    dataset: datasets.Dataset | datasets.IterableDataset, fields: list[tuple[str, str | None]], batch_size: int = 1000
) -> Iterator[str]:
    """Every text of `fields` that is not empty or blank, row by row (read in batches: much faster)."""
    columns = list(dict.fromkeys(column for column, _ in fields))
    for batch in dataset.select_columns(columns).iter(batch_size=batch_size):
        for row in range(len(batch[columns[0]])):
            for column, language in fields:
                value = batch[column][row]
                text = value if language is None else (value or {}).get(language)
                if text and not text.isspace():
                    yield text


# -----------------------------------------------------------------------------------------------------------------
# Tokenizer: normalizer -> pre-tokenizer -> model -> post-processor, and the decoder that undoes them
# -----------------------------------------------------------------------------------------------------------------


# Penn Treebank tokenization (SST-2's) puts a space before clitics and closing punctuation and after opening
# brackets, and writes quotes as `` and ''. These patterns remove what raw text would not have.
SPACE_BEFORE_CLITIC_OR_CLOSING_PUNCTUATION = r"(?i) (?=n't\b|'(?:s|re|ve|ll|d|m)\b|[.,!?;:%)\]}])"
SPACE_AFTER_OPENING_BRACKET = r"(?<=[(\[{$]) "


def build_normalizer(
    lowercase: bool = False, html_line_breaks_to_spaces: bool = False, join_ptb_tokens: bool = False
) -> normalizers.Normalizer:
    """NFKC, then the options: `<br />` -> " ", lower case, Penn Treebank tokens rejoined."""
    steps = [normalizers.NFKC()]
    if html_line_breaks_to_spaces:
        steps.append(normalizers.Replace(Regex(r"(?i)<br\s*/?>"), " "))
    if lowercase:
        steps.append(normalizers.Lowercase())
    if join_ptb_tokens:
        steps += [
            normalizers.Replace(Regex(r"`` ?| ?''"), '"'),
            normalizers.Replace(Regex(SPACE_BEFORE_CLITIC_OR_CLOSING_PUNCTUATION), ""),
            normalizers.Replace(Regex(SPACE_AFTER_OPENING_BRACKET), ""),
        ]
    return steps[0] if len(steps) == 1 else normalizers.Sequence(steps)


def build_tokenizer(
    tokenizer_type: str,
    vocab_size: int,
    min_frequency: int = 2,
    num_sentinel_tokens: int = 100,
    normalizer: normalizers.Normalizer | None = None,
) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained `tokenizers.Tokenizer` and the trainer that fills its vocabulary, special tokens first.
    `normalizer`: default NFKC alone (see `build_normalizer`)."""
    check_vocab_size(tokenizer_type, vocab_size, num_sentinel_tokens)
    specials = special_tokens(num_sentinel_tokens)

    if tokenizer_type == "bpe":
        tokenizer = Tokenizer(models.BPE())  # no unk_token: every byte is in the vocabulary
        # add_prefix_space=False: a text's first word gets no invented space, so decoding gives the text back.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:
        tokenizer = Tokenizer(models.Unigram())
        # "always" puts "▁" before the first word too, so it is tokenized like every other word; the decoder
        # removes that one again.
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token=UNK, initial_alphabet=UNIGRAM_SEED_ALPHABET
        )
    tokenizer.normalizer = normalizer or build_normalizer()  # by default no lowercasing, no accent stripping
    return tokenizer, trainer


def train_tokenizer(
    texts: Iterator[str],
    tokenizer_type: str = "bpe",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    num_sentinel_tokens: int = 100,
    normalizer: normalizers.Normalizer | None = None,
) -> Tokenizer:
    """Train on `texts`, then make every sequence end with `</s>`."""
    tokenizer, trainer = build_tokenizer(tokenizer_type, vocab_size, min_frequency, num_sentinel_tokens, normalizer)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    for token_id, token in enumerate(special_tokens(num_sentinel_tokens)):  # the ids the model config expects
        if tokenizer.token_to_id(token) != token_id:
            raise RuntimeError(f"{token} got id {tokenizer.token_to_id(token)} instead of {token_id}.")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, tokenizer.token_to_id(EOS))]
    )
    return tokenizer


def to_transformers(
    tokenizer: Tokenizer, num_sentinel_tokens: int = 100, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Wrap the trained tokenizer so that `save_pretrained` / `AutoTokenizer.from_pretrained` know its specials."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK, mask_token=MASK,
        # the sentinels; `extra_special_tokens` is transformers v5's name for `additional_special_tokens`
        extra_special_tokens=special_tokens(num_sentinel_tokens)[len(NAMED_SPECIAL_TOKENS) :],
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,  # "a ." must not come back as "a."
    )  # fmt: skip


def main(argv: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Train, save and return the tokenizer; `argv`: the flags, default the command line."""
    data_args, text_args, tokenizer_args = parse_arguments(DataArguments, TextArguments, TokenizerArguments, argv=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    dataset = load_raw_datasets(data_args, streaming=text_args.streaming)["train"]
    fields = text_fields(
        dataset_features(dataset), split_names(text_args.text_columns), split_names(text_args.languages)
    )
    sample = next(text_iterator(dataset, fields), None)
    if sample is None:
        raise SystemExit(
            f"The data has rows but no text: every value of {fields} is empty or blank. Check the columns."
        )
    logger.info(
        "Training a %s tokenizer on %s",
        tokenizer_args.tokenizer_type,
        [c if lang is None else f"{c}.{lang}" for c, lang in fields],
    )

    backend = train_tokenizer(
        text_iterator(dataset, fields),
        tokenizer_args.tokenizer_type,
        tokenizer_args.vocab_size,
        tokenizer_args.min_frequency,
        tokenizer_args.num_sentinel_tokens,
        build_normalizer(
            tokenizer_args.lowercase, tokenizer_args.html_line_breaks_to_spaces, tokenizer_args.join_ptb_tokens
        ),
    )
    tokenizer = to_transformers(backend, tokenizer_args.num_sentinel_tokens, tokenizer_args.model_max_length)
    tokenizer.save_pretrained(tokenizer_args.output_dir)

    # A short summary: the size to put in the model config, and one text as the model will see it.
    ids = tokenizer(sample).input_ids
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    print(f"Saved a {tokenizer_args.tokenizer_type} tokenizer to {tokenizer_args.output_dir}")
    print(f"vocab_size: {len(tokenizer)} (use it as the model config's vocab_size)")
    named_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in NAMED_SPECIAL_TOKENS}
    sentinels = tokenizer_args.num_sentinel_tokens
    print(f"special tokens: {named_ids}, then {sentinels} sentinels <extra_id_0>... from id {len(named_ids)}")
    print(f"sample: {sample!r}")
    if tokenizer_args.tokenizer_type == "bpe":  # byte-level symbols ("Ġ", "Ã¤") are unreadable: show text
        print(f"tokens: {[tokenizer.decode([token_id]) for token_id in ids]}")
    else:
        print(f"tokens: {tokenizer.convert_ids_to_tokens(ids)}")
    print(f"ids:    {ids}")
    print(f"decoded back exactly: {decoded == sample}")
    return tokenizer


if __name__ == "__main__":
    main()
