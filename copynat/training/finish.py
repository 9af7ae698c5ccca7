"""The finish phase of a ``copynat-train`` run: the best model (with a CTC model's blank penalty chosen on
validation) saved into ``output_dir``, its final evaluation, ``results.json``, the test predictions, the training
curves, the model card and the optional push to the Hub. The layout of ``results.json`` is in
:mod:`copynat.training.loop`."""

from __future__ import annotations

import datetime
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoints import atomic_write_text
from .data import OOD_SPLIT
from .errors import UsageError
from .evaluation import evaluate_generation, flatten_metrics, plot_training_curves, select_ctc_blank_penalty
from .hub import PushError, push_folder
from .model_card import write_model_card
from .run_setup import one_line

if TYPE_CHECKING:
    from .loop import TrainingLoop

logger = logging.getLogger("copynat.training")

RESULTS_FORMAT = "copynat-results/1"
#: The config fields results.json repeats (the whole config is in config.json).
RESULTS_CONFIG_FIELDS = (
    "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
    "encoder_ffn_dim", "decoder_ffn_dim", "dropout", "label_smoothing", "decoder_mode", "use_copy_mechanism",
    "position_embedding_type", "normalize_before", "length_prediction", "nat_decoder_inputs")
PLOT_MISSING = "--plot: matplotlib is not installed (pip install matplotlib); no PNG drawn"


def finish_run(run: TrainingLoop) -> dict[str, Any]:
    """Save the best model, evaluate it on every split, write the run's files; returns results.json's content."""
    best_checkpoint = run.load_best_weights()
    blank_penalty = choose_blank_penalty(run)  # before saving: the generation config keeps it
    if run.main:
        run.unwrapped.save_pretrained(run.output_dir)
        run.tokenizer.save_pretrained(run.output_dir)
    run.accelerator.wait_for_everyone()
    final_metrics = final_evaluation(run, blank_penalty)
    predictions = {split: metrics.pop("_predictions", None) for split, metrics in final_metrics.items()}
    for split, split_metrics in final_metrics.items():
        run.metrics_log.write("final", run.state.step, flatten_metrics(split_metrics), split=split,
                              time=round(run.state.train_seconds, 2))
    results = build_results(run, final_metrics, best_checkpoint, blank_penalty)
    push_error = write_outputs(run, results, predictions) if run.main else None
    if run.trackers:
        run.accelerator.end_training()
    run.accelerator.wait_for_everyone()
    if push_error is not None:
        raise UsageError(push_error)
    return results


def choose_blank_penalty(run: TrainingLoop) -> dict[str, Any] | None:
    """A CTC model's blank penalty: the given one, none without validation data, else chosen on validation."""
    if not run.ctc:
        return None
    if run.args.ctc_blank_penalty is not None or run.validation is None:
        return {"selected": float(run.args.ctc_blank_penalty or 0.0), "bleu": None}
    known = run.entities.get("validation")
    chosen = select_ctc_blank_penalty(run.accelerator, run.model, run.tokenizer, run.validation,
                                      batch_size=run.args.eval_batch_size, max_new_tokens=run.plan.max_new_tokens,
                                      seed=run.args.seed, entities=known and known["entities"])
    if run.main:
        logger.warning("CTC blank penalty %g chosen on validation (one-pass BLEU %s)", chosen["selected"],
                       ", ".join(f"{k:g}: {v:.2f}" for k, v in chosen["bleu"].items()))
    return chosen


def final_evaluation(run: TrainingLoop, blank_penalty: dict | None) -> dict[str, Any]:
    """The best model on validation (reused when the best evaluation saw all of it), test and the echo task's
    out-of-distribution split."""
    metrics: dict[str, Any] = {}
    state, decodings = run.state, run.plan.decodings
    if run.validation is not None:
        complete = state.best_eval_complete and state.best_metrics
        metrics["validation"] = state.best_metrics if complete else run.evaluate_validation(run.validation)
    if blank_penalty and blank_penalty.get("metrics") and "validation" in metrics:
        for name, kwargs in decodings.items():  # one-pass figures with the penalty the model now decodes with
            if kwargs.get("non_autoregressive") and name in metrics["validation"]:
                metrics["validation"][name] = blank_penalty["metrics"]
    for split in ("test", OOD_SPLIT):
        if split in run.tokenized:
            known = run.entities.get(split) or {}
            metrics[split] = evaluate_generation(
                run.accelerator, run.model, run.tokenizer, run.tokenized[split], decodings,
                batch_size=run.args.eval_batch_size, max_new_tokens=run.plan.max_new_tokens,
                entities=known.get("entities"), categories=known.get("categories"), seed=run.args.seed)
    return metrics


def build_results(run: TrainingLoop, final_metrics: dict, best_checkpoint: Path | None,
                  blank_penalty: dict | None) -> dict[str, Any]:
    """The content of results.json (``copynat-results/1``)."""
    state, args, model_args = run.state, run.args, run.model_args
    seconds = max(state.train_seconds, 1e-9)
    training = {
        "steps": state.step,
        "epochs": round(state.epoch + state.batches_in_epoch / max(1, len(run.sampler)), 3),
        "train_seconds": round(state.train_seconds, 2), "total_seconds": round(time.time() - run.started, 2),
        "steps_per_second": round(state.step / seconds, 3),
        "tokens_per_second": round(state.train_tokens / seconds, 1), "train_tokens": state.train_tokens,
        "num_processes": run.accelerator.num_processes, "num_threads": run.threads,
        "mixed_precision": run.mixed_precision, "scheduled_sampling": args.scheduled_sampling,
        "objective": args.objective, "stopped_early": state.stop_reason == "early_stopping",
        "stop_reason": state.stop_reason,
        "resumed_from": str(run.checkpoint) if run.checkpoint is not None else None,
    }
    config = run.unwrapped.config
    return {
        "format": RESULTS_FORMAT,
        "model": {"preset": None if model_args.model_name_or_path else model_args.preset,
                  "model_name_or_path": model_args.model_name_or_path, "num_parameters": run.num_parameters,
                  "vocab_size": config.vocab_size,
                  "config": {name: getattr(config, name) for name in RESULTS_CONFIG_FIELDS}},
        "data": {"source": "embedded echo task" if run.echo else (run.data_args.dataset_name
                                                                   or run.data_args.split_files()),
                 "num_examples": {split: len(ds) for split, ds in run.tokenized.items()}},
        "training": training,
        "selection": {"metric": f"validation/{run.plan.selection_key}/bleu", "best_step": state.best_step,
                      "best_value": state.best_metric,
                      "checkpoint": str(best_checkpoint) if best_checkpoint is not None else None},
        "eval_decoding": run.plan.decodings,
        **({"ctc_blank_penalty": {k: v for k, v in blank_penalty.items() if k != "metrics"}} if blank_penalty else {}),
        "metrics": final_metrics,
        "output_dir": str(run.output_dir),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_outputs(run: TrainingLoop, results: dict, predictions: dict) -> str | None:
    """results.json, the test predictions, training_curves.png, the card, the push (main process); returns the
    push's error message, raised once every process is done."""
    output_dir, args = run.output_dir, run.args
    atomic_write_text(output_dir / "results.json", json.dumps(results, indent=2) + "\n")
    if predictions.get("test"):
        first = run.plan.selection_key
        atomic_write_text(output_dir / f"test_predictions.{first}.txt",
                          "".join(p.replace("\n", " ") + "\n" for p in predictions["test"][first]))
    if args.plot and not plot_training_curves(output_dir / "metrics.jsonl", output_dir / "training_curves.png"):
        logger.warning(PLOT_MISSING)
    repo_id = (args.hub_model_id or output_dir.name) if args.push_to_hub else None
    try:  # the card is a report of the run: a failure to render it must not lose the trained model
        write_model_card(output_dir, results, repo_id=repo_id)
    except Exception as err:  # noqa: BLE001 - reported, the model and results.json are already saved
        logger.warning("could not write the model card %s: %s (the model is saved; write it later with "
                       "copynat-card %s)", output_dir / "README.md", one_line(err), output_dir)
    if repo_id is None:
        return None
    try:
        info = push_folder(output_dir, repo_id, private=args.hub_private_repo, card="keep")
    except PushError as err:
        return (f"--push_to_hub: {one_line(err)}; the model is saved in {output_dir}: publish it later with "
                f"copynat-push {output_dir} --repo_id {repo_id}")
    results["hub_commit"] = str(info)
    logger.info("pushed %s to %s", output_dir, info)
    return None
