"""Which models a visitor of the app may name, and fetching them: nothing of the server's disk but what its owner
listed, and nothing of the Hub but public models of this architecture, downloaded without a token.

A visitor names a model by
- a Hub id, `user/name`: downloaded anonymously, so a private model stays private whatever token the server holds;
  only if its config says `scratch_transformer`, its weights are safetensors, and its files add up to at most
  `max_hub_bytes`;
- a name the owner listed at launch (`--model_dir`; `make demo`'s model is "demo");
- the name of one of their own runs.
Anything else gets the same message, whether or not such a path exists on the server, and no message holds a path
of the server.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError

from hf_scratch_transformer import ScratchTransformerConfig

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
# What of a Hub repo is fetched: the model, its generation settings and its tokenizer. No pickles, no code.
MODEL_FILES = (
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
)  # fmt: skip
HUB_TIMEOUT_S = 30


class ModelRefused(Exception):
    """A model name the app will not load; the message says what it accepts, for the page."""


@dataclass
class ModelAccess:
    listed: dict[str, Path]  # name -> folder, the owner's choice at launch
    hub_cache: Path  # where Hub models are downloaded
    max_hub_bytes: int
    fetched: dict[str, Path] = field(default_factory=dict)  # Hub id -> its checked download, for the app's lifetime

    def resolve(self, name: str, own_runs: dict[str, Path]) -> tuple[Path, str | None]:
        """The folder that holds the model `name`, and its Hub id when it came from the Hub. Raises ModelRefused."""
        name = name.strip()
        if name in self.listed:
            return self.check_folder(self.listed[name], name), None
        if name in own_runs:
            return self.check_folder(own_runs[name], name), None
        if HUB_ID.fullmatch(name) and ".." not in name:
            return self.fetch(name), name
        offered = ", ".join(repr(listed) for listed in self.listed)
        raise ModelRefused(
            f"{name[:100]!r} is not a model this app loads. Enter a public Hub id such as user/name"
            + (f", a listed model ({offered})" if offered else "")
            + ", or the name of one of your runs."
        )

    @staticmethod
    def check_folder(folder: Path, name: str) -> Path:
        config = folder / "config.json"
        if not config.is_file():
            raise ModelRefused(f"The model {name!r} is not there any more (a run's model exists once it is done).")
        return folder

    def fetch(self, repo_id: str) -> Path:
        """Download a public model of this architecture, its safetensors weights and tokenizer only, without any
        token; a private, missing or unfit repo is refused with a message. Each model is fetched and checked once:
        every Try of it after that costs no Hub call."""
        if repo_id not in self.fetched:
            self.fetched[repo_id] = self.download_checked(repo_id)
        return self.fetched[repo_id]

    def download_checked(self, repo_id: str) -> Path:
        api = HfApi(token=False)
        try:
            info = api.model_info(repo_id, files_metadata=True, timeout=HUB_TIMEOUT_S)
        except (HfHubHTTPError, OSError, ValueError):
            raise ModelRefused(
                f"{repo_id} is not a public model on the Hub, or the Hub did not answer. Private models cannot be "
                "loaded here: make it public, or run the app yourself."
            ) from None
        sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or []}
        if "config.json" not in sizes or "model.safetensors" not in sizes:
            raise ModelRefused(f"{repo_id} holds no config.json and model.safetensors: it is not a model saved by "
                               "this package.")  # fmt: skip
        wanted = [name for name in MODEL_FILES if name in sizes]
        total = sum(sizes[name] for name in wanted)
        if total > self.max_hub_bytes:
            raise ModelRefused(
                f"{repo_id} is {total / 1e6:.0f} MB: this app loads {self.max_hub_bytes / 1e6:.0f} MB at most."
            )
        try:
            folder = Path(
                snapshot_download(repo_id, revision=info.sha, allow_patterns=wanted, token=False,
                                  cache_dir=self.hub_cache, etag_timeout=HUB_TIMEOUT_S)
            )  # fmt: skip
        except (HfHubHTTPError, OSError, ValueError):
            raise ModelRefused(f"{repo_id} could not be downloaded from the Hub: try again later.") from None
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (ValueError, AttributeError):
            model_type = None
        if model_type != ScratchTransformerConfig.model_type:
            raise ModelRefused(
                f"{repo_id} is not a {ScratchTransformerConfig.model_type} model (its config says {model_type!r})."
            )
        return folder
