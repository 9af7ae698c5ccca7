"""What a copynat model folder must hold, and which of its files a push publishes: the rules that ``copynat-push``
(hub.py) and the model card (model_card.py) share."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from pathlib import Path

__all__ = ["DELETE_PATTERNS", "IGNORE_PATTERNS", "MissingFilesError", "PUBLISH_PATTERNS", "PushError", "check_folder",
           "publishable_files"]

#: Top-level files of a run folder that are published (fnmatch patterns, as ``upload_folder`` applies them).
PUBLISH_PATTERNS = [
    "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
    "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "chat_template.jinja",
    "*.py",  # the modeling code save_pretrained copies for trust_remote_code=True (a run folder holds no other)
    "README.md",
    "results.json", "metrics.jsonl", "training_args.json", "training_curves.png", "test_predictions.*.txt",
]
#: Never published: subfolders (``*`` matches "/" in huggingface_hub's patterns) and hidden files.
IGNORE_PATTERNS = ["*/*", ".*"]
#: Remote files removed when the folder no longer has them (the card is kept: it is always re-uploaded or kept on
#: purpose).
DELETE_PATTERNS = [p for p in PUBLISH_PATTERNS if p != "README.md"]


_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import\b", re.M)


class PushError(Exception):
    """A push that cannot be done; the message says why (``copynat-push`` prints it, exit code 2)."""


class MissingFilesError(PushError, FileNotFoundError):
    """The folder lacks files a loadable model needs."""

    def __init__(self, folder: Path, missing: list[str]):
        self.folder, self.missing = folder, missing
        what = "does not exist" if not folder.is_dir() else \
            f"is not a complete copynat model folder: missing {', '.join(missing)}"
        super().__init__(f"{folder} {what} (save the model and tokenizer with save_pretrained(), or give the "
                         "output_dir of copynat-train)")


def _published(name: str) -> bool:
    return any(fnmatchcase(name, p) for p in PUBLISH_PATTERNS) and not any(
        fnmatchcase(name, p) for p in IGNORE_PATTERNS)


def check_folder(folder: str | Path) -> Path:
    """Raise ``MissingFilesError`` naming every missing file: the weights, ``config.json``, and the modeling code
    files that ``config.json``'s ``auto_map`` points to (without them ``trust_remote_code=True`` fails)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFilesError(folder, ["model.safetensors", "config.json"])
    missing = []
    if not ((folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()):
        missing.append("model.safetensors")
    config_path = folder / "config.json"
    if not config_path.is_file():
        missing.append("config.json")
    else:
        try:
            auto_map = json.loads(config_path.read_text(encoding="utf-8")).get("auto_map") or {}
        except ValueError as err:
            raise PushError(f"{config_path} is not valid JSON: {err}") from err
        pending = {ref.split("--")[-1].rsplit(".", 1)[0] for value in auto_map.values()
                   for ref in (value if isinstance(value, list) else [value]) if ref}
        modules: set[str] = set()
        while pending:  # the auto_map modules and the sibling modules they import (from .x import y)
            module = pending.pop()
            modules.add(module)
            path = folder / f"{module}.py"
            if path.is_file():
                pending |= set(_RELATIVE_IMPORT.findall(path.read_text(encoding="utf-8"))) - modules
        missing += sorted(f"{module}.py" for module in modules if not (folder / f"{module}.py").is_file())
    if missing:
        raise MissingFilesError(folder, missing)
    return folder


def publishable_files(folder: str | Path, *, check: bool = True) -> list[str]:
    """The files of ``folder`` that ``push_folder`` uploads (README.md included only if it exists already)."""
    folder = check_folder(folder) if check else Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and _published(p.name))
