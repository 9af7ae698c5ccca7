"""The set-up of a ``copynat-train`` run, before its first update: the output folder, threads, trackers, the tokenizer
(trained or loaded), the model (built from a preset or loaded), the optimizer, and the signal handling that turns
Ctrl-C into a checkpoint."""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .arguments import (DEFAULT_VOCAB_SIZE, ECHO_VOCAB_SIZE, FINETUNE_FIELDS, ModelArguments, TrainArguments,
                        parse_decodings)
from .checkpoints import find_checkpoint
from .data import OOD_SPLIT, DataArguments, Seq2SeqCollator, TokenBudgetBatchSampler, example_lengths
from .errors import UsageError
from .schedules import default_schedule_k

logger = logging.getLogger("copynat.training")


def is_echo(data_args: DataArguments) -> bool:
    return data_args.dataset_name is None and not data_args.split_files()


def resolve_mixed_precision(requested: str) -> str:
    if requested != "fp16":
        return requested
    accelerated = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())
    if accelerated and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true", "yes"):
        return requested
    logger.warning("--mixed_precision fp16 needs a GPU (CUDA, XPU or MPS) and this run is on a CPU: training in full "
                   "fp32 precision instead (use --mixed_precision bf16 for bfloat16 autocast on a CPU)")
    return "no"


def cpu_only_distributed() -> bool:
    """True for several processes on a machine with fewer GPUs than processes on it (``torchrun --nproc_per_node 2``
    on a CPU machine, or on one GPU): Accelerate joins them with gloo on the CPU only when told ``cpu=True``;
    otherwise each process would train alone, or every rank but one would ask for a GPU that does not exist."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("LOCAL_RANK", "-1")) != -1
    if not launched:
        return False
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    devices = (torch.cuda.device_count() if torch.cuda.is_available() else
               torch.xpu.device_count() if hasattr(torch, "xpu") and torch.xpu.is_available() else 0)
    if 0 < devices < local_processes:
        logger.warning("%d processes on this machine but %d GPU(s): training on the CPU with gloo", local_processes,
                       devices)
    return devices < local_processes


def tracker_names(report_to: str) -> list[str]:
    names = [n.strip() for n in report_to.split(",") if n.strip()]
    if names in (["none"], ["jsonl"], []):
        return []
    if names == ["auto"]:
        try:
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            return []
        return ["tensorboard"]
    return [n for n in names if n not in ("jsonl", "auto")]


def _fastest_thread_count(limit: int) -> int:
    """1 or ``limit`` intra-op threads, whichever multiplies a training-sized matrix faster right now.  On a CPU that
    other processes keep busy, extra threads spin-wait for each other and a run can be several times slower than
    with one thread; on an idle machine all cores win."""
    a, b = torch.randn(4096, 256), torch.randn(256, 1024)
    timings = {1: float("inf"), limit: float("inf")}
    for _ in range(3):  # best of 3, alternating: a passing hiccup must not decide a 30-minute run
        for threads in timings:
            torch.set_num_threads(threads)
            a @ b
            start = time.perf_counter()
            for _ in range(5):
                a @ b
            timings[threads] = min(timings[threads], time.perf_counter() - start)
    return 1 if timings[limit] > timings[1] else limit


def set_threads(accelerator, num_threads: int | None) -> tuple[int, str]:
    """CPU threads per process: --num_threads, else all available cores shared among the local processes, unless
    the CPU is so busy that one thread is faster (measured)."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)
        return num_threads, "--num_threads"
    if accelerator.device.type != "cpu":
        return torch.get_num_threads(), "default"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    threads = max(1, cores // max(1, local))
    reason = f"{cores} cores / {local} process(es)"
    if threads > 1 and _fastest_thread_count(threads) == 1:
        reason = f"the CPU is busy: 1 thread measured faster than {threads} (force with --num_threads)"
        threads = 1
    torch.set_num_threads(threads)
    return threads, reason


_RUN_ARTIFACTS = ("checkpoints", "metrics.jsonl", "results.json", "model.safetensors", "tensorboard")


def prepare_output_dir(accelerator, output_dir: Path, train_args: TrainArguments) -> Path | None:
    """Refuse to mix two runs in one folder; find the checkpoint to resume from."""
    if train_args.resume is not None:
        checkpoint = find_checkpoint(output_dir, train_args.resume)
        if checkpoint is None:
            logger.warning("--resume: no complete checkpoint in %s, starting from scratch", output_dir / "checkpoints")
            if accelerator.is_main_process:  # what a run that died before its first checkpoint left behind
                for name in ("metrics.jsonl", "results.json"):
                    (output_dir / name).unlink(missing_ok=True)
            accelerator.wait_for_everyone()
        return checkpoint
    existing = [name for name in _RUN_ARTIFACTS if (output_dir / name).exists()]
    if existing and not train_args.overwrite_output_dir:
        raise UsageError(f"output_dir {output_dir} already holds a run ({', '.join(existing)}): pass --resume to "
                         "continue it, --overwrite_output_dir to start over, or choose another --output_dir")
    if existing and accelerator.is_main_process:
        for name in _RUN_ARTIFACTS + ("training_curves.png", "example_ids"):
            path = output_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    return None


def load_tokenizer(accelerator, model_args: ModelArguments, raw, output_dir: Path, checkpoint: Path | None,
                    echo: bool):
    from transformers import AutoTokenizer

    source = None
    if checkpoint is not None and (checkpoint / "tokenizer.json").is_file():
        source = checkpoint
    elif model_args.tokenizer_name_or_path:
        source = model_args.tokenizer_name_or_path
    elif model_args.model_name_or_path:
        source = model_args.model_name_or_path
    if source is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=model_args.trust_remote_code)
        except Exception as err:
            raise UsageError(f"could not load the tokenizer from {source}: {one_line(err)}") from err
    else:
        from copynat.tokenization import iter_text_batches, train_tokenizer

        vocab_size = model_args.vocab_size or (ECHO_VOCAB_SIZE if echo else DEFAULT_VOCAB_SIZE)
        with accelerator.main_process_first():  # the main process trains and saves; the others load its files
            if accelerator.is_main_process:
                if "train" not in raw:
                    raise UsageError("no training split: give --train_file (or --dataset_name with a train split)")
                tokenizer = train_tokenizer(iter_text_batches(raw["train"], ("source", "target")), vocab_size,
                                            model=model_args.tokenizer_model)
                output_dir.mkdir(parents=True, exist_ok=True)
                tokenizer.save_pretrained(output_dir)
            else:
                tokenizer = AutoTokenizer.from_pretrained(str(output_dir))
        return tokenizer
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(output_dir)
    return tokenizer


def build_model(model_args: ModelArguments, data_args: DataArguments, tokenizer, checkpoint: Path | None,
                 echo: bool = False):
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, GenerationConfig

    from copynat import CopyNatConfig, CopyNatForConditionalGeneration

    special = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                   bos_token_id=tokenizer.bos_token_id, unk_token_id=tokenizer.unk_token_id,
                   mask_token_id=tokenizer.mask_token_id, decoder_start_token_id=tokenizer.bos_token_id)
    try:
        if checkpoint is not None:  # the architecture of the run being resumed, whatever the flags say
            config = AutoConfig.from_pretrained(str(checkpoint))
            model = CopyNatForConditionalGeneration(config)
        elif model_args.model_name_or_path:
            overrides = model_args.config_overrides()
            fixed = sorted(set(overrides) - set(FINETUNE_FIELDS))
            if fixed:
                raise UsageError(f"--model_name_or_path {model_args.model_name_or_path}: {', '.join(fixed)} cannot "
                                 f"change when fine-tuning (the weights fix them); allowed: {', '.join(FINETUNE_FIELDS)}")
            model = AutoModelForSeq2SeqLM.from_pretrained(model_args.model_name_or_path, **overrides,
                                                          trust_remote_code=model_args.trust_remote_code)
            if len(tokenizer) > model.config.vocab_size:
                raise UsageError(f"the tokenizer has {len(tokenizer)} tokens but the model "
                                 f"{model_args.model_name_or_path} only {model.config.vocab_size}")
        else:
            settings = model_args.new_model_config(echo)
            settings.setdefault("max_position_embeddings",
                                max(512, data_args.max_source_length, data_args.max_target_length + 1))
            config = CopyNatConfig(vocab_size=len(tokenizer), **special, **settings)
            model = CopyNatForConditionalGeneration(config)
            model.set_vocabulary(tokenizer.get_vocab())
    except UsageError:
        raise
    except (ValueError, OSError, TypeError) as err:
        raise UsageError(one_line(err)) from err
    if checkpoint is None and not model_args.model_name_or_path:
        model.generation_config = GenerationConfig(
            decoder_start_token_id=special["decoder_start_token_id"], bos_token_id=special["bos_token_id"],
            eos_token_id=special["eos_token_id"], pad_token_id=special["pad_token_id"],
            max_new_tokens=data_args.max_target_length, use_cache=True)
    return model


def echo_entities(dataset, split: str) -> dict[str, list[list[str]]] | None:
    """The echo task's entity lists and their categories of a split (load_raw_datasets keeps only source/target),
    re-made from its seed."""
    from copynat.data import make_echo_examples, make_echo_ood_examples

    examples = make_echo_ood_examples(len(dataset)) if split == OOD_SPLIT else make_echo_examples(len(dataset), split)
    if [e["source"] for e in examples] != list(dataset["source"]):
        return None
    return {"entities": [e["entities"] for e in examples], "categories": [e["categories"] for e in examples]}


#: Updates of the default run on the embedded echo task (its hybrid model copies >= 95 % of the entities of both
#: test splits after 1,600; after 1,000 only 92 % out of distribution).
ECHO_DEFAULT_STEPS = 1600
#: Epochs when the data is not the echo task and neither --max_steps nor --num_epochs is given.
DEFAULT_EPOCHS = 10.0


@dataclass
class RunPlan:
    """The numbers of a run, resolved from the arguments, the data and the model."""

    max_steps: int
    eval_steps: int
    save_steps: int
    steps_per_epoch: int
    scheduled_sampling_k: float | None
    decodings: dict[str, dict[str, Any]]
    max_new_tokens: int

    @property
    def selection_key(self) -> str:
        """The decoding whose validation BLEU selects the best model: the first one."""
        return next(iter(self.decodings))


def plan_run(train_args: TrainArguments, data_args: DataArguments, model, batches_per_epoch: int,
             echo: bool) -> RunPlan:
    """Steps, evaluation and save intervals, the scheduled-sampling parameter and the decodings of a run."""
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / train_args.gradient_accumulation_steps))
    if train_args.max_steps is not None:
        max_steps = train_args.max_steps
    elif train_args.num_epochs is None and echo:
        max_steps = ECHO_DEFAULT_STEPS
    else:
        max_steps = max(1, round((train_args.num_epochs or DEFAULT_EPOCHS) * steps_per_epoch))
    eval_steps = train_args.eval_steps or max(1, math.ceil(max_steps / 4))
    schedule_k = train_args.scheduled_sampling_k
    if train_args.scheduled_sampling != "none" and schedule_k is None:
        schedule_k = default_schedule_k(train_args.scheduled_sampling, max_steps,
                                        train_args.scheduled_sampling_min_prob)
    return RunPlan(max_steps=max_steps, eval_steps=eval_steps, save_steps=train_args.save_steps or eval_steps,
                   steps_per_epoch=steps_per_epoch, scheduled_sampling_k=schedule_k,
                   decodings=choose_decodings(model, train_args.eval_decoding),
                   max_new_tokens=train_args.eval_max_new_tokens or data_args.max_target_length)


def check_objective(model, model_args: ModelArguments, train_args: TrainArguments) -> None:
    """Scheduled sampling and RL train the autoregressive decoder; RL needs a trained model to sample from."""
    if model.config.decoder_mode == "nat" and train_args.scheduled_sampling != "none":
        raise UsageError("--scheduled_sampling applies to the autoregressive objective; this model has "
                         "decoder_mode='nat' (use ar or hybrid)")
    if train_args.objective == "rl":
        if not model_args.model_name_or_path:
            raise UsageError("--objective rl fine-tunes a trained model on the metric (sampling from an untrained "
                             "model earns no reward): give --model_name_or_path")
        if model.config.decoder_mode == "nat":
            raise UsageError("--objective rl trains the autoregressive decoder; this model has decoder_mode='nat'")


def choose_decodings(model, spec: str | None) -> dict[str, dict[str, Any]]:
    """The evaluation decodings (``--eval_decoding`` or the model's default), less those the model cannot run."""
    decodings = parse_decodings(spec or default_decodings(model))
    for name in [n for n, kwargs in decodings.items() if kwargs.get("non_autoregressive")]:
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
    return decodings


def build_loader(accelerator, train_data, tokenizer, train_args: TrainArguments):
    """The training batches: token-budget batches bucketed by length, sharded among the processes by the sampler.
    Returns ``(sampler, loader)``."""
    sampler = TokenBudgetBatchSampler(
        example_lengths(train_data), train_args.max_tokens, max_sentences=train_args.max_sentences, shuffle=True,
        seed=train_args.seed, num_replicas=accelerator.num_processes, rank=accelerator.process_index)
    # The sampler shards the batches (num_replicas/rank): this DataLoader must not be passed to
    # accelerator.prepare (that would shard it a second time). Its own generator keeps the global RNG untouched.
    loader = torch.utils.data.DataLoader(
        train_data.select_columns(["input_ids", "labels"]), batch_sampler=sampler,
        collate_fn=Seq2SeqCollator(tokenizer), num_workers=train_args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(train_args.seed),
        pin_memory=accelerator.device.type == "cuda")  # so that the copy to the GPU can overlap (non_blocking)
    return sampler, loader


def default_decodings(model) -> str:
    mode = model.config.decoder_mode
    if getattr(model.config, "nat_training", None) == "ctc":  # one pass: CTC has no refinement
        return {"ar": "greedy", "nat": "nat1", "hybrid": "greedy,nat1"}[mode]
    return {"ar": "greedy", "nat": "nat4,nat1", "hybrid": "greedy,nat4"}[mode]


def one_line(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, KeyError):
        text = f"missing key {text}"
    return " ".join(text.split())


def build_optimizer(model, args: TrainArguments) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    seen = set()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        if parameter.ndim < 2 or "norm" in name or "embed" in name or "shared" in name:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    settings = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    try:  # one fused kernel for all parameters (CPU and CUDA): 3x faster than the per-tensor loop on a CPU
        return torch.optim.AdamW(groups, fused=True, **settings)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, foreach=None, **settings)


class StopSignals:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the next step boundary and stops (a second signal
    interrupts at once)."""

    def __init__(self):
        self.requested: str | None = None
        self._previous: dict = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        logger.warning("%s received: saving a checkpoint at the end of this step (send it again to stop at once)",
                       self.requested)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


# ------------------------------------------------------------------------------------------------ train
