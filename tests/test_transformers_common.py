"""transformers' own common model and configuration tests, run against our three classes the way
tests/models/marian/test_modeling_marian.py runs them against Marian: a `ModelTester` of tiny configs, the bare model
and the language-modelling head in one test class, the encoder-only classifier in its own (as T5 does for
`T5EncoderModel`). The suites come from transformers' source distribution (tests/transformers_suite.py).

Skipped are only the tests that Marian's own test skips, each with Marian's reason, plus what the suites skip
themselves on this machine (no GPU, no flash attention, no Hub).
"""

import tempfile
import unittest

from transformers_suite import GenerationTesterMixin, load

from hf_scratch_transformer import (
    ScratchTransformerConfig,
    ScratchTransformerForConditionalGeneration,
    ScratchTransformerForSequenceClassification,
    ScratchTransformerModel,
)

suites = load()
ModelTesterMixin = suites.test_modeling_common.ModelTesterMixin
ids_tensor = suites.test_modeling_common.ids_tensor
ConfigTester = suites.test_configuration_common.ConfigTester


class ScratchTransformerModelTester:
    """Tiny configs and random inputs, with the sizes of Marian's tester."""

    def __init__(
        self,
        parent,
        batch_size=13,
        seq_length=7,
        is_training=True,
        vocab_size=99,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=4,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=100,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = is_training
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.decoder_start_token_id = decoder_start_token_id

    def get_config(self) -> ScratchTransformerConfig:
        return ScratchTransformerConfig(
            vocab_size=self.vocab_size,
            d_model=self.hidden_size,
            encoder_layers=self.num_hidden_layers,
            decoder_layers=self.num_hidden_layers,
            encoder_attention_heads=self.num_attention_heads,
            decoder_attention_heads=self.num_attention_heads,
            encoder_ffn_dim=self.intermediate_size,
            decoder_ffn_dim=self.intermediate_size,
            dropout=self.hidden_dropout_prob,
            attention_dropout=self.attention_probs_dropout_prob,
            max_position_embeddings=self.max_position_embeddings,
            pad_token_id=self.pad_token_id,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            decoder_start_token_id=self.decoder_start_token_id,
        )

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size).clamp(3)
        input_ids[:, -1] = self.eos_token_id
        decoder_input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size).clamp(3)
        inputs_dict = {
            "input_ids": input_ids,
            "attention_mask": input_ids.ne(self.pad_token_id),
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": decoder_input_ids.ne(self.pad_token_id),
        }
        return self.get_config(), inputs_dict

    def prepare_config_and_inputs_for_common(self):
        return self.prepare_config_and_inputs()


class ScratchTransformerModelTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (ScratchTransformerModel, ScratchTransformerForConditionalGeneration)
    is_encoder_decoder = True
    test_missing_keys = False  # as Marian's test

    def setUp(self):
        self.model_tester = ScratchTransformerModelTester(self)
        self.config_tester = ConfigTester(self, config_class=ScratchTransformerConfig)

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_save_load_strict(self):
        """As Marian's test: a saved model loads back with no missing weight."""
        config, _ = self.model_tester.prepare_config_and_inputs()
        for model_class in self.all_model_classes:
            model = model_class(config)
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                _, info = model_class.from_pretrained(folder, output_loading_info=True)
            self.assertEqual(info["missing_keys"], set())


class ScratchTransformerClassifierModelTester(ScratchTransformerModelTester):
    """The classifier is the encoder alone: no decoder inputs, and outputs without encoder/decoder fields (as
    T5's tester of `T5EncoderModel` says with `is_encoder_decoder=False`)."""

    def get_config(self) -> ScratchTransformerConfig:
        config = super().get_config()
        config.is_encoder_decoder = False
        return config

    def prepare_config_and_inputs(self):
        config, inputs_dict = super().prepare_config_and_inputs()
        return config, {"input_ids": inputs_dict["input_ids"], "attention_mask": inputs_dict["attention_mask"]}


class ScratchTransformerForSequenceClassificationTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (ScratchTransformerForSequenceClassification,)
    is_encoder_decoder = False
    test_missing_keys = False

    def setUp(self):
        self.model_tester = ScratchTransformerClassifierModelTester(self)
