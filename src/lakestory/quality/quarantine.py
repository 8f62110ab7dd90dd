"""Quarantine's rows: what a rejected row keeps, how a reprocessed row's outcome updates it,
and `lakestory quarantine <dataset>`: what is in quarantine, by source and rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from delta.tables import DeltaMergeBuilder
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.columns import (
    BATCH_ID,
    CORRUPT,
    DECODE_ERROR,
    LINEAGE,
    RESCUED,
    ROW_HASH,
    SOURCE_FILE,
)
from lakestory.config import Source
from lakestory.io import Catalog, exists
from lakestory.quality.casting import RAW_PREFIX
from lakestory.quality.rules import REASONS, Checks

# identifies a quarantined row: exact copies within one file share it, and share their fate
QUARANTINE_ID = [SOURCE_FILE, ROW_HASH, BATCH_ID]
RUN_ID, QUARANTINED_AT = "_run_id", "_quarantined_at"
QUARANTINE_COLUMNS = [REASONS, RUN_ID, QUARANTINED_AT]


def rejected_columns(
    source: Source, checks: Checks, present: list[str], run_id: str, now: Column
) -> list[Column]:
    """A rejected row as quarantine keeps it: the raw text as it landed, what the reader
    could not make of it, its lineage, the reasons, and the run that put it there."""
    return [
        *[F.col(f"{RAW_PREFIX}{c}").alias(c) for c in source.schema_],
        *[F.col(c) for c in [CORRUPT, RESCUED, DECODE_ERROR] if c in present],
        *[F.col(c) for c in LINEAGE],
        checks.reasons().alias(REASONS),
        F.lit(run_id).alias(RUN_ID),
        now.alias(QUARANTINED_AT),
    ]


def outcomes(checked: DataFrame, checks: Checks) -> DataFrame:
    """Each reprocessed row's id with its new reasons (null: it passes now)."""
    reasons = F.when(checks.rejected(), checks.reasons()).alias(REASONS)
    return checked.select(*QUARANTINE_ID, reasons).dropDuplicates(QUARANTINE_ID)


OUTCOME_MATCH = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in QUARANTINE_ID)


def resolution(run_id: str) -> Callable[[DeltaMergeBuilder], DeltaMergeBuilder]:
    """The MERGE clauses that apply `outcomes` to quarantine: a row that passes now is
    deleted; one that still fails gets its new reasons and this run's id."""

    def clauses(merge: DeltaMergeBuilder) -> DeltaMergeBuilder:
        return merge.whenMatchedDelete(condition=f"s.`{REASONS}` IS NULL").whenMatchedUpdate(
            set={
                REASONS: F.col(f"s.`{REASONS}`"),
                RUN_ID: F.lit(run_id),
                QUARANTINED_AT: F.current_timestamp(),
            }
        )

    return clauses


@dataclass(frozen=True)
class ReasonCount:
    source: str
    reason: str
    rows: int  # rows failing this rule (a row failing two rules counts under both)
    files: int  # landing files those rows came from


def by_reason(spark: SparkSession, catalog: Catalog) -> dict[str, tuple[int, list[ReasonCount]]]:
    """Per structured source with a quarantine table: its rows, and the rows per rule failed,
    most first. One aggregate per table; no row leaves Spark."""
    out = {}
    for name in catalog.dataset.structured():
        table = catalog.quarantine(name)
        if not exists(spark, table):
            continue
        rows = spark.read.table(table.qualified)
        total = rows.count()
        counts = (
            rows.select(F.explode(REASONS).alias("reason"), SOURCE_FILE)
            .groupBy("reason")
            .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(SOURCE_FILE).alias("files"))
            .orderBy(F.col("rows").desc(), "reason")
            .collect()
        )
        out[name] = (total, [ReasonCount(name, r.reason, r.rows, r.files) for r in counts])
    return out


def render(catalog: Catalog, summary: dict[str, tuple[int, list[ReasonCount]]]) -> str:
    dataset = catalog.dataset
    if not summary:
        return f"{dataset.name}: nothing quarantined yet (run `lakestory refine {dataset.name}`)"
    width = max([len("reason")] + [len(c.reason) for _, cs in summary.values() for c in cs])
    lines = [dataset.name]
    for source, (total, counts) in summary.items():
        lines.append(f"  {source}: {total} rows in {catalog.quarantine(source)}")
        lines.append(f"    {'reason':<{width}}  {'rows':>8}  {'files':>6}")
        for c in counts:
            lines.append(f"    {c.reason:<{width}}  {c.rows:>8}  {c.files:>6}")
    return "\n".join(lines)
