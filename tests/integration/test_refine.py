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
from lakestory.io import QUALITY_METRICS, Catalog, Shell, StreamTxns, TableRef, table_version
from lakestory.operations import refine as refine_module
from lakestory.operations.ingest import ingest_source
from lakestory.operations.refine import Refinement, refine_source, reprocess_source
from lakestory.quality.quarantine import by_reason, render
from lakestory.quality.source_rules import rules_for

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

    summary = by_reason(spark, Catalog(ds, settings))
    assert summary["people"][0] == 2
    assert {(c.reason, c.rows, c.files) for c in summary["people"][1]} == {
        ("castable:age:int", 1, 1),
        ("known_country", 1, 1),
        ("plausible_age", 1, 1),
    }
    assert "plausible_age" in render(Catalog(ds, settings), summary)

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
    # only file b's rows are new to refine: record 8 goes in; the older version of record 1
    # finds silver newer and leaves it as it is
    assert (second.rows_in, second.silver, second.unchanged, second.duplicates) == (2, 1, 1, 0)
    assert second.reconciles and second.batches == 1

    version = table_version(spark, TableRef("silver", "late_people"))
    again = refine_source(spark, settings, ds, "people", KEY, "run-3")
    assert (again.rows_in, again.batches) == (0, 0)
    assert table_version(spark, TableRef("silver", "late_people")) == version

    # a full refresh refines all of bronze again into a silver that is the same
    full = refine_source(spark, settings, ds, "people", KEY, "run-4", full_refresh=True)
    assert (full.rows_in, full.silver, full.key_duplicates) == (4, 3, 1) and full.reconciles
    assert sorted(r.age for r in spark.read.table("silver.late_people").collect()) == [33, 41, 50]


def test_a_config_that_changes_silvers_columns_refines_all_of_bronze_again(
    spark: SparkSession, settings: Settings
) -> None:
    ds = dataset("reshaped")
    land(spark, settings, ds)
    first = refine_source(spark, settings, ds, "people", KEY, "run-1")
    source = ds.sources["people"]
    personal = source.personal.model_copy(update={"drop": []})  # keep the name column now
    ds = ds.model_copy(
        update={"sources": {"people": source.model_copy(update={"personal": personal})}}
    )
    again = refine_source(spark, settings, ds, "people", KEY, "run-2")
    assert again.rows_in == first.rows_in == 9 and again.silver == first.silver
    assert "name" in spark.read.table("silver.reshaped_people").columns
    quarantined = spark.read.table("quarantine.reshaped_people").count()
    assert quarantined == first.quarantined  # replaced, not appended to


def test_a_replayed_batch_writes_nothing_twice(spark: SparkSession, settings: Settings) -> None:
    """What a crash between a batch's writes and its checkpoint commit leads to: the stream
    runs the batch again, with the same id."""
    ds = dataset("replayed")
    land(spark, settings, ds)
    refine_source(spark, settings, ds, "people", KEY, "run-1")
    tables = [f"{layer}.replayed_people" for layer in ("silver", "quarantine")]
    before = {t: table_version(spark, TableRef(*t.split("."))) for t in tables}
    metrics = spark.read.table(QUALITY_METRICS.qualified).where(F.col("dataset") == "replayed")
    assert metrics.count() == 1

    catalog = Catalog(ds, settings)
    silver = catalog.silver("people")
    txns = StreamTxns(spark, "refine", silver, catalog.checkpoint(silver))
    rules = rules_for(ds.sources["people"])
    state = Refinement(Shell(spark, settings), catalog, "people", KEY, "run-2", rules, txns)
    bronze = spark.read.table("bronze.replayed_people")
    state.process(bronze, 0)  # batch 0 again: same rows, same id

    assert {t: table_version(spark, TableRef(*t.split("."))) for t in tables} == before
    assert metrics.count() == 1
    (replayed,) = state.counts
    assert replayed.silver == 3  # what batch 0's silver commit did, read back from it

    # a later batch goes through MERGE, which takes the batch's id from session settings
    folder = settings.root / "landing" / "replayed" / "people"
    (folder / "b.csv").write_text(f"{LINES[0]}\n8,Hal Hoy,33,BE,2024-01-01\n")
    ingest_source(spark, settings, ds, "people")
    assert refine_source(spark, settings, ds, "people", KEY, "run-3").silver == 1
    before = {t: table_version(spark, TableRef(*t.split("."))) for t in tables}
    state.process(spark.read.table("bronze.replayed_people").where("_batch_id = 1"), 1)
    assert {t: table_version(spark, TableRef(*t.split("."))) for t in tables} == before
    assert metrics.count() == 2 and state.counts[-1].silver == 1
    assert spark.read.table("silver.replayed_people").count() == 4


def people_aged(
    spark: SparkSession, settings: Settings, name: str, ages: list[int], outlier: Outlier
) -> Dataset:
    """Dataset `name` with fences on age, and one person per age ingested into bronze."""
    ds = dataset(name)
    source = ds.sources["people"].model_copy(update={"outliers": {"age": outlier}})
    ds = ds.model_copy(update={"sources": {"people": source}})
    folder = settings.root / "landing" / name / "people"
    folder.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{i},P{i},{age},NL,2024-01-01\n" for i, age in enumerate(ages))
    (folder / "a.csv").write_text(f"{LINES[0]}\n{body}")
    ingest_source(spark, settings, ds, "people")
    return ds


def test_outliers_are_fenced_quarantined_and_recorded(
    spark: SparkSession, settings: Settings
) -> None:
    ages = [30, 31, 32, 33, 34, 35, 36, 119]  # 119 passes plausible_age, not the fences
    ds = people_aged(spark, settings, "spiky", ages, Outlier(method="iqr", action="quarantine"))
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


def test_flagged_outliers_are_counted_wherever_their_rows_go(
    spark: SparkSession, settings: Settings
) -> None:
    # outside the fences: 119 (kept, flagged), 10 (kept, warned as a minor), 150 (quarantined)
    ages = [30, 31, 32, 33, 34, 35, 36, 119, 10, 150]
    ds = people_aged(spark, settings, "flagged", ages, Outlier(method="iqr", action="flag"))
    counts = refine_source(spark, settings, ds, "people", KEY, "run-1")

    assert (counts.rows_in, counts.silver, counts.quarantined) == (10, 9, 1) and counts.reconciles
    flagged = spark.read.table("silver.flagged_people").where(F.size("_outliers") > 0)
    assert sorted(r.age for r in flagged.collect()) == [10, 119]
    m = spark.read.table(QUALITY_METRICS.qualified).where(F.col("dataset") == "flagged").first()
    assert m is not None
    (fence,) = m.outliers
    assert (fence.column, fence.action, fence.rows) == ("age", "flag", 3)
    assert {r.name: (r.failed, r.passed) for r in m.rules}["adult"] == (1, 9)
    # silver's _outliers (array<string>) reads back nullable; the next run is incremental
    again = refine_source(spark, settings, ds, "people", KEY, "run-2")
    assert (again.rows_in, again.batches) == (0, 0)


def test_reprocess_moves_rows_that_pass_now_to_silver_exactly_once(
    spark: SparkSession, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = dataset("fixed")
    land(spark, settings, ds)
    refine_source(spark, settings, ds, "people", KEY, "run-1")
    assert spark.read.table("silver.fixed_people").count() == 3
    assert spark.read.table("quarantine.fixed_people").count() == 2

    # a rule fix: ages up to 300 are plausible now (record 5 is 230)
    source = ds.sources["people"]
    loose = [
        e.model_copy(update={"range": e.range.model_copy(update={"max": 300})})
        if e.name == "plausible_age" and e.range is not None
        else e
        for e in source.expectations
    ]
    strict = ds
    ds = ds.model_copy(
        update={"sources": {"people": source.model_copy(update={"expectations": loose})}}
    )
    # a crash after silver's commit and before quarantine's: the rerun completes the move
    real = refine_module.resolution

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("killed between the two commits")

    monkeypatch.setattr(refine_module, "resolution", crash)
    planned = table_version(spark, TableRef("quarantine", "fixed_people"))
    with pytest.raises(RuntimeError, match="killed"):
        reprocess_source(spark, settings, ds, "people", KEY, "run-2")
    assert spark.read.table("silver.fixed_people").count() == 4
    assert spark.read.table("quarantine.fixed_people").count() == 2
    monkeypatch.setattr(refine_module, "resolution", real)
    silver_version = table_version(spark, TableRef("silver", "fixed_people"))
    moved = reprocess_source(spark, settings, ds, "people", KEY, "run-2")
    assert table_version(spark, TableRef("silver", "fixed_people")) == silver_version
    assert (moved.rows_in, moved.silver, moved.quarantined) == (2, 1, 1) and moved.reconciles
    (left,) = spark.read.table("quarantine.fixed_people").collect()
    assert (left.id, sorted(left._reasons)) == ("7", ["castable:age:int", "known_country"])
    assert left._run_id == "run-2"
    # a crash after both commits, before the run recorded itself: the run that resumes it
    # reads quarantine as the crashed run did, writes nothing again and counts what it did
    tables = [TableRef("silver", "fixed_people"), TableRef("quarantine", "fixed_people")]
    versions = [table_version(spark, t) for t in (*tables, QUALITY_METRICS)]
    again = reprocess_source(spark, settings, ds, "people", KEY, "run-2", version=planned)
    assert [table_version(spark, t) for t in (*tables, QUALITY_METRICS)] == versions
    assert again == moved
    # asked for again, with nothing changed since: nothing to move, nothing written
    twice = reprocess_source(spark, settings, ds, "people", KEY, "run-2b")
    assert twice.rows_in == 0
    assert [table_version(spark, t) for t in (*tables, QUALITY_METRICS)] == versions
    # under other rules (here the strict ones again), the row is run through them
    other = reprocess_source(spark, settings, strict, "people", KEY, "run-2c")
    assert (other.rows_in, other.silver, other.quarantined) == (1, 0, 1)

    # a data fix in quarantine itself
    spark.sql(
        "UPDATE quarantine.fixed_people SET age = '70', country = 'NL' "
        "WHERE array_contains(_reasons, 'castable:age:int')"
    )
    fixed = reprocess_source(spark, settings, ds, "people", KEY, "run-3")
    assert (fixed.rows_in, fixed.silver, fixed.quarantined) == (1, 1, 0)
    assert spark.read.table("quarantine.fixed_people").count() == 0
    silver = spark.read.table("silver.fixed_people")
    assert sorted(r.age for r in silver.collect()) == [17, 34, 42, 70, 230]
    assert reprocess_source(spark, settings, ds, "people", KEY, "run-4").rows_in == 0
    assert spark.read.table("silver.fixed_people").count() == 5
