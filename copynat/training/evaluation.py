"""Evaluation during and after training (loss, BLEU, chrF, exact match per decoding) and the metrics log and plot."""

from __future__ import annotations

import contextlib
import datetime
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import atomic_write_text
from .data import Seq2SeqCollator, example_lengths
from .step_log import loss_names_first, loss_terms


def evaluate_generation(accelerator, model, tokenizer, dataset, decodings: dict[str, dict], *, batch_size: int,
                        max_new_tokens: int, entities: list[list[str]] | None = None,
                        categories: list[list[str]] | None = None, compute_loss: bool = True,
                        seed: int = 0) -> dict[str, Any]:
    """Validation loss terms and, per decoding, BLEU / chrF / exact match (0-100) of a tokenized split with its
    "source"/"target" text columns; with `entities` (the echo task's), the entity copy rate, and with their
    `categories` one rate per category as well ("entity_copy_rate/name/cjk").  The batches (length-sorted) are
    shared out among the processes and the outputs gathered, so every process returns the same metrics.  Outputs are
    at most ``min(max_new_tokens, 2 x longest source of the batch + 10)`` tokens long.  Training RNG is left
    untouched."""
    unwrapped = accelerator.unwrap_model(model)
    was_training = unwrapped.training
    unwrapped.eval()
    lengths = example_lengths(dataset)
    order = np.argsort(-lengths, kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    split = _EvaluationSplit(accelerator, tokenizer, dataset, batches[accelerator.process_index::
                                                                      accelerator.num_processes])
    results: dict[str, Any] = {"num_examples": len(dataset)}
    devices = [accelerator.device.index or 0] if accelerator.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices), accelerator.autocast():
        torch.manual_seed(seed)  # NAT losses mask at random: the same masks at every evaluation
        if compute_loss:
            results.update(_mean_loss_terms(accelerator, unwrapped, split))
        references = list(dataset["target"])
        for name, kwargs in decodings.items():
            start = time.perf_counter()
            ordered = _decode(accelerator, unwrapped, split, kwargs, max_new_tokens)
            seconds = time.perf_counter() - start
            scores = _scores(ordered, references, entities, categories)
            scores["decode_seconds"] = round(seconds, 3)
            scores["sentences_per_second"] = round(len(dataset) / max(seconds, 1e-9), 1)
            results[name] = scores
            results.setdefault("_predictions", {})[name] = ordered
    if was_training:
        unwrapped.train()
    return results


class _EvaluationSplit:
    """This process's share of a split's batches (example indices), collated on the device."""

    def __init__(self, accelerator, tokenizer, dataset, batches: list[np.ndarray]):
        self.device, self.batches, self.size = accelerator.device, batches, len(dataset)
        self.columns = dataset.select_columns(["input_ids", "labels"])
        self.collator = Seq2SeqCollator(tokenizer)
        self.tokenizer = tokenizer

    def __iter__(self):
        for indices in self.batches:
            rows = self.columns[indices.tolist()]
            batch = self.collator([{"input_ids": a, "labels": b} for a, b in zip(rows["input_ids"], rows["labels"])])
            yield indices, {key: value.to(self.device) for key, value in batch.items()}


def _mean_loss_terms(accelerator, model, split: _EvaluationSplit) -> dict[str, float]:
    """Every loss term the model returns (``loss``, ``ar_loss``, ``coverage_loss``, ...), averaged per target token
    over the split (all processes)."""
    sums: dict[str, torch.Tensor] = {}
    targets = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for _, batch in split:
        output = model(**batch, return_logits=False)
        tokens = (batch["labels"] != -100).sum()
        targets += tokens
        for name, value in loss_terms(output).items():
            sums[name] = sums.get(name, 0.0) + value.double() * tokens
    names = loss_names_first(sums)
    if accelerator.num_processes > 1:  # a process may have had no batch: agree on the names first
        from accelerate.utils import gather_object

        names = loss_names_first(set(gather_object(names)))
    totals = torch.stack([targets] + [torch.as_tensor(sums.get(name, 0.0), dtype=torch.float64,
                                                      device=accelerator.device) for name in names])
    if accelerator.num_processes > 1:
        totals = accelerator.reduce(totals, reduction="sum")
    if totals[0] <= 0:
        return {}
    return {name: float(total / totals[0]) for name, total in zip(names, totals[1:])}


def _decode(accelerator, model, split: _EvaluationSplit, kwargs: dict, max_new_tokens: int) -> list[str]:
    """The outputs of one decoding for the whole split, in dataset order (gathered from every process)."""
    outputs: list[tuple[int, str]] = []
    for indices, batch in split:
        # An untrained model may never emit </s>: bound the output by the source length as well.
        limit = min(max_new_tokens, 2 * int(batch["attention_mask"].sum(1).max()) + 10)
        generated = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                   max_new_tokens=limit, **kwargs)
        outputs.extend(zip(indices.tolist(), split.tokenizer.batch_decode(generated, skip_special_tokens=True)))
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        outputs = gather_object(outputs)
    predictions = dict(outputs)
    return [predictions[i] for i in range(split.size)]


def _scores(predictions: list[str], references: list[str], entities: list[list[str]] | None,
            categories: list[list[str]] | None) -> dict[str, Any]:
    from .metrics import compute_generation_metrics

    scores = compute_generation_metrics(predictions, references)
    if entities is not None:
        from copynat.data import copy_rates_by_category

        rates = copy_rates_by_category(predictions, entities, categories, references)
        scores["entity_copy_rate"] = 100.0 * rates.pop("all")
        scores.update({f"entity_copy_rate/{category}": 100.0 * rate for category, rate in rates.items()
                       if category})
    return scores


def set_generation_default(model, **values: Any) -> None:
    """Write generate() defaults into `model.generation_config`, so that save_pretrained/from_pretrained keep them
    (transformers drops the fields of a generation config it marked as made from the model config)."""
    for name, value in values.items():
        setattr(model.generation_config, name, value)
    model.generation_config._from_model_config = False


#: Blank penalties tried by `select_ctc_blank_penalty`: 0 (none) up to a blank e^4 times less likely.
CTC_BLANK_PENALTIES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


def select_ctc_blank_penalty(accelerator, model, tokenizer, dataset, *, batch_size: int, max_new_tokens: int,
                             penalties: tuple[float, ...] = CTC_BLANK_PENALTIES, seed: int = 0,
                             entities: list[list[str]] | None = None) -> dict[str, Any]:
    """BLEU-based selection of a CTC model's blank penalty (`generate(ctc_blank_penalty=...)`) on `dataset`, the
    validation split: one-pass BLEU for each penalty, the best (the smallest on ties) written into the model's
    generation config, where every later generate() and `save_pretrained` find it. With `entities` (the echo task's),
    the selected decoding's metrics keep their entity copy rate.

    A CTC model still learning fills the places it is unsure of with blanks and writes too short an output; a blank
    made less likely lengthens it. Returns {"selected": penalty, "bleu": {penalty: BLEU}, "metrics": the selected
    decoding's validation metrics}."""
    decodings = {f"{penalty:g}": {"non_autoregressive": True, "nat_iterations": 1, "ctc_blank_penalty": penalty}
                 for penalty in penalties}
    results = evaluate_generation(accelerator, model, tokenizer, dataset, decodings, batch_size=batch_size,
                                  max_new_tokens=max_new_tokens, entities=entities, compute_loss=False, seed=seed)
    bleu = {float(name): results[name]["bleu"] for name in decodings}
    selected = max(bleu, key=lambda penalty: (bleu[penalty], -penalty))
    set_generation_default(accelerator.unwrap_model(model), ctc_blank_penalty=selected)
    return {"selected": selected, "bleu": bleu, "metrics": results[f"{selected:g}"]}


# ------------------------------------------------------------------------------------------------ reporting


class MetricsLog:
    """``metrics.jsonl`` (always, main process) + ``accelerator.log`` (TensorBoard etc.)."""

    def __init__(self, accelerator, path: Path, trackers: bool):
        self.accelerator, self.path, self.trackers = accelerator, path, trackers

    def write(self, event: str, step: int, values: dict[str, Any], **extra: Any) -> None:
        if not self.accelerator.is_main_process:
            return
        record = {"event": event, "step": step, **extra, **values,
                  "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.trackers:
            prefix = f"{extra['split']}/" if "split" in extra else f"{event}/"
            numbers = {prefix + k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.accelerator.log(numbers, step=step)

    def truncate_after(self, step: int) -> None:
        """On resume: drop the events a crashed run logged after the checkpoint it resumes from."""
        if not self.accelerator.is_main_process or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("step", 0) <= step and record.get("event") != "final":
                    kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))


def flatten_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """``{"greedy": {"bleu": 99.0}, "loss": 0.1}`` -> ``{"greedy/bleu": 99.0, "loss": 0.1}`` (private keys dropped):
    one metrics.jsonl record."""
    flat: dict[str, Any] = {}
    for key, value in results.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict):
            flat.update({f"{key}/{inner}": number for inner, number in value.items()})
        else:
            flat[key] = value
    return flat


def plot_training_curves(metrics_path: Path, png_path: Path) -> bool:
    """Loss (train, validation) and validation BLEU per decoding vs step, from metrics.jsonl. False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    records = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in records if r["event"] == "train" and "loss" in r]
    evals = [r for r in records if r["event"] == "eval" and r.get("split") == "validation"]
    fig, (ax_loss, ax_bleu) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    with_loss = [r for r in evals if "loss" in r]
    if with_loss:
        ax_loss.plot([r["step"] for r in with_loss], [r["loss"] for r in with_loss], "o-", label="validation")
    if all(r["loss"] > 0 for r in train + with_loss):
        ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss")
    ax_loss.legend()
    names = sorted({k[: -len("/bleu")] for r in evals for k in r if k.endswith("/bleu")})
    for name in names:
        points = [(r["step"], r[f"{name}/bleu"]) for r in evals if f"{name}/bleu" in r]
        ax_bleu.plot(*zip(*points), "o-", label=name)
    ax_bleu.set_xlabel("step")
    ax_bleu.set_ylabel("BLEU")
    ax_bleu.set_title("validation BLEU")
    if names:
        ax_bleu.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return True
