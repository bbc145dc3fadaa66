"""The CTranslate2 export (`hf_scratch_transformer.export`): for every option of the config that CTranslate2 can
express, the exported model decodes the same tokens as `generate()` (greedy and beam search, padded batches) and
scores targets with the model's log-probabilities; what it cannot express is refused with the fix. Skips where the
`export` extra (ctranslate2) is absent; CI installs it."""

import json

import pytest
import torch
from conftest import EOS, PAD, VOCAB_SIZE, random_batch, tiny_config, word_level_tokenizer
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

ctranslate2 = pytest.importorskip("ctranslate2")
from hf_scratch_transformer.export import decoding_options, export_ctranslate2  # noqa: E402

WORDS = [f"w{index}" for index in range(VOCAB_SIZE - 5)]  # with the 5 special tokens: one token a model id

OPTIONS = {
    "post-LN, sinusoidal, tied": {},
    "pre-LN": {"normalize_before": True},
    "learned positions": {"position_embedding": "learned"},
    "untied output": {"tie_word_embeddings": False},
    "no embedding scale": {"scale_embedding": False},
    "gelu": {"activation_function": "gelu"},
    "silu, other head counts": {"activation_function": "silu", "encoder_attention_heads": 2,
                                "decoder_attention_heads": 8},
}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return word_level_tokenizer(WORDS)


def saved_model(folder, tokenizer, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(tiny_config(**overrides)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def source_tokens(tokenizer, input_ids, attention_mask) -> list[list[str]]:
    return [
        tokenizer.convert_ids_to_tokens(ids[mask.bool()].tolist())
        for ids, mask in zip(input_ids, attention_mask, strict=True)
    ]


def generated_tokens(tokenizer, sequences) -> list[list[str]]:
    """generate()'s rows without the start token, up to and without the end token (as CTranslate2 returns them)."""
    rows = []
    for row in sequences[:, 1:].tolist():
        row = row[: row.index(EOS)] if EOS in row else row
        rows.append(tokenizer.convert_ids_to_tokens([token for token in row if token != PAD]))
    return rows


@pytest.mark.parametrize("option", OPTIONS)
def test_the_export_decodes_and_scores_as_the_model(tmp_path, tokenizer, option):
    model = saved_model(tmp_path / "model", tokenizer, **OPTIONS[option])
    translator = ctranslate2.Translator(export_ctranslate2(tmp_path / "model", tmp_path / "ct2"), intra_threads=1)
    input_ids, attention_mask, labels = random_batch(batch_size=4, source_length=9, target_length=6)
    sources = source_tokens(tokenizer, input_ids, attention_mask)
    for num_beams in (1, 3):
        with torch.no_grad():
            sequences = model.generate(input_ids, attention_mask=attention_mask, num_beams=num_beams,
                                       max_new_tokens=12, do_sample=False)  # fmt: skip
        results = translator.translate_batch(sources, **decoding_options(num_beams=num_beams, max_new_tokens=12))
        ours = generated_tokens(tokenizer, sequences)
        assert [result.hypotheses[0] for result in results] == ours, (num_beams, ours)
    assert len({tuple(row) for row in ours}) > 1  # the rows differ: the comparison can fail

    # Scores: the log-probability of each target token (and of the end token CTranslate2 appends).
    targets = [tokenizer.convert_ids_to_tokens(row[:-1].tolist()) for row in labels]  # labels end in </s>
    scored = translator.score_batch(sources, targets)
    with torch.no_grad():
        log_probs = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).logits.log_softmax(-1)
    expected = log_probs.gather(-1, labels[:, :, None]).squeeze(-1)
    for result, row in zip(scored, expected, strict=True):
        assert torch.allclose(torch.tensor(result.log_probs), row, atol=1e-4), (result.log_probs, row.tolist())


def test_int8_gives_the_same_tokens_from_a_smaller_folder_whose_vocabulary_is_the_tokenizers(tmp_path, tokenizer):
    saved_model(tmp_path / "model", tokenizer)
    float_dir = export_ctranslate2(tmp_path / "model", tmp_path / "ct2")
    int8_dir = export_ctranslate2(tmp_path / "model", tmp_path / "ct2_int8", quantization="int8")
    size = {name: (tmp_path / name / "model.bin").stat().st_size for name in ("ct2", "ct2_int8")}
    assert size["ct2_int8"] < size["ct2"] * 0.5
    vocabulary = json.loads((tmp_path / "ct2" / "shared_vocabulary.json").read_text())
    assert vocabulary == tokenizer.convert_ids_to_tokens(list(range(VOCAB_SIZE)))  # the tokenizer's strings
    options = decoding_options(num_beams=2, max_new_tokens=12)
    float_tokens = ctranslate2.Translator(float_dir).translate_batch([["w1", "w2", "</s>"]], **options)
    int8_tokens = ctranslate2.Translator(int8_dir).translate_batch([["w1", "w2", "</s>"]], **options)
    assert int8_tokens[0].hypotheses[0] == float_tokens[0].hypotheses[0]
    assert float_dir != int8_dir


def test_what_ctranslate2_cannot_express_is_refused_with_the_fix(tmp_path, tokenizer):
    saved_model(tmp_path / "mish", tokenizer, activation_function="mish")
    with pytest.raises(ValueError, match="activation_function='mish' has no CTranslate2 kernel.*relu"):
        export_ctranslate2(tmp_path / "mish", tmp_path / "out")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="is a PEFT adapter: merge it.*merge_and_unload"):
        export_ctranslate2(tmp_path / "adapter", tmp_path / "out")
    with pytest.raises(ValueError, match="quantization='int4'.*int8"):
        export_ctranslate2(tmp_path / "mish", tmp_path / "out", quantization="int4")


@pytest.mark.slow  # the demo's 500-step training, shared with the other slow tests
def test_the_demos_trained_model_translates_its_held_out_numbers_alike(demo_run, tmp_path):
    """A trained model (the demo's, 500 steps): CTranslate2 in float32 and int8 gives generate()'s translation of
    every held-out number, greedy and beam-4."""
    tokenizer = AutoTokenizer.from_pretrained(demo_run.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(demo_run.model).eval()
    rows = [json.loads(line)["translation"] for line in (demo_run.folder / "data" / "test.jsonl").open()]
    sources = [row["en"] for row in rows]
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    source_tokens = [tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids) for text in sources]
    for quantization in (None, "int8"):
        folder = export_ctranslate2(demo_run.model, tmp_path / f"ct2-{quantization}", quantization=quantization)
        translator = ctranslate2.Translator(folder, intra_threads=1)
        for num_beams in (1, 4):
            with torch.no_grad():
                expected = model.generate(**batch, num_beams=num_beams, max_new_tokens=32, do_sample=False)
            results = translator.translate_batch(source_tokens, **decoding_options(num_beams, max_new_tokens=32))
            ours = tokenizer.batch_decode(expected, skip_special_tokens=True)
            theirs = [tokenizer.convert_tokens_to_string(result.hypotheses[0]) for result in results]
            assert theirs == ours, (quantization, num_beams)
    assert len(sources) == 40
