"""The notebooks run from top to bottom, so that they stay alive as lakestory changes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

pytestmark = pytest.mark.slow

NOTEBOOK = REPO / "notebooks" / "inspect_demo.ipynb"


def test_the_inspection_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        "commit the notebook with its outputs cleared"
    )
    root = tmp_path / "warehouse"
    # the kernel inherits this environment: its own warehouse, lakestory's Python first
    monkeypatch.setenv("LAKESTORY_NOTEBOOK_ROOT", str(root))
    monkeypatch.setenv("LAKESTORY_NOTEBOOK_CUSTOMERS", "200")
    monkeypatch.setenv("LAKESTORY_NOTEBOOK_DIGITS", "100")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()

    reports = root / "reports" / "silver.customers_accounts"
    assert len(list(reports.glob("*.html"))) == 2  # before and after the late drop
    assert list((root / "reports" / "bronze.digits_images").glob("*.html"))
    text = "".join(str(o.get("text", "")) for c in notebook.cells for o in c.get("outputs", []))
    assert "since v" in text  # the second profile compared itself with the first
