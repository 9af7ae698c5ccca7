"""Hub integration (issue 7): push_folder / copynat-push against the fake Hub of tests/hub_server.py, and model cards.

One tiny real ``copynat.training.loop.train`` run (hybrid AT + NAT, copy mechanism, echo data files) is shared by the
module; every test that changes the folder works on a copy.  A single fresh Python process checks loading from the
Hub, with copynat blocked (``trust_remote_code=True``) and then with copynat.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from copynat.training.hub import (
    PUBLISH_PATTERNS,
    MissingFilesError,
    check_folder,
    ensure_model_card,
    push_folder,
    push_main,
)
from copynat.training.model_card import MODEL_CARDS_DIR, write_model_card

REPO = "org/copynat-tiny"
#: Published files of a copynat-train output folder (+ .gitattributes of the new repo).
EXPECTED_FILES = {
    ".gitattributes", "README.md", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
    "tokenizer_config.json", "configuration_copynat.py", "modeling_copynat.py", "generation_copynat.py",
    "copy_generator.py", "utf8_validity.py", "output_head.py", "parallel_head.py", "monotonic_alignment.py",
    "encoder_heads.py", "copy_completion.py", "transformer_blocks.py", "parallel_decoding.py", "drafted_decoding.py",
    "pipeline_copynat.py", "copy_spans.py",
    "results.json", "metrics.jsonl", "training_args.json", "test_predictions.greedy.txt",
}
#: Decodings compared between the local model and the models loaded from the Hub (AT and NAT).
DECODINGS = {
    "at_greedy": {"max_new_tokens": 12},
    "at_beam": {"num_beams": 3, "max_new_tokens": 12},
    "nat_1_pass": {"non_autoregressive": True, "nat_iterations": 1},
    "nat_mask_predict_3": {"non_autoregressive": True, "nat_iterations": 3},
}
# Run here and in the fresh process: the same decoding code on both sides.
DECODE_SOURCE = textwrap.dedent("""
    def decode_all(model, tokenizer, sources, decodings):
        import torch
        batch = tokenizer(sources, return_tensors="pt", padding=True)
        out = {}
        with torch.no_grad():
            for name, kwargs in decodings.items():
                ids = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
                out[name] = {"ids": ids.tolist(), "text": tokenizer.batch_decode(ids, skip_special_tokens=True)}
        return out
""")
_namespace: dict = {}
exec(DECODE_SOURCE, _namespace)
decode_all = _namespace["decode_all"]

FRESH_PROCESS_SCRIPT = DECODE_SOURCE + textwrap.dedent(r"""
    import importlib.abc, json, sys
    repo, sources, decodings = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])

    class NoCopynat(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "copynat" or name.startswith("copynat."):
                raise ModuleNotFoundError("copynat is not installed in this Python", name=name)

    blocker = NoCopynat()
    sys.meta_path.insert(0, blocker)
    try:
        import copynat
        raise SystemExit("copynat must not be importable here")
    except ModuleNotFoundError:
        pass
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    results = {}
    # 1. copynat not importable: the modeling code of the repo runs as remote code; the tokenizer needs none
    tokenizer = AutoTokenizer.from_pretrained(repo)
    model = AutoModelForSeq2SeqLM.from_pretrained(repo, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    results["remote_code"] = decode_all(model, tokenizer, sources, decodings)
    # 2. with copynat: the Auto classes use the installed package
    sys.meta_path.remove(blocker)
    import copynat
    tokenizer = AutoTokenizer.from_pretrained(repo)
    model = AutoModelForSeq2SeqLM.from_pretrained(repo).eval()
    assert type(model).__module__ == "copynat.modeling.modeling_copynat", type(model).__module__
    results["copynat"] = decode_all(model, tokenizer, sources, decodings)
    print("RESULTS " + json.dumps(results))
""")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Output folder of a tiny real copynat-train run (seconds), plus what must never be uploaded."""
    from copynat.data import make_echo_examples
    from copynat.training.arguments import ModelArguments, TrainArguments
    from copynat.training.data import DataArguments
    from copynat.training.loop import train

    root = tmp_path_factory.mktemp("hub-run")
    data = root / "data"
    data.mkdir()
    for split, size in (("train", 400), ("validation", 12), ("test", 12)):
        rows = [{"source": e["source"], "target": e["target"]} for e in make_echo_examples(size, split)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = root / "echo-tiny"
    train(ModelArguments(d_model=32, layers=1, heads=2, ffn_dim=64, vocab_size=300, decoder_mode="hybrid",
                         nat_training="cmlm",
                         length_prediction="absolute", dropout=0.0),
          DataArguments(train_file=str(data / "train.jsonl"), validation_file=str(data / "validation.jsonl"),
                        test_file=str(data / "test.jsonl"), max_source_length=48, max_target_length=48,
                        cache_dir=str(root / "datasets-cache")),
          TrainArguments(output_dir=str(out), max_steps=40, eval_steps=20, learning_rate=5e-3, warmup_steps=5,
                         max_tokens=1024, eval_decoding="greedy,beam2,nat1,nat3", report_to="none", plot=False,
                         progress_bar=False, num_threads=1))
    # a run folder also holds TensorBoard events, checkpoints (made by the run) and maybe hidden files
    (out / "tensorboard").mkdir(exist_ok=True)
    (out / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"\0events")
    (out / ".DS_Store").write_bytes(b"\0")
    assert (out / "checkpoints").is_dir() and (out / "results.json").is_file()
    return out


@pytest.fixture
def folder(run_dir, tmp_path):
    """A private copy of the run folder (pushing writes its README.md)."""
    return shutil.copytree(run_dir, tmp_path / run_dir.name)


def _sources(run_dir, n=3):
    lines = (run_dir.parent / "data" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["source"] for line in lines[:n]]


def test_push_folder_is_one_commit_and_loads_in_a_fresh_process(hub_server, run_dir, folder, tmp_path):
    from huggingface_hub import HfApi
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    info = push_folder(folder, REPO, commit_message="first push")
    assert len(info.oid) == 40 and str(info) == f"{hub_server.url}/{REPO}/commit/{info.oid}"
    api = HfApi()
    assert set(api.list_repo_files(REPO)) == EXPECTED_FILES  # no checkpoints/, tensorboard/, hidden files
    assert [c.title for c in api.list_repo_commits(REPO)] == ["first push", "initial commit"]  # ONE commit
    assert api.model_info(REPO).sha == info.oid
    assert (folder / "README.md").is_file()  # the card was written before the push

    sources = _sources(run_dir)
    local = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    expected = decode_all(local, AutoTokenizer.from_pretrained(folder), sources, DECODINGS)
    assert any(text for text in expected["at_greedy"]["text"]), "the tiny model should say something"
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS_SCRIPT, REPO, json.dumps(sources),
                          json.dumps(DECODINGS)], env=hub_server.env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.split("RESULTS ", 1)[1])
    assert results["remote_code"] == expected  # trust_remote_code=True, copynat not importable
    assert results["copynat"] == expected  # import copynat
    assert not hub_server.unhandled


def test_second_push_updates_the_repo(hub_server, folder):
    from huggingface_hub import HfApi, hf_hub_download

    first = push_folder(folder, REPO)
    generation = json.loads((folder / "generation_config.json").read_text())
    generation["num_beams"] = 2
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2))
    (folder / "metrics.jsonl").unlink()  # gone from the folder: deleted from the repo in the same commit
    second = push_folder(folder, REPO, commit_message="second push")

    api = HfApi()
    assert second.oid != first.oid and api.model_info(REPO).sha == second.oid
    commits = api.list_repo_commits(REPO)
    assert [c.commit_id for c in commits] == [second.oid, first.oid, commits[-1].commit_id]  # one commit per push
    assert commits[0].title == "second push"
    assert json.load(open(hf_hub_download(REPO, "generation_config.json")))["num_beams"] == 2
    assert "num_beams" not in json.load(open(hf_hub_download(REPO, "generation_config.json", revision=first.oid)))
    assert "metrics.jsonl" not in api.list_repo_files(REPO)
    assert "metrics.jsonl" in api.list_repo_files(REPO, revision=first.oid)
    # the unchanged weights were not uploaded twice
    assert sum(1 for method, path in hub_server.requests if method == "PUT" and path.startswith("/_lfs/")) == 1
    # a push to a new branch creates it from main and leaves main alone
    (folder / "training_args.json").write_text("{}")
    branch = push_folder(folder, REPO, revision="dev")
    assert api.list_repo_refs(REPO).branches and api.model_info(REPO).sha == second.oid
    assert api.model_info(REPO, revision="dev").sha == branch.oid != second.oid
    assert open(hf_hub_download(REPO, "training_args.json", revision="dev")).read() == "{}"


def test_card_validates_and_model_index_equals_results(hub_server, folder):
    from huggingface_hub import ModelCard

    push_folder(folder, REPO)
    card = ModelCard.load(REPO)  # the README of the repo, parsed by huggingface_hub
    card.validate()  # the Hub's YAML check (fake server: /api/validate-yaml)
    assert ("POST", "/api/validate-yaml") in hub_server.requests

    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text2text-generation"
    assert data.license == "apache-2.0" and data.metrics == ["bleu", "chrf", "exact_match"]
    assert {"copynat", "pointer-generator", "non-autoregressive", "custom_code"} <= set(data.tags)

    results = json.loads((folder / "results.json").read_text())
    expected = {(split, decoding, metric): scores[decoding][metric]
                for split, scores in results["metrics"].items() for decoding in results["eval_decoding"]
                for metric in ("bleu", "chrf", "exact_match")}
    assert len(expected) == 2 * 4 * 3
    found = {(r.dataset_split, r.metric_config, r.metric_type): r.metric_value for r in data.eval_results}
    assert found == expected  # exact equality: every value is the run's, unrounded
    assert {r.task_type for r in data.eval_results} == {"text2text-generation"}
    assert data.model_name == "copynat-tiny"

    text = card.text
    training = results["training"]
    assert f"| optimizer updates | {training['steps']:,} |" in text
    assert f"| training tokens per second (source + target) | {training['tokens_per_second']:,.0f} |" in text
    greedy = results["metrics"]["test"]["greedy"]
    assert f"| {greedy['bleu']:,.2f} | {greedy['chrf']:,.2f} | {greedy['exact_match']:,.2f} |" in text
    assert f'AutoModelForSeq2SeqLM.from_pretrained("{REPO}", trust_remote_code=True)' in text
    assert "non_autoregressive=True" in text and "import copynat" in text and "pipeline(" not in text


def test_card_options_translation_data_and_refresh(folder, tmp_path):
    from huggingface_hub import ModelCard

    from copynat.training import model_card

    # a translation run on a Hub data set (training_args.json says so), saved without results.json
    run = json.loads((folder / "training_args.json").read_text())
    run["data_args"].update(source_lang="en", target_lang="de", dataset_name="bentrevett/multi30k",
                            train_file=None, validation_file=None, test_file=None)
    (folder / "training_args.json").write_text(json.dumps(run))
    (folder / "results.json").unlink()
    path = write_model_card(folder, license="mit", note="A test note.")
    card = ModelCard.load(path)
    assert card.data.pipeline_tag == "translation" and card.data.language == ["en", "de"]
    assert card.data.datasets == ["bentrevett/multi30k"] and card.data.license == "mit"
    assert card.data.eval_results is None and "no `results.json`" in card.text and "A test note." in card.text

    # refreshing a copynat card keeps its options; a hand-written README is kept unless card="refresh"
    ensure_model_card(folder, repo_id="org/translated")
    card = ModelCard.load(path)
    assert card.data.license == "mit" and "A test note." in card.text and '"org/translated"' in card.text
    path.write_text("---\nlicense: mit\n---\n# My own card\n")
    ensure_model_card(folder, repo_id="org/translated")
    assert path.read_text().endswith("# My own card\n")
    ensure_model_card(folder, card="refresh", repo_id="org/translated")
    assert "# My own card" not in path.read_text()

    # an autoregressive model without copy head: no NAT usage, no copy claims, no such tags
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "decoder_mode": "ar", "use_copy_mechanism": False}))
    card = model_card.build_model_card(folder)
    assert not {"pointer-generator", "non-autoregressive"} & set(card.data.tags)
    assert "non_autoregressive=True" not in card.text and "**copy mechanism**" not in card.text

    # reference cards: model_cards/<name>.md from a run folder, by function or command line
    reference = model_card.write_reference_card(folder, "multi30k-test", cards_dir=tmp_path / "cards")
    assert reference == tmp_path / "cards" / "multi30k-test.md" and "# multi30k-test" in reference.read_text()
    assert model_card.card_main([str(folder), "--output", str(tmp_path / "card.md"), "--license", "cc-by-4.0"]) == 0
    assert ModelCard.load(tmp_path / "card.md").data.license == "cc-by-4.0"
    assert model_card.card_main([str(tmp_path / "nowhere")]) == 2
    # the reference cards kept in model_cards/ parse, carry their scores and were written by this code
    references = sorted(MODEL_CARDS_DIR.glob("*.md"))
    assert references
    for path in references:
        assert model_card.is_copynat_card(path) and ModelCard.load(path).data.eval_results, path


def test_an_installed_wheel_renders_cards_from_its_packaged_template(folder, tmp_path):
    """The template ships inside the package: copynat-card works from a wheel, with no source checkout around."""
    import zipfile

    root, source = Path(__file__).resolve().parents[1], tmp_path / "source"  # built from a copy: no scratch here
    shutil.copytree(root / "copynat", source / "copynat", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(root / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "wheel")], capture_output=True, text=True, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    installed = tmp_path / "site"
    with zipfile.ZipFile(next((tmp_path / "wheel").glob("copynat-*.whl"))) as wheel:
        assert "copynat/training/templates/model_card.md" in wheel.namelist()
        wheel.extractall(installed)
    script = textwrap.dedent(f"""
        import copynat, sys
        assert copynat.__file__.startswith({str(installed)!r}), copynat.__file__
        from copynat.training.model_card import card_main
        sys.exit(card_main([{str(folder)!r}, "--output", {str(tmp_path / "card.md")!r}]))
    """)
    env = {**os.environ, "PYTHONPATH": str(installed)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    text = (tmp_path / "card.md").read_text(encoding="utf-8")
    assert "## How to use" in text and "copynat-model-card" in text


def test_copynat_push_cli(hub_server, folder, tmp_path, capsys, monkeypatch):
    from huggingface_hub import HfApi

    # missing files: exit code 2, every missing file named, nothing sent to the Hub
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(folder / "tokenizer.json", broken)
    assert push_main([str(broken), "--repo_id", "org/broken"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("copynat-push: error:") and "model.safetensors" in err and "config.json" in err
    for name in ("config.json", "model.safetensors", "modeling_copynat.py"):
        shutil.copy(folder / name, broken)
    # config.json's auto_map needs the modeling code, and modeling_copynat.py its sibling modules
    with pytest.raises(MissingFilesError, match=r"missing configuration_copynat\.py, copy_generator\.py, "
                                                r"encoder_heads\.py, generation_copynat\.py, "
                                                r"monotonic_alignment\.py, output_head\.py, parallel_head\.py, "
                                                r"transformer_blocks\.py \("):
        check_folder(broken)
    assert not hub_server.repos

    # not logged in / rejected token: a clear message, exit code 2
    monkeypatch.delenv("HF_TOKEN")
    assert push_main([str(folder), "--repo_id", REPO]) == 2
    assert "not logged in" in capsys.readouterr().err
    assert push_main([str(folder), "--repo_id", REPO, "--token", "hf_wrong"]) == 2
    assert "rejected the token" in capsys.readouterr().err
    assert not hub_server.repos
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    with monkeypatch.context() as patch:  # no Hub at that address
        from huggingface_hub import constants

        patch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
        assert push_main([str(folder), "--repo_id", REPO]) == 2
        assert "could not reach the Hub at http://127.0.0.1:9" in capsys.readouterr().err

    # happy path
    assert push_main([str(folder), "--repo_id", REPO, "--private", "--commit_message", "from the CLI"]) == 0
    out = capsys.readouterr().out.strip()
    api = HfApi()
    sha = api.model_info(REPO).sha
    assert out == f"{hub_server.url}/{REPO}/commit/{sha}"
    assert api.list_repo_commits(REPO)[0].title == "from the CLI"
    assert set(api.list_repo_files(REPO)) == EXPECTED_FILES and api.model_info(REPO).private
    assert all(not p.startswith(("checkpoints", "tensorboard")) for p in api.list_repo_files(REPO))
    assert "README.md" in PUBLISH_PATTERNS


def test_copynat_train_push_to_hub_publishes_the_run(hub_server, tmp_path):
    """`copynat-train --push_to_hub --hub_model_id org/name` pushes the finished folder, card included."""
    from huggingface_hub import HfApi

    from copynat.data import make_echo_examples
    from copynat.training.arguments import ModelArguments, TrainArguments
    from copynat.training.data import DataArguments
    from copynat.training.loop import train

    data = tmp_path / "data"
    data.mkdir()
    for split, size in (("train", 120), ("validation", 8), ("test", 8)):
        rows = [{"source": e["source"], "target": e["target"]} for e in make_echo_examples(size, split)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    results = train(
        ModelArguments(d_model=32, layers=1, heads=2, ffn_dim=64, vocab_size=300),
        DataArguments(train_file=str(data / "train.jsonl"), validation_file=str(data / "validation.jsonl"),
                      test_file=str(data / "test.jsonl"), cache_dir=str(tmp_path / "cache")),
        TrainArguments(output_dir=str(tmp_path / "run"), max_steps=4, eval_steps=4, report_to="none", plot=False,
                       progress_bar=False, num_threads=1, push_to_hub=True, hub_model_id="org/pushed-by-train"))
    files = {s.rfilename for s in HfApi().model_info("org/pushed-by-train").siblings}
    assert {"model.safetensors", "config.json", "modeling_copynat.py", "tokenizer.json", "README.md"} <= files
    assert results["hub_commit"].startswith(hub_server.url)
