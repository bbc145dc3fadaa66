"""The optional parts of the package and the extra that installs each: the model needs only torch and transformers.

pip install hf-scratch-transformer            # the model: Auto classes, generate(), save and load
pip install "hf-scratch-transformer[train]"   # + the commands, metrics, collators' data, PEFT, Accelerate, plots
pip install "hf-scratch-transformer[app]"     # + the web app (Gradio)
pip install "hf-scratch-transformer[export]"  # + the CTranslate2 export (hf_scratch_transformer.export)
"""

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def missing_extra_says_which(extra: str, feature: str) -> Iterator[None]:
    """Around the imports of an optional feature: a package missing there raises a `ModuleNotFoundError` that names
    the extra installing it, rather than the bare name of a module the user never asked for."""
    try:
        yield
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] == "hf_scratch_transformer":
            raise
        raise ModuleNotFoundError(
            f"{feature} needs `{error.name.split('.')[0]}`, which the `{extra}` extra installs: "
            f"pip install 'hf-scratch-transformer[{extra}]'",
            name=error.name,
        ) from error
