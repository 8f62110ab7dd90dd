"""What a user sees: lakestory's own lines on the terminal, everything else in the run's log.

`say` and `err` write lakestory's lines (to standard output and error), `working` shows a
spinner with the elapsed time while a long step runs, on a terminal only. Until `to_log` is
called they are plain prints, as in tests and notebooks.

`to_log(path)`, which the `lakestory` command calls once it knows the warehouse (unless `-v`),
points file descriptors 1 and 2 at the log file, and with them everything that is not
lakestory's: the JVM's Ivy resolution and log4j lines (the JVM inherits them when it starts),
Spark's Python workers, TorchDistributor's processes and what it copies of their output, and
every library's prints, warnings and log records. lakestory's lines go to copies of the
terminal taken before, and to the log as well, so that the log reads as the whole story.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TextIO

_out: TextIO | None = None  # the terminal's copies, once `to_log` has run
_err: TextIO | None = None
_log: Path | None = None


def say(*parts: Any) -> None:
    """Print one of lakestory's lines (to the terminal, and the log)."""
    _write(_out or sys.stdout, " ".join(str(p) for p in parts))


def err(*parts: Any) -> None:
    """Print one of lakestory's error lines (to the terminal's standard error, and the log)."""
    _write(_err or sys.stderr, " ".join(str(p) for p in parts))


def _write(stream: TextIO, text: str) -> None:
    print(text, file=stream, flush=True)
    if _log is not None:  # the log reads as the whole story, lakestory's lines included
        print(text, file=sys.stdout, flush=True)


def log_path() -> Path | None:
    """The run's log file, once lakestory's output and the rest were parted."""
    return _log


def to_log(path: Path) -> None:
    """Send everything but lakestory's own lines to `path` (created 0600, appended to)."""
    global _out, _err, _log
    if _log is not None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    _out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    _err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _log = path
    # the libraries' log records and warnings go to the log only; lakestory's own records
    # to the terminal too
    logging.captureWarnings(True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)  # fd 2: the log
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    own = logging.StreamHandler(_out)  # lakestory's own records are lines of its story
    own.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("lakestory").addHandler(own)
    # MLflow's download bars are not lakestory's lines either
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@contextmanager
def to_terminal() -> Iterator[None]:
    """Within the block, Python's own standard output is the terminal: for a library call
    whose printing is lakestory's answer (a table `DataFrame.show` draws)."""
    if _out is None:
        yield
        return
    saved = sys.stdout
    sys.stdout = _out
    try:
        yield
    finally:
        sys.stdout = saved


def working(what: str) -> Any:
    """A spinner with `what` and the elapsed time while the block runs, on a terminal; a
    no-op elsewhere (a pipe, a file, a test)."""
    stream = _out or sys.stdout
    if not stream.isatty():
        return nullcontext()
    from rich.console import Console

    return Console(file=stream).status(what, spinner="dots")
