"""The copynat demo app (Gradio): `copynat-demo --model DIR_OR_HUB_ID`; `app.py` also runs alone, as a Space."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["DEMO_FILES", "write_demo_files"]

HERE = Path(__file__).parent
#: What `copynat-push --with_demo` adds to a model folder: the app and what a Space must install for it.
DEMO_FILES = ("app.py", "requirements.txt")


def write_demo_files(folder: str | Path, model_id: str | None = None) -> list[Path]:
    """Write app.py and requirements.txt into `folder`, the app's DEFAULT_MODEL set to `model_id` (the Hub id the
    folder is pushed to; None: the folder the app sits in), so that a Space with these files shows that model."""
    folder = Path(folder)
    app = (HERE / "app.py").read_text(encoding="utf-8")
    app, found = re.subn(r"^DEFAULT_MODEL: str \| None = None$", f"DEFAULT_MODEL: str | None = {model_id!r}", app,
                         flags=re.M)
    if found != 1:
        raise RuntimeError("copynat/demo/app.py lost its DEFAULT_MODEL line")
    (folder / "app.py").write_text(app, encoding="utf-8")
    (folder / "requirements.txt").write_text((HERE / "requirements.txt").read_text(encoding="utf-8"),
                                             encoding="utf-8")
    return [folder / name for name in DEMO_FILES]
