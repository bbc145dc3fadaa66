"""The README's Python snippets run as written, in order, in one namespace."""

import re

from conftest import REPO_ROOT

DEMO_MODEL = "runs/demo/model"  # the snippet that needs `make demo`'s model runs in tests/test_demo.py
HUB_REPO = '"your-name/'  # snippets that load from the Hub: tests/test_hub.py does the same against its test Hub


def readme_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    snippets = [snippet for snippet in readme_snippets() if DEMO_MODEL not in snippet and HUB_REPO not in snippet]
    assert len(snippets) >= 3
    monkeypatch.chdir(tmp_path)  # the snippets save to out/
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "modeling_scratch_transformer.py").is_file()
