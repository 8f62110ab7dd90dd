"""The catalog names every table and place of a dataset; nothing else in `src/` does, and only
`lakestory.io` touches Delta."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from lakestory.config import Dataset, Settings
from lakestory.io import Catalog, TableRef

SRC = Path(__file__).resolve().parents[2] / "src" / "lakestory"

# what only the catalog and the shell (`lakestory.io`) may write
ONLY_IN_IO = {
    "a table name built from a dataset's": re.compile(r"\.name\}_"),
    "a TableRef made by hand": re.compile(r"\bTableRef\("),
    "a path under the warehouse root": re.compile(r"\broot\s*/"),
    "a Delta reader or writer": re.compile(r"format\(\s*\"delta\"\s*\)|\bDeltaTable\b"),
    "a Delta write option": re.compile(r"txnAppId|txnVersion|mergeSchema|overwriteSchema"),
    "the checkpoints' folder": re.compile(r"\"_checkpoints\""),
}
# lineage columns are spelled once, in `lakestory.columns`
LINEAGE_LITERAL = re.compile(
    r"\"(_source_file|_file_modification_time|_ingested_at|_batch_id|_row_hash|"
    r"_corrupt_record|_rescued|_decode_error)\""
)


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of a module outside its docstrings, with comments cut off."""
    text = path.read_text(encoding="utf-8")
    docs: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docs.update(range(value.lineno, (value.end_lineno or value.lineno) + 1))
    return [
        (number, code)
        for number, line in enumerate(text.splitlines(), start=1)
        if number not in docs and (code := line.split("#", 1)[0]).strip()
    ]


def _offences(patterns: dict[str, re.Pattern[str]], outside: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith(outside):
            continue
        for number, code in _code_lines(path):
            for what, pattern in patterns.items():
                if pattern.search(code):
                    found.append(f"src/lakestory/{relative}:{number}: {what}: {code.strip()}")
    return found


def test_only_io_names_tables_and_touches_storage() -> None:
    # the session's own places (Spark's warehouse folder, the Derby metastore) and MLflow's
    # default store are named by the config and the session builder, below `lakestory.io`
    assert _offences(ONLY_IN_IO, ("io/", "config/", "session.py")) == []


def test_lineage_columns_are_spelled_once() -> None:
    assert _offences({"a lineage column's name": LINEAGE_LITERAL}, ("columns.py",)) == []


def test_the_grep_finds_what_it_forbids(tmp_path: Path) -> None:
    """The patterns catch the code they are for (else the two tests above could not fail)."""
    lines = [
        'TableRef("gold", f"{dataset.name}_features")',
        'spark.read.format("delta").load(str(settings.root / "silver"))',
        'writer.option("txnAppId", app)',
    ]
    hits = [w for line in lines for w, p in ONLY_IN_IO.items() if p.search(line)]
    assert set(hits) == {
        "a table name built from a dataset's",
        "a TableRef made by hand",
        "a path under the warehouse root",
        "a Delta reader or writer",
        "a Delta write option",
    }
    assert LINEAGE_LITERAL.search('F.col("_source_file")')


def test_catalog_names_a_datasets_tables(customers: Dataset, settings: Settings) -> None:
    catalog = Catalog(customers, settings)
    assert catalog.bronze("accounts") == TableRef("bronze", "customers_accounts")
    assert catalog.silver("accounts").qualified == "silver.customers_accounts"
    assert catalog.unlabeled("accounts").qualified == "silver.customers_accounts_unlabeled"
    assert catalog.quarantine("accounts").qualified == "quarantine.customers_accounts"
    assert catalog.features().qualified == "gold.customers_features"
    assert catalog.feature_params().qualified == "gold.customers_feature_params"
    assert catalog.predictions().qualified == "gold.customers_predictions"
    assert catalog.vault().qualified == "restricted.customers_vault"
    assert catalog.erasures().qualified == "restricted.customers_erasures"
    assert catalog.source_of(TableRef("quarantine", "customers_accounts")) == "accounts"
    assert catalog.owns("customers_features")
    assert not catalog.owns("digits_features")


def test_catalog_places_under_the_root(customers: Dataset, settings: Settings) -> None:
    catalog = Catalog(customers, settings)
    table = catalog.silver("accounts")
    assert catalog.location(table) == str(settings.root / "silver" / "customers_accounts")
    assert catalog.checkpoint(table) == str(
        settings.root / "_checkpoints" / "silver" / "customers_accounts"
    )
    source = customers.sources["accounts"]
    assert catalog.landing(source) == str(settings.root / "landing" / source.path)
    assert (
        catalog.artifacts("churn", 3) == settings.root / "artifacts" / "customers" / "churn" / "v3"
    )


def test_a_catalog_without_settings_names_but_does_not_place(customers: Dataset) -> None:
    catalog = Catalog(customers)
    assert catalog.features().qualified == "gold.customers_features"
    with pytest.raises(ValueError, match="without settings"):
        catalog.location(catalog.features())
