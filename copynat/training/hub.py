"""Publish a copynat model folder to the Hugging Face Hub as one commit; the ``copynat-push`` command.

``push_folder(folder, "org/name")`` uploads the files a user of the model needs, and nothing else:

* ``model.safetensors`` (or its shards + index), ``config.json`` (with ``auto_map``), ``generation_config.json``;
* the tokenizer files (``tokenizer.json``, ``tokenizer_config.json``, ...);
* the modeling code ``save_pretrained`` copied for remote loading (``configuration_copynat.py``,
  ``modeling_copynat.py``, ``generation_copynat.py``, ...) and the pipeline (``pipeline_copynat.py``), so
  ``trust_remote_code=True`` and ``pipeline(model=repo_id, trust_remote_code=True)`` work without copynat;
* ``README.md``, the model card (written from the run's files when missing, refreshed when copynat wrote it);
* the evidence behind the card: ``results.json`` (every number of the card), ``metrics.jsonl`` (the training log),
  ``training_args.json`` (all arguments), ``training_curves.png`` and ``test_predictions.*.txt`` when present.
  They are small text files (kilobytes) and let anyone re-check the card or re-score the outputs;
* with ``--with_demo``: the demo app, ``app.py`` (showing the pushed model) and its ``requirements.txt``, which a
  Gradio Space runs as they are (``copynat.demo``).

Never uploaded: anything in a subfolder (``checkpoints/`` with optimizer states, ``tensorboard/``, ``runs/``,
``example_ids/``), hidden files, and any file outside the list above.  Files of an earlier push that match the list
but are gone from the folder (an old ``metrics.jsonl``, old shards) are deleted in the same commit, so the repository
mirrors the folder.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Sequence

from .model_card import is_copynat_card, write_model_card
from .model_folder import (DELETE_PATTERNS, IGNORE_PATTERNS, PUBLISH_PATTERNS, MissingFilesError, PushError,
                           check_folder, publishable_files)

logger = logging.getLogger("copynat.training")

__all__ = [
    "DELETE_PATTERNS",
    "IGNORE_PATTERNS",
    "MissingFilesError",
    "NotLoggedInError",
    "PUBLISH_PATTERNS",
    "PushError",
    "check_folder",
    "ensure_model_card",
    "publishable_files",
    "push_folder",
    "push_main",
]

class NotLoggedInError(PushError):
    """No Hub token, or one the Hub rejects."""


def ensure_model_card(folder: str | Path, *, card: str = "auto", repo_id: str | None = None) -> Path | None:
    """Write or refresh ``folder/README.md`` before a push.

    ``card``: ``auto`` writes the card when there is none, and regenerates a card copynat wrote (so the usage
    snippet names ``repo_id`` and the numbers match the folder's files) while keeping its options; a README written
    by hand is kept.  ``refresh`` always regenerates (a hand-written README is replaced).  ``keep`` never writes.
    Returns the card's path, or None when there is none."""
    if card not in ("auto", "refresh", "keep"):
        raise ValueError(f"card must be 'auto', 'refresh' or 'keep', got {card!r}")
    readme = Path(folder) / "README.md"
    if card == "keep" or (card == "auto" and readme.is_file() and not is_copynat_card(readme)):
        return readme if readme.is_file() else None
    return write_model_card(folder, **({"repo_id": repo_id} if repo_id else {}))


def _token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise NotLoggedInError("not logged in to the Hugging Face Hub: run `hf auth login`, set the HF_TOKEN "
                               "environment variable, or pass a token (a write token is needed to push)")
    return token


def _hub_error(err: Exception, repo_id: str) -> PushError:
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    detail = " ".join(str(err).split())
    if status == 401:
        return NotLoggedInError(f"the Hub rejected the token (401 Unauthorized): log in again with `hf auth login` "
                                f"or set a valid HF_TOKEN ({detail})")
    if status == 403:
        return PushError(f"the token may not write to {repo_id} (403 Forbidden): use a write token of a user or "
                         f"organization that owns the namespace ({detail})")
    return PushError(f"pushing to {repo_id} failed: {detail}")


@contextlib.contextmanager
def _hub_errors(api, repo_id: str):
    """Hub failures as one-line ``PushError``s."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as err:
        raise _hub_error(err, repo_id) from err
    except Exception as err:  # no network, HF_HUB_OFFLINE=1, proxy errors (httpx's errors are not OSErrors)
        if isinstance(err, OSError) or type(err).__module__.split(".")[0] in ("httpx", "httpx2"):
            raise PushError(f"could not reach the Hub at {api.endpoint} to push {repo_id}: "
                            f"{type(err).__name__}: {err}") from err
        raise


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, commit_message: str | None = None,
                token: str | None = None, revision: str | None = None, card: str = "auto",
                commit_description: str | None = None, with_demo: bool = False):
    """Create ``repo_id`` if needed (``exist_ok``) and upload the publishable files of ``folder`` in ONE commit.

    Returns the ``huggingface_hub.CommitInfo`` of the commit: a ``str`` (the commit URL) with ``.oid`` (the sha).
    ``card`` as in ``ensure_model_card``; ``revision``: a branch, created from main if it does not exist.
    ``with_demo``: also publish the demo app (``app.py``, showing ``repo_id``, and ``requirements.txt``, written
    into the folder first), so that a Space with those two files runs it (``copynat.demo``).
    Raises ``MissingFilesError`` (names the missing files), ``NotLoggedInError`` (no token or a rejected one) or
    ``PushError`` (other Hub errors, one line).
    """
    from huggingface_hub import HfApi

    folder = check_folder(folder)
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        logger.warning("%s has no tokenizer files: AutoTokenizer.from_pretrained will not load the pushed repo "
                       "(save the tokenizer with tokenizer.save_pretrained(folder))", folder)
    token = _token(token)
    api = HfApi(token=token)
    with _hub_errors(api, repo_id):
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id  # "name" -> "user/name"
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
    ensure_model_card(folder, card=card, repo_id=repo_id)  # the usage snippet names the full repo id
    allow = list(PUBLISH_PATTERNS)
    if with_demo:
        from ..demo import DEMO_FILES, write_demo_files

        write_demo_files(folder, repo_id)
        allow += [name for name in DEMO_FILES if name not in allow]
    files = publishable_files(folder) + (["requirements.txt"] if with_demo else [])
    with _hub_errors(api, repo_id):
        info = api.upload_folder(
            repo_id=repo_id, folder_path=folder, allow_patterns=allow, ignore_patterns=list(IGNORE_PATTERNS),
            delete_patterns=DELETE_PATTERNS, revision=revision,
            commit_message=commit_message or f"Upload copynat model ({len(files)} files from {folder.resolve().name})",
            commit_description=commit_description)
    logger.info("pushed %d files to %s (commit %s)", len(files), repo_id, info.oid)
    return info


def push_main(argv: Sequence[str] | None = None) -> int:
    """``copynat-push FOLDER --repo_id org/name [--private] [--commit_message ...]``: publish a saved model folder
    (the output_dir of copynat-train) as one commit; prints the commit URL.  Errors: one line, exit code 2."""
    parser = argparse.ArgumentParser(
        prog="copynat-push", description="Publish a copynat model folder (model, tokenizer, modeling code, model "
                                         "card, results) to the Hugging Face Hub as one commit.")
    parser.add_argument("folder", help="The model folder: the output_dir of copynat-train, or a save_pretrained one.")
    parser.add_argument("--repo_id", required=True, help="Hub repository, org/name (or name for your namespace).")
    parser.add_argument("--private", action="store_true", help="Create the repository as private (if it is new).")
    parser.add_argument("--commit_message", help="Commit message (default: 'Upload copynat model ...').")
    parser.add_argument("--revision", help="Branch to push to (created from main if missing; default main).")
    parser.add_argument("--card", choices=["auto", "refresh", "keep"], default="auto",
                        help="Model card: auto = write it if missing, refresh a card copynat wrote, keep a "
                             "hand-written README (default); refresh = always regenerate; keep = never write.")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the `hf auth login` token).")
    parser.add_argument("--with_demo", action="store_true",
                        help="Also publish the demo app (app.py + requirements.txt) beside the model, so that a "
                             "Gradio Space with those files shows it (see copynat-demo).")
    args = parser.parse_args(argv)
    try:
        info = push_folder(args.folder, args.repo_id, private=args.private, commit_message=args.commit_message,
                           token=args.token, revision=args.revision, card=args.card, with_demo=args.with_demo)
    except (PushError, ValueError, OSError) as err:
        print(f"copynat-push: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"copynat-push: pushed {args.folder} to {args.repo_id} (commit {info.oid})", file=sys.stderr)
    print(str(info))
    return 0


if __name__ == "__main__":
    sys.exit(push_main())
