"""The Accelerate training loop: schedules, scheduled sampling, an end-to-end run, exact resume after SIGKILL, crash
during a save, and a 2-process torchrun run (offline, CPU, tiny models and data)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from copynat import CopyNatForConditionalGeneration
from copynat.training import checkpoints, loop
from copynat.training.cli import train_main

SCHEDULES = ("linear", "exponential", "inverse_sigmoid")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The echo task, small: 300 / 40 / 40 examples as jsonl files."""
    from copynat.data import make_echo_dataset

    folder = tmp_path_factory.mktemp("echo")
    for split, ds in make_echo_dataset(num_train=300, num_validation=40, num_test=40).items():
        with open(folder / f"{split}.jsonl", "w") as handle:
            for row in ds:
                handle.write(json.dumps({"source": row["source"], "target": row["target"]}) + "\n")
    return folder


def tiny_args(data_dir: Path, output_dir: Path, *extra: str, steps: int = 30) -> list[str]:
    return [
        "--train_file", str(data_dir / "train.jsonl"), "--validation_file", str(data_dir / "validation.jsonl"),
        "--test_file", str(data_dir / "test.jsonl"), "--output_dir", str(output_dir), "--vocab_size", "300",
        "--d_model", "32", "--ffn_dim", "64", "--heads", "2", "--max_tokens", "800", "--max_steps", str(steps),
        "--learning_rate", "3e-3", "--warmup_steps", "5", "--eval_steps", "10", "--logging_steps", "5",
        "--num_threads", "1", "--progress_bar", "false", "--report_to", "none", "--plot", "false",
        "--max_source_length", "48", "--max_target_length", "48", "--eval_batch_size", "40", *extra,
    ]


# --------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_teacher_forcing_schedules_are_monotone_and_bounded(schedule):
    k = loop.default_schedule_k(schedule, total_steps=1000, min_prob=0.25)
    probs = [loop.teacher_forcing_prob(step, schedule, k, min_prob=0.25) for step in range(0, 2001, 10)]
    assert probs[0] > 0.95
    assert all(0.25 <= p <= 1.0 for p in probs)
    assert all(a >= b for a, b in zip(probs, probs[1:]))
    assert probs[-1] == pytest.approx(0.25, abs=0.02)  # reaches the floor by the end of training
    # the default k puts the schedule's decay around the middle of training
    assert loop.teacher_forcing_prob(500, schedule, k, 0.25) < 0.75


def test_schedule_formulas_and_none():
    assert loop.teacher_forcing_prob(10_000, "none") == 1.0
    assert loop.teacher_forcing_prob(50, "linear", 100) == pytest.approx(0.5)
    assert loop.teacher_forcing_prob(10, "exponential", 0.9) == pytest.approx(0.9**10)
    assert loop.teacher_forcing_prob(100, "inverse_sigmoid", 20) == pytest.approx(20 / (20 + math.exp(5)))
    with pytest.raises(ValueError, match="unknown"):
        loop.teacher_forcing_prob(1, "cubic", 1.0)


def test_learning_rate_schedules():
    warm = loop.inverse_sqrt_lambda(100)
    assert warm(0) == pytest.approx(0.01) and warm(99) == pytest.approx(1.0)
    assert warm(399) == pytest.approx(0.5)  # sqrt(100 / 400)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for name, last in (("linear", 0.0), ("cosine", 0.0), ("constant", 1.0)):
        scheduler = loop.build_scheduler(optimizer, name, warmup_steps=10, total_steps=100)
        values = [scheduler.lr_lambdas[0](s) for s in range(100)]
        assert max(values) == pytest.approx(1.0) and values[-1] == pytest.approx(last, abs=1e-6)
    # With a time budget, linear decay follows whichever runs out first: the steps or the minutes.
    used = [0.0]
    scheduler = loop.build_scheduler(optimizer, "linear", warmup_steps=10, total_steps=1000,
                                     budget_used=lambda: used[0])
    decay = scheduler.lr_lambdas[0]
    assert decay(5) == pytest.approx(0.6)  # warm-up is by steps only
    assert decay(509) == pytest.approx(1 - 500 / 990)  # the steps are ahead of the clock
    used[0] = 0.75
    assert decay(99) == pytest.approx(0.25)  # the clock is ahead of the steps
    used[0] = 1.2
    assert decay(99) == 0.0


def test_mix_decoder_inputs_replaces_at_the_expected_rate():
    generator = torch.Generator().manual_seed(0)
    gold = torch.randint(5, 50, (64, 40), generator=generator)
    model_tokens = gold + 1  # always different from gold
    candidates = torch.ones_like(gold, dtype=torch.bool)
    candidates[:, 0] = False
    candidates[:, 30:] = False  # padding
    for prob in (1.0, 0.75, 0.3, 0.0):
        mixed, replaced = loop.mix_decoder_inputs(gold, model_tokens, candidates, prob, generator)
        rate = float((mixed != gold)[candidates].float().mean())
        assert rate == pytest.approx(1 - prob, abs=0.03)
        assert not (mixed != gold)[~candidates].any()
        assert torch.equal(mixed != gold, replaced)


def test_scheduled_sampling_inputs_follow_the_model():
    """Decoder inputs differ from the gold ones only where a position was replaced, at about (1 - p) x the rate
    at which the model's predictions differ from the gold tokens."""
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config(dropout=0.0)).eval()
    labels = torch.randint(5, 64, (32, 12))
    labels[:8, 9:] = -100
    input_ids = torch.randint(5, 64, (32, 10))
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    gold = model.prepare_decoder_input_ids_from_labels(labels)
    with torch.no_grad():
        predictions = model(**{k: v for k, v in batch.items() if k != "labels"}, decoder_input_ids=gold).logits.argmax(-1)
    model_tokens = torch.cat((gold[:, :1], predictions[:, :-1]), 1)
    candidates = torch.zeros_like(labels, dtype=torch.bool)
    candidates[:, 1:] = labels[:, :-1] != -100
    mismatch = float((model_tokens != gold)[candidates].float().mean())
    assert mismatch > 0.5  # untrained model: mostly wrong
    mixed, replaced = loop.scheduled_sampling_decoder_inputs(model, batch, 0.4, torch.Generator().manual_seed(1))
    assert mixed[:, 0].eq(model.config.decoder_start_token_id).all()
    assert not replaced[~candidates].any() and torch.equal(mixed[~candidates], gold[~candidates])
    assert torch.equal(mixed[replaced], model_tokens[replaced]) and torch.equal(mixed[~replaced], gold[~replaced])
    differ = float((mixed != gold)[candidates].float().mean())
    assert differ == pytest.approx(0.6 * mismatch, abs=0.06)
    unchanged, none = loop.scheduled_sampling_decoder_inputs(model, batch, 1.0)
    assert torch.equal(unchanged, gold) and not none.any()


# --------------------------------------------------------------------------------------------- end to end


def test_end_to_end_run_saves_a_loadable_model(data_dir, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out = tmp_path / "run"
    code = train_main(tiny_args(data_dir, out, "--decoder_mode", "hybrid", "--nat_training", "cmlm",
                                "--eval_decoding", "greedy,nat2",
                                "--scheduled_sampling", "linear", "--plot", "true", steps=30))
    assert code == 0
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "metrics.jsonl", "results.json", "training_curves.png", "README.md"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")  # written by the run, with the run's own scores
    found = {(r.dataset_split, r.metric_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert found == {(split, decoding, metric): results["metrics"][split][decoding][metric]
                     for split in ("validation", "test") for decoding in ("greedy", "nat2")
                     for metric in ("bleu", "chrf", "exact_match")}
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_events = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in train_events] == [5, 10, 15, 20, 25, 30]
    assert train_events[-1]["loss"] < train_events[0]["loss"]
    assert all(0.0 <= e["teacher_forcing_prob"] <= 1.0 and "replaced_fraction" in e for e in train_events)
    assert [e["step"] for e in events if e["event"] == "eval"] == [10, 20, 30]
    # the final model is the best checkpoint by validation BLEU
    best = results["selection"]["best_step"]
    evals = {e["step"]: e["greedy/bleu"] for e in events if e["event"] == "eval"}
    assert evals[best] == max(evals.values())
    loaded = AutoModelForSeq2SeqLM.from_pretrained(out)
    reference = CopyNatForConditionalGeneration(loaded.config)
    loop.load_model_weights(reference, out / "checkpoints" / f"step-{best:08d}")
    for (name, a), (_, b) in zip(loaded.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["I am Kuroro."], return_tensors="pt")
    generated = loaded.generate(**batch, max_new_tokens=12)
    assert generated.shape[0] == 1 and isinstance(tokenizer.decode(generated[0], skip_special_tokens=True), str)
    nat = loaded.generate(**batch, non_autoregressive=True, nat_iterations=2)
    assert nat[0, 0] == loaded.config.decoder_start_token_id


def test_every_loss_term_the_model_returns_is_logged_by_name(data_dir, tmp_path):
    """Coverage and guided attention included: metrics.jsonl's train and eval records carry each term the model
    returned, under the output's own field name."""
    out = tmp_path / "terms"
    assert train_main(tiny_args(data_dir, out, "--decoder_mode", "hybrid", "--nat_training", "cmlm",
                                "--copy_coverage", "true", "--guided_attention_weight", "0.5",
                                "--eval_decoding", "greedy", "--eval_steps", "4", "--num_eval_samples", "8",
                                steps=4)) == 0
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    terms = {"loss", "ar_loss", "nat_loss", "length_loss", "coverage_loss", "guided_attention_loss"}
    for event in ("train", "eval"):
        record = next(e for e in events if e["event"] == event)
        assert terms <= set(record), (event, sorted(record))
        assert all(math.isfinite(record[name]) for name in terms)


def test_loss_terms_follow_the_output_fields_not_a_list():
    from dataclasses import dataclass

    from transformers.utils import ModelOutput

    from copynat.training.step_log import loss_names_first, loss_terms

    @dataclass
    class Output(ModelOutput):
        loss: torch.Tensor | None = None
        logits: torch.Tensor | None = None
        ar_loss: torch.Tensor | None = None
        nat_loss: torch.Tensor | None = None
        brand_new_loss: torch.Tensor | None = None

    output = Output(loss=torch.tensor(3.0), logits=torch.zeros(2), ar_loss=torch.tensor(1.0),
                    brand_new_loss=torch.tensor(2.0))
    assert loss_names_first(loss_terms(output)) == ["loss", "ar_loss", "brand_new_loss"]  # unset nat_loss: absent


def test_the_default_run_draws_its_training_curves(data_dir, tmp_path, monkeypatch, caplog):
    """--plot is on by default and matplotlib is a dependency: training_curves.png appears with no flag; without
    matplotlib the run still finishes and says why there is no PNG."""
    def default_plot(args: list[str]) -> list[str]:  # tiny_args turns the plot off: drop "--plot false"
        at = args.index("--plot")
        return args[:at] + args[at + 2:]

    assert train_main(default_plot(tiny_args(data_dir, tmp_path / "run", steps=10))) == 0
    assert (tmp_path / "run" / "training_curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # uninstalled: the import fails
    with caplog.at_level("WARNING", logger="copynat.training"):
        assert train_main(default_plot(tiny_args(data_dir, tmp_path / "bare", steps=2))) == 0
    assert not (tmp_path / "bare" / "training_curves.png").exists()
    assert "matplotlib is not installed" in caplog.text and "no PNG drawn" in caplog.text


def _without(args: list[str], flag: str) -> list[str]:
    at = args.index(flag)
    return args[:at] + args[at + 2:]


def test_accumulated_epoch_in_bf16_ends_with_the_smaller_last_group(data_dir, tmp_path):
    """--gradient_accumulation_steps 3 over one epoch: ceil(batches / 3) updates, the last one over the batches
    left; bf16 autocast on the CPU trains to finite losses."""
    out = tmp_path / "accumulated"
    argv = _without(tiny_args(data_dir, out, "--gradient_accumulation_steps", "3", "--num_epochs", "1",
                              "--mixed_precision", "bf16", "--eval_steps", "1000", "--logging_steps", "1"),
                    "--max_steps")
    assert train_main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    resolved = json.loads((out / "training_args.json").read_text())["resolved"]
    assert results["training"]["steps"] == resolved["max_steps"] == resolved["steps_per_epoch"]
    assert results["training"]["epochs"] == 1.0 and results["training"]["mixed_precision"] == "bf16"
    train_events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                    if json.loads(line)["event"] == "train"]
    assert [e["step"] for e in train_events] == list(range(1, resolved["max_steps"] + 1))
    assert all(math.isfinite(e["loss"]) for e in train_events)


def test_early_stopping_stops_after_patience_evaluations_without_gain(data_dir, tmp_path):
    out = tmp_path / "stopped"  # a learning rate too small to change BLEU: the second evaluation is no better
    argv = tiny_args(data_dir, out, "--early_stopping_patience", "1", "--eval_steps", "2", "--learning_rate", "1e-9",
                     steps=30)
    assert train_main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["stop_reason"] == "early_stopping" and results["training"]["stopped_early"]
    assert results["training"]["steps"] == 4 and results["selection"]["best_step"] == 2


def test_a_stop_signal_checkpoints_the_step_and_resume_finishes(data_dir, tmp_path, monkeypatch, capsys):
    """Ctrl-C (SIGINT/SIGTERM): the step is checkpointed, copynat-train exits 130 naming --resume, and --resume
    finishes the run."""
    class SignalledAtOnce(loop.StopSignals):
        def __enter__(self):
            super().__enter__()
            self.requested = "SIGINT"
            return self

    out = tmp_path / "signalled"
    argv = tiny_args(data_dir, out, steps=6)
    with monkeypatch.context() as patch:
        patch.setattr(loop, "StopSignals", SignalledAtOnce)
        assert train_main(argv) == 130
    assert "--resume" in capsys.readouterr().err
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000001"
    assert not (out / "results.json").exists()
    assert train_main([*argv, "--resume"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["steps"] == 6 and results["training"]["resumed_from"].endswith("step-00000001")


def test_a_ctc_run_picks_its_blank_penalty_on_validation_and_saves_it(data_dir, tmp_path, capsys):
    """copynat-train --nat_training ctc: one-pass validation BLEU for each blank penalty, the best (the smallest on
    ties) saved in generation_config.json, which the loaded model decodes with; the final validation figures are
    that decoding's. --ctc_blank_penalty fixes it instead, and on a model without CTC it is a usage error."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from copynat.training.evaluation import CTC_BLANK_PENALTIES

    out = tmp_path / "ctc"
    assert train_main(tiny_args(data_dir, out, "--decoder_mode", "nat", "--nat_training", "ctc",
                                "--eval_decoding", "nat1", steps=20)) == 0
    results = json.loads((out / "results.json").read_text())
    bleu = {float(k): v for k, v in results["ctc_blank_penalty"]["bleu"].items()}
    assert sorted(bleu) == sorted(CTC_BLANK_PENALTIES)
    selected = results["ctc_blank_penalty"]["selected"]
    assert bleu[selected] == max(bleu.values()) and selected == min(p for p in bleu if bleu[p] == bleu[selected])
    assert results["metrics"]["validation"]["nat1"]["bleu"] == bleu[selected]
    assert json.loads((out / "generation_config.json").read_text())["ctc_blank_penalty"] == selected
    card = (out / "README.md").read_text()  # the card says how a CTC model decodes, and shows no mask-predict call
    assert "trained with CTC" in card and f"| CTC blank penalty (generation config) | {selected:.2f} |" in card
    assert "nat_iterations=4" not in card and "with a length predictor" not in card
    loaded, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["Hello, my name is Kuroro.", "Tell me the code 004915."], return_tensors="pt", padding=True)
    assert torch.equal(loaded.generate(**batch, non_autoregressive=True),
                       loaded.generate(**batch, non_autoregressive=True, ctc_blank_penalty=selected))

    fixed = tmp_path / "fixed"
    assert train_main(tiny_args(data_dir, fixed, "--decoder_mode", "nat", "--nat_training", "ctc",
                                "--eval_decoding", "nat1", "--ctc_blank_penalty", "1.5", steps=2)) == 0
    assert json.loads((fixed / "results.json").read_text())["ctc_blank_penalty"] == {"selected": 1.5, "bleu": None}
    assert json.loads((fixed / "generation_config.json").read_text())["ctc_blank_penalty"] == 1.5
    with pytest.raises(SystemExit) as exit_info:
        train_main(tiny_args(data_dir, tmp_path / "bad", "--ctc_blank_penalty", "1", steps=2))
    assert exit_info.value.code == 2 and "--ctc_blank_penalty applies to CTC models" in capsys.readouterr().err


def test_the_blank_penalty_choice_keeps_the_entity_copy_rate(data_dir):
    """On the echo task the validation figures of a CTC model's parallel pass come from the blank-penalty choice:
    they carry the entity copy rate like every other decoding's."""
    from accelerate import Accelerator

    from copynat import train_tokenizer
    from copynat.training.data import DataArguments, load_raw_datasets, tokenize_datasets
    from copynat.training.evaluation import select_ctc_blank_penalty

    raw = load_raw_datasets(DataArguments(train_file=str(data_dir / "train.jsonl"),
                                          validation_file=str(data_dir / "validation.jsonl")))
    tokenizer = train_tokenizer(raw["train"]["target"], 300)
    validation = tokenize_datasets(raw, tokenizer, DataArguments(max_source_length=48, max_target_length=48))["validation"]
    config = tiny_config(vocab_size=len(tokenizer), decoder_mode="nat", nat_training="ctc", max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id,
                         mask_token_id=tokenizer.mask_token_id)
    model = CopyNatForConditionalGeneration(config).eval()
    entities = [target.split()[:1] for target in validation["target"]]
    chosen = select_ctc_blank_penalty(Accelerator(cpu=True), model, tokenizer, validation, batch_size=40,
                                      max_new_tokens=20, penalties=(0.0, 1.0), entities=entities)
    assert 0.0 <= chosen["metrics"]["entity_copy_rate"] <= 100.0 and set(chosen["bleu"]) == {0.0, 1.0}


def test_time_budget_stops_evaluates_and_saves(data_dir, tmp_path, capsys):
    out = tmp_path / "budget"
    assert train_main(tiny_args(data_dir, out, "--max_train_minutes", "0.0001", steps=10_000)) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["stop_reason"] == "time_budget"
    assert results["training"]["steps"] < 10  # stopped at the first step boundary past 6 ms
    assert results["selection"]["best_step"] == results["training"]["steps"]  # evaluated before stopping
    assert (out / "model.safetensors").is_file()
    with pytest.raises(SystemExit) as exit_info:
        train_main(tiny_args(data_dir, tmp_path / "bad", "--max_train_minutes", "0"))
    assert exit_info.value.code == 2 and "--max_train_minutes must be > 0" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- fault tolerance


def _checkpoint_weights(output_dir: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(output_dir / "checkpoints" / f"step-{step:08d}" / "model.safetensors"))


def test_resume_after_sigkill_matches_an_uninterrupted_run(data_dir, tmp_path):
    steps = 40
    common = ("--save_steps", "5", "--keep_checkpoints", "3", "--dropout", "0.1")
    reference = tmp_path / "uninterrupted"
    assert train_main(tiny_args(data_dir, reference, *common, steps=steps)) == 0

    crashed = tmp_path / "crashed"
    argv = tiny_args(data_dir, crashed, *common, steps=steps)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "copynat.training.cli", *argv], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = crashed / "checkpoints" / "latest"
    deadline = time.time() + 120
    while not latest.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    killed_at = loop.find_checkpoint(crashed)
    assert killed_at is not None and checkpoints._checkpoint_step(killed_at) < steps
    assert not (crashed / "results.json").exists()

    assert train_main([*argv, "--resume"]) == 0
    results = json.loads((crashed / "results.json").read_text())
    assert results["training"]["resumed_from"] is not None and results["training"]["steps"] == steps
    expected, actual = _checkpoint_weights(reference, steps), _checkpoint_weights(crashed, steps)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    reference_results = json.loads((reference / "results.json").read_text())
    assert results["selection"] == {**reference_results["selection"],
                                    "checkpoint": results["selection"]["checkpoint"]}
    assert results["metrics"]["test"]["greedy"]["bleu"] == pytest.approx(
        reference_results["metrics"]["test"]["greedy"]["bleu"], abs=1e-6)
    # metrics.jsonl holds each step once: the killed run's events after its checkpoint were dropped
    train_steps = [json.loads(line)["step"] for line in (crashed / "metrics.jsonl").read_text().splitlines()
                   if json.loads(line)["event"] == "train"]
    assert train_steps == sorted(set(train_steps))


def test_a_crash_during_a_save_leaves_latest_at_the_previous_checkpoint(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_write = checkpoints._write_trainer_state
    calls = []

    def failing_write(folder, state, extra):
        calls.append(state.step)
        if len(calls) == 2:
            (folder / "partial").write_text("half a checkpoint")
            raise OSError("disk full (simulated)")
        real_write(folder, state, extra)

    monkeypatch.setattr(checkpoints, "_write_trainer_state", failing_write)
    with pytest.raises(OSError, match="simulated"):
        train_main(tiny_args(data_dir, out, "--save_steps", "10", "--eval_steps", "100", steps=30))
    root = out / "checkpoints"
    assert (root / "latest").read_text().strip() == "step-00000010"
    assert (root / ".tmp-step-00000020").is_dir() and not (root / "step-00000020").exists()
    assert loop.find_checkpoint(out) == root / "step-00000010"

    # a pointer left dangling by hand is not trusted either: the newest complete checkpoint is used
    (root / "latest").write_text("step-00000020\n")
    assert loop.find_checkpoint(out) == root / "step-00000010"

    monkeypatch.setattr(checkpoints, "_write_trainer_state", real_write)
    assert train_main([*tiny_args(data_dir, out, "--save_steps", "10", "--eval_steps", "100", steps=30),
                       "--resume"]) == 0
    assert not (root / ".tmp-step-00000020").exists()
    assert (root / "latest").read_text().strip() == "step-00000030"
    assert json.loads((out / "results.json").read_text())["training"]["resumed_from"].endswith("step-00000010")


def test_an_existing_run_is_not_overwritten_without_resume(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit) as exit_info:
        train_main(tiny_args(data_dir, out))
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--resume" in message and "--overwrite_output_dir" in message


# --------------------------------------------------------------------------------------------- two processes


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_two_process_torchrun_run_shards_the_data_and_saves_once(data_dir, tmp_path):
    out = tmp_path / "ddp"
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    argv = tiny_args(data_dir, out, "--num_epochs", "1", "--log_example_ids", "--eval_steps", "4", "--save_steps", "4")
    argv = [a for i, a in enumerate(argv) if not (a == "--max_steps" or (i and argv[i - 1] == "--max_steps"))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "copynat.training.cli",
                                *argv], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["num_processes"] == 2
    ranks = [[int(x) for x in (out / "example_ids" / f"rank-{r}.txt").read_text().split()] for r in (0, 1)]
    assert ranks[0] and ranks[1]
    assert set(ranks[0]) | set(ranks[1]) == set(range(300))  # one epoch covers the data ...
    overlap = set(ranks[0]) & set(ranks[1])
    assert len(overlap) <= 60  # ... split between the ranks (only the padding batch may repeat)
    assert len(ranks[0]) + len(ranks[1]) <= 300 + 60
    # metrics and the model are written once, by the main process
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [e["step"] for e in events if e["event"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == results["training"]["steps"]
    assert results["metrics"]["test"]["greedy"]["num_examples"] == 40
    assert (out / "model.safetensors").is_file()
    assert completed.stdout.count("model, tokenizer and results.json saved") == 1
