"""`lakestory quarantine <dataset>`: what is in quarantine, by source and rule."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset
from lakestory.io import TableRef, exists
from lakestory.quality.rules import REASONS


def quarantine_table(dataset: Dataset, source_name: str) -> TableRef:
    return TableRef("quarantine", f"{dataset.name}_{source_name}")


@dataclass(frozen=True)
class ReasonCount:
    source: str
    reason: str
    rows: int  # rows failing this rule (a row failing two rules counts under both)
    files: int  # landing files those rows came from


def by_reason(spark: SparkSession, dataset: Dataset) -> dict[str, tuple[int, list[ReasonCount]]]:
    """Per structured source with a quarantine table: its rows, and the rows per rule failed,
    most first. One aggregate per table; no row leaves Spark."""
    out = {}
    for name in dataset.structured():
        table = quarantine_table(dataset, name)
        if not exists(spark, table):
            continue
        rows = spark.read.table(table.qualified)
        total = rows.count()
        counts = (
            rows.select(F.explode(REASONS).alias("reason"), "_source_file")
            .groupBy("reason")
            .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("_source_file").alias("files"))
            .orderBy(F.col("rows").desc(), "reason")
            .collect()
        )
        out[name] = (total, [ReasonCount(name, r.reason, r.rows, r.files) for r in counts])
    return out


def render(dataset: Dataset, summary: dict[str, tuple[int, list[ReasonCount]]]) -> str:
    if not summary:
        return f"{dataset.name}: nothing quarantined yet (run `lakestory refine {dataset.name}`)"
    width = max([len("reason")] + [len(c.reason) for _, cs in summary.values() for c in cs])
    lines = [dataset.name]
    for source, (total, counts) in summary.items():
        lines.append(f"  {source}: {total} rows in {quarantine_table(dataset, source)}")
        lines.append(f"    {'reason':<{width}}  {'rows':>8}  {'files':>6}")
        for c in counts:
            lines.append(f"    {c.reason:<{width}}  {c.rows:>8}  {c.files:>6}")
    return "\n".join(lines)
