"""README.md is the front door: its quick start runs as written, its commands match CI, and every link in it and in
docs/ leads somewhere inside the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "results" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def section(text: str, heading: str) -> str:
    """The text under `## heading`, up to the next second-level heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_readme_quick_start_runs(tmp_path, monkeypatch, capsys):
    quick_start = section(README.read_text(encoding="utf-8"), "Quick start")
    blocks = re.findall(r"```python\n(.*?)```", quick_start, re.S)
    assert blocks, "the quick start has no python block"
    monkeypatch.chdir(tmp_path)
    save_a_model_as_the_main_command_does(tmp_path / "copynat-output")  # what the pipeline block reads
    namespace: dict = {}
    for block in blocks:  # in order, as a reader pastes them
        exec(compile(block, "README.md", "exec"), namespace)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(printed) >= 2  # the step-by-step and the parallel outputs, each a list of strings
    assert (tmp_path / "my-copynat" / "model.safetensors").exists()


def save_a_model_as_the_main_command_does(folder: Path) -> None:
    """An untrained echo-sized model and its tokenizer in `folder`: the pipeline block needs a folder, not a good one."""
    from copynat import CopyNatConfig, CopyNatForConditionalGeneration, train_tokenizer

    tokenizer = train_tokenizer(["I am Kuroro.", "Hello, Kuroro!", "我是庫洛洛。"] * 8, vocab_size=300)
    model = CopyNatForConditionalGeneration(CopyNatConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32,
        decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2))
    model.generation_config.max_new_tokens = 8
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_readme_is_short_and_says_what_for_whom_how_well_how_to_start():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 220
    first_screen = "\n".join(text.splitlines()[:60])
    for heading in ("## How well it does", "## Set up: the two commands"):
        assert heading in first_screen
    assert "For whom" in first_screen


def test_readme_commands_match_ci():
    """The README's test command is what .ci/run runs: the same torch pin, the test extra, the same pytest call."""
    commands = section(README.read_text(encoding="utf-8"), "Set up: the two commands")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_line = next(line for line in commands.splitlines() if "pytest" in line)
    assert re.search(r"torch==([\w.+]+)", test_line).group(1) == re.search(r"torch==([\w.+]+)", ci).group(1)
    assert 'pip install -e ".[test]"' in test_line and '-e ".[test]"' in ci
    assert test_line.endswith(ci.strip().splitlines()[-1])
    main_line = next(line for line in commands.splitlines() if line.rstrip().endswith("copynat-train"))
    assert 'pip install -e .' in main_line


def test_every_figure_in_the_readme_links_to_its_benchmark_page():
    rows = [line for line in section(README.read_text(encoding="utf-8"), "How well it does").splitlines()
            if line.startswith("| ") and not line.startswith("| result")]
    assert rows
    for row in rows:
        assert "](docs/benchmarks.md#" in row, row
        assert re.search(r"`(copynat-train|python benchmarks/\S+\.py)[^`]*`", row), row


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_stay_inside_the_repository_and_resolve(page: Path):
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if fragment and resolved.suffix == ".md":
            assert fragment in anchors(resolved), f"{page.name}: no heading for #{fragment} in {resolved.name}"


def test_benchmark_results_keep_every_run_with_its_commit_and_command(tmp_path, monkeypatch):
    """What docs/benchmarks.md promises of a result file: a rerun adds a file, and each file names its commit,
    machine and command."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("benchmarks_common", ROOT / "benchmarks" / "_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    first = common.write_result("demo", "variant a", {"score": 1}, "# report", argv=["--flag"])
    second = common.write_result("demo", "variant a", {"score": 2}, "# report", argv=["--flag"])
    assert first != second and json.loads(first.read_text())["score"] == 1
    run = json.loads(second.read_text())["run"]
    assert len(run["commit"]) == 40 and isinstance(run["dirty"], bool)
    assert run["command"].endswith("--flag") and run["machine"]["cpu_count"] and run["machine"]["torch"]
    assert run["commit"] in second.with_suffix(".md").read_text()


def test_multi30k_from_the_hub_is_written_as_parallel_text(tmp_path, monkeypatch):
    """The benchmarks' default data source: a `datasets` Hub name, turned into the files a local copy has."""
    import importlib.util
    import types

    import datasets

    spec = importlib.util.spec_from_file_location("benchmarks_common", ROOT / "benchmarks" / "_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    hub = {split: {"en": [f"{split} {i}" for i in range(3)], "de": [f"{split}\n{i}" for i in range(3)]}
           for split in ("train", "validation", "test")}
    monkeypatch.setattr(datasets, "load_dataset", lambda name, *args, **kwargs: hub)
    monkeypatch.setattr(common, "DATA_CACHE", tmp_path)
    folder = common.multi30k_dir(types.SimpleNamespace(dataset=common.MULTI30K_DATASET, data_dir=None))
    assert (folder / "test_2016_flickr.de").read_text().splitlines() == ["test 0", "test 1", "test 2"]
    assert (folder / "val.en").read_text().splitlines() == ["validation 0", "validation 1", "validation 2"]
    assert common.multi30k_dir(types.SimpleNamespace(dataset="unused", data_dir=folder)) == folder
