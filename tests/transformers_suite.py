"""transformers' own common test suites, fetched from its source distribution, for tests/test_transformers_common.py.

Every model inside `transformers` must pass `ModelTesterMixin` (tests/test_modeling_common.py) and `ConfigTester`
(tests/test_configuration_common.py). The wheel does not ship them; the source distribution on PyPI does. On first
use, `load()` runs `pip download transformers==<installed version> --no-binary :all: --no-deps`, unpacks those two
files into `.transformers-tests/<version>/` beside `.venv` (git-ignored: nothing of them enters this repository),
and imports them as the package `transformers_tests`, so that the same files always test the same library.

Three modules they import are not in the source distribution; this file stands in for each:
- `generation/test_utils.py` (`GenerationTesterMixin`, the generation suite): an empty mixin. Neither the wheel nor the
  source distribution ships that suite, so tests/test_generation.py covers what it checks: greedy, beam search and
  sampling against a hand-written loop, cache equal to no cache, batched equal to one by one, and every field of
  `generate(return_dict_in_generate=True, output_*=True)` shaped as Marian's for the same search.
- `exporters/test_export.py` (`ExportTesterMixin`, `torch.export` tests that Marian's test does not run either):
  an empty mixin.
- `utils/test_configuration_utils.py` (`config_common_kwargs`): `PreTrainedConfig` arguments, each with a value
  other than its default, which `ConfigTester` checks that a config's `__init__` passes through.
"""

import importlib
import importlib.util
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import transformers
from filelock import FileLock
from transformers.models.auto import modeling_auto

from hf_scratch_transformer import ScratchTransformerConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = REPO_ROOT / ".transformers-tests" / transformers.__version__
PACKAGE = "transformers_tests"
SUITE_FILES = ("test_modeling_common.py", "test_configuration_common.py")
MODEL_TYPE = ScratchTransformerConfig.model_type


class GenerationTesterMixin:
    """Stands in for transformers' generation suite, which its source distribution does not ship."""


class ExportTesterMixin:
    """Stands in for transformers' `torch.export` suite, which its source distribution does not ship."""


CONFIG_COMMON_KWARGS = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "tie_word_embeddings": False,
    "chunk_size_feed_forward": 5,
    "architectures": ["ScratchTransformerForConditionalGeneration"],
    "finetuning_task": "translation",
    "id2label": {0: "negative", 1: "positive"},
    "label2id": {"negative": 0, "positive": 1},
    "problem_type": "single_label_classification",
    "tokenizer_class": "PreTrainedTokenizerFast",
    "prefix": "translate: ",
    "bos_token_id": 5,
    "pad_token_id": 6,
    "eos_token_id": 7,
    "sep_token_id": 8,
    "decoder_start_token_id": 9,
}


def fetch() -> Path:
    """The folder holding the package `transformers_tests`, downloaded and unpacked on first use. Under `make test`'s
    two workers both collect this file at once: the first downloads, the other waits on the lock and reuses it."""
    package_dir = CACHE / PACKAGE
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(CACHE / "fetch.lock")):
        if all((package_dir / name).is_file() for name in SUITE_FILES):
            return CACHE
        version = transformers.__version__
        with tempfile.TemporaryDirectory() as download:
            command = [sys.executable, "-m", "pip", "download", f"transformers=={version}"]
            command += ["--no-binary", ":all:", "--no-deps", "--quiet", "-d", download]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(
                    f"Could not download the transformers {version} source distribution, which holds the common test "
                    f"suites (pip said: {result.stderr.strip()[-500:]}). These tests need the package index."
                )
            (archive,) = Path(download).glob("transformers-*.tar.gz")
            staged = Path(tempfile.mkdtemp(dir=CACHE))
            with tarfile.open(archive) as sdist:
                for name in SUITE_FILES:
                    member = sdist.getmember(f"transformers-{version}/tests/{name}")
                    (staged / name).write_bytes(sdist.extractfile(member).read())
            (staged / "__init__.py").write_text("")
            staged.rename(package_dir)  # the folder appears whole or not at all
    return CACHE


def list_as_in_tree_model() -> None:
    """The suites treat each class by the task transformers files it under, read off the class names in the tables
    of `transformers.models.auto.modeling_auto` that list the models inside the library (e.g. a bare model gets no
    loss in `test_training`; a sequence classifier gets class-id labels). An in-tree model is in those tables, so ours
    is entered there, under its model type, for the process that runs the suites. (`AutoModel` and friends are
    unaffected: they find our classes through `register`, which they consult first.)"""
    modeling_auto.MODEL_MAPPING_NAMES[MODEL_TYPE] = "ScratchTransformerModel"
    modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES[MODEL_TYPE] = (
        "ScratchTransformerForConditionalGeneration"
    )
    modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES[MODEL_TYPE] = (
        "ScratchTransformerForSequenceClassification"
    )


def load() -> types.ModuleType:
    """Import `transformers_tests` (its two suites) with the stand-ins above for the modules it lacks."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    list_as_in_tree_model()
    package_dir = fetch() / PACKAGE
    spec = importlib.util.spec_from_file_location(
        PACKAGE, package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
    )
    sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[PACKAGE])
    stand_ins = {
        "generation": {"GenerationTesterMixin": GenerationTesterMixin},
        "exporters": {"ExportTesterMixin": ExportTesterMixin},
        "utils": {"config_common_kwargs": CONFIG_COMMON_KWARGS},
    }
    module_names = {"generation": "test_utils", "exporters": "test_export", "utils": "test_configuration_utils"}
    for folder, names in stand_ins.items():
        sys.modules[f"{PACKAGE}.{folder}"] = types.ModuleType(f"{PACKAGE}.{folder}")
        module = types.ModuleType(f"{PACKAGE}.{folder}.{module_names[folder]}")
        module.__dict__.update(names)
        sys.modules[module.__name__] = module
    importlib.import_module(f"{PACKAGE}.test_modeling_common")
    importlib.import_module(f"{PACKAGE}.test_configuration_common")
    return sys.modules[PACKAGE]
