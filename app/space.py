"""The app as a Hugging Face Space: the files to upload, with a requirements.txt made from constraints.txt.

    python app/space.py --repo_id your-name/scratch-transformer     # push them (token: HF_TOKEN or `hf auth login`)
    python app/space.py --out space/                                # or write them to a folder, to upload yourself

A Space runs `app_file` (app.py) from a copy of the files, and Python finds what sits beside it: the files are laid
out as the installed package is (training/ as `hf_scratch_transformer/training/`, model_cards/ as
`hf_scratch_transformer/model_cards/`), the app at the top. `README.md` is the Space's card, whose front matter
names the Gradio version. `requirements.txt` pins every package the app needs at run time (the package's
dependencies and its `app` extra, and theirs) to its version in constraints.txt, the versions the tests ran against;
Gradio itself is left out, since the Space installs the `sdk_version` of the card.
"""

import argparse
import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = {  # folder of the repository -> (the files of it the Space needs, the folder they go to in the Space)
    "app": (["app.py", "fine_tuning.py", "model_access.py"], ""),
    "hf_scratch_transformer": (["**/*.py"], "hf_scratch_transformer"),
    "training": (["*.py"], "hf_scratch_transformer/training"),
    "model_cards": (["*.py", "*.md"], "hf_scratch_transformer/model_cards"),
}
CARD = """---
title: Scratch Transformer
emoji: 🔍
colorFrom: indigo
colorTo: yellow
sdk: gradio
sdk_version: {gradio_version}
python_version: "3.11"
app_file: app.py
license: apache-2.0
pinned: false
---

The encoder-decoder Transformer of *Attention Is All You Need*, written from scratch as a Hugging Face model by
the hf-scratch-transformer project: try a model and see its attention, or fine-tune one on a CSV or JSON Lines
file and push it to the Hub. These files are made by `python app/space.py` in the project's repository.
"""


def pinned_versions(constraints: Path) -> dict[str, str]:
    """name (canonical) -> version of each `name==version` line."""
    pins = {}
    for line in constraints.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def runtime_packages(project: str = "hf-scratch-transformer", extras: tuple[str, ...] = ("app",)) -> set[str]:
    """The canonical names of the packages the project needs at run time with `extras`: its requirements and
    theirs (with the extras each asks for, such as fsspec[http]), read from the installed packages' metadata, so
    this runs where the project is installed."""
    needed, seen, pending = set(), set(), [(project, extra) for extra in ("", *extras)]
    while pending:
        name, extra = pending.pop()
        if (canonicalize_name(name), extra) in seen:
            continue
        seen.add((canonicalize_name(name), extra))
        try:
            requirements = distribution(name).requires or []
        except PackageNotFoundError:
            continue  # not installed: a requirement whose marker excludes this platform
        for line in requirements:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
                continue
            needed.add(canonicalize_name(requirement.name))
            pending += [(requirement.name, wanted) for wanted in ("", *requirement.extras)]
    return needed


def requirements_txt(constraints: Path = REPO_ROOT / "constraints.txt") -> str:
    """One `name==version` line a runtime package, from constraints.txt; Gradio left to the Space."""
    pins = pinned_versions(constraints)
    # Gradio: the Space installs its sdk_version. setuptools (which torch requires): pip freeze, hence
    # constraints.txt, leaves the installer's own packages out, and every Python environment has them. The project
    # itself (its `app` extra asks for its `train` extra): the Space holds its files.
    left_out = {"gradio", "gradio-client", "pip", "setuptools", "wheel", "hf-scratch-transformer"}
    packages = sorted(runtime_packages() - left_out)
    unpinned = [name for name in packages if name not in pins]
    if unpinned:
        raise SystemExit(f"constraints.txt pins no version of {unpinned}: add them (pip freeze) and rerun.")
    header = "# Made by app/space.py from constraints.txt: the versions the project's tests ran against.\n"
    return header + "".join(f"{name}=={pins[name]}\n" for name in packages)


def space_files() -> dict[str, bytes]:
    """path in the Space -> content."""
    files = {}
    for folder, (patterns, destination) in SOURCES.items():
        for pattern in patterns:
            for path in sorted((REPO_ROOT / folder).glob(pattern)):
                if "__pycache__" not in path.parts:
                    name = (Path(destination) / path.relative_to(REPO_ROOT / folder)).as_posix()
                    files[name] = path.read_bytes()
    gradio_version = pinned_versions(REPO_ROOT / "constraints.txt")["gradio"]
    files["README.md"] = CARD.format(gradio_version=gradio_version).encode()
    files["requirements.txt"] = requirements_txt().encode()
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo_id", help="The Space to create or update, e.g. your-name/scratch-transformer.")
    where.add_argument("--out", type=Path, help="Write the files to this folder instead.")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args()
    files = space_files()
    if args.out is not None:
        for name, content in files.items():
            (args.out / name).parent.mkdir(parents=True, exist_ok=True)
            (args.out / name).write_bytes(content)
        print(f"Wrote {len(files)} files to {args.out}")
        return

    import httpx2
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from hf_scratch_transformer.training.push_to_hub import PushError, explain, require_token

    try:
        api = HfApi(token=require_token())
        try:
            repo_id = api.create_repo(
                args.repo_id, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True
            ).repo_id
            operations = [CommitOperationAdd(name, content) for name, content in files.items()]
            commit = api.create_commit(
                repo_id, operations, repo_type="space", commit_message="Upload the app with app/space.py"
            )
        except (HfHubHTTPError, httpx2.TransportError, ConnectionError, RuntimeError) as error:  # as push_to_hub.py
            raise PushError(explain(error, api.endpoint)) from error
    except PushError as error:
        raise SystemExit(f"space: {error}") from None
    print(f"Pushed {len(files)} files to the Space {repo_id} at commit {commit.oid}")


if __name__ == "__main__":
    main()
