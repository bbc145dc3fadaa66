"""The documentation's snippets work as written. Python: the README's run in order in one namespace, and each page
of docs/ runs its own after the README's, since the pages continue the README's first example (`model`, `src`,
`out/`). The snippets on the demo's model run in tests/test_demo.py. Shell: every command the README and docs/ show
exists, with the flags they give it."""

import re
import shlex
import sys
from pathlib import Path

import pytest
from conftest import DEMO_MODEL, HUB_REPO, REPO_ROOT, documentation_pages, python_snippets

from hf_scratch_transformer.training import cli

README = REPO_ROOT / "README.md"


def runnable_snippets(page: Path) -> list[str]:
    """The snippets that run here: not those on the demo's model, nor those that load from the Hub."""
    return [snippet for snippet in python_snippets(page) if DEMO_MODEL not in snippet and HUB_REPO not in snippet]


def run_snippets(page: Path, namespace: dict) -> None:
    for snippet in runnable_snippets(page):
        exec(compile(snippet, str(page.relative_to(REPO_ROOT)), "exec"), namespace)


PAGES_WITH_SNIPPETS = [page for page in documentation_pages()[1:] if runnable_snippets(page)]


@pytest.fixture(scope="module")
def after_the_readme(tmp_path_factory):
    """The folder the README's snippets ran in (they save to out/) and the names they left."""
    folder = tmp_path_factory.mktemp("readme")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        run_snippets(README, namespace := {})
    return folder, namespace


def test_readme_python_snippets_run(after_the_readme):
    folder, namespace = after_the_readme
    assert (folder / "out" / "model.safetensors").is_file()
    assert (folder / "out" / "modeling_scratch_transformer.py").is_file()
    assert "reloaded" in namespace


@pytest.mark.parametrize("page", PAGES_WITH_SNIPPETS, ids=lambda page: page.name)
def test_docs_python_snippets_run(page, after_the_readme, monkeypatch):
    folder, namespace = after_the_readme
    monkeypatch.chdir(folder)
    run_snippets(page, dict(namespace))


def test_every_python_snippet_is_run_somewhere():
    """Nothing that was tested stops being tested when a snippet moves: the runnable snippets and the demo's are
    counted, and every other snippet is one that loads from the Hub."""
    pages = documentation_pages()
    snippets = [snippet for page in pages for snippet in python_snippets(page)]
    runnable = [snippet for page in pages for snippet in runnable_snippets(page)]
    on_the_demo = [snippet for snippet in snippets if DEMO_MODEL in snippet]
    from_the_hub = [snippet for snippet in snippets if HUB_REPO in snippet and DEMO_MODEL not in snippet]
    assert len(runnable) >= 6, runnable  # the first model, trust_remote_code, classifier, fast paths, int8, PEFT
    assert len(on_the_demo) == 3  # translating, attention, CTranslate2: tests/test_demo.py runs them
    assert len(runnable) + len(on_the_demo) + len(from_the_hub) == len(snippets)
    assert {page.name for page in PAGES_WITH_SNIPPETS} >= {"architecture.md", "hub.md", "peft.md"}


# Shell commands: `hf-scratch-transformer <subcommand> --flags`, `make <target>`, `bash <script>`,
# `python -m benchmarks.<module> --flags` and `python app/<file>.py --flags`.
SEPARATORS = {"&&", "||", ";", "|"}


def shell_commands(page: Path) -> list[list[str]]:
    """Each command of the page's ```bash blocks as its words, without comments, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            command: list[str] = []
            for word in shlex.split(line, comments=True):
                if word in SEPARATORS:
                    commands.append(command)
                    command = []
                else:
                    command.append(word)
            commands.append(command)
    return [command for command in commands if command]


def documented_commands() -> list[tuple[str, list[str]]]:
    return [(page.name, command) for page in documentation_pages() for command in shell_commands(page)]


def without_environment(command: list[str]) -> list[str]:
    while command and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", command[0]):
        command = command[1:]
    return command


def flags(words: list[str]) -> set[str]:
    return {word.split("=")[0] for word in words if word.startswith("--")}


def subcommand_flags() -> dict[str, set[str]]:
    """The flags the docs give each subcommand of `hf-scratch-transformer`."""
    given: dict[str, set[str]] = {}
    for _, command in documented_commands():
        for i, word in enumerate(command):
            if word in ("hf-scratch-transformer", "hf_scratch_transformer.training.cli") and i + 1 < len(command):
                if not command[i + 1].startswith("-"):
                    given.setdefault(command[i + 1], set()).update(flags(command[i + 2 :]))
    return given


def test_the_docs_show_commands():
    assert len(documented_commands()) >= 30
    assert {"finetune-translation", "push-to-hub", "export-ctranslate2", "plot-attention"} <= set(subcommand_flags())


def test_documented_subcommands_exist_and_take_the_flags_shown(capsys, monkeypatch):
    for subcommand, given in sorted(subcommand_flags().items()):
        assert subcommand in cli.COMMANDS, f"the docs show `hf-scratch-transformer {subcommand}`, which does not exist"
        monkeypatch.setattr(sys, "argv", sys.argv[:1])  # cli.main() sets it for the script it runs
        with pytest.raises(SystemExit):
            cli.main([subcommand, "--help"])
        usage = capsys.readouterr().out
        missing = sorted(flag for flag in given if not re.search(re.escape(flag) + r"(?![\w-])", usage))
        assert not missing, f"`hf-scratch-transformer {subcommand}` does not take {missing}"


def test_documented_files_targets_and_modules_exist():
    targets = set(re.findall(r"^([\w-]+):", (REPO_ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    for page, command in documented_commands():
        command = without_environment(command)
        if not command:
            continue
        program, arguments = command[0], command[1:]
        if program == "make":
            for target in (word for word in arguments if "=" not in word and not word.startswith("-")):
                assert target in targets, f"{page}: `make {target}` is not a Makefile target"
        elif program == "bash":
            assert (REPO_ROOT / arguments[0]).is_file(), f"{page}: `bash {arguments[0]}`: no such file"
        elif re.fullmatch(r"(\S*/)?python3?", program):
            if arguments[:1] == ["-m"] and arguments[1].startswith("benchmarks."):
                source = REPO_ROOT / (arguments[1].replace(".", "/") + ".py")
            elif arguments and arguments[0].endswith(".py"):
                source = REPO_ROOT / arguments[0]
            else:
                continue
            assert source.is_file(), f"{page}: `{shlex.join(command)}`: no {source.relative_to(REPO_ROOT)}"
            text = source.read_text(encoding="utf-8")
            missing = sorted(flag for flag in flags(arguments) if f'"{flag}"' not in text)
            assert not missing, f"{page}: {source.relative_to(REPO_ROOT)} takes no {missing}"
