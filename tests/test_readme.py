"""The README's quick start runs as written: the pipeline on a trained folder, then the model built in Python."""

import re
import shutil
from pathlib import Path


def test_readme_quick_start_runs(tmp_path, monkeypatch, capsys):
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = re.search(r"## Quick start\n(.*?)\n## ", readme, re.S).group(1)
    use, build = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    monkeypatch.chdir(tmp_path)
    exec(compile(build, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2 and all(line.startswith("[") for line in printed)
    assert (tmp_path / "my-copynat" / "model.safetensors").exists()
    # the pipeline block reads the folder the main command writes: here, the model the build block saved
    shutil.copytree(tmp_path / "my-copynat", tmp_path / "copynat-output")
    exec(compile(use, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 3 and all(line.startswith("[{'generated_text': ") for line in printed)
    assert "copy_spans" in printed[2]
