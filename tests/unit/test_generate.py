from __future__ import annotations

import csv
import json
from pathlib import Path

from lakestory.demo.generate import HEADER, generate_customers


def test_generator_is_deterministic_and_leaves_identical_files_alone(tmp_path: Path) -> None:
    first = generate_customers(tmp_path / "a", rows=300, drops=2, seed=5)
    mtimes = {p: p.stat().st_mtime_ns for p in first.accounts_files}
    again = generate_customers(tmp_path / "a", rows=300, drops=2, seed=5)
    other = generate_customers(tmp_path / "b", rows=300, drops=2, seed=5)
    assert {p: p.stat().st_mtime_ns for p in again.accounts_files} == mtimes
    for a, b in zip(first.accounts_files, other.accounts_files, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_landing_holds_the_dirt_the_pipeline_must_handle(tmp_path: Path) -> None:
    landing = generate_customers(tmp_path, rows=1000, drops=3, seed=7)
    assert len(landing.accounts_files) == 3 and len(landing.transactions_files) == 3
    for kind in (
        "exact_duplicates",
        "key_duplicates",
        "malformed",
        "invalid_labels",
        "missing_labels",
        "outliers",
        "txn_malformed",
        "txn_duplicates",
    ):
        assert landing.dirt[kind] > 0, kind
    lines = []
    for path in landing.accounts_files:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            assert next(reader) == list(HEADER)
            lines += list(reader)
    assert len(lines) == landing.account_rows
    assert sum(len(line) != len(HEADER) for line in lines) > 0  # malformed rows
    labels = {line[-1] for line in lines if len(line) == len(HEADER)}
    assert {"0", "1"} < labels  # plus invalid and missing ones
    n_json = 0
    for path in landing.transactions_files:
        for line in path.read_text(encoding="utf-8").splitlines():
            n_json += 1
            try:
                json.loads(line)
            except json.JSONDecodeError:
                continue
    assert n_json == landing.transaction_rows
