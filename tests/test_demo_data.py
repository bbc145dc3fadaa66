"""The demo's generated task: numbers in English words -> German words, and its deterministic, disjoint splits."""

import random
import re

import pytest

from hf_scratch_transformer.demo_data import english_words, german_words, make_demo_splits, make_translation_dataset

KNOWN = [
    (0, "zero", "null"),
    (1, "one", "eins"),
    (7, "seven", "sieben"),
    (10, "ten", "zehn"),
    (11, "eleven", "elf"),
    (12, "twelve", "zwölf"),
    (13, "thirteen", "dreizehn"),
    (16, "sixteen", "sechzehn"),
    (17, "seventeen", "siebzehn"),
    (19, "nineteen", "neunzehn"),
    (20, "twenty", "zwanzig"),
    (21, "twenty-one", "einundzwanzig"),
    (30, "thirty", "dreißig"),
    (31, "thirty-one", "einunddreißig"),
    (42, "forty-two", "zweiundvierzig"),
    (60, "sixty", "sechzig"),
    (66, "sixty-six", "sechsundsechzig"),
    (70, "seventy", "siebzig"),
    (71, "seventy-one", "einundsiebzig"),
    (77, "seventy-seven", "siebenundsiebzig"),
    (99, "ninety-nine", "neunundneunzig"),
    (100, "one hundred", "einhundert"),
    (101, "one hundred one", "einhunderteins"),
    (105, "one hundred five", "einhundertfünf"),
    (111, "one hundred eleven", "einhundertelf"),
    (200, "two hundred", "zweihundert"),
    (342, "three hundred forty-two", "dreihundertzweiundvierzig"),
    (1_000, "one thousand", "eintausend"),
    (1_001, "one thousand one", "eintausendeins"),
    (1_100, "one thousand one hundred", "eintausendeinhundert"),
    (2_001, "two thousand one", "zweitausendeins"),
    (10_000, "ten thousand", "zehntausend"),
    (12_005, "twelve thousand five", "zwölftausendfünf"),
    (12_345, "twelve thousand three hundred forty-five", "zwölftausenddreihundertfünfundvierzig"),
    (21_001, "twenty-one thousand one", "einundzwanzigtausendeins"),
    (31_000, "thirty-one thousand", "einunddreißigtausend"),
    (100_000, "one hundred thousand", "einhunderttausend"),
    (101_000, "one hundred one thousand", "einhunderteintausend"),
    (101_001, "one hundred one thousand one", "einhunderteintausendeins"),
    (
        999_999,
        "nine hundred ninety-nine thousand nine hundred ninety-nine",
        "neunhundertneunundneunzigtausendneunhundertneunundneunzig",
    ),
]

# Every form below 1000 alone and after "one thousand"; every thousands prefix, alone and with a remainder that
# cycles through the forms; and a random sample. About 12k numbers: a fraction of a second.
SWEEP = sorted(
    {
        *range(2_100),
        *(k * 1000 for k in range(1000)),
        *(k * 1000 + (k * 7919) % 1000 for k in range(1000)),
        *random.Random(0).sample(range(1_000_000), 8000),
    }
)

EN_VALUES = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen".split()
    )
}
EN_VALUES |= {
    word: 10 * t for t, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)
}

DE_UNITS = {
    word: d for d, word in enumerate("zwei drei vier fünf sechs sieben acht neun".split(), 2)
}  # "ein(s)" aside
DE_TEENS = {
    word: value
    for value, word in enumerate(
        "zehn elf zwölf dreizehn vierzehn fünfzehn sechzehn siebzehn achtzehn neunzehn".split(), 10
    )
}
DE_TENS = {
    word: 10 * t for t, word in enumerate("zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig".split(), 2)
}
DE_MORPHEMES = re.compile(
    "(?:" + "|".join(["null", "eins", "ein", *DE_UNITS, *DE_TEENS, *DE_TENS, "und", "hundert", "tausend"]) + ")+"
)


def parse_english(text: str) -> int:
    """Read English number words back, written independently of the generator: a check that they say `n`."""
    total = current = 0
    for word in text.split(" "):
        if word == "hundred":
            current *= 100
        elif word == "thousand":
            total, current = current * 1000, 0
        else:
            current += sum(EN_VALUES[part] for part in word.split("-"))
    return total + current


def _parse_german_below_100(word: str, final: bool) -> int:
    if "und" in word:  # units before tens: "zweiundvierzig"
        units, _, tens = word.partition("und")
        return (1 if units == "ein" else DE_UNITS[units]) + DE_TENS[tens]
    if word == ("eins" if final else "ein"):
        return 1
    return {**DE_UNITS, **DE_TEENS, **DE_TENS}[word]


def _parse_german_below_1000(word: str, final: bool) -> int:
    hundreds, is_hundreds, rest = word.partition("hundert")
    if not is_hundreds:
        return _parse_german_below_100(word, final)
    value = 100 * _parse_german_below_100(hundreds, final=False)  # "einhundert", never a bare "hundert"
    return value + (_parse_german_below_100(rest, final) if rest else 0)


def parse_german(word: str) -> int:
    """Read a German number word back; "eins" is accepted only at the end of the number, "ein" only inside."""
    if word == "null":
        return 0
    thousands, is_thousands, rest = word.partition("tausend")
    if not is_thousands:
        return _parse_german_below_1000(word, final=True)
    value = 1000 * _parse_german_below_1000(thousands, final=False)  # "eintausend", never a bare "tausend"
    return value + (_parse_german_below_1000(rest, final=True) if rest else 0)


@pytest.mark.parametrize("n, english, german", KNOWN, ids=[str(n) for n, _, _ in KNOWN])
def test_known_values(n, english, german):
    assert english_words(n) == english
    assert german_words(n) == german


def test_german_is_one_lowercase_word_of_known_morphemes():
    for n in SWEEP:
        word = german_words(n)
        assert DE_MORPHEMES.fullmatch(word), (n, word)  # no spaces, hyphens or capitals either


def test_english_uses_only_known_words():
    known = set(EN_VALUES) | {"hundred", "thousand"}
    for n in SWEEP:
        text = english_words(n)
        assert text == text.strip() and "  " not in text, (n, text)
        for word in text.split(" "):
            parts = word.split("-")
            assert set(parts) <= known, (n, text)
            if len(parts) == 2:  # "forty-two": tens then a unit, nothing else is hyphenated
                assert EN_VALUES[parts[0]] in range(20, 100, 10) and EN_VALUES[parts[1]] in range(1, 10), (n, text)


def test_both_spellings_read_back_as_the_number():
    for n in SWEEP:
        assert parse_english(english_words(n)) == n, (n, english_words(n))
        assert parse_german(german_words(n)) == n, (n, german_words(n))


@pytest.mark.parametrize("spell", [english_words, german_words])
@pytest.mark.parametrize("n", [-1, 1_000_000, 10**9])
def test_out_of_range_raises_value_error(spell, n):
    with pytest.raises(ValueError, match="0 to 999_999"):
        spell(n)


@pytest.mark.parametrize("spell", [english_words, german_words])
def test_non_integer_raises_type_error(spell):
    with pytest.raises(TypeError):
        spell(3.0)


def test_dataset_follows_the_hub_translation_convention():
    dataset = make_translation_dataset(200, seed=0, max_number=999)
    assert dataset.column_names == ["translation", "number"]
    assert sorted(dataset.features["translation"].languages) == ["de", "en"]
    numbers = dataset["number"]
    assert len(set(numbers)) == 200 and all(0 <= n <= 999 for n in numbers)  # without replacement, in range
    for row in dataset:
        assert row["translation"] == {"en": english_words(row["number"]), "de": german_words(row["number"])}


def test_dataset_is_deterministic_for_a_seed_and_differs_for_another():
    first = make_translation_dataset(100, seed=1)
    assert make_translation_dataset(100, seed=1).to_dict() == first.to_dict()
    assert make_translation_dataset(100, seed=2)["number"] != first["number"]


def test_exclude_removes_numbers_from_the_draw():
    dataset = make_translation_dataset(50, seed=0, max_number=99, exclude=set(range(50)))
    assert sorted(dataset["number"]) == list(range(50, 100))  # exactly the numbers that were left


def test_drawing_more_numbers_than_there_are_raises():
    with pytest.raises(ValueError, match="cannot draw 11 distinct numbers"):
        make_translation_dataset(11, seed=0, max_number=9)
    with pytest.raises(ValueError, match="cannot draw 6"):
        make_translation_dataset(6, seed=0, max_number=9, exclude={0, 1, 2, 3, 4})


def test_splits_are_disjoint_by_number_and_deterministic():
    splits = make_demo_splits(300, 50, 50, seed=0, max_number=999)
    assert list(splits) == ["train", "validation", "test"]
    assert [len(splits[name]) for name in splits] == [300, 50, 50]
    train, validation, test = (set(splits[name]["number"]) for name in splits)
    assert len(train) == 300 and len(validation) == 50 and len(test) == 50
    assert not train & validation and not train & test and not validation & test
    again = make_demo_splits(300, 50, 50, seed=0, max_number=999)
    assert all(again[name].to_dict() == splits[name].to_dict() for name in splits)
    other = make_demo_splits(300, 50, 50, seed=1, max_number=999)
    assert all(other[name]["number"] != splits[name]["number"] for name in splits)


def test_test_split_does_not_depend_on_the_other_sizes():
    small = make_demo_splits(100, 20, 50, seed=3)
    large = make_demo_splits(2000, 200, 50, seed=3)
    assert small["test"]["number"] == large["test"]["number"]
