"""The copynat training loop on ``accelerate.Accelerator``: one process, or many (``accelerate launch`` / ``torchrun``).

``train(model_args, data_args, train_args)`` is what ``copynat-train`` calls.  In order it

1. loads the data (``load_raw_datasets``; the embedded echo task when no data is given), trains a byte-level
   tokenizer on the training split (source + target) unless one is given, tokenizes every split;
2. builds a model from a preset (+ overrides) or loads ``model_name_or_path``;
3. trains with token-budget batches bucketed by length (``TokenBudgetBatchSampler``, sharded by the sampler itself:
   each process gets every R-th batch, the DataLoader is *not* prepared, so nothing is sharded twice), AdamW,
   warm-up + inverse-sqrt / linear / cosine / constant schedule, gradient clipping, gradient accumulation, mixed
   precision and optional scheduled sampling;
4. evaluates every ``eval_steps`` and at the end (validation loss; BLEU, chrF, exact match per decoding, and the
   entity copy rate on the echo task), keeps the best model by the validation BLEU of the first decoding and stops
   early after ``early_stopping_patience`` evaluations without improvement;
5. checkpoints every ``save_steps`` (and at every new best) with ``accelerator.save_state`` plus
   ``trainer_state.json``, written to a temporary folder that is renamed into place, then the
   ``checkpoints/latest`` pointer is replaced atomically: a crash at any moment leaves a resumable state;
6. saves the best model (``save_pretrained``: model.safetensors, config.json, generation_config.json, the
   modeling code for remote loading, tokenizer files) into ``output_dir``, evaluates it on the test split and
   writes ``results.json``, ``metrics.jsonl`` and ``training_curves.png``.

Output folder::

    output_dir/
      model.safetensors config.json generation_config.json *.py     the best model (AutoModelForSeq2SeqLM)
      tokenizer.json tokenizer_config.json                          its tokenizer (AutoTokenizer)
      results.json                                                  final metrics, see below
      metrics.jsonl                                                 one JSON object per log / eval event
      training_curves.png                                           loss and BLEU vs step (if matplotlib)
      test_predictions.<decoding>.txt                               the best model's test outputs, one per line
      training_args.json                                            the arguments of the run (+ resolved defaults)
      tensorboard/                                                  TensorBoard events (if installed)
      checkpoints/step-00001200/ ... checkpoints/latest             resumable checkpoints

``results.json`` (``"format": "copynat-results/1"``; every score is on a 0-100 scale)::

    {
      "format": "copynat-results/1",
      "model": {"preset": "tiny", "model_name_or_path": null, "num_parameters": 1234567, "vocab_size": 1000,
                "config": {"d_model": 128, ..., "decoder_mode": "ar", "use_copy_mechanism": true, ...}},
      "data": {"source": "embedded echo task", "num_examples": {"train": 20000, "validation": 500, "test": 1000}},
      "training": {"steps": 1600, "epochs": 5.4, "train_seconds": 250.1, "total_seconds": 300.2,
                   "steps_per_second": 6.4, "tokens_per_second": 45000.0, "train_tokens": 11250000,
                   "num_processes": 1, "mixed_precision": "no", "stopped_early": false, "stop_reason": "max_steps",
                   "resumed_from": null},
      "selection": {"metric": "validation/greedy/bleu", "best_step": 1600, "best_value": 99.1},
      "eval_decoding": {"greedy": {"num_beams": 1, "do_sample": false}, "nat4": {...}},
      "metrics": {
        "validation": {"loss": 0.71, "num_examples": 500,
                       "greedy": {"bleu": 99.1, "chrf": 99.6, "exact_match": 97.0, "entity_copy_rate": 98.8,
                                  "bleu_brevity_penalty": 1.0, "bleu_sys_len": ..., "bleu_ref_len": ...,
                                  "num_examples": 500, "decode_seconds": 2.1, "sentences_per_second": 238.0}},
        "test": {...same layout...}
      },
      "output_dir": "...", "finished_at": "2026-11-23T12:00:00+00:00"
    }

``metrics.jsonl`` lines: ``{"event": "train", "step", "epoch", "time", "loss", "ar_loss", ..., "learning_rate",
"grad_norm", "tokens_per_second", "teacher_forcing_prob"}``, ``{"event": "eval", "split": "validation", "step",
"time", "loss", "greedy/bleu", "greedy/chrf", "greedy/exact_match", ...}`` and a final ``{"event": "final", ...}``.
``time`` is the training wall time in seconds since the start of the run (resumes included).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .arguments import ModelArguments, TrainArguments, parse_decodings, resolve_defaults
from .data import (OOD_SPLIT, DataArguments, Seq2SeqCollator, TokenBudgetBatchSampler, example_lengths,
                   load_raw_datasets, tokenize_datasets)
from .checkpoints import (CHECKPOINT_PREFIX, STATE_FILE, TrainState, atomic_write_text, _remove_stale_temporaries,
                          find_checkpoint, load_model_weights, save_checkpoint)
from .errors import TrainingInterrupted, UsageError
from .evaluation import (MetricsLog, evaluate_generation, plot_training_curves, select_ctc_blank_penalty,
                         set_generation_default)
from .hub import PushError, push_folder
from .model_card import write_model_card
from .rl import self_critical_loss
from .schedules import (build_scheduler, default_schedule_k, inverse_sqrt_lambda, mix_decoder_inputs,
                        scheduled_sampling_decoder_inputs, teacher_forcing_prob)
from .run_setup import (StopSignals, build_model, build_optimizer, cpu_only_distributed, default_decodings,
                        echo_entities, is_echo, load_tokenizer, one_line, prepare_output_dir, resolve_mixed_precision,
                        set_threads, tracker_names)

logger = logging.getLogger("copynat.training")

__all__ = [
    "ECHO_DEFAULT_STEPS",
    "TrainState",
    "UsageError",
    "default_schedule_k",
    "evaluate_generation",
    "find_checkpoint",
    "inverse_sqrt_lambda",
    "mix_decoder_inputs",
    "scheduled_sampling_decoder_inputs",
    "teacher_forcing_prob",
    "train",
]

#: Updates of the default run on the embedded echo task (tuned: >= 90% exact match on unseen names, minutes on CPU).
ECHO_DEFAULT_STEPS = 1600
#: Epochs when the data is not the echo task and neither --max_steps nor --num_epochs is given.
DEFAULT_EPOCHS = 10.0
RESULTS_FORMAT = "copynat-results/1"



def train(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments) -> dict[str, Any]:
    """Train, evaluate and save a copynat model; returns the content of ``results.json``.  See the module
    docstring for the whole procedure and the output folder."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration, set_seed

    started = time.time()
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)  # "Removed shared tensor" on tied weights
    AcceleratorState._reset_state()  # several runs in one Python process (tests, notebooks)
    output_dir = Path(train_args.output_dir).resolve()
    mixed_precision = resolve_mixed_precision(train_args.mixed_precision)
    trackers = tracker_names(train_args.report_to)
    accelerator = Accelerator(
        cpu=cpu_only_distributed(), mixed_precision=mixed_precision, log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "tensorboard")),
    )
    main = accelerator.is_main_process
    threads, threads_reason = set_threads(accelerator, train_args.num_threads)
    checkpoint = prepare_output_dir(accelerator, output_dir, train_args)
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(output_dir)
    set_seed(train_args.seed)
    echo = is_echo(data_args)
    filled_defaults = resolve_defaults(model_args, train_args, echo)

    # ---- data and tokenizer
    try:
        with accelerator.main_process_first():
            raw = load_raw_datasets(data_args)
    except Exception as err:  # the data module's messages name the file, row and column
        raise UsageError(one_line(err)) from err
    if "train" not in raw or len(raw["train"]) == 0:
        raise UsageError("the training split is missing or empty: give --train_file or --dataset_name with a "
                         "non-empty train split")
    tokenizer = load_tokenizer(accelerator, model_args, raw, output_dir, checkpoint, echo)
    try:
        with accelerator.main_process_first():
            tokenized = tokenize_datasets(raw, tokenizer, data_args)
    except Exception as err:
        raise UsageError(one_line(err)) from err

    # ---- model, optimizer, schedule
    set_seed(train_args.seed)
    model = build_model(model_args, data_args, tokenizer, checkpoint, echo)
    if model.config.decoder_mode == "nat" and train_args.scheduled_sampling != "none":
        raise UsageError("--scheduled_sampling applies to the autoregressive objective; this model has "
                         "decoder_mode='nat' (use ar or hybrid)")
    if train_args.objective == "rl":
        if not model_args.model_name_or_path:
            raise UsageError("--objective rl fine-tunes a trained model on the metric (sampling from an untrained "
                             "model earns no reward): give --model_name_or_path")
        if model.config.decoder_mode == "nat":
            raise UsageError("--objective rl trains the autoregressive decoder; this model has decoder_mode='nat'")
    decodings = parse_decodings(train_args.eval_decoding or default_decodings(model))
    for name in [n for n, kw in decodings.items() if kw.get("non_autoregressive")]:
        if not model.config.uses_nat:
            logger.warning("--eval_decoding %s skipped: NAT decoding needs a model trained to decode in parallel "
                           "(decoder_mode nat or hybrid)", name)
            decodings.pop(name)
        elif model.config.nat_training == "ctc" and (decodings[name]["nat_iterations"] > 1
                                                     or decodings[name].get("length_beam", 1) > 1):
            logger.warning("--eval_decoding %s skipped: a CTC model decodes in one pass (nat1)", name)
            decodings.pop(name)
    if not decodings:
        raise UsageError("--eval_decoding: nothing left to evaluate (NAT decodings need decoder_mode nat or hybrid)")
    selection_key = next(iter(decodings))

    train_data = tokenized["train"]
    sampler = TokenBudgetBatchSampler(
        example_lengths(train_data), train_args.max_tokens, max_sentences=train_args.max_sentences, shuffle=True,
        seed=train_args.seed, num_replicas=accelerator.num_processes, rank=accelerator.process_index)
    collator = Seq2SeqCollator(tokenizer)
    # The sampler shards the batches (num_replicas/rank): this DataLoader must not be passed to
    # accelerator.prepare (that would shard it a second time). Its own generator keeps the global RNG untouched.
    loader = torch.utils.data.DataLoader(
        train_data.select_columns(["input_ids", "labels"]), batch_sampler=sampler, collate_fn=collator,
        num_workers=train_args.dataloader_num_workers, generator=torch.Generator().manual_seed(train_args.seed),
        pin_memory=accelerator.device.type == "cuda")  # so that the copy to the GPU can overlap (non_blocking)
    steps_per_epoch = max(1, math.ceil(len(sampler) / train_args.gradient_accumulation_steps))
    if train_args.max_steps is not None:
        max_steps = train_args.max_steps
    elif train_args.num_epochs is None and echo:
        max_steps = ECHO_DEFAULT_STEPS
    else:
        max_steps = max(1, round((train_args.num_epochs or DEFAULT_EPOCHS) * steps_per_epoch))
    eval_steps = train_args.eval_steps or max(1, math.ceil(max_steps / 4))
    save_steps = train_args.save_steps or eval_steps
    ss_k = train_args.scheduled_sampling_k
    if train_args.scheduled_sampling != "none" and ss_k is None:
        ss_k = default_schedule_k(train_args.scheduled_sampling, max_steps, train_args.scheduled_sampling_min_prob)

    optimizer = build_optimizer(model, train_args)
    # The share of --max_train_minutes spent, as the processes last agreed on it (so they share one learning rate).
    budget_used = [0.0]
    scheduler = build_scheduler(optimizer, train_args.lr_scheduler, train_args.warmup_steps, max_steps,
                                budget_used=(lambda: budget_used[0]) if train_args.max_train_minutes else None)
    if train_args.torch_compile:
        model.compile(dynamic=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Not prepared: accelerate would step a prepared scheduler once per process and update.
    accelerator.register_for_checkpointing(scheduler)

    state = TrainState()
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        saved = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        state = TrainState(**{k: v for k, v in saved.items() if k in TrainState.__dataclass_fields__})
        try:
            sampler.load_state_dict(state.sampler)
        except ValueError as err:
            raise UsageError(f"--resume {checkpoint}: {one_line(err)}; resume with the same data, --seed, "
                             "--max_tokens, --max_sentences and number of processes") from err
        if main:
            logger.warning("resuming from %s (step %d, epoch %d)", checkpoint, state.step, state.epoch)
    state.stop_reason = None
    if train_args.max_train_minutes:  # a resumed run goes on decaying from where its clock stopped
        budget_used[0] = state.train_seconds / (60 * train_args.max_train_minutes)
    metrics_log = MetricsLog(accelerator, output_dir / "metrics.jsonl", bool(trackers))
    if checkpoint is not None:
        metrics_log.truncate_after(state.step)

    run_info = {
        "model_args": asdict(model_args), "data_args": asdict(data_args), "train_args": asdict(train_args),
        "resolved": {"max_steps": max_steps, "eval_steps": eval_steps, "save_steps": save_steps,
                     "eval_decoding": list(decodings), "scheduled_sampling_k": ss_k, "num_threads": threads,
                     "mixed_precision": mixed_precision, "num_processes": accelerator.num_processes,
                     "steps_per_epoch": steps_per_epoch, **filled_defaults},
    }
    if main:
        atomic_write_text(output_dir / "training_args.json", json.dumps(run_info, indent=2, default=str))
    if trackers:
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                   for group in ("model_args", "train_args") for k, v in run_info[group].items()}
        accelerator.init_trackers("copynat", config=hparams)

    unwrapped = accelerator.unwrap_model(model)
    ctc = unwrapped.config.uses_nat and unwrapped.config.nat_training == "ctc"
    if train_args.ctc_blank_penalty is not None:  # periodic evaluations decode with it too
        if not ctc:
            raise UsageError("--ctc_blank_penalty applies to CTC models (--nat_training ctc with decoder_mode nat or "
                             f"hybrid); this one has nat_training={unwrapped.config.nat_training!r}, decoder_mode="
                             f"{unwrapped.config.decoder_mode!r}")
        set_generation_default(unwrapped, ctc_blank_penalty=float(train_args.ctc_blank_penalty))
    elif getattr(unwrapped.generation_config, "ctc_blank_penalty", 0.0) and not ctc:
        set_generation_default(unwrapped, ctc_blank_penalty=0.0)  # a CTC model's, fine-tuned into another NAT kind
    num_parameters = sum(p.numel() for p in unwrapped.parameters())
    if main:
        cfg = unwrapped.config
        logger.warning("copynat-train: %s model (%s parameters, d_model %d, %d+%d layers, decoder_mode %s, copy %s), "
                       "%d training examples, %d steps (%d per epoch), %d process(es) x %d thread(s) (%s)",
                       model_args.preset if not model_args.model_name_or_path else model_args.model_name_or_path,
                       f"{num_parameters:,}", cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.decoder_mode,
                       cfg.use_copy_mechanism, len(train_data), max_steps, steps_per_epoch, accelerator.num_processes,
                       threads, threads_reason)

    validation = tokenized.get("validation")
    periodic_validation = validation
    if validation is not None and train_args.num_eval_samples and train_args.num_eval_samples < len(validation):
        periodic_validation = validation.select(range(train_args.num_eval_samples))
    entities = {}
    if echo:
        for split in ("validation", "test", OOD_SPLIT):
            if split in tokenized:
                entities[split] = echo_entities(tokenized[split], split)
    max_new_tokens = train_args.eval_max_new_tokens or data_args.max_target_length
    checkpoint_extra = {"run": run_info["resolved"], "selection_metric": f"validation/{selection_key}/bleu"}

    def evaluate_validation(dataset) -> dict:
        return evaluate_generation(accelerator, model, tokenizer, dataset, decodings,
                                   batch_size=train_args.eval_batch_size, max_new_tokens=max_new_tokens,
                                   entities=entities.get("validation") and entities["validation"]["entities"][:len(dataset)],
                                   seed=train_args.seed)

    def run_evaluation() -> bool:
        """Periodic evaluation; True when it produced a new best model."""
        if periodic_validation is None:
            return False
        results = evaluate_validation(periodic_validation)
        results.pop("_predictions", None)
        metrics_log.write("eval", state.step, _flatten(results), split="validation",
                          time=round(state.train_seconds, 2), epoch=state.epoch)
        value = results[selection_key]["bleu"]
        improved = state.best_metric is None or value > state.best_metric
        if improved:
            state.best_metric, state.best_step, state.bad_evaluations = value, state.step, 0
            state.best_metrics = results
            state.best_eval_complete = len(periodic_validation) == len(validation)
        else:
            state.bad_evaluations += 1
            if train_args.early_stopping_patience and state.bad_evaluations >= train_args.early_stopping_patience:
                state.stop_reason = "early_stopping"
        if main:
            tqdm.write(f"step {state.step}: validation loss {results.get('loss', float('nan')):.4f}, " + ", ".join(
                f"{name} BLEU {results[name]['bleu']:.2f} EM {results[name]['exact_match']:.1f}" for name in decodings)
                + (" (best)" if improved else f" (best {state.best_metric:.2f} at step {state.best_step})"))
        return improved

    # ---- the loop
    from tqdm.auto import tqdm

    progress = tqdm(total=max_steps, initial=state.step, desc="copynat-train", unit="step", dynamic_ncols=True,
                    disable=not (main and train_args.progress_bar))
    ga = train_args.gradient_accumulation_steps
    # Per-update values stay on the device as tensors and are summed there; they reach the host (one sync) only on
    # logging steps. Token counts come from the batches before they move (CPU tensors: no device sync either).
    log_sums: dict[str, torch.Tensor] = {}
    log_count, log_tokens, log_start, log_excluded = 0, 0, time.perf_counter(), 0.0
    example_ids: list[int] = []
    ss_generator = None
    done = state.step >= max_steps
    # How often processes agree on stopping (time budget, a signal): a collective is a host sync.
    agree_every = 1 if accelerator.num_processes == 1 else max(1, min(train_args.logging_steps, 10))
    device = accelerator.device
    non_blocking = device.type == "cuda"
    last_lr = [scheduler.get_last_lr()[0]]

    def decode_text(ids: torch.Tensor) -> list[str]:
        ids = ids.masked_fill(ids == -100, tokenizer.pad_token_id)
        return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def add(values: dict, name: str, value) -> None:
        values[name] = values[name] + value if name in values else value

    def update(batches: list[dict]) -> tuple[dict, torch.Tensor]:
        """One optimizer update over `batches` (gradient accumulation); returns ({name: device tensor}, tokens)."""
        model.train()
        values: dict[str, torch.Tensor] = {}
        tokens = sum(batch["attention_mask"].sum() + (batch["labels"] != -100).sum() for batch in batches)
        prob = teacher_forcing_prob(state.step, train_args.scheduled_sampling, ss_k,
                                    train_args.scheduled_sampling_min_prob)
        for index, batch in enumerate(batches):
            batch = {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}
            sync = contextlib.nullcontext() if index == len(batches) - 1 else accelerator.no_sync(model)
            with sync:
                if prob < 1.0:
                    with accelerator.autocast():
                        decoder_input_ids, replaced = scheduled_sampling_decoder_inputs(unwrapped, batch, prob,
                                                                                        ss_generator)
                    batch["decoder_input_ids"] = decoder_input_ids
                    targets = (batch["labels"] != -100).sum().clamp_min(1)
                    add(values, "replaced_fraction", replaced.sum() / targets / len(batches))
                output = model(**batch, return_logits=False)  # the loss only: no [batch, tgt, vocab] mixture
                loss = output.loss
                if train_args.objective == "rl":
                    rl_loss, rewards = self_critical_loss(
                        unwrapped, batch["input_ids"], batch["attention_mask"], decode_text(batch["labels"]),
                        decode_text, metric=train_args.rl_reward, max_new_tokens=max_new_tokens)
                    loss = (1.0 - train_args.rl_weight) * loss + train_args.rl_weight * rl_loss
                    for key, value in rewards.items():
                        add(values, key, torch.tensor(value / len(batches)))
                accelerator.backward(loss / len(batches))
            for name in ("loss", "ar_loss", "nat_loss", "length_loss"):
                value = output.loss if name == "loss" else getattr(output, name, None)
                if value is not None:
                    add(values, name, value.detach() / len(batches))
        if train_args.max_grad_norm > 0:
            values["grad_norm"] = accelerator.clip_grad_norm_(model.parameters(), train_args.max_grad_norm).detach()
        last_lr[0] = scheduler.get_last_lr()[0]  # the rate of this update (a Python float: no sync)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return values, tokens

    def after_update(values: dict[str, torch.Tensor], tokens: torch.Tensor) -> None:
        nonlocal log_count, log_tokens
        state.step += 1
        progress.update(1)
        log_count += 1
        log_tokens = log_tokens + tokens
        for key, value in values.items():
            add(log_sums, key, value)
        if state.step % train_args.logging_steps == 0 or state.step >= max_steps:
            log_now()

    def log_now() -> None:
        """Write the averages since the last logging step: the only place the step values reach the host."""
        nonlocal log_sums, log_count, log_tokens, log_start, log_excluded
        if log_count == 0:
            return
        elapsed = time.perf_counter() - log_start - (excluded[0] - log_excluded)
        names = sorted(log_sums)
        averages = torch.stack([log_sums[k].float().to(device) / log_count for k in names]
                               + [torch.as_tensor(log_tokens, dtype=torch.float32, device=device)]).double()
        if accelerator.num_processes > 1:
            averages = accelerator.reduce(averages, reduction="sum")
            averages[:-1] /= accelerator.num_processes
        numbers = averages.tolist()  # one host sync for the whole record
        averaged, all_tokens = dict(zip(names, numbers[:-1])), numbers[-1]
        state.train_tokens += int(all_tokens)
        record = {k: round(averaged[k], 5) for k in ("loss", "ar_loss", "nat_loss", "length_loss") if k in averaged}
        tokens_per_second = all_tokens / max(elapsed, 1e-9)
        record.update(learning_rate=last_lr[0], tokens_per_second=round(tokens_per_second, 1),
                      steps_per_second=round(log_count / max(elapsed, 1e-9), 3))
        if "grad_norm" in averaged:
            record["grad_norm"] = round(averaged["grad_norm"], 4)
        if train_args.objective == "rl":
            record.update({key: round(averaged[key], 4) for key in ("reward_sample", "reward_greedy")})
        if train_args.scheduled_sampling != "none":
            record["teacher_forcing_prob"] = round(teacher_forcing_prob(
                state.step - 1, train_args.scheduled_sampling, ss_k, train_args.scheduled_sampling_min_prob), 4)
            record["replaced_fraction"] = round(averaged.get("replaced_fraction", 0.0), 4)
        metrics_log.write("train", state.step, record, epoch=state.epoch, time=round(state.train_seconds, 2))
        progress.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{tokens_per_second:,.0f}")
        log_sums, log_count, log_tokens, log_start = {}, 0, 0, time.perf_counter()
        log_excluded = excluded[0]

    def agreed(flag: bool) -> bool:
        """True when any process raised `flag` (every process gets the same answer)."""
        if accelerator.num_processes == 1:
            return flag
        return bool(accelerator.reduce(torch.tensor([float(flag)], device=device), reduction="sum").item() > 0)

    def agreed_mean(value: float) -> float:
        """The mean of `value` over the processes (the same number on each)."""
        if accelerator.num_processes == 1:
            return value
        return float(accelerator.reduce(torch.tensor([value], device=device), reduction="mean").item())

    def step_boundary(signals: StopSignals) -> None:
        """Evaluate, checkpoint and decide whether to stop, after each update."""
        eval_started = time.perf_counter()
        last = state.step >= max_steps
        out_of_time = stop_requested = False
        if state.step % agree_every == 0 or last:  # clocks and signals differ between processes: stop together
            if train_args.max_train_minutes:
                budget_used[0] = agreed_mean(state.train_seconds) / (60 * train_args.max_train_minutes)
            out_of_time = agreed(bool(train_args.max_train_minutes)
                                 and state.train_seconds >= 60 * train_args.max_train_minutes)
            stop_requested = agreed(signals.requested is not None)  # a signal may reach only one process
        if out_of_time and state.stop_reason is None:
            state.stop_reason = "time_budget"
        last = last or out_of_time
        if (last or stop_requested) and state.step % train_args.logging_steps != 0:
            log_now()
        improved = False
        if state.step % eval_steps == 0 or last:
            improved = run_evaluation()
        if stop_requested and state.stop_reason is None:
            state.stop_reason = "interrupted"
        if state.step % save_steps == 0 or improved or last or state.stop_reason is not None:
            state.sampler = {**sampler.state_dict(), "epoch": state.epoch, "batches_yielded": state.batches_in_epoch}
            save_checkpoint(accelerator, output_dir, state, tokenizer=tokenizer, model=model,
                            keep=train_args.keep_checkpoints, extra=checkpoint_extra)
        excluded[0] += time.perf_counter() - eval_started

    excluded = [0.0]  # seconds spent evaluating and checkpointing, not counted as training time
    train_clock = time.perf_counter()
    seconds_at_start = state.train_seconds
    try:
        with StopSignals() as signals:
            while not done:
                sampler.set_epoch(state.epoch, start_batch=state.batches_in_epoch)
                pending: list[dict] = []
                for batch in loader:
                    state.batches_in_epoch += 1
                    pending.append(batch)
                    if train_args.log_example_ids:
                        example_ids.extend(sampler_batch_ids(sampler, state.batches_in_epoch - 1))
                    if len(pending) < ga:
                        continue
                    values, tokens = update(pending)
                    pending = []
                    after_update(values, tokens)
                    state.train_seconds = seconds_at_start + time.perf_counter() - train_clock - excluded[0]
                    step_boundary(signals)
                    if state.step >= max_steps or state.stop_reason is not None:
                        done = True
                        break
                else:
                    if pending:  # the epoch's last, smaller accumulation group
                        values, tokens = update(pending)
                        after_update(values, tokens)
                        state.train_seconds = seconds_at_start + time.perf_counter() - train_clock - excluded[0]
                        state.epoch += 1
                        state.batches_in_epoch = 0
                        step_boundary(signals)
                        done = state.step >= max_steps or state.stop_reason is not None
                    else:
                        state.epoch += 1
                        state.batches_in_epoch = 0
                if state.stop_reason == "interrupted":
                    raise TrainingInterrupted(
                        f"interrupted at step {state.step}: checkpoint saved in {output_dir / 'checkpoints'}; "
                        "continue with the same command plus --resume")
    except (Exception, KeyboardInterrupt) as err:
        progress.close()
        if not isinstance(err, (TrainingInterrupted, UsageError)):
            latest = find_checkpoint(output_dir)
            logger.error("training failed at step %d; %s", state.step,
                         f"the last complete checkpoint is {latest}: continue with the same command plus --resume"
                         if latest else "no checkpoint was saved yet")
        raise
    progress.close()
    if state.stop_reason is None:
        state.stop_reason = "max_steps"
    if train_args.log_example_ids:
        ids_dir = output_dir / "example_ids"
        ids_dir.mkdir(parents=True, exist_ok=True)
        (ids_dir / f"rank-{accelerator.process_index}.txt").write_text("".join(f"{i}\n" for i in example_ids))

    # ---- the final model: the best checkpoint's weights (or the last ones without validation data)
    best_checkpoint = None
    if state.best_step is not None:
        best_checkpoint = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{state.best_step:08d}"
        load_model_weights(unwrapped, best_checkpoint)
    blank_penalty = None  # a CTC model's: the given one, none without validation data, else chosen there
    if ctc and (train_args.ctc_blank_penalty is not None or validation is None):
        blank_penalty = {"selected": float(train_args.ctc_blank_penalty or 0.0), "bleu": None}
    elif ctc:  # before saving: the generation config keeps it
        blank_penalty = select_ctc_blank_penalty(accelerator, model, tokenizer, validation,
                                                 batch_size=train_args.eval_batch_size,
                                                 max_new_tokens=max_new_tokens, seed=train_args.seed)
        if main:
            logger.warning("CTC blank penalty %g chosen on validation (one-pass BLEU %s)", blank_penalty["selected"],
                           ", ".join(f"{k:g}: {v:.2f}" for k, v in blank_penalty["bleu"].items()))
    if main:
        unwrapped.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    accelerator.wait_for_everyone()

    # ---- final evaluation of the best model: validation (reused when the best evaluation saw all of it) and test
    final_metrics: dict[str, Any] = {}
    if validation is not None:
        if state.best_eval_complete and state.best_metrics:
            final_metrics["validation"] = state.best_metrics
        else:
            final_metrics["validation"] = evaluate_validation(validation)
    if blank_penalty and blank_penalty.get("metrics") and "validation" in final_metrics:
        for name, kwargs in decodings.items():  # one-pass figures with the penalty the model now decodes with
            if kwargs.get("non_autoregressive") and name in final_metrics["validation"]:
                final_metrics["validation"][name] = blank_penalty["metrics"]
    for split in ("test", OOD_SPLIT):
        if split in tokenized:
            known = entities.get(split) or {}
            final_metrics[split] = evaluate_generation(
                accelerator, model, tokenizer, tokenized[split], decodings, batch_size=train_args.eval_batch_size,
                max_new_tokens=max_new_tokens, entities=known.get("entities"), categories=known.get("categories"),
                seed=train_args.seed)
    predictions = {split: m.pop("_predictions", None) for split, m in final_metrics.items()}
    for split, split_metrics in final_metrics.items():
        metrics_log.write("final", state.step, _flatten(split_metrics), split=split,
                          time=round(state.train_seconds, 2))

    results = {
        "format": RESULTS_FORMAT,
        "model": {
            "preset": None if model_args.model_name_or_path else model_args.preset,
            "model_name_or_path": model_args.model_name_or_path,
            "num_parameters": num_parameters,
            "vocab_size": unwrapped.config.vocab_size,
            "config": {k: getattr(unwrapped.config, k) for k in (
                "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
                "encoder_ffn_dim", "decoder_ffn_dim", "dropout", "label_smoothing", "decoder_mode",
                "use_copy_mechanism", "position_embedding_type", "normalize_before", "length_prediction",
                "nat_decoder_inputs")},
        },
        "data": {
            "source": "embedded echo task" if echo else (data_args.dataset_name or data_args.split_files()),
            "num_examples": {split: len(ds) for split, ds in tokenized.items()},
        },
        "training": {
            "steps": state.step,
            "epochs": round(state.epoch + state.batches_in_epoch / max(1, len(sampler)), 3),
            "train_seconds": round(state.train_seconds, 2),
            "total_seconds": round(time.time() - started, 2),
            "steps_per_second": round(state.step / max(state.train_seconds, 1e-9), 3),
            "tokens_per_second": round(state.train_tokens / max(state.train_seconds, 1e-9), 1),
            "train_tokens": state.train_tokens,
            "num_processes": accelerator.num_processes,
            "num_threads": threads,
            "mixed_precision": mixed_precision,
            "scheduled_sampling": train_args.scheduled_sampling,
            "objective": train_args.objective,
            "stopped_early": state.stop_reason == "early_stopping",
            "stop_reason": state.stop_reason,
            "resumed_from": str(checkpoint) if checkpoint is not None else None,
        },
        "selection": {"metric": f"validation/{selection_key}/bleu", "best_step": state.best_step,
                      "best_value": state.best_metric,
                      "checkpoint": str(best_checkpoint) if best_checkpoint is not None else None},
        "eval_decoding": decodings,
        **({"ctc_blank_penalty": {k: v for k, v in blank_penalty.items() if k != "metrics"}} if blank_penalty else {}),
        "metrics": final_metrics,
        "output_dir": str(output_dir),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    push_error = None
    if main:
        atomic_write_text(output_dir / "results.json", json.dumps(results, indent=2) + "\n")
        if predictions.get("test"):
            first = next(iter(decodings))
            atomic_write_text(output_dir / f"test_predictions.{first}.txt",
                               "".join(p.replace("\n", " ") + "\n" for p in predictions["test"][first]))
        if train_args.plot:
            if not plot_training_curves(output_dir / "metrics.jsonl", output_dir / "training_curves.png"):
                logger.warning("--plot: matplotlib is not installed (pip install 'copynat[plots]'); no PNG drawn")
        repo_id = (train_args.hub_model_id or output_dir.name) if train_args.push_to_hub else None
        try:  # the card is a report of the run: a failure to render it must not lose the trained model
            write_model_card(output_dir, results, repo_id=repo_id)
        except Exception as err:  # noqa: BLE001 - reported, the model and results.json are already saved
            logger.warning("could not write the model card %s: %s (the model is saved; write it later with "
                           "copynat-card %s)", output_dir / "README.md", one_line(err), output_dir)
        if repo_id is not None:
            try:
                info = push_folder(output_dir, repo_id, private=train_args.hub_private_repo, card="keep")
                results["hub_commit"] = str(info)
                logger.info("pushed %s to %s", output_dir, info)
            except PushError as err:
                push_error = (f"--push_to_hub: {one_line(err)}; the model is saved in {output_dir}: publish it "
                              f"later with copynat-push {output_dir} --repo_id {repo_id}")
    if trackers:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    if push_error is not None:
        raise UsageError(push_error)
    return results


def sampler_batch_ids(sampler: TokenBudgetBatchSampler, batch_index: int) -> list[int]:
    """Example ids of this process's ``batch_index``-th batch of the current epoch."""
    return list(sampler._rank_batches()[batch_index])


def _flatten(results: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in results.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict):
            for inner, number in value.items():
                flat[f"{key}/{inner}"] = number
        else:
            flat[key] = value
    return flat
