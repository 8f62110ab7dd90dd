"""The generated drop both bench scripts measure on, in a warehouse of its own."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lakestory.config import Dataset, Settings, load_dataset, load_settings
from lakestory.demo.generate import generate_customers

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def accounts_drop(rows: int, files: int) -> Iterator[tuple[Path, Settings, Dataset]]:
    """A temporary warehouse whose landing holds a customers accounts drop of `rows` accounts
    in `files` CSV files, with the demo's dirt (no transactions); removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="lakestory-bench-"))
    try:
        generate_customers(root / "landing", rows=rows, drops=files, seed=11)
        shutil.rmtree(root / "landing" / "customers" / "transactions")
        settings = load_settings(REPO / "conf", environ={"LAKESTORY_ROOT": str(root)})
        yield root, settings, load_dataset("customers", REPO / "conf")
    finally:
        shutil.rmtree(root, ignore_errors=True)
