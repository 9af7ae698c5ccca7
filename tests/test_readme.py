"""The README's quick start runs as written."""

import re
from pathlib import Path


def test_readme_quick_start_runs(tmp_path, monkeypatch, capsys):
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    quick_start = re.search(r"## Quick start\n.*?```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(quick_start, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2 and all(line.startswith("[") for line in printed)
    assert (tmp_path / "my-copynat" / "model.safetensors").exists()
