"""Saving and loading: `save_pretrained` / `from_pretrained` through the Auto classes, tied weights, the
non-persistent sinusoidal table, attention implementations, config/weight mismatches, `trust_remote_code`
in a Python without the package, dtypes, the text-classification pipeline and `resize_token_embeddings`."""

import json
import logging
import math
import os
import re
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import BOS, VOCAB_SIZE, random_batch, tiny_config, word_level_tokenizer
from safetensors import safe_open
from transformers import (
    AutoModel,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    PreTrainedTokenizerFast,
    pipeline,
)

from hf_scratch_transformer import (
    ScratchTransformerForConditionalGeneration,
    ScratchTransformerForSequenceClassification,
    ScratchTransformerModel,
)

MODULE_FILES = ("modeling_scratch_transformer.py", "configuration_scratch_transformer.py")
AUTO_MAP = {
    "AutoConfig": "configuration_scratch_transformer.ScratchTransformerConfig",
    "AutoModel": "modeling_scratch_transformer.ScratchTransformerModel",
    "AutoModelForSeq2SeqLM": "modeling_scratch_transformer.ScratchTransformerForConditionalGeneration",
    "AutoModelForSequenceClassification": "modeling_scratch_transformer.ScratchTransformerForSequenceClassification",
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

# (package class, Auto class that must build it)
HEADS = [
    pytest.param(ScratchTransformerModel, AutoModel, id="AutoModel"),
    pytest.param(ScratchTransformerForConditionalGeneration, AutoModelForSeq2SeqLM, id="AutoModelForSeq2SeqLM"),
    pytest.param(
        ScratchTransformerForSequenceClassification,
        AutoModelForSequenceClassification,
        id="AutoModelForSequenceClassification",
    ),
]


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def expected_sinusoids(num_positions: int, dim: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)), in float64, written
    independently of the model's own `sinusoidal_table`."""
    table = torch.zeros(num_positions, dim, dtype=torch.float64)
    for pos in range(num_positions):
        for i in range(0, dim, 2):
            angle = pos / (10000.0 ** (i / dim))
            table[pos, i] = math.sin(angle)
            table[pos, i + 1] = math.cos(angle)
    return table


def base_of(model):
    """The module holding `shared`, `encoder` (and `decoder`)."""
    return model if isinstance(model, ScratchTransformerModel) else model.model


def position_modules(model):
    base = base_of(model)
    stacks = [base.encoder] + ([base.decoder] if hasattr(base, "decoder") else [])
    return [stack.embed_positions for stack in stacks]


def run_forward(model, batch=None):
    """The model's main output tensor for a padded batch."""
    input_ids, attention_mask, labels = batch if batch is not None else random_batch()
    with torch.no_grad():
        if isinstance(model, ScratchTransformerForSequenceClassification):
            return model(input_ids=input_ids, attention_mask=attention_mask).logits
        if isinstance(model, ScratchTransformerForConditionalGeneration):
            return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).logits
        decoder_input_ids = torch.cat([torch.full((labels.shape[0], 1), BOS), labels[:, :-1]], dim=1)
        return model(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids
        ).last_hidden_state


def safetensors_keys_and_dtypes(directory: Path) -> dict:
    with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
        return {key: f.get_slice(key).get_dtype() for key in f.keys()}


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextmanager
def transformers_log():
    """Collect what `transformers` logs (its root logger does not propagate, so caplog does not see it)."""
    handler = _ListHandler()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def greedy(model, input_ids, attention_mask):
    with torch.no_grad():
        return model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=8, do_sample=False, num_beams=1
        )


# ---------------------------------------------------------------------------------------------------------------
# 1. Round trip through every Auto class
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("model_class, auto_class", HEADS)
def test_round_trip_through_auto_class(model_class, auto_class, tie, tmp_path):
    model = model_class(tiny_config(tie_word_embeddings=tie)).eval()
    model.save_pretrained(tmp_path)

    reloaded, info = auto_class.from_pretrained(tmp_path, output_loading_info=True)
    reloaded.eval()
    assert type(reloaded) is model_class
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    assert not info["error_msgs"]

    # every saved tensor is back, bit for bit
    original_state = model.state_dict()
    reloaded_state = reloaded.state_dict()
    assert original_state.keys() == reloaded_state.keys()
    for key, value in original_state.items():
        assert torch.equal(value, reloaded_state[key]), key

    expected = run_forward(model)
    actual = run_forward(reloaded)
    assert torch.equal(expected, actual) or torch.allclose(expected, actual, atol=1e-6, rtol=0)

    # one embedding, shared by encoder and decoder, whatever `tie_word_embeddings` says
    base = base_of(reloaded)
    assert base.encoder.embed_tokens.weight is base.shared.weight
    if hasattr(base, "decoder"):
        assert base.decoder.embed_tokens.weight is base.shared.weight
    if isinstance(reloaded, ScratchTransformerForConditionalGeneration):
        if tie:
            assert reloaded.lm_head.weight is base.shared.weight
            assert reloaded.lm_head.weight.data_ptr() == base.shared.weight.data_ptr()
        else:
            assert reloaded.lm_head.weight is not base.shared.weight
            assert reloaded.lm_head.weight.data_ptr() != base.shared.weight.data_ptr()
            assert not torch.equal(reloaded.lm_head.weight, base.shared.weight)
            assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
            # untied really means independent: editing one leaves the other alone
            with torch.no_grad():
                reloaded.lm_head.weight.add_(1.0)
            assert torch.equal(base.shared.weight, model.model.shared.weight)

    # files: safetensors only, auto_map with every head, the code copied next to the weights
    names = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in names
    assert not [n for n in names if n.endswith(PICKLE_SUFFIXES)], names
    assert not [n for n in names if n.endswith(".safetensors") and n != "model.safetensors"], names
    for filename in MODULE_FILES:
        assert filename in names
    saved_config = json.loads((tmp_path / "config.json").read_text())
    assert saved_config["auto_map"] == AUTO_MAP
    assert saved_config["model_type"] == "scratch_transformer"
    assert saved_config["tie_word_embeddings"] is tie

    keys = safetensors_keys_and_dtypes(tmp_path)
    prefix = "" if model_class is ScratchTransformerModel else "model."
    assert f"{prefix}shared.weight" in keys
    if model_class is ScratchTransformerForConditionalGeneration:
        assert ("lm_head.weight" in keys) is (not tie)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("model_class", [param.values[0] for param in HEADS])
def test_loading_no_weights_at_all_initialises_every_weight(model_class, tie):
    """`from_pretrained(None, config=..., state_dict={})` builds the model on the meta device and initialises every
    weight the (empty) checkpoint lacks: each stack's embedding is a module of its own, tied to `shared` by the
    declared ties, so none is left behind on meta."""
    with torch.device("cpu"):
        model = model_class.from_pretrained(None, config=tiny_config(tie_word_embeddings=tie), state_dict={})
    left_on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    assert left_on_meta == []
    base = getattr(model, model.base_model_prefix, model)
    assert base.encoder.embed_tokens is not base.shared and base.encoder.embed_tokens.weight is base.shared.weight
    assert bool(base.shared.weight.std() > 0)


@pytest.mark.parametrize("model_class, auto_class", HEADS)
def test_sinusoidal_table_recomputed_after_from_pretrained(model_class, auto_class, tmp_path):
    config = tiny_config(max_position_embeddings=40, d_model=24, encoder_attention_heads=4, decoder_attention_heads=4)
    model = model_class(config).eval()
    model.save_pretrained(tmp_path)

    keys = safetensors_keys_and_dtypes(tmp_path)
    assert not [k for k in keys if "embed_positions" in k or k.endswith(".table")], keys

    reloaded = auto_class.from_pretrained(tmp_path).eval()
    expected = expected_sinusoids(40, 24)
    modules = position_modules(reloaded)
    assert modules
    for positions in modules:
        table = positions.table
        assert table.shape == (40, 24)
        assert table.device.type == "cpu"
        assert torch.isfinite(table).all()
        torch.testing.assert_close(table.double(), expected, atol=1e-5, rtol=0)
        assert "table" in positions._non_persistent_buffers_set
    # and equal to a freshly built model's table, bit for bit
    for fresh, loaded in zip(position_modules(model), modules, strict=True):
        assert torch.equal(fresh.table, loaded.table)


# ---------------------------------------------------------------------------------------------------------------
# 2. A seq2seq checkpoint into the classifier
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_seq2seq_checkpoint_loads_into_classifier(tie, tmp_path):
    seq2seq = ScratchTransformerForConditionalGeneration(tiny_config(tie_word_embeddings=tie)).eval()
    seq2seq.save_pretrained(tmp_path)

    with transformers_log() as messages:
        classifier, info = AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    classifier.eval()
    assert isinstance(classifier, ScratchTransformerForSequenceClassification)

    # the decoder and lm_head are ignored quietly, only the new head is missing
    assert not info["unexpected_keys"], info["unexpected_keys"]
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert not info["mismatched_keys"]
    log = "\n".join(messages)
    assert "UNEXPECTED" not in log
    assert "decoder" not in log
    assert "lm_head" not in log

    # encoder weights are the seq2seq model's
    encoder_state = seq2seq.model.encoder.state_dict()
    for key, value in classifier.model.encoder.state_dict().items():
        assert torch.equal(value, encoder_state[key]), key
    assert torch.equal(classifier.model.shared.weight, seq2seq.model.shared.weight)
    assert classifier.model.encoder.embed_tokens.weight is classifier.model.shared.weight

    # the classifier is freshly initialised: normal weights, zero bias
    weight, bias = classifier.classifier.weight, classifier.classifier.bias
    assert weight.shape == (classifier.config.num_labels, 16)
    assert torch.isfinite(weight).all() and weight.abs().sum() > 0
    assert torch.equal(bias, torch.zeros_like(bias))

    input_ids, attention_mask, _ = random_batch()
    with torch.no_grad():
        expected = seq2seq.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        actual = classifier.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = classifier(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(expected, actual)
    assert logits.shape == (input_ids.shape[0], classifier.config.num_labels)
    assert torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------------------------
# 3. Attention implementations
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("saved_with, loaded_with", [("sdpa", "eager"), ("eager", "sdpa")])
def test_attn_implementation_chosen_at_load(saved_with, loaded_with, tmp_path):
    model = ScratchTransformerForConditionalGeneration(tiny_config()).eval()
    model.set_attn_implementation(saved_with)
    assert model.config._attn_implementation == saved_with
    model.save_pretrained(tmp_path)

    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, attn_implementation=loaded_with).eval()
    assert reloaded.config._attn_implementation == loaded_with
    assert reloaded.model.encoder.layers[0].self_attn.config._attn_implementation == loaded_with
    assert reloaded.model.decoder.layers[-1].encoder_attn.config._attn_implementation == loaded_with

    torch.testing.assert_close(run_forward(reloaded), run_forward(model), atol=1e-5, rtol=0)
    input_ids, attention_mask, _ = random_batch()
    assert torch.equal(greedy(reloaded, input_ids, attention_mask), greedy(model, input_ids, attention_mask))


def test_unknown_attn_implementation_is_a_clear_error(tmp_path):
    model = ScratchTransformerForConditionalGeneration(tiny_config()).eval()
    model.save_pretrained(tmp_path)

    with pytest.raises(ValueError) as load_error:
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path, attn_implementation="foo")
    message = str(load_error.value)
    assert "foo" in message
    assert "eager" in message and "sdpa" in message

    with pytest.raises(ValueError) as set_error:
        model.set_attn_implementation("foo")
    assert "foo" in str(set_error.value)
    assert "eager" in str(set_error.value) and "sdpa" in str(set_error.value)
    assert model.config._attn_implementation != "foo"


def test_set_attn_implementation_at_runtime(monkeypatch):
    sdpa_calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counted_sdpa(*args, **kwargs):
        sdpa_calls.append(1)
        return sdpa(*args, **kwargs)

    # PyTorch's fused kernel, which transformers' "sdpa" calls: counting its calls shows which kernel ran.
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted_sdpa)
    model = ScratchTransformerForConditionalGeneration(tiny_config()).eval()
    model.set_attn_implementation("sdpa")
    sdpa_logits = run_forward(model)
    calls_with_sdpa = len(sdpa_calls)
    assert calls_with_sdpa > 0

    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    assert model.model.decoder.layers[0].self_attn.config._attn_implementation == "eager"
    eager_logits = run_forward(model)
    assert len(sdpa_calls) == calls_with_sdpa, "after the switch to eager, a forward still ran the fused kernel"
    torch.testing.assert_close(eager_logits, sdpa_logits, atol=1e-5, rtol=0)

    # eager materialises attention weights; check they are a distribution over the keys
    input_ids, attention_mask, labels = random_batch()
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, output_attentions=True)
    torch.testing.assert_close(
        out.encoder_attentions[0].sum(-1), torch.ones_like(out.encoder_attentions[0].sum(-1)), atol=1e-5, rtol=0
    )


# ---------------------------------------------------------------------------------------------------------------
# 4. Config does not match the weights
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, weight, checkpoint_shape, model_shape",
    [
        ("d_model", 32, "model.shared.weight", (VOCAB_SIZE, 16), (VOCAB_SIZE, 32)),
        ("encoder_ffn_dim", 64, "feed_forward.fc1.weight", (32, 16), (64, 16)),
        ("vocab_size", 120, "model.shared.weight", (VOCAB_SIZE, 16), (120, 16)),
    ],
)
def test_config_weight_shape_mismatch_is_an_error_naming_the_weight(
    field, value, weight, checkpoint_shape, model_shape, tmp_path
):
    """transformers' RuntimeError (what code written for Marian catches), with a message naming each weight."""
    ScratchTransformerForConditionalGeneration(tiny_config()).save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    saved = json.loads(config_path.read_text())
    saved[field] = value
    config_path.write_text(json.dumps(saved))

    with pytest.raises(RuntimeError, match=r"do not fit its config") as error:
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    message = str(error.value)
    assert weight in message and f"checkpoint {checkpoint_shape}, config {model_shape}" in message, message
    assert "ignore_mismatched_sizes=True" in message

    # Re-initialising on purpose still works, and the programmatic record says the same.
    _, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, ignore_mismatched_sizes=True, output_loading_info=True)
    mismatched = {key: (tuple(ckpt), tuple(mine)) for key, ckpt, mine in info["mismatched_keys"]}
    matching = [key for key in mismatched if weight in key]
    assert matching, mismatched
    assert mismatched[matching[0]] == (checkpoint_shape, model_shape)


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [("encoder_layers", 3, "missing from the checkpoint"), ("decoder_layers", 1, "not in the model")],
)
def test_config_with_another_layer_count_than_the_weights_is_reported(field, value, where, tmp_path, caplog):
    """As transformers does for any model: the layers load as far as they fit, the loading info lists the rest, and
    a warning names the cause (a smaller student made from a larger model drops layers on purpose)."""
    ScratchTransformerForConditionalGeneration(tiny_config()).save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    saved = json.loads(config_path.read_text())
    saved[field] = value
    config_path.write_text(json.dumps(saved))
    with caplog.at_level("WARNING"):
        model, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, output_loading_info=True)
    kind = "missing_keys" if where == "missing from the checkpoint" else "unexpected_keys"
    side = field.split("_")[0]
    assert info[kind] and all(f"{side}.layers.{1 if value == 1 else 2}." in key for key in info[kind]), info
    assert len(getattr(model.model, side).layers) == value
    assert re.search(rf"disagree on the number of layers: .*layers\.[12]\..*{where}.*`encoder_layers`", caplog.text)


# ---------------------------------------------------------------------------------------------------------------
# 5. trust_remote_code in a Python that cannot import the package
# ---------------------------------------------------------------------------------------------------------------

REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_scratch_transformer"] = None  # installed in editable mode: make sure it cannot be used
    try:
        import hf_scratch_transformer  # noqa: F401
        package_importable = True
    except ImportError:
        package_importable = False

    import json
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    path, input_ids, attention_mask = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    input_ids, attention_mask = torch.tensor(input_ids), torch.tensor(attention_mask)

    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    seq2seq = AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True).eval()
    bare, bare_info = AutoModel.from_pretrained(path, trust_remote_code=True, output_loading_info=True)
    classifier, classifier_info = AutoModelForSequenceClassification.from_pretrained(
        path, trust_remote_code=True, output_loading_info=True
    )
    with torch.no_grad():
        ids = seq2seq.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=8, do_sample=False, num_beams=1
        )
        encoder_states = seq2seq.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    print(json.dumps({
        "package_importable": package_importable,
        "package_modules": sorted(m for m in sys.modules if m.startswith("hf_scratch_transformer") and sys.modules[m]),
        "modules": {
            "config": type(config).__module__,
            "seq2seq": type(seq2seq).__module__,
            "bare": type(bare).__module__,
            "classifier": type(classifier).__module__,
        },
        "classes": [type(config).__name__, type(seq2seq).__name__, type(bare).__name__, type(classifier).__name__],
        "bare_missing": sorted(bare_info["missing_keys"]),
        "classifier_missing": sorted(classifier_info["missing_keys"]),
        "classifier_unexpected": sorted(classifier_info["unexpected_keys"]),
        "tied": seq2seq.lm_head.weight is seq2seq.model.shared.weight,
        "ids": ids.tolist(),
        "encoder_states": encoder_states.tolist(),
    }))
    """
)


def test_trust_remote_code_without_the_package(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    model = ScratchTransformerForConditionalGeneration(tiny_config(tie_word_embeddings=True)).eval()
    model.save_pretrained(checkpoint)
    input_ids, attention_mask, _ = random_batch(batch_size=2, source_length=7, seed=3)
    expected_ids = greedy(model, input_ids, attention_mask)
    with torch.no_grad():
        expected_states = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    script = workdir / "load_remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_HOME", "HF_MODULES_CACHE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(checkpoint),
            json.dumps(input_ids.tolist()),
            json.dumps(attention_mask.tolist()),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["package_importable"] is False
    assert report["package_modules"] == []
    for name, module in report["modules"].items():
        assert module.startswith("transformers_modules"), (name, module)
    assert report["classes"] == [
        "ScratchTransformerConfig",
        "ScratchTransformerForConditionalGeneration",
        "ScratchTransformerModel",
        "ScratchTransformerForSequenceClassification",
    ]
    assert report["bare_missing"] == []
    assert report["classifier_missing"] == ["classifier.bias", "classifier.weight"]
    assert report["classifier_unexpected"] == []
    assert report["tied"] is True
    assert report["ids"] == expected_ids.tolist()
    torch.testing.assert_close(torch.tensor(report["encoder_states"]), expected_states, atol=1e-5, rtol=0)
    # the dynamic modules were cached where we told it to
    assert (tmp_path / "hf_home" / "modules" / "transformers_modules").is_dir()


# ---------------------------------------------------------------------------------------------------------------
# 6. dtype
# ---------------------------------------------------------------------------------------------------------------


def test_bfloat16_checkpoint(tmp_path):
    model = ScratchTransformerForConditionalGeneration(tiny_config(tie_word_embeddings=True)).eval()
    model.to(torch.bfloat16).save_pretrained(tmp_path)

    dtypes = safetensors_keys_and_dtypes(tmp_path)
    assert set(dtypes.values()) == {"BF16"}, dtypes
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"

    in_bf16 = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, dtype="auto").eval()
    assert {p.dtype for p in in_bf16.parameters()} == {torch.bfloat16}
    assert in_bf16.dtype == torch.bfloat16
    assert in_bf16.lm_head.weight is in_bf16.model.shared.weight
    for positions in position_modules(in_bf16):
        assert torch.equal(positions.table, expected_sinusoids(64, 16).to(torch.bfloat16))
    for key, value in model.state_dict().items():
        assert torch.equal(in_bf16.state_dict()[key], value), key

    in_fp32 = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert {p.dtype for p in in_fp32.parameters()} == {torch.float32}
    assert in_fp32.lm_head.weight is in_fp32.model.shared.weight
    for positions in position_modules(in_fp32):
        torch.testing.assert_close(positions.table.double(), expected_sinusoids(64, 16), atol=1e-5, rtol=0)
    for key, value in in_bf16.state_dict().items():
        assert torch.equal(in_fp32.state_dict()[key], value.float()), key

    input_ids, attention_mask, _ = random_batch()
    ids = greedy(in_bf16, input_ids, attention_mask)
    assert ids.dtype == torch.long
    assert ids.shape[0] == input_ids.shape[0] and 2 <= ids.shape[1] <= 9
    assert (ids[:, 0] == BOS).all()
    assert ((ids >= 0) & (ids < VOCAB_SIZE)).all()
    with torch.no_grad():
        logits = in_bf16(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=ids).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    # bf16 logits follow the fp32 ones of the same weights
    with torch.no_grad():
        reference = in_fp32(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=ids).logits
    assert (logits.float() - reference).abs().max() < 0.25 * reference.abs().max()


# ---------------------------------------------------------------------------------------------------------------
# 7. text-classification pipeline
# ---------------------------------------------------------------------------------------------------------------

WORDS = ["the", "movie", "is", "good", "bad", "great", "awful", "not", "a", "film"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return word_level_tokenizer(WORDS)


def test_text_classification_pipeline(tmp_path):
    id2label = {0: "negative", 1: "positive"}
    config = tiny_config(num_labels=2, id2label=id2label, label2id={"negative": 0, "positive": 1})
    model = ScratchTransformerForSequenceClassification(config).eval()
    tokenizer = tiny_tokenizer()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    classify = pipeline("text-classification", model=str(tmp_path), tokenizer=str(tmp_path), device="cpu")
    assert isinstance(classify.model, ScratchTransformerForSequenceClassification)
    assert classify.model.config.id2label == id2label

    texts = ["the movie is good", "awful film", "not a great unknownword movie"]
    results = classify(texts, top_k=None)
    assert len(results) == len(texts)

    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    assert (encoded["input_ids"] != 3).sum() > 0
    with torch.no_grad():
        probabilities = model(**encoded).logits.softmax(-1)
    for row, result in enumerate(results):
        assert {entry["label"] for entry in result} == {"negative", "positive"}
        assert sum(entry["score"] for entry in result) == pytest.approx(1.0, abs=1e-5)
        for entry in result:
            label_id = config.label2id[entry["label"]]
            assert entry["score"] == pytest.approx(probabilities[row, label_id].item(), abs=1e-5)

    # a single text, default top_k: the most likely label, with its probability
    single = classify("the movie is bad")
    with torch.no_grad():
        probabilities = model(**tokenizer(["the movie is bad"], return_tensors="pt")).logits.softmax(-1)[0]
    best = int(probabilities.argmax())
    assert single == [{"label": id2label[best], "score": pytest.approx(probabilities[best].item(), abs=1e-5)}]


# ---------------------------------------------------------------------------------------------------------------
# 8. resize_token_embeddings
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("new_size", [120, 80])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_resize_token_embeddings(tie, new_size, tmp_path):
    model = ScratchTransformerForConditionalGeneration(tiny_config(tie_word_embeddings=tie)).eval()
    old_embedding = model.model.shared.weight.detach().clone()
    old_lm_head = model.lm_head.weight.detach().clone()

    model.resize_token_embeddings(new_size)
    shared = model.model.shared
    assert model.config.vocab_size == new_size
    assert shared.weight.shape == (new_size, 16)
    assert model.lm_head.weight.shape == (new_size, 16)
    assert model.model.encoder.embed_tokens is shared
    assert model.model.decoder.embed_tokens is shared
    assert model.get_input_embeddings() is shared
    if tie:
        assert model.lm_head.weight is shared.weight
    else:
        assert model.lm_head.weight is not shared.weight
    kept = min(new_size, VOCAB_SIZE)
    assert torch.equal(shared.weight[:kept], old_embedding[:kept])
    assert torch.equal(model.lm_head.weight[:kept], (old_embedding if tie else old_lm_head)[:kept])

    input_ids, attention_mask, labels = random_batch()
    input_ids = input_ids.clamp(max=new_size - 1)
    labels = labels.clamp(max=new_size - 1)
    if new_size > VOCAB_SIZE:
        input_ids[0, 0] = new_size - 1  # a new token is accepted
        labels[0, 0] = new_size - 1
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.shape == (*labels.shape, new_size)
    assert torch.isfinite(out.loss)

    if tie:  # training the embedding trains the output projection too
        with torch.no_grad():
            shared.weight[5].add_(1.0)
        assert torch.equal(model.lm_head.weight[5], shared.weight[5])

    # the resized model round-trips
    model.save_pretrained(tmp_path)
    reloaded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert reloaded.config.vocab_size == new_size
    assert (reloaded.lm_head.weight is reloaded.model.shared.weight) is tie
    with torch.no_grad():
        reloaded_logits = reloaded.eval()(input_ids=input_ids, attention_mask=attention_mask, labels=labels).logits
        logits = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).logits
    assert torch.equal(reloaded_logits, logits)
