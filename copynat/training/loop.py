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
"time", "loss", "ar_loss", ..., "greedy/bleu", "greedy/chrf", "greedy/exact_match", ...}`` and a final
``{"event": "final", ...}``. The loss terms are every field of the model's output whose name ends in ``loss``
(``ar_loss``, ``nat_loss``, ``length_loss``, ``guided_attention_loss``, ``coverage_loss``: those the model sets).
``time`` is the training wall time in seconds since the start of the run (resumes included).

The code follows the phases: :class:`TrainingLoop` sets the run up (``__init__``), makes each ``update``, ``log``\ s
the averages, evaluates and saves at each ``step_boundary``; :func:`copynat.training.finish.finish_run` ends it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .arguments import ModelArguments, TrainArguments, resolve_defaults
from .checkpoints import (STATE_FILE, TrainState, _remove_stale_temporaries, atomic_write_text, find_checkpoint,
                          load_model_weights, save_checkpoint)
from .data import OOD_SPLIT, DataArguments, load_raw_datasets, tokenize_datasets
from .errors import TrainingInterrupted, UsageError
from .evaluation import MetricsLog, evaluate_generation, flatten_metrics, set_generation_default
from .finish import finish_run
from .rl import self_critical_loss
from .run_setup import (ECHO_DEFAULT_STEPS, StopSignals, build_loader, build_model, build_optimizer,
                        check_objective, cpu_only_distributed, echo_entities, is_echo, load_tokenizer, one_line,
                        plan_run, prepare_output_dir, resolve_mixed_precision, set_threads, tracker_names)
from .schedules import (build_scheduler, default_schedule_k, inverse_sqrt_lambda, mix_decoder_inputs,
                        scheduled_sampling_decoder_inputs, teacher_forcing_prob)
from .step_log import LogWindow, add_to, loss_names_first, loss_terms

logger = logging.getLogger("copynat.training")

__all__ = [
    "ECHO_DEFAULT_STEPS",
    "TrainState",
    "TrainingLoop",
    "UsageError",
    "default_schedule_k",
    "evaluate_generation",
    "find_checkpoint",
    "inverse_sqrt_lambda",
    "load_model_weights",
    "mix_decoder_inputs",
    "scheduled_sampling_decoder_inputs",
    "teacher_forcing_prob",
    "train",
]


def train(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments) -> dict[str, Any]:
    """Train, evaluate and save a copynat model; returns the content of ``results.json``.  See the module
    docstring for the whole procedure and the output folder."""
    run = TrainingLoop(model_args, data_args, train_args)  # set-up
    run.run()  # updates, logging, evaluation and checkpoints
    return finish_run(run)  # the best model, its final evaluation, results.json, the card


class TrainingLoop:
    """One ``copynat-train`` run in named phases: set-up (``__init__``), update (``update``), log (``log``),
    evaluate-and-save (``step_boundary``: ``evaluate``, ``save``); ``run`` drives them over the epochs and
    :func:`copynat.training.finish.finish_run` ends the run."""

    # ------------------------------------------------------------------------------------------------ set-up

    def __init__(self, model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments):
        from accelerate.utils import set_seed

        self.model_args, self.data_args, self.args = model_args, data_args, train_args
        self.started = time.time()
        self._start_accelerator()
        set_seed(train_args.seed)
        self.echo = is_echo(data_args)
        self.filled_defaults = resolve_defaults(model_args, train_args, self.echo)
        self._load_data()
        set_seed(train_args.seed)
        model = build_model(model_args, data_args, self.tokenizer, self.checkpoint, self.echo)
        check_objective(model, model_args, train_args)
        self.sampler, self.loader = build_loader(self.accelerator, self.tokenized["train"], self.tokenizer,
                                                 train_args)
        self.plan = plan_run(train_args, data_args, model, len(self.sampler), self.echo)
        self._prepare_optimisation(model)
        self._restore_state()
        self._write_run_info()
        self._set_ctc_blank_penalty()
        self._announce()
        self._choose_validation()
        self._open_progress()

    def _start_accelerator(self) -> None:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import ProjectConfiguration

        logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)  # "Removed shared tensor" on tied weights
        AcceleratorState._reset_state()  # several runs in one Python process (tests, notebooks)
        self.output_dir = output_dir = Path(self.args.output_dir).resolve()
        self.mixed_precision = resolve_mixed_precision(self.args.mixed_precision)
        self.trackers = tracker_names(self.args.report_to)
        self.accelerator = Accelerator(
            cpu=cpu_only_distributed(), mixed_precision=self.mixed_precision, log_with=self.trackers or None,
            project_config=ProjectConfiguration(project_dir=str(output_dir),
                                                logging_dir=str(output_dir / "tensorboard")))
        self.main = self.accelerator.is_main_process
        self.threads, self.threads_reason = set_threads(self.accelerator, self.args.num_threads)
        self.checkpoint = prepare_output_dir(self.accelerator, output_dir, self.args)
        if self.main:
            output_dir.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(output_dir)

    def _load_data(self) -> None:
        """The raw splits, the tokenizer (trained on the training split unless given) and the tokenized splits."""
        try:
            with self.accelerator.main_process_first():
                raw = load_raw_datasets(self.data_args)
        except Exception as err:  # the data module's messages name the file, row and column
            raise UsageError(one_line(err)) from err
        if "train" not in raw or len(raw["train"]) == 0:
            raise UsageError("the training split is missing or empty: give --train_file or --dataset_name with a "
                             "non-empty train split")
        self.tokenizer = load_tokenizer(self.accelerator, self.model_args, raw, self.output_dir, self.checkpoint,
                                        self.echo)
        try:
            with self.accelerator.main_process_first():
                self.tokenized = tokenize_datasets(raw, self.tokenizer, self.data_args)
        except Exception as err:
            raise UsageError(one_line(err)) from err

    def _prepare_optimisation(self, model) -> None:
        args = self.args
        optimizer = build_optimizer(model, args)
        # The share of --max_train_minutes spent, as the processes last agreed on it (so they share one rate).
        self.budget_used = 0.0
        self.scheduler = build_scheduler(optimizer, args.lr_scheduler, args.warmup_steps, self.plan.max_steps,
                                         budget_used=self._budget_share if args.max_train_minutes else None)
        if args.torch_compile:
            model.compile(dynamic=True)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.unwrapped = self.accelerator.unwrap_model(self.model)
        # Not prepared: accelerate would step a prepared scheduler once per process and update.
        self.accelerator.register_for_checkpointing(self.scheduler)

    def _budget_share(self) -> float:
        return self.budget_used

    def _restore_state(self) -> None:
        """The resumed run's model, optimizer, schedule, RNG, data position and best-model state, or a fresh state."""
        self.state = state = TrainState()
        checkpoint = self.checkpoint
        if checkpoint is not None:
            self.accelerator.load_state(str(checkpoint))
            saved = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
            self.state = state = TrainState(**{k: v for k, v in saved.items() if k in TrainState.__dataclass_fields__})
            try:
                self.sampler.load_state_dict(state.sampler)
            except ValueError as err:
                raise UsageError(f"--resume {checkpoint}: {one_line(err)}; resume with the same data, --seed, "
                                 "--max_tokens, --max_sentences and number of processes") from err
            if self.main:
                logger.warning("resuming from %s (step %d, epoch %d)", checkpoint, state.step, state.epoch)
        state.stop_reason = None
        if self.args.max_train_minutes:  # a resumed run goes on decaying from where its clock stopped
            self.budget_used = state.train_seconds / (60 * self.args.max_train_minutes)
        self.metrics_log = MetricsLog(self.accelerator, self.output_dir / "metrics.jsonl", bool(self.trackers))
        if checkpoint is not None:
            self.metrics_log.truncate_after(state.step)

    def _write_run_info(self) -> None:
        """training_args.json: the arguments and every value resolved from them; the trackers' hyper-parameters."""
        plan, accelerator = self.plan, self.accelerator
        self.run_info = {
            "model_args": asdict(self.model_args), "data_args": asdict(self.data_args),
            "train_args": asdict(self.args),
            "resolved": {"max_steps": plan.max_steps, "eval_steps": plan.eval_steps, "save_steps": plan.save_steps,
                         "eval_decoding": list(plan.decodings), "scheduled_sampling_k": plan.scheduled_sampling_k,
                         "num_threads": self.threads, "mixed_precision": self.mixed_precision,
                         "num_processes": accelerator.num_processes, "steps_per_epoch": plan.steps_per_epoch,
                         **self.filled_defaults},
        }
        self.checkpoint_extra = {"run": self.run_info["resolved"],
                                 "selection_metric": f"validation/{plan.selection_key}/bleu"}
        if self.main:
            atomic_write_text(self.output_dir / "training_args.json",
                              json.dumps(self.run_info, indent=2, default=str))
        if self.trackers:
            hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                       for group in ("model_args", "train_args") for k, v in self.run_info[group].items()}
            accelerator.init_trackers("copynat", config=hparams)

    def _set_ctc_blank_penalty(self) -> None:
        """--ctc_blank_penalty becomes the generation default (periodic evaluations decode with it too)."""
        config = self.unwrapped.config
        self.ctc = config.uses_nat and config.nat_training == "ctc"
        if self.args.ctc_blank_penalty is not None:
            if not self.ctc:
                raise UsageError("--ctc_blank_penalty applies to CTC models (--nat_training ctc with decoder_mode nat "
                                 f"or hybrid); this one has nat_training={config.nat_training!r}, decoder_mode="
                                 f"{config.decoder_mode!r}")
            set_generation_default(self.unwrapped, ctc_blank_penalty=float(self.args.ctc_blank_penalty))
        elif getattr(self.unwrapped.generation_config, "ctc_blank_penalty", 0.0) and not self.ctc:
            set_generation_default(self.unwrapped, ctc_blank_penalty=0.0)  # a CTC model's, fine-tuned into another

    def _announce(self) -> None:
        self.num_parameters = sum(p.numel() for p in self.unwrapped.parameters())
        if not self.main:
            return
        cfg, plan = self.unwrapped.config, self.plan
        logger.warning("copynat-train: %s model (%s parameters, d_model %d, %d+%d layers, decoder_mode %s, copy %s), "
                       "%d training examples, %d steps (%d per epoch), %d process(es) x %d thread(s) (%s)",
                       self.model_args.model_name_or_path or self.model_args.preset, f"{self.num_parameters:,}",
                       cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.decoder_mode, cfg.use_copy_mechanism,
                       len(self.tokenized["train"]), plan.max_steps, plan.steps_per_epoch,
                       self.accelerator.num_processes, self.threads, self.threads_reason)

    def _choose_validation(self) -> None:
        """The validation split, its first --num_eval_samples for periodic evaluations, and the echo task's entities."""
        self.validation = validation = self.tokenized.get("validation")
        self.periodic_validation = validation
        count = self.args.num_eval_samples
        if validation is not None and count and count < len(validation):
            self.periodic_validation = validation.select(range(count))
        self.entities = {}
        if self.echo:
            for split in ("validation", "test", OOD_SPLIT):
                if split in self.tokenized:
                    self.entities[split] = echo_entities(self.tokenized[split], split)

    def _open_progress(self) -> None:
        from tqdm.auto import tqdm

        self.progress = tqdm(total=self.plan.max_steps, initial=self.state.step, desc="copynat-train", unit="step",
                             dynamic_ncols=True, disable=not (self.main and self.args.progress_bar))
        self.excluded_seconds = 0.0  # spent evaluating and checkpointing, not counted as training time
        self.window = LogWindow()
        self.example_ids: list[int] = []
        # How often processes agree on stopping (time budget, a signal): a collective is a host sync.
        self.agree_every = 1 if self.accelerator.num_processes == 1 else max(1, min(self.args.logging_steps, 10))
        self.last_lr = self.scheduler.get_last_lr()[0]

    # ------------------------------------------------------------------------------------------------ the epochs

    def done(self) -> bool:
        return self.state.step >= self.plan.max_steps or self.state.stop_reason is not None

    def run(self) -> None:
        """Update until max_steps, the time budget, early stopping or a signal; a failure names the checkpoint to
        resume from."""
        self.train_clock, self.seconds_at_start = time.perf_counter(), self.state.train_seconds
        try:
            with StopSignals() as signals:
                while not self.done():
                    self._run_epoch(signals)
                    if self.state.stop_reason == "interrupted":
                        raise TrainingInterrupted(
                            f"interrupted at step {self.state.step}: checkpoint saved in "
                            f"{self.output_dir / 'checkpoints'}; continue with the same command plus --resume")
        except (Exception, KeyboardInterrupt) as err:
            self.progress.close()
            if not isinstance(err, (TrainingInterrupted, UsageError)):
                latest = find_checkpoint(self.output_dir)
                logger.error("training failed at step %d; %s", self.state.step,
                             f"the last complete checkpoint is {latest}: continue with the same command plus --resume"
                             if latest else "no checkpoint was saved yet")
            raise
        self.progress.close()
        if self.state.stop_reason is None:
            self.state.stop_reason = "max_steps"
        if self.args.log_example_ids:
            ids_dir = self.output_dir / "example_ids"
            ids_dir.mkdir(parents=True, exist_ok=True)
            (ids_dir / f"rank-{self.accelerator.process_index}.txt").write_text(
                "".join(f"{i}\n" for i in self.example_ids))

    def _run_epoch(self, signals: StopSignals) -> None:
        """The rest of the current epoch, one update per --gradient_accumulation_steps batches; its last, smaller
        group makes one more update."""
        state = self.state
        self.sampler.set_epoch(state.epoch, start_batch=state.batches_in_epoch)
        pending: list[dict] = []
        for batch in self.loader:
            state.batches_in_epoch += 1
            pending.append(batch)
            if self.args.log_example_ids:
                self.example_ids.extend(self.sampler._rank_batches()[state.batches_in_epoch - 1])
            if len(pending) == self.args.gradient_accumulation_steps:
                self._step(pending, signals, epoch_ends=False)
                pending = []
                if self.done():
                    return
        if pending:
            self._step(pending, signals, epoch_ends=True)
        else:
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0

    def _step(self, batches: list[dict], signals: StopSignals, *, epoch_ends: bool) -> None:
        values, tokens = self.update(batches)
        self.state.step += 1
        self.progress.update(1)
        self.state.train_seconds = (self.seconds_at_start + time.perf_counter() - self.train_clock
                                    - self.excluded_seconds)
        self.window.add(values, tokens)
        if self.state.step % self.args.logging_steps == 0 or self.state.step >= self.plan.max_steps:
            self.log()
        if epoch_ends:  # the checkpoint of this step resumes at the next epoch
            self.state.epoch, self.state.batches_in_epoch = self.state.epoch + 1, 0
        self.step_boundary(signals)

    # ------------------------------------------------------------------------------------------------ update

    def teacher_forcing(self, step: int) -> float:
        args = self.args
        return teacher_forcing_prob(step, args.scheduled_sampling, self.plan.scheduled_sampling_k,
                                    args.scheduled_sampling_min_prob)

    def update(self, batches: list[dict]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One optimizer update over ``batches`` (gradient accumulation); returns ({name: device tensor}, tokens).
        The values (every loss term, the gradient norm, ...) stay on the device: see ``log``."""
        accelerator, model = self.accelerator, self.model
        model.train()
        values: dict[str, torch.Tensor] = {}
        tokens = sum(batch["attention_mask"].sum() + (batch["labels"] != -100).sum() for batch in batches)
        prob = self.teacher_forcing(self.state.step)
        non_blocking = accelerator.device.type == "cuda"
        for index, batch in enumerate(batches):
            batch = {k: v.to(accelerator.device, non_blocking=non_blocking) for k, v in batch.items()}
            last = index == len(batches) - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                loss, terms = self._batch_loss(batch, prob)
                accelerator.backward(loss / len(batches))
            for name, value in terms.items():
                add_to(values, name, value.detach() / len(batches))
        if self.args.max_grad_norm > 0:
            values["grad_norm"] = accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm).detach()
        self.last_lr = self.scheduler.get_last_lr()[0]  # the rate of this update (a Python float: no sync)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return values, tokens

    def _batch_loss(self, batch: dict, prob: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to back-propagate for one batch, and the values to log: the model's loss terms, the share of
        decoder inputs scheduled sampling replaced, the RL rewards."""
        logged: dict[str, torch.Tensor] = {}
        if prob < 1.0:
            with self.accelerator.autocast():
                batch["decoder_input_ids"], replaced = scheduled_sampling_decoder_inputs(self.unwrapped, batch, prob)
            logged["replaced_fraction"] = replaced.sum() / (batch["labels"] != -100).sum().clamp_min(1)
        output = self.model(**batch, return_logits=False)  # the loss only: no [batch, tgt, vocab] mixture
        logged.update(loss_terms(output))
        loss = output.loss
        if self.args.objective == "rl":
            rl_loss, rewards = self_critical_loss(
                self.unwrapped, batch["input_ids"], batch["attention_mask"], self.decode_text(batch["labels"]),
                self.decode_text, metric=self.args.rl_reward, max_new_tokens=self.plan.max_new_tokens)
            loss = (1.0 - self.args.rl_weight) * loss + self.args.rl_weight * rl_loss
            logged.update({key: torch.tensor(value) for key, value in rewards.items()})
        return loss, logged

    def decode_text(self, ids: torch.Tensor) -> list[str]:
        ids = ids.masked_fill(ids == -100, self.tokenizer.pad_token_id)
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ------------------------------------------------------------------------------------------------ log

    def log(self) -> None:
        """Write the averages since the last logging step to metrics.jsonl (and the trackers): every loss term the
        model returned, by its name, then the rate, speed and what the objective adds."""
        window = self.window
        if window.updates == 0:
            return
        seconds = max(window.seconds(self.excluded_seconds), 1e-9)
        averages, all_tokens = window.averages(self.accelerator)
        self.state.train_tokens += int(all_tokens)
        record: dict[str, Any] = {name: round(averages[name], 5) for name in loss_names_first(averages)
                                  if name.endswith("loss")}
        record.update(learning_rate=self.last_lr, tokens_per_second=round(all_tokens / seconds, 1),
                      steps_per_second=round(window.updates / seconds, 3))
        if self.args.scheduled_sampling != "none":
            record["teacher_forcing_prob"] = round(self.teacher_forcing(self.state.step - 1), 4)
            averages.setdefault("replaced_fraction", 0.0)  # none replaced while the probability is still 1
        record.update({name: round(averages[name], 4) for name in loss_names_first(averages)
                       if not name.endswith("loss")})
        self.metrics_log.write("train", self.state.step, record, epoch=self.state.epoch,
                               time=round(self.state.train_seconds, 2))
        self.progress.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:,.0f}")
        self.window = LogWindow(self.excluded_seconds)

    # ------------------------------------------------------------------------------------------------ evaluate and save

    def _agreed(self, flag: bool) -> bool:
        """True when any process raised ``flag`` (every process gets the same answer)."""
        if self.accelerator.num_processes == 1:
            return flag
        flags = torch.tensor([float(flag)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flags, reduction="sum").item() > 0)

    def _agreed_mean(self, value: float) -> float:
        """The mean of ``value`` over the processes (the same number on each)."""
        if self.accelerator.num_processes == 1:
            return value
        values = torch.tensor([value], device=self.accelerator.device)
        return float(self.accelerator.reduce(values, reduction="mean").item())

    def _stop_flags(self, signals: StopSignals, last: bool) -> tuple[bool, bool]:
        """(out of time, stop requested), agreed by all processes every ``agree_every`` steps: clocks and signals
        differ between processes, and they must stop together."""
        state, minutes = self.state, self.args.max_train_minutes
        if state.step % self.agree_every != 0 and not last:
            return False, False
        if minutes:
            self.budget_used = self._agreed_mean(state.train_seconds) / (60 * minutes)
        out_of_time = self._agreed(bool(minutes) and state.train_seconds >= 60 * minutes)
        return out_of_time, self._agreed(signals.requested is not None)  # a signal may reach only one process

    def step_boundary(self, signals: StopSignals) -> None:
        """After each update: decide whether to stop, evaluate and checkpoint on schedule (not training time)."""
        started = time.perf_counter()
        state, plan = self.state, self.plan
        last = state.step >= plan.max_steps
        out_of_time, stop_requested = self._stop_flags(signals, last)
        if out_of_time and state.stop_reason is None:
            state.stop_reason = "time_budget"
        last = last or out_of_time
        if (last or stop_requested) and state.step % self.args.logging_steps != 0:
            self.log()
        improved = (state.step % plan.eval_steps == 0 or last) and self.evaluate()
        if stop_requested and state.stop_reason is None:
            state.stop_reason = "interrupted"
        if state.step % plan.save_steps == 0 or improved or last or state.stop_reason is not None:
            self.save()
        self.excluded_seconds += time.perf_counter() - started

    def evaluate_validation(self, dataset) -> dict[str, Any]:
        """Loss terms and the scores of every decoding on ``dataset`` (validation or the start of it)."""
        known = self.entities.get("validation")
        return evaluate_generation(self.accelerator, self.model, self.tokenizer, dataset, self.plan.decodings,
                                   batch_size=self.args.eval_batch_size, max_new_tokens=self.plan.max_new_tokens,
                                   entities=known and known["entities"][:len(dataset)], seed=self.args.seed)

    def evaluate(self) -> bool:
        """Periodic evaluation, logged; keeps the best model's state and counts towards early stopping. True when
        it found a new best model."""
        if self.periodic_validation is None:
            return False
        state, key = self.state, self.plan.selection_key
        results = self.evaluate_validation(self.periodic_validation)
        results.pop("_predictions", None)
        self.metrics_log.write("eval", state.step, flatten_metrics(results), split="validation",
                               time=round(state.train_seconds, 2), epoch=state.epoch)
        value = results[key]["bleu"]
        improved = state.best_metric is None or value > state.best_metric
        if improved:
            state.best_metric, state.best_step, state.bad_evaluations = value, state.step, 0
            state.best_metrics = results
            state.best_eval_complete = len(self.periodic_validation) == len(self.validation)
        else:
            state.bad_evaluations += 1
            patience = self.args.early_stopping_patience
            if patience and state.bad_evaluations >= patience:
                state.stop_reason = "early_stopping"
        if self.main:
            from tqdm.auto import tqdm

            scores = ", ".join(f"{name} BLEU {results[name]['bleu']:.2f} EM {results[name]['exact_match']:.1f}"
                               for name in self.plan.decodings)
            best = " (best)" if improved else f" (best {state.best_metric:.2f} at step {state.best_step})"
            tqdm.write(f"step {state.step}: validation loss {results.get('loss', float('nan')):.4f}, {scores}{best}")
        return improved

    def save(self) -> None:
        """A resumable checkpoint at this step (atomic: see :func:`copynat.training.checkpoints.save_checkpoint`)."""
        state = self.state
        state.sampler = {**self.sampler.state_dict(), "epoch": state.epoch, "batches_yielded": state.batches_in_epoch}
        save_checkpoint(self.accelerator, self.output_dir, state, tokenizer=self.tokenizer, model=self.model,
                        keep=self.args.keep_checkpoints, extra=self.checkpoint_extra)

    def load_best_weights(self) -> Path | None:
        """The best checkpoint's weights into the model (the last ones stay without validation data)."""
        if self.state.best_step is None:
            return None
        from .checkpoints import CHECKPOINT_PREFIX

        best = self.output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{self.state.best_step:08d}"
        load_model_weights(self.unwrapped, best)
        return best
