"""Refine with declared expectations on deliberately dirty data: every action, the accounts in
ops.quality_metrics, and a `fail` rule that stops the run before anything is written."""

from __future__ import annotations

from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings
from lakestory.config.models import Outlier
from lakestory.errors import ExpectationError
from lakestory.ingestion import ingest_source
from lakestory.io import TableRef, table_version
from lakestory.quality.quarantine import by_reason, render
from lakestory.quality.refine import QUALITY_METRICS, refine_source

pytestmark = pytest.mark.slow

KEY = b"refine-test-key-0123456789abcdef"
LINES = [
    "id,name,age,country,updated",
    "1,Ann Ames,34,NL,2024-01-01",
    "1,Ann Ames,34,NL,2024-01-01",  # exact duplicate
    "2,Bob Berg,41,NL,2024-01-01",
    "2,Bob Berg,42,NL,2024-02-01",  # key duplicate, the later one wins
    "3,Cy Cole,17,NL,2024-01-01",  # minor: warn, kept
    "4,Di Dahl,55,XX,2024-01-01",  # unknown country: dropped
    "5,Ed Eck,230,NL,2024-01-01",  # implausible age: quarantined
    "6,Flo Fix,,XX,2024-01-01",  # no age, unknown country: dropped
    "7,Gus Gil,abc,XX,2024-01-01",  # age not a number: quarantined (and unknown country)
]


def dataset(name: str, *extra: dict[str, Any]) -> Dataset:
    source = {
        "format": "csv",
        "path": f"{name}/people",
        "options": {"header": "true"},
        "schema": {
            "id": "string",
            "name": "string",
            "age": "int",
            "country": "string",
            "updated": "date",
        },
        "key": "id",
        "order_by": "updated",
        "personal": {"tokenize": {"id": "id"}, "drop": ["name"]},
        "expectations": [
            {"name": "adult", "expr": "age IS NULL OR age >= 18", "action": "warn"},
            {
                "name": "known_country",
                "in_set": {"column": "country", "values": ["NL", "BE"]},
                "action": "drop",
            },
            {"name": "plausible_age", "range": {"column": "age", "min": 0, "max": 120}},
            *extra,
        ],
    }
    return Dataset.model_validate({"name": name, "seed": 1, "sources": {"people": source}})


def land(spark: SparkSession, settings: Settings, ds: Dataset) -> None:
    folder = settings.root / "landing" / ds.name / "people"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.csv").write_text("\n".join(LINES) + "\n")
    ingest_source(spark, settings, ds, "people")


def test_every_row_is_accounted_for_with_each_rules_counts(
    spark: SparkSession, settings: Settings
) -> None:
    ds = dataset("dirty")
    land(spark, settings, ds)
    counts = refine_source(spark, settings, ds, "people", KEY, "run-1")

    assert (counts.rows_in, counts.silver, counts.duplicates) == (9, 3, 2)
    assert (counts.exact_duplicates, counts.key_duplicates, counts.unchanged) == (1, 1, 0)
    assert (counts.quarantined, counts.dropped) == (2, 2)
    assert counts.reconciles
    silver = spark.read.table("silver.dirty_people")
    assert sorted(r.age for r in silver.collect()) == [17, 34, 42]  # warn kept, latest won
    quarantine = spark.read.table("quarantine.dirty_people")
    reasons = sorted(tuple(r._reasons) for r in quarantine.collect())
    assert reasons == [
        ("castable:age:int", "known_country"),
        ("plausible_age",),
    ]

    summary = by_reason(spark, ds)
    assert summary["people"][0] == 2
    assert {(c.reason, c.rows, c.files) for c in summary["people"][1]} == {
        ("castable:age:int", 1, 1),
        ("known_country", 1, 1),
        ("plausible_age", 1, 1),
    }
    assert "plausible_age" in render(ds, summary)

    m = spark.read.table(QUALITY_METRICS.qualified).where(F.col("dataset") == "dirty").first()
    assert m is not None
    assert m.rows_in == m.silver + m.duplicates + m.unchanged + m.quarantined + m.dropped
    assert (m.exact_duplicates, m.key_duplicates) == (1, 1)
    rules = {r.name: (r.action, r.failed, r.passed) for r in m.rules}
    assert rules["adult"] == ("warn", 1, 8)
    assert rules["known_country"] == ("drop", 3, 6)
    assert rules["plausible_age"] == ("quarantine", 1, 8)
    assert rules["castable:age:int"] == ("quarantine", 1, 8)


def test_a_fail_rule_stops_the_run_before_any_write(
    spark: SparkSession, settings: Settings
) -> None:
    strict = {"name": "no_minors", "expr": "age IS NULL OR age >= 18", "action": "fail"}
    ds = dataset("strict", strict)
    land(spark, settings, ds)
    with pytest.raises(ExpectationError) as caught:
        refine_source(spark, settings, ds, "people", KEY, "run-1")
    message = str(caught.value)
    assert "'no_minors' failed on 1 row(s)" in message and "of 9" in message
    assert "Cy" not in message and "17" not in message  # no values in the message
    for layer in ("silver", "quarantine"):
        assert table_version(spark, TableRef(layer, "strict_people")) is None


def test_silver_keeps_the_newest_version_and_a_rerun_changes_nothing(
    spark: SparkSession, settings: Settings
) -> None:
    ds = dataset("late")
    folder = settings.root / "landing" / "late" / "people"
    folder.mkdir(parents=True, exist_ok=True)
    header = LINES[0]
    (folder / "a.csv").write_text(
        f"{header}\n1,Ann Ames,50,NL,2024-03-01\n2,Bob Berg,41,NL,2024-01-01\n"
    )
    ingest_source(spark, settings, ds, "people")
    first = refine_source(spark, settings, ds, "people", KEY, "run-1")
    assert first.silver == 2

    # a later file brings an older version of record 1 and a new record
    (folder / "b.csv").write_text(
        f"{header}\n1,Ann Ames,20,NL,2024-01-01\n8,Hal Hoy,33,BE,2024-01-01\n"
    )
    ingest_source(spark, settings, ds, "people")
    second = refine_source(spark, settings, ds, "people", KEY, "run-2")
    silver = spark.read.table("silver.late_people")
    assert sorted(r.age for r in silver.collect()) == [33, 41, 50]
    # bronze now holds both files: record 1 twice (the older version collapses), records 2
    # and 1 are already in silver as they are, record 8 is new
    assert (second.rows_in, second.silver, second.key_duplicates, second.unchanged) == (4, 1, 1, 2)
    assert second.reconciles

    version = table_version(spark, TableRef("silver", "late_people"))
    again = refine_source(spark, settings, ds, "people", KEY, "run-3")
    assert again.silver == 0 and again.reconciles
    assert sorted(r.age for r in spark.read.table("silver.late_people").collect()) == [33, 41, 50]
    assert version is not None


def test_outliers_are_fenced_quarantined_and_recorded(
    spark: SparkSession, settings: Settings
) -> None:
    ds = dataset("spiky")
    source = ds.sources["people"].model_copy(
        update={"outliers": {"age": Outlier(method="iqr", action="quarantine")}}
    )
    ds = ds.model_copy(update={"sources": {"people": source}})
    folder = settings.root / "landing" / "spiky" / "people"
    folder.mkdir(parents=True, exist_ok=True)
    ages = [30, 31, 32, 33, 34, 35, 36, 119]  # 119 passes plausible_age, not the fences
    body = "".join(f"{i},P{i},{age},NL,2024-01-01\n" for i, age in enumerate(ages))
    (folder / "a.csv").write_text(f"{LINES[0]}\n{body}")
    ingest_source(spark, settings, ds, "people")
    counts = refine_source(spark, settings, ds, "people", KEY, "run-1")

    assert (counts.rows_in, counts.silver, counts.quarantined) == (8, 7, 1) and counts.reconciles
    (row,) = spark.read.table("quarantine.spiky_people").collect()
    assert (row.age, list(row._reasons)) == ("119", ["outlier:age"])
    m = spark.read.table(QUALITY_METRICS.qualified).where(F.col("dataset") == "spiky").first()
    assert m is not None
    (fence,) = m.outliers
    assert (fence.column, fence.method, fence.action, fence.rows) == ("age", "iqr", "quarantine", 1)
    assert fence.low < 30 and 36 < fence.high < 119
    assert {r.name: r.failed for r in m.rules}["outlier:age"] == 1
