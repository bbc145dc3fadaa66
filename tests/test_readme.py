"""The README's Python snippets run as written, in order, in one namespace."""

import re

from conftest import REPO_ROOT


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    readme = (REPO_ROOT / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert len(snippets) >= 3
    monkeypatch.chdir(tmp_path)  # the snippets save to out/
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "modeling_scratch_transformer.py").is_file()
