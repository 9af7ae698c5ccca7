"""Fault-tolerant checkpoints: ``accelerator.save_state`` into ``checkpoints/step-N`` written under a temporary
name and renamed when complete, so that a crash during a save never leaves a broken "latest"; resume finds the newest
complete one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
import torch

from .errors import UsageError

logger = logging.getLogger("copynat.training")

CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainState:
    """What ``trainer_state.json`` stores besides ``accelerator.save_state`` (model, optimizer, scheduler, RNG)."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of this epoch the loop consumed (per process), the resume position
    train_seconds: float = 0.0
    train_tokens: int = 0  # source + target tokens of all processes
    best_metric: float | None = None
    best_step: int | None = None
    best_metrics: dict | None = None  # validation metrics of the best evaluation
    best_eval_complete: bool = False  # the best evaluation covered the whole validation split
    bad_evaluations: int = 0
    stop_reason: str | None = None
    sampler: dict = field(default_factory=dict)
    format: str = "copynat-trainer-state/1"


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file + fsync + os.replace: readers see the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _checkpoint_step(path: Path) -> int | None:
    match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", path.name)
    return int(match.group(1)) if match else None


def _complete(path: Path) -> bool:
    return path.is_dir() and _checkpoint_step(path) is not None and (path / STATE_FILE).is_file()


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if _complete(p)), key=_checkpoint_step)


def find_checkpoint(output_dir: str | Path, resume: str = "latest") -> Path | None:
    """The checkpoint to resume from: the one ``checkpoints/latest`` names, else the newest complete one; or the
    folder ``resume`` names (a checkpoint, or a run's output_dir)."""
    if resume != "latest":
        path = Path(resume)
        if _complete(path):
            return path
        if (path / "checkpoints").is_dir():
            return find_checkpoint(path)
        raise UsageError(f"--resume {resume}: not a complete copynat checkpoint (a checkpoints/{CHECKPOINT_PREFIX}N "
                         f"folder with {STATE_FILE}) nor an output_dir holding one")
    root = Path(output_dir) / "checkpoints"
    pointer = root / "latest"
    if pointer.is_file():
        target = root / pointer.read_text(encoding="utf-8").strip()
        if _complete(target):
            return target
        logger.warning("checkpoints/latest names %s, which is not a complete checkpoint; using the newest one", target)
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def _prune_checkpoints(output_dir: Path, keep: int, protect: int | None) -> None:
    found = complete_checkpoints(output_dir)
    keep_paths = set(found[-keep:])
    for path in found:
        if path not in keep_paths and _checkpoint_step(path) != protect:
            shutil.rmtree(path, ignore_errors=True)


def _remove_stale_temporaries(output_dir: Path) -> None:
    root = output_dir / "checkpoints"
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(".tmp-") or path.name.startswith(".latest.tmp-"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _write_trainer_state(folder: Path, state: TrainState, extra: dict) -> None:
    """Last file written into a checkpoint: its presence marks the checkpoint complete."""
    payload = {**asdict(state), **extra}
    with open(folder / STATE_FILE, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())


def save_checkpoint(accelerator, output_dir: Path, state: TrainState, *, tokenizer, model, keep: int,
                    extra: dict) -> Path:
    """Checkpoint at ``state.step``: ``accelerator.save_state`` (model, optimizer, scheduler, RNG of every process)
    + tokenizer + config + ``trainer_state.json`` in ``checkpoints/.tmp-step-N``, renamed to ``step-N`` when
    complete; then ``checkpoints/latest`` is replaced atomically and old checkpoints are pruned."""
    root = output_dir / "checkpoints"
    name = f"{CHECKPOINT_PREFIX}{state.step:08d}"
    final, tmp = root / name, root / f".tmp-{name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tokenizer.save_pretrained(tmp)
        accelerator.unwrap_model(model).config.to_json_file(tmp / "config.json")
        _write_trainer_state(tmp, state, extra)
        _fsync_dir(tmp)
        if final.exists():  # a re-run of the same step after a resume
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        atomic_write_text(root / "latest", name + "\n")
        _prune_checkpoints(output_dir, keep, protect=state.best_step)
    accelerator.wait_for_everyone()
    return final


def load_model_weights(model, checkpoint: Path) -> None:
    """Load the model weights of an ``accelerator.save_state`` checkpoint into an unwrapped model."""
    from safetensors.torch import load_file

    path = checkpoint / "model.safetensors"
    if path.is_file():
        weights = load_file(str(path))
    else:
        weights = torch.load(checkpoint / "pytorch_model.bin", map_location="cpu", weights_only=True)
    weights = {k.removeprefix("module."): v for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"output_head.lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"checkpoint {checkpoint} does not match the model: missing {sorted(set(missing) - tied)}, "
                           f"unexpected {sorted(unexpected)}")
