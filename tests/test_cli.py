"""The console scripts: one-line errors for bad input, copynat-generate (outputs, --plot) and copynat-distill."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

from copynat.training.cli import distill_main, generate_main, parse_train_args, train_main

SOURCES = ["I am Kuroro.", "My name is Tamiko and I live in Hanaberg.", "Please call me at 4821."]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def echo_files(tmp_path_factory) -> Path:
    from copynat.data import make_echo_dataset

    folder = tmp_path_factory.mktemp("echo_cli")
    for split, ds in make_echo_dataset(num_train=300, num_validation=30, num_test=30).items():
        write_jsonl(folder / f"{split}.jsonl", [{"source": r["source"], "target": r["target"]} for r in ds])
    return folder


@pytest.fixture(scope="module")
def trained_model(echo_files, tmp_path_factory) -> Path:
    """A tiny hybrid (AT + mask-predict NAT, copy) model trained for a few seconds through copynat-train."""
    out = tmp_path_factory.mktemp("model") / "run"
    argv = ["--train_file", str(echo_files / "train.jsonl"), "--validation_file", str(echo_files / "validation.jsonl"),
            "--output_dir", str(out), "--vocab_size", "300", "--d_model", "32", "--ffn_dim", "64", "--heads", "2",
            "--decoder_mode", "hybrid", "--nat_training", "cmlm", "--max_steps", "40", "--max_tokens", "800",
            "--learning_rate", "3e-3",
            "--warmup_steps", "5", "--eval_steps", "40", "--num_threads", "1", "--progress_bar", "false",
            "--report_to", "none", "--plot", "false", "--eval_batch_size", "30"]
    assert train_main(argv) == 0
    return out


def run_train_expecting_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        train_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert "Traceback" not in err
    assert last.startswith("copynat-train: error: "), err[-2000:]
    return last


# --------------------------------------------------------------------------------------------- bad input


def test_bad_data_gives_one_line_errors(tmp_path, capsys, echo_files):
    common = ["--output_dir", str(tmp_path / "out"), "--num_threads", "1", "--progress_bar", "false",
              "--report_to", "none"]
    valid = str(echo_files / "validation.jsonl")

    missing_column = write_jsonl(tmp_path / "cols.jsonl", [{"src": "a", "tgt": "b"}] * 3)
    message = run_train_expecting_error(capsys, ["--train_file", missing_column, *common])
    assert "cols.jsonl" in message and "'source'" in message and "src" in message

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"source": "a", "target": "b"}\n{"source": "a", "target": \n')
    message = run_train_expecting_error(capsys, ["--train_file", str(broken), *common])
    assert "broken.jsonl" in message and "could not parse" in message

    bad_value = write_jsonl(tmp_path / "value.jsonl", [{"source": "a", "target": "b"},
                                                       {"source": {"nested": 1}, "target": "c"}])
    message = run_train_expecting_error(capsys, ["--train_file", bad_value, *common])
    assert "row 1" in message and "'source'" in message

    message = run_train_expecting_error(capsys, ["--train_file", str(tmp_path / "nope.jsonl"), "--validation_file",
                                                 valid, *common])
    assert "nope.jsonl" in message and "does not exist" in message

    message = run_train_expecting_error(capsys, ["--train_file", str(tmp_path / "data.txt"), *common])
    assert "unsupported extension" in message


def test_bad_arguments_give_one_line_errors(tmp_path, capsys, echo_files):
    base = ["--train_file", str(echo_files / "train.jsonl"), "--output_dir", str(tmp_path / "o"), "--num_threads", "1",
            "--progress_bar", "false", "--report_to", "none"]
    assert "--eval_decoding" in run_train_expecting_error(capsys, [*base, "--eval_decoding", "greedy,topk"])
    assert "max_tokens" in run_train_expecting_error(capsys, [*base, "--max_tokens", "0"])
    message = run_train_expecting_error(capsys, [*base, "--d_model", "30", "--heads", "4", "--vocab_size", "300"])
    assert "encoder_attention_heads" in message and "d_model" in message
    message = run_train_expecting_error(capsys, [*base, "--tokenizer_name_or_path", str(tmp_path / "no_tok")])
    assert "tokenizer" in message and "no_tok" in message
    with pytest.raises(SystemExit) as exit_info:  # argparse: unknown flag
        train_main([*base, "--no_such_flag", "1"])
    assert exit_info.value.code == 2


def test_the_main_command_builds_a_hybrid_ctc_model_unless_told_otherwise():
    """copynat-train with no arguments (the echo task) trains both decoders, the parallel one with CTC; a model flag
    wins, and data of one's own keeps the config's defaults."""
    model_args, _, _ = parse_train_args([])
    settings = model_args.new_model_config(echo=True)
    assert (settings["decoder_mode"], settings["nat_training"]) == ("hybrid", "ctc")
    model_args, _, _ = parse_train_args(["--decoder_mode", "ar"])
    assert model_args.new_model_config(echo=True)["decoder_mode"] == "ar"
    model_args, _, _ = parse_train_args(["--train_file", "t.jsonl"])
    assert "decoder_mode" not in model_args.new_model_config(echo=False)


def test_yaml_and_json_argument_files(tmp_path):
    (tmp_path / "run.yaml").write_text("output_dir: here\nmax_steps: 7\npreset: small\nresume: true\n"
                                       "decoder_mode: hybrid\ntrain_file: t.jsonl\n")
    model_args, data_args, train_args = parse_train_args([str(tmp_path / "run.yaml")])
    assert (train_args.max_steps, train_args.resume, model_args.preset) == (7, "latest", "small")
    assert data_args.train_file == "t.jsonl"
    assert model_args.new_model_config()["d_model"] == 256
    assert model_args.new_model_config()["decoder_mode"] == "hybrid"
    (tmp_path / "run.json").write_text(json.dumps({"max_tokens": 999, "layers": 3, "encoder_layers": 1}))
    model_args, _, train_args = parse_train_args([str(tmp_path / "run.json")])
    overrides = model_args.config_overrides()
    assert train_args.max_tokens == 999 and overrides["encoder_layers"] == 1 and overrides["decoder_layers"] == 3
    _, _, train_args = parse_train_args(["--resume"])
    assert train_args.resume == "latest"
    _, _, train_args = parse_train_args(["--resume", "ckpt/step-00000010"])
    assert train_args.resume == "ckpt/step-00000010"
    _, _, train_args = parse_train_args([])
    assert train_args.output_dir == "copynat-output" and train_args.resume is None


# --------------------------------------------------------------------------------------------- generate


def test_generate_prints_one_output_per_line(trained_model, capsys, monkeypatch):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    assert generate_main(["--model", str(trained_model), "--text", *SOURCES, "--max_new_tokens", "20"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == len(SOURCES) + 1 and lines[-1] == ""
    model = AutoModelForSeq2SeqLM.from_pretrained(trained_model)
    tokenizer = AutoTokenizer.from_pretrained(trained_model)
    expected = tokenizer.decode(model.generate(**tokenizer(SOURCES[:1], return_tensors="pt"), max_new_tokens=20)[0],
                                skip_special_tokens=True)
    assert lines[0] == expected

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(SOURCES) + "\n"))
    assert generate_main(["--model", str(trained_model), "--num_beams", "3", "--batch_size", "2",
                          "--num_return_sequences", "2", "--max_new_tokens", "20"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2 * len(SOURCES)

    source_file = Path(trained_model).parent / "sources.txt"
    source_file.write_text("\n".join(SOURCES) + "\n")
    assert generate_main(["--model", str(trained_model), "--input_file", str(source_file), "--non_autoregressive",
                          "--nat_iterations", "3", "--length_beam", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(SOURCES)
    assert generate_main(["--model", str(trained_model), "--text", SOURCES[0], "--do_sample", "--top_k", "5",
                          "--top_p", "0.9", "--temperature", "0.7", "--max_new_tokens", "10"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_generate_plot_writes_a_png(trained_model, tmp_path, capsys):
    import matplotlib  # noqa: F401  (the test extra installs it; a missing plot dependency must fail here)
    for extra, name in (([], "at.png"), (["--non_autoregressive", "--nat_iterations", "2"], "nat.png")):
        png = tmp_path / name
        assert generate_main(["--model", str(trained_model), "--text", SOURCES[1], SOURCES[0], "--plot", str(png),
                              "--max_new_tokens", "16", *extra]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(capsys.readouterr().out.splitlines()) == 2


def test_generate_errors_are_one_line(trained_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        generate_main(["--model", str(tmp_path / "missing"), "--text", "hi"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("copynat-generate: error:")
    with pytest.raises(SystemExit) as exit_info:
        generate_main(["--model", str(trained_model), "--text", "hi", "--non_autoregressive", "--do_sample"])
    assert exit_info.value.code == 2


# --------------------------------------------------------------------------------------------- distill


def test_distill_writes_the_teachers_beam_outputs(trained_model, echo_files, tmp_path, capsys):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out = tmp_path / "distilled.jsonl"
    assert distill_main(["--teacher", str(trained_model), "--output_file", str(out), "--train_file",
                         str(echo_files / "train.jsonl"), "--max_train_samples", "24", "--num_beams", "4",
                         "--batch_size", "8", "--max_new_tokens", "20", "--keep_original"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 24 and set(rows[0]) == {"source", "target", "original_target"}
    originals = [json.loads(line) for line in (echo_files / "train.jsonl").read_text().splitlines()[:24]]
    assert [r["source"] for r in rows] == [o["source"] for o in originals]
    model = AutoModelForSeq2SeqLM.from_pretrained(trained_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained_model)
    with torch.no_grad():
        for row in rows[:8]:
            ids = model.generate(**tokenizer([row["source"]], return_tensors="pt"), num_beams=4, max_new_tokens=20)
            assert row["target"] == tokenizer.decode(ids[0], skip_special_tokens=True)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_examples"] == 24
    # the distilled file is a valid --train_file
    from copynat.training.data import DataArguments, load_raw_datasets

    raw = load_raw_datasets(DataArguments(train_file=str(out), cache_dir=str(tmp_path / "cache")))
    assert len(raw["train"]) == sum(1 for r in rows if r["target"].strip())
