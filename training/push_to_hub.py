"""Push a finished run (or a PEFT adapter folder) to the Hugging Face Hub, with a model card filled from the run.

    hf-scratch-transformer push-to-hub runs/multi30k --repo_id user/scratch-multi30k --dataset_name bentrevett/multi30k
    hf-scratch-transformer push-to-hub runs/lora --repo_id user/scratch-lora   # base model: from adapter_config.json

The repo then holds, in one commit: the weights (`model.safetensors`, or `adapter_model.safetensors`),
`config.json` with its `auto_map` (or `adapter_config.json`), `generation_config.json`, the flat
`configuration_scratch_transformer.py` and `modeling_scratch_transformer.py` (so `trust_remote_code=True` works
without this package), the tokenizer files, `all_results.json`, `training_curves.svg`, a translation run's
`attention.png` and the card, `README.md` (`model_cards/`). Files of an earlier push that this run does not have
are deleted in the same commit, so the repo is this run; the earlier commits stay loadable with `revision=<sha>`.

The token comes from `HF_TOKEN` or `hf auth login` (`--token` is not a flag, so it stays out of shell history) and
is never printed. Nothing is written to the run folder: the card and the picture go straight into the commit.
Every training script does the same at the end with `--push_to_hub --hub_model_id user/name`.
"""

import argparse
import fnmatch
import json
import os
import re
import tempfile
from pathlib import Path

import httpx2
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_session, get_token
from huggingface_hub.errors import HfHubHTTPError

import hf_scratch_transformer

from .model_card import CURVES_FILE, make_model_card, read_json, run_kind, training_curves_svg

PACKAGE_DIR = Path(hf_scratch_transformer.__file__).parent  # where the model files to copy beside the weights are
REMOTE_CODE_FILES = ["configuration_scratch_transformer.py", "modeling_scratch_transformer.py"]
# What of a run folder goes to the Hub. Checkpoints, optimizer states and training_args.bin (a pickle) stay home.
RUN_FILES = [
    "config.json", "generation_config.json", "model.safetensors", "model-*-of-*.safetensors",
    "model.safetensors.index.json", "adapter_config.json", "adapter_model.safetensors",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "*.model", "chat_template.jinja", "all_results.json", "attention.png", *REMOTE_CODE_FILES,
]  # fmt: skip


# Weights of the CTranslate2 export pushed with --ctranslate2 (hf_scratch_transformer.export.QUANTIZATIONS).
CTRANSLATE2_WEIGHTS = ("float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "float16", "bfloat16")
# huggingface_hub waits for the Hub without end by default: a Hub that stops answering would hang a push forever.
# HF_HUB_DOWNLOAD_TIMEOUT, huggingface_hub's own setting, sets the read timeout here too.
HUB_CONNECT_TIMEOUT_S = 10
HUB_READ_TIMEOUT_S = float(os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or 60)


class PushError(Exception):
    """A push that could not be done, with a message that says what to do."""


def set_hub_timeouts() -> None:
    """Connect and read timeouts on the session every huggingface_hub call of this process goes through."""
    get_session().timeout = httpx2.Timeout(HUB_READ_TIMEOUT_S, connect=HUB_CONNECT_TIMEOUT_S)


def check_finished_run(run_dir: Path) -> None:
    """A run folder holds a config and weights (a model's or an adapter's); say what is missing otherwise. Runs
    before any network call."""
    if not run_dir.is_dir():
        raise PushError(f"{run_dir} is not a folder. Pass the --output_dir of a finished training run.")
    if re.fullmatch(r"checkpoint-\d+", run_dir.name) or (run_dir / "optimizer.pt").is_file():
        raise PushError(
            f"{run_dir} is a checkpoint of a run in progress (it holds the optimizer state to resume from), not a "
            f"finished run. Push the run's --output_dir ({run_dir.parent}) once it has finished, or finish it with "
            "--resume_from_checkpoint."
        )
    model = (run_dir / "config.json").is_file() and any(run_dir.glob("model*.safetensors"))
    adapter = (run_dir / "adapter_config.json").is_file() and (run_dir / "adapter_model.safetensors").is_file()
    if not (model or adapter):
        present = sorted(path.name for path in run_dir.iterdir())[:10]
        raise PushError(
            f"{run_dir} is not a finished run: it needs config.json and model.safetensors (or adapter_config.json "
            f"and adapter_model.safetensors for an adapter), and holds {present}. Push the folder a training script "
            "saved at its end, not a checkpoint in progress."
        )


def safetensors_damage(path: Path) -> str | None:
    """What is wrong with a safetensors file, from its header alone, or None: the file is 8 bytes of header length,
    the JSON header, then the tensors, whose last byte the header's largest offset names."""
    size = path.stat().st_size
    with path.open("rb") as file:
        length = int.from_bytes(file.read(8), "little") if size >= 8 else 0
        if size < 8 or 8 + length > size:
            return f"is {size} bytes, too few for the header it starts with"
        try:
            header = json.loads(file.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            return "has a header that is not a safetensors header"
    if 8 + length + end != size:
        return f"is {size} bytes where its header describes {8 + length + end}"
    return None


def check_files_whole(files: dict[str, Path]) -> None:
    """Refuse to publish a damaged file: each safetensors file as long as its header says, each JSON file valid."""
    for name, path in files.items():
        damage = None
        if name.endswith(".safetensors"):
            damage = safetensors_damage(path)
        elif name.endswith(".json"):
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as error:
                damage = f"is not valid JSON ({error})"
        if damage:
            raise PushError(
                f"{path} {damage}: it was cut short or damaged, by an interrupted save or copy. Nothing was pushed: "
                "save or copy the run again, then push."
            )


def ctranslate2_files(run_dir: Path, quantization: str) -> list[CommitOperationAdd]:
    """The run exported to CTranslate2 (`hf_scratch_transformer.export`), as the commit's `ctranslate2/` files."""
    if run_kind(run_dir) != "translation":
        raise PushError(f"{run_dir} is not a translator: only translators export to CTranslate2.")
    try:
        from hf_scratch_transformer.export import export_ctranslate2
    except ModuleNotFoundError as error:
        raise PushError(str(error)) from None
    with tempfile.TemporaryDirectory() as folder:
        try:
            export_ctranslate2(run_dir, folder, quantization=None if quantization == "float32" else quantization,
                               force=True)  # fmt: skip
        except ValueError as error:
            raise PushError(f"The CTranslate2 export failed: {error}") from None
        return [
            CommitOperationAdd(path_in_repo=f"ctranslate2/{path.name}", path_or_fileobj=path.read_bytes())
            for path in sorted(Path(folder).iterdir())
        ]


def require_token(token: str | None = None) -> str:
    """The token to push with: the one given, or HF_TOKEN / the one `hf auth login` saved."""
    token = token or get_token()
    if not token:
        raise PushError("No Hugging Face token: set HF_TOKEN, or run `hf auth login`, with a token that can write.")
    return token


def files_to_push(run_dir: Path) -> dict[str, Path]:
    """path in the repo -> local file, for the run's files in RUN_FILES. The remote-code files come from the run
    (save_pretrained copies them there) or, for a model saved without them, from this package."""
    files = {
        path.name: path
        for path in sorted(run_dir.iterdir())
        if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in RUN_FILES)
    }
    if "config.json" in files:
        for name in REMOTE_CODE_FILES:
            files.setdefault(name, PACKAGE_DIR / name)
    return files


def explain(error: Exception, endpoint: str, repo_id: str | None = None) -> str:
    """A message for a failed Hub call: a rejected token, a namespace the token may not write to (in the Hub's own
    words), an unreachable, silent or dying server, or the Hub's own words."""
    status = error.response.status_code if isinstance(error, HfHubHTTPError) and error.response is not None else None
    if status == 401:
        return (
            f"The Hub at {endpoint} rejected the token (401): set HF_TOKEN to a valid token with write access, or "
            "run `hf auth login`."
        )
    if status == 403:
        namespace = repo_id.split("/")[0] if repo_id and "/" in repo_id else None
        where = f" to the namespace {namespace!r}" if namespace else ""
        return (
            f"The Hub at {endpoint} refused the push{where} (403): {error.server_message or error}. The token has no "
            "write access there: push to your own namespace, or use a token of a member with write access to it."
        )
    if isinstance(error, (httpx2.TransportError, ConnectionError)) or isinstance(
        error.__cause__, httpx2.TransportError
    ):
        if any(isinstance(cause, httpx2.TimeoutException) for cause in (error, error.__cause__)):
            what = f"The Hub at {endpoint} did not answer in time"
        else:
            what = f"Lost the connection to the Hub at {endpoint}"
        return (
            f"{what} ({type(error).__name__}: {error}). The run folder is unchanged and the Hub keeps no partial "
            "commit: run the same command again."
        )
    return f"The push to {endpoint} failed: {error}"


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    datasets: list[str] | None = None,
    base_model: str | None = None,
    ctranslate2: str | None = None,
) -> str:
    """Push the finished run in `run_dir` to `repo_id` (created if needed; `revision`: a branch, created from
    main if needed) as one commit. Returns the commit sha. Raises PushError with a message for the user.

    `ctranslate2` ("float32", "int8", ...): the translator exported to CTranslate2 goes in the same commit, in the
    repo's `ctranslate2/` folder. One repo, not a second one: the export and the weights it came from are one version
    of one model, with one card that shows both ways to run it."""
    run_dir = Path(run_dir)
    check_finished_run(run_dir)
    token = require_token(token)
    files = files_to_push(run_dir)
    check_files_whole(files)
    set_hub_timeouts()
    state = read_json(run_dir / "trainer_state.json")
    card = make_model_card(run_dir, repo_id, datasets=datasets, base_model=base_model, ctranslate2=ctranslate2)
    metric = {"translation": "eval_bleu", "sentiment": "eval_accuracy"}.get(run_kind(run_dir))
    curves = training_curves_svg(state["log_history"], metric) if state else None
    additions = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]
    additions.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode()))
    if curves:
        additions.append(CommitOperationAdd(path_in_repo=CURVES_FILE, path_or_fileobj=curves.encode()))
    if ctranslate2:
        additions += ctranslate2_files(run_dir, ctranslate2)

    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        repo_id = repo_url.repo_id
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        pushed = {operation.path_in_repo for operation in additions}
        stale = [path for path in api.list_repo_files(repo_id, revision=revision) if path not in pushed]
        deletions = [CommitOperationDelete(path) for path in stale if path != ".gitattributes"]
        commit = api.create_commit(
            repo_id,
            operations=additions + deletions,
            commit_message=commit_message or f"Upload {run_dir.name} with hf-scratch-transformer push-to-hub",
            revision=revision,
        )
    except (HfHubHTTPError, httpx2.TransportError, ConnectionError, RuntimeError) as error:
        raise PushError(explain(error, api.endpoint, repo_id)) from error
    return commit.oid


def check_hub_token(token: str | None) -> None:
    """A training script's --push_to_hub: stop before training, not after, when there is no token or the Hub
    rejects it."""
    try:
        api = HfApi(token=require_token(token))
        set_hub_timeouts()
        try:
            api.whoami()
        except Exception as error:  # rejected, or unreachable: explain() tells which
            raise PushError(explain(error, api.endpoint)) from error
    except PushError as error:
        raise SystemExit(f"--push_to_hub: {error}") from None


def push_trainer_run(trainer, model_name_or_path: str | None, dataset_name: str | None) -> None:
    """A training script's --push_to_hub, at its end: Trainer has pushed its own files (at each save, and in
    save_model with its own card); wait for those pushes, then commit what `push_run` pushes, with our card. The
    repo ends as this script leaves it; Trainer's extra files (training_args.bin, its card) are replaced or
    deleted."""
    if not trainer.args.push_to_hub or not trainer.is_world_process_zero():
        return
    if trainer.push_in_progress is not None:
        trainer.push_in_progress.wait_until_done()
    # The card's base_model is a Hub id; a local folder would mean nothing on the Hub.
    base_model = model_name_or_path if model_name_or_path and not os.path.exists(model_name_or_path) else None
    try:
        push_run(
            trainer.args.output_dir,
            trainer.hub_model_id,
            revision=trainer.args.hub_revision,
            token=trainer.args.hub_token,
            datasets=[dataset_name] if dataset_name else None,
            base_model=base_model,
            commit_message="End of training",
        )
    except PushError as error:
        raise SystemExit(f"--push_to_hub: {error} The run is saved in {trainer.args.output_dir}.") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="The --output_dir of a finished run, or a PEFT adapter folder.")
    parser.add_argument("--repo_id", required=True, help="user/name (or organization/name) on the Hub.")
    parser.add_argument(
        "--private", action="store_true", help="Create the repo private (an existing repo keeps its own)."
    )
    parser.add_argument("--revision", default=None, help="The branch to commit to (created from main); default main.")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument(
        "--dataset_name",
        action="append",
        default=None,
        help="Hub data set the run trained on, for the card (repeatable).",
    )
    parser.add_argument(
        "--base_model", default=None, help="Hub id of the checkpoint the run was fine-tuned from, for the card."
    )
    parser.add_argument(
        "--ctranslate2",
        default=None,
        choices=CTRANSLATE2_WEIGHTS,
        help="Also push the translator exported to CTranslate2, with these weights, in the repo's ctranslate2/ folder "
        "(the `export` extra).",
    )
    args = parser.parse_args()
    try:
        sha = push_run(
            args.run_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            datasets=args.dataset_name,
            base_model=args.base_model,
            ctranslate2=args.ctranslate2,
        )
    except PushError as error:
        raise SystemExit(f"push_to_hub: {error}") from None
    print(f"Pushed {args.run_dir} to {args.repo_id} at commit {sha}")


if __name__ == "__main__":
    main()
