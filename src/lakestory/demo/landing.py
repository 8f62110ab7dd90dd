"""Writing demo landing files the way a well-behaved producer does."""

from __future__ import annotations

import filecmp
import os
from collections.abc import Iterable
from pathlib import Path


def write_atomically(path: Path, pieces: Iterable[bytes]) -> None:
    """Write atomically, leaving an identical existing file untouched (keeps its mtime)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Dot prefix: Spark file sources skip hidden files, so no reader sees a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.writelines(pieces)
        if path.exists() and filecmp.cmp(tmp, path, shallow=False):
            tmp.unlink()
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
