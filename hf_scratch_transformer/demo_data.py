"""A translation task the package generates itself: numbers written out in English words, into German words.

Why this task for the demo:

- It is not trivial. German says the units before the tens ("zweiundvierzig", two-and-forty, for
  "forty-two"), writes a whole number below a million as one compound word without spaces
  ("dreihundertzweiundvierzig"), and says "eins" for a final one but "ein" inside a compound
  ("einundzwanzig", "einhunderteins", "einunddreißigtausend"). A model has to learn reordering, a
  many-to-one alignment of words and a context-dependent form, which is what attention is for.
- It is deterministic and exactly checkable: every number has exactly one correct translation, so exact
  match is a meaningful metric and a wrong output can be read and understood by anyone.
- Nothing is downloaded: the data comes from this file, so `make demo` runs offline and gives the same data
  on every machine.

Conventions, one each:

- English is American style without "and": 342 -> "three hundred forty-two", 105 -> "one hundred five",
  12_005 -> "twelve thousand five"; tens and units are joined by a hyphen ("forty-two"); hundreds and
  thousands always say their multiplier ("one hundred", "one thousand").
- German follows the standard orthography for numbers below a million: one lower-case word, no spaces and
  no hyphens. Hundreds and thousands always say their multiplier, "einhundert" and "eintausend" (not the
  equally correct "hundert", "tausend"), and nothing is inserted after the hundreds ("einhunderteins", not
  "einhundertundeins"). A one is "eins" only at the very end of the number and "ein" everywhere else:
  1 -> "eins", 101 -> "einhunderteins", 1_001 -> "eintausendeins", 21 -> "einundzwanzig",
  101_000 -> "einhunderteintausend". Zero is "null".
"""

from __future__ import annotations

import operator
import random

from .extras import missing_extra_says_which

with missing_extra_says_which("train", "The demo's data set"):
    from datasets import Dataset, DatasetDict, Features, Translation, Value

MAX_NUMBER = 999_999  # both spellings below stop short of a million ("one million", "eine Million": two words)

_EN_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
_EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

# German forms of 1..9 inside a compound: "ein", not "eins" ("einhundert", "einundzwanzig").
_DE_UNITS = ["", "ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"]
# 10..19: "sechzehn" and "siebzehn" drop the "s" and "en" of "sechs" and "sieben".
_DE_TEENS = [
    "zehn",
    "elf",
    "zwölf",
    "dreizehn",
    "vierzehn",
    "fünfzehn",
    "sechzehn",
    "siebzehn",
    "achtzehn",
    "neunzehn",
]
# "dreißig" (not "dreizig"), "sechzig", "siebzig": the irregular tens.
_DE_TENS = ["", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig"]

FEATURES = Features({"translation": Translation(languages=["en", "de"]), "number": Value("int32")})


def _check_number(n: int) -> int:
    n = operator.index(n)  # ints (and NumPy integers) only: 3.0 raises TypeError
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"numbers are spelled out from 0 to {MAX_NUMBER:_}, got {n:_}")
    return n


def _english_below_1000(n: int) -> str:
    """1 <= n <= 999 in English words."""
    hundreds, rest = divmod(n, 100)
    words = [f"{_EN_ONES[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        tens, units = divmod(rest, 10)
        words.append(_EN_TENS[tens] + (f"-{_EN_ONES[units]}" if units else ""))
    elif rest:
        words.append(_EN_ONES[rest])
    return " ".join(words)


def english_words(n: int) -> str:
    """`n` (0 to 999_999) in American English words: 342 -> "three hundred forty-two"."""
    n = _check_number(n)
    if n == 0:
        return "zero"
    thousands, rest = divmod(n, 1000)
    words = [f"{_english_below_1000(thousands)} thousand"] if thousands else []
    if rest:
        words.append(_english_below_1000(rest))
    return " ".join(words)


def _german_below_1000(n: int, final: bool) -> str:
    """1 <= n <= 999 in German; `final` says whether the number ends here, where a one is "eins"."""
    hundreds, rest = divmod(n, 100)
    word = f"{_DE_UNITS[hundreds]}hundert" if hundreds else ""
    if rest >= 20:
        tens, units = divmod(rest, 10)
        word += (f"{_DE_UNITS[units]}und" if units else "") + _DE_TENS[tens]  # units before tens
    elif rest >= 10:
        word += _DE_TEENS[rest - 10]
    elif rest:
        word += "eins" if rest == 1 and final else _DE_UNITS[rest]
    return word


def german_words(n: int) -> str:
    """`n` (0 to 999_999) in German, one word: 342 -> "dreihundertzweiundvierzig"."""
    n = _check_number(n)
    if n == 0:
        return "null"
    thousands, rest = divmod(n, 1000)
    word = f"{_german_below_1000(thousands, final=False)}tausend" if thousands else ""
    if rest:
        word += _german_below_1000(rest, final=True)
    return word


def _rows(numbers: list[int]) -> dict[str, list]:
    return {
        "translation": [{"en": english_words(n), "de": german_words(n)} for n in numbers],
        "number": numbers,
    }


def make_translation_dataset(
    num_examples: int, seed: int, max_number: int = 9999, exclude: set[int] | None = None
) -> Dataset:
    """`num_examples` distinct numbers from [0, max_number], minus `exclude`, drawn by `random.Random(seed)`.

    Rows follow the Hub's translation convention, `{"translation": {"en": ..., "de": ...}, "number": n}`, in
    the order drawn (not sorted). The same arguments always give the same dataset.
    """
    max_number = _check_number(max_number)
    excluded = set() if exclude is None else {operator.index(n) for n in exclude}
    population = range(max_number + 1)
    if excluded:
        population = [n for n in population if n not in excluded]
    if not 0 <= num_examples <= len(population):
        raise ValueError(
            f"cannot draw {num_examples} distinct numbers: [0, {max_number}] holds {len(population)} "
            f"once {max_number + 1 - len(population)} excluded numbers are removed"
        )
    numbers = random.Random(seed).sample(population, num_examples)
    return Dataset.from_dict(_rows(numbers), features=FEATURES)


def make_demo_splits(
    train_size: int, validation_size: int, test_size: int, seed: int = 0, max_number: int = 9999
) -> DatasetDict:
    """Train, validation and test splits with no number in common: the held-out numbers are never trained on.

    The test split is drawn first and each later split excludes the earlier ones, so the test set for a seed
    stays the same when `train_size` or `validation_size` change, and results stay comparable. Each split has
    its own seed (`3 * seed`, `3 * seed + 1`, `3 * seed + 2`), so no two non-negative seeds share a draw.
    """
    test = make_translation_dataset(test_size, seed=3 * seed, max_number=max_number)
    held_out = set(test["number"])
    validation = make_translation_dataset(validation_size, 3 * seed + 1, max_number, exclude=held_out)
    held_out |= set(validation["number"])
    train = make_translation_dataset(train_size, 3 * seed + 2, max_number, exclude=held_out)
    return DatasetDict(train=train, validation=validation, test=test)
