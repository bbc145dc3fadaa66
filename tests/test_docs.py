"""The documentation holds together: every relative link of README.md and docs/ (and its #anchor, by GitHub's rules)
leads to a file or heading that exists, the README links every page of docs/, and no doc reads like a lab notebook
(first person, work sessions, dates of work)."""

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO_ROOT, documentation_pages

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", flags=re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: its text as rendered, lower-cased, without punctuation but hyphens and
    underscores, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The #anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: Counter = Counter()
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        anchor = github_anchor(heading)
        found.add(f"{anchor}-{seen[anchor]}" if seen[anchor] else anchor)
        seen[anchor] += 1
    return found


def relative_links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(text) if target and not SCHEME.match(target)]


def broken_links(page: Path, root: Path = REPO_ROOT) -> list[str]:
    """The page's relative links that lead nowhere: no such file, a file outside the repository, or no such heading."""
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.is_relative_to(root.resolve()) or not destination.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and (destination.suffix != ".md" or anchor not in anchors(destination)):
            broken.append(f"{target}: no heading #{anchor} in {destination.name}")
    return broken


PAGES = documentation_pages()


def test_the_documentation_has_its_pages():
    names = {page.relative_to(REPO_ROOT).as_posix() for page in PAGES}
    assert {"README.md", "docs/results.md", "docs/troubleshooting.md", "docs/serving.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO_ROOT).as_posix())
def test_relative_links_and_anchors_resolve(page):
    assert broken_links(page) == []


def test_the_readme_links_every_docs_page():
    readme = REPO_ROOT / "README.md"
    linked = {(readme.parent / target.partition("#")[0]).resolve() for target in relative_links(readme)}
    unlinked = [page.name for page in PAGES[1:] if page.resolve() not in linked]
    assert unlinked == [], f"docs pages the README does not link: {unlinked}"


def test_the_link_check_catches_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Fast paths: `torch.compile`\n\ntext\n")
    page = tmp_path / "README.md"
    page.write_text(
        "# Title\n\n[ok](docs/a.md) [ok](docs/a.md#fast-paths-torchcompile) [ok](#title) [web](https://x.org/a)\n"
        "[gone](docs/b.md) [no heading](docs/a.md#slow-paths) [outside](../elsewhere.md)\n"
        "```bash\n[not a link](docs/c.md)\n```\n"
    )
    assert [entry.split(":")[0] for entry in broken_links(page, root=tmp_path)] == [
        "docs/b.md",
        "docs/a.md#slow-paths",
        "../elsewhere.md",
    ]


@pytest.mark.parametrize(
    "heading, anchor",
    [
        ("Fast paths: a static cache and `torch.compile`", "fast-paths-a-static-cache-and-torchcompile"),
        ("Multi30k EN→DE and DE→EN", "multi30k-ende-and-deen"),
        ("`trust_remote_code`", "trust_remote_code"),
        ("Several processes: Accelerate", "several-processes-accelerate"),
        (
            "Fine-tuning with PEFT: LoRA, prefix and prompt tuning",
            "fine-tuning-with-peft-lora-prefix-and-prompt-tuning",
        ),
    ],
)
def test_anchors_follow_githubs_rules(heading, anchor):
    assert github_anchor(heading) == anchor


# A lab notebook's marks: the first person, work sessions, and the date of a piece of work (not a version string).
NOTEBOOK = {
    "the first person": re.compile(r"\bI\b|\b(?:[Ww]e|[Oo]urs?|[Uu]s|[Mm]y|[Mm]e)\b"),
    "a work session": re.compile(r"\bsessions?\b", flags=re.IGNORECASE),
    "a date": re.compile(r"(?<![\w.])20\d\d-[01]\d-[0-3]\d(?![\w.])"),
}


def tracked_docs() -> list[Path]:
    """The Markdown files of the repository that git tracks or would track (not the ignored ones, e.g. runs/)."""
    if shutil.which("git") and (REPO_ROOT / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.md"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        return [REPO_ROOT / name for name in listed if (REPO_ROOT / name).is_file()]
    return PAGES + sorted((REPO_ROOT / "model_cards").glob("*.md"))


def test_no_doc_reads_like_a_lab_notebook():
    docs = tracked_docs()
    assert set(PAGES) <= set(docs)
    found = []
    for doc in docs:
        for line in prose(doc.read_text(encoding="utf-8")).splitlines():
            for mark, pattern in NOTEBOOK.items():
                if match := pattern.search(line):
                    found.append(f"{doc.relative_to(REPO_ROOT)}: {mark} ({match.group()!r}): {line.strip()[:100]}")
    assert found == [], "\n".join(found)


def test_the_notebook_check_catches_its_marks():
    caught = [bool(pattern.search(text)) for pattern in NOTEBOOK.values() for text in ("", "x")]
    assert not any(caught)
    assert NOTEBOOK["the first person"].search("Here we train") and NOTEBOOK["the first person"].search("I ran it")
    assert NOTEBOOK["a work session"].search("in session 12")
    assert NOTEBOOK["a date"].search("until 2026-11-29,") and not NOTEBOOK["a date"].search("torch 2.13.0")
    assert not NOTEBOOK["the first person"].search("the user's model, its weights")
