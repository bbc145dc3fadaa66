"""The fast paths: a static (preallocated) key/value cache, and `torch.compile` with `fullgraph=True` (no graph
break) of every head's forward and backward, of the decoding step, and of `Trainer` training. Each must give what
the default eager path gives.

Compiling takes tens of seconds even for these tiny models, so the compiled checks share a few models, with one
layer each where the number of layers changes nothing.
"""

import pytest
import torch
from conftest import random_batch, tiny_config
from transformers import GenerationConfig, Seq2SeqTrainer, Seq2SeqTrainingArguments
from transformers.cache_utils import StaticCache
from transformers.generation import CompileConfig

from hf_scratch_transformer import (
    ScratchTransformerForConditionalGeneration,
    ScratchTransformerForSequenceClassification,
    ScratchTransformerModel,
)

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles its own models; a reset keeps one test's compiled graphs and counters out of the next."""
    torch.compiler.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch.compiler.reset()


def make_model(attn_implementation: str = "sdpa", **overrides) -> ScratchTransformerForConditionalGeneration:
    """A random tiny model with the default (Xavier) initialisation, whose generated tokens change along each
    row with this seed: they depend on the earlier tokens, which are what the cache holds."""
    torch.manual_seed(4)
    model = ScratchTransformerForConditionalGeneration(tiny_config(init_std=None, **overrides))
    model.set_attn_implementation(attn_implementation)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# The static cache
# ---------------------------------------------------------------------------------------------------------------

DECODING = {
    "greedy": {"do_sample": False, "num_beams": 1},
    "beam": {"do_sample": False, "num_beams": 3},
    "sample": {"do_sample": True, "top_k": 10},
}


@pytest.mark.parametrize("position_embedding", ["sinusoidal", "learned"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("decoding", DECODING)
def test_static_cache_generates_the_tokens_of_the_dynamic_cache(decoding, attn_implementation, position_embedding):
    model = make_model(attn_implementation, position_embedding=position_embedding)
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=9)  # rows padded differently
    options = dict(max_new_tokens=12, min_new_tokens=12, return_dict_in_generate=True, **DECODING[decoding])

    torch.manual_seed(0)
    dynamic = model.generate(input_ids, attention_mask=attention_mask, **options)
    torch.manual_seed(0)
    static = model.generate(input_ids, attention_mask=attention_mask, cache_implementation="static", **options)

    assert isinstance(static.past_key_values.self_attention_cache, StaticCache)
    # 12 slots, all returned at every step: the mask hides those not yet filled
    assert static.past_key_values.get_max_length(0) == 12
    assert torch.equal(static.sequences, dynamic.sequences), (static.sequences, dynamic.sequences)
    # A real comparison: the rows differ, and each row holds several different tokens.
    assert len({tuple(row.tolist()) for row in dynamic.sequences}) == 3
    assert min(len(set(row[1:].tolist())) for row in dynamic.sequences) >= 2, dynamic.sequences


def test_static_cache_with_a_decoder_prompt_and_its_padding_mask():
    """A decoder prompt (a forced prefix) with a 2D decoder mask: the mask is padded to the cache's slots."""
    model = make_model("eager")
    input_ids, attention_mask, _ = random_batch(batch_size=2, source_length=9)
    prompt = torch.tensor([[1, 17, 23], [1, 40, 41]])
    options = dict(decoder_input_ids=prompt, decoder_attention_mask=torch.ones_like(prompt), max_new_tokens=8)
    dynamic = model.generate(input_ids, attention_mask=attention_mask, **options)
    static = model.generate(input_ids, attention_mask=attention_mask, cache_implementation="static", **options)
    assert torch.equal(static, dynamic)
    assert torch.equal(static[:, :3], prompt)


def test_learned_positions_refuse_a_static_cache_longer_than_the_table():
    model = make_model("sdpa", position_embedding="learned", max_position_embeddings=16)
    input_ids, attention_mask, _ = random_batch(batch_size=1, source_length=5)
    with pytest.raises(ValueError, match="longer than max_position_embeddings=16"):
        model.generate(input_ids, max_new_tokens=30, cache_implementation="static")


# ---------------------------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------------------------


def compiled_equals_eager(model, inputs: dict, output_name: str) -> None:
    """Forward and backward of `torch.compile(model, fullgraph=True)` (which raises at any graph break) equal
    eager's: the output, and the gradient of every weight."""
    model.train()  # dropout is 0 in tiny_config; training mode is what Trainer compiles
    compiled = torch.compile(model, fullgraph=True)
    results = []
    for run in (compiled, model):
        model.zero_grad()
        output = run(**inputs)[output_name]
        output.float().pow(2).mean().backward()
        gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((output.detach(), gradients))
    (compiled_output, compiled_gradients), (eager_output, eager_gradients) = results
    torch.testing.assert_close(compiled_output, eager_output, atol=ATOL, rtol=1e-4)
    assert compiled_gradients.keys() == eager_gradients.keys() and len(eager_gradients) > 10
    for name, gradient in eager_gradients.items():
        torch.testing.assert_close(compiled_gradients[name], gradient, atol=ATOL, rtol=1e-4, msg=name)


def test_every_head_compiles_as_one_graph_and_equals_eager():
    config = dict(encoder_layers=1, decoder_layers=1, num_labels=3)
    input_ids, attention_mask, labels = random_batch(batch_size=3, source_length=9)  # padded rows: masks built
    torch.manual_seed(0)
    compiled_equals_eager(
        ScratchTransformerForConditionalGeneration(tiny_config(**config)),
        dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels),
        "loss",
    )
    compiled_equals_eager(
        ScratchTransformerForSequenceClassification(tiny_config(**config)),
        dict(input_ids=input_ids, attention_mask=attention_mask, labels=torch.tensor([0, 2, 1])),
        "loss",
    )
    compiled_equals_eager(
        ScratchTransformerModel(tiny_config(**config)),
        dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=labels),
        "last_hidden_state",
    )
    assert torch._dynamo.utils.counters["graph_break"] == {}


def test_compiled_decoding_step_with_a_static_cache_gives_the_eager_tokens():
    """What `generate()` compiles when asked (a static cache and a `compile_config`; on a CPU it must be told to
    compile with `_compile_all_devices`): the decoding step, one graph, the same tokens as eager decoding."""
    model = make_model("sdpa", encoder_layers=1, decoder_layers=1)
    input_ids, attention_mask, _ = random_batch(batch_size=3, source_length=9)
    eager = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=10, min_new_tokens=10)
    compile_config = CompileConfig(fullgraph=True, dynamic=False)
    compile_config._compile_all_devices = True  # transformers' own switch for compiling on a CPU (its tests use it)
    generation_config = GenerationConfig(
        max_new_tokens=10,
        min_new_tokens=10,
        cache_implementation="static",
        compile_config=compile_config,
        decoder_start_token_id=model.config.decoder_start_token_id,
        pad_token_id=model.config.pad_token_id,
        eos_token_id=model.config.eos_token_id,
    )
    compiled = model.generate(input_ids, attention_mask=attention_mask, generation_config=generation_config)
    assert torch.equal(compiled, eager), (compiled, eager)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert torch._dynamo.utils.counters["graph_break"] == {}


def test_trainer_with_torch_compile_follows_the_eager_loss_curve(tmp_path):
    input_ids, attention_mask, labels = random_batch(batch_size=4, source_length=9)
    rows = [
        {"input_ids": ids, "attention_mask": mask, "labels": target}
        for ids, mask, target in zip(input_ids, attention_mask, labels, strict=True)
    ]
    losses = {}
    for compile_model in (False, True):
        torch.manual_seed(0)
        model = ScratchTransformerForConditionalGeneration(tiny_config(encoder_layers=1, decoder_layers=1))
        arguments = Seq2SeqTrainingArguments(
            output_dir=str(tmp_path / str(compile_model)),
            per_device_train_batch_size=4,
            max_steps=4,
            learning_rate=1e-2,
            logging_steps=1,
            torch_compile=compile_model,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
        )
        trainer = Seq2SeqTrainer(model=model, args=arguments, train_dataset=rows)
        trainer.train()
        losses[compile_model] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses[True]) == 4 and losses[True][-1] < losses[True][0]  # it trained
    assert losses[True] == pytest.approx(losses[False], abs=1e-4), losses


# ---------------------------------------------------------------------------------------------------------------
# No host sync in a decoding step (a GPU's: the CPU has none to count)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: a host sync exists only there")
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_a_decoding_step_on_a_gpu_reads_nothing_back_to_the_host(attn_implementation):
    """The checks that read a tensor back (ids inside the vocabulary, a mask without padding) run where the data
    enters, the first call; the steps after it queue their kernels without waiting for the GPU."""
    model = make_model(attn_implementation).cuda()
    input_ids, attention_mask, _ = (tensor.cuda() for tensor in random_batch(batch_size=3, source_length=9))
    with torch.no_grad():
        encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        step = dict(encoder_outputs=encoder_outputs, attention_mask=attention_mask, use_cache=True)
        start = torch.full((3, 1), model.config.decoder_start_token_id, device="cuda")
        output = model(decoder_input_ids=start, **step)  # the first call may check what comes in
        torch.cuda.set_sync_debug_mode("error")  # from here, a read-back raises
        try:
            for _ in range(4):
                next_tokens = output.logits[:, -1:].argmax(-1)  # (B, 1)
                output = model(decoder_input_ids=next_tokens, past_key_values=output.past_key_values, **step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert output.past_key_values.get_seq_length() == 5
