"""bronze -> silver + quarantine: cast, check, de-duplicate, pseudonymise; counts reconcile.

Every bronze row ends in exactly one of: a silver row, a collapsed duplicate, or a quarantine
row carrying the names of every rule it failed.

This thin version recomputes silver from the whole bronze table and replaces it in one commit,
which is idempotent; incremental MERGE into silver comes with the silver stage proper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings, Source
from lakestory.ingestion import (
    CORRUPT,
    DECODE_ERROR,
    METADATA_COLUMNS,
    RESCUED,
    bronze_table,
)
from lakestory.io import TableRef, append, overwrite, read
from lakestory.privacy import with_keyed_tokens
from lakestory.quality.dedup import drop_exact_duplicates, keep_latest_per_key
from lakestory.quality.rules import (
    REASONS,
    Rule,
    castable,
    expression,
    not_malformed,
    not_null,
    split,
)

Transform = Callable[[DataFrame], DataFrame]

RAW_PREFIX = "__raw_"
QUALITY_METRICS = TableRef("ops", "quality_metrics")


def silver_table(dataset: Dataset, source_name: str) -> TableRef:
    return TableRef("silver", f"{dataset.name}_{source_name}")


def quarantine_table(dataset: Dataset, source_name: str) -> TableRef:
    return TableRef("quarantine", f"{dataset.name}_{source_name}")


def with_declared_types(source: Source) -> Transform:
    """Cast each declared column (text in bronze) with `try_cast`, keeping the raw text aside."""

    def _apply(df: DataFrame) -> DataFrame:
        raw = [F.col(c).alias(f"{RAW_PREFIX}{c}") for c in source.schema_]
        typed = [
            F.trim(F.col(c)).try_cast(t).alias(c) if t != "string" else F.col(c)
            for c, t in source.schema_.items()
        ]
        meta = [c for c in df.columns if c not in source.schema_]
        return df.select(*typed, *meta, *raw)

    return _apply


def rules_for(source: Source) -> list[Rule]:
    """The checks of a source: parseable record, required fields, types, label, expectations."""
    label = source.label.column if source.label else None
    rules = [
        not_malformed(CORRUPT),
        Rule("undecodable_bytes", F.col(DECODE_ERROR).isNull()),
    ]
    for column in dict.fromkeys([source.key, *source.required]):
        if column != label:
            rules.append(not_null(column))
    for column, spark_type in source.schema_.items():
        if spark_type != "string" and column != label:
            rules.append(castable(column, f"{RAW_PREFIX}{column}", spark_type))
    if source.label:
        label = source.label.column
        raw = F.trim(F.col(f"{RAW_PREFIX}{label}"))
        rules.append(Rule("label_missing", raw.isNotNull() & (raw != "")))
        rules.append(
            Rule(
                "label_invalid",
                (raw.isNull() | (raw == "")) | F.col(label).isin(*source.label.allowed),
            )
        )
    rules.extend(expression(e.name, e.expr) for e in source.expectations)
    return rules


def with_pseudonyms(source: Source, key: bytes) -> Transform:
    """Generalise quasi-identifiers, tokenise identifiers, drop direct identifiers."""

    def _apply(df: DataFrame) -> DataFrame:
        for column, kind in source.personal.generalise.items():
            generalised: Column = F.year(F.col(column)) if kind == "year" else F.col(column)
            df = df.withColumn(source.silver_name(column), generalised)
        df = df.drop(*source.personal.generalise, *source.personal.drop)
        return df.transform(with_keyed_tokens(dict(source.personal.tokenize), key))

    return _apply


@dataclass(frozen=True)
class RefineCounts:
    rows_in: int
    silver: int
    duplicates: int
    quarantined: int

    @property
    def reconciles(self) -> bool:
        return self.rows_in == self.silver + self.duplicates + self.quarantined


def refine_source(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    source_name: str,
    key: bytes,
    run_id: str,
) -> RefineCounts:
    source = dataset.structured()[source_name]
    bronze = read(spark, bronze_table(dataset, source_name))
    checked = bronze.transform(with_declared_types(source)).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        valid, rejected = split(checked, rules_for(source))
        order = [c for c in [source.order_by] if c] + ["_file_modification_time", "_source_file"]
        silver = (
            valid.transform(drop_exact_duplicates(list(source.schema_)))
            .transform(keep_latest_per_key(source.key, order))
            .transform(with_pseudonyms(source, key))
            .select(*source.silver_columns(), "_source_file", "_ingested_at")
        )
        now = F.lit(datetime.now(timezone.utc).replace(tzinfo=None)).cast("timestamp")
        quarantine = rejected.select(
            *[F.col(f"{RAW_PREFIX}{c}").alias(c) for c in source.schema_],
            *[c for c in [CORRUPT, RESCUED, DECODE_ERROR] if c in bronze.columns],
            *METADATA_COLUMNS,
            REASONS,
            F.lit(run_id).alias("_run_id"),
            now.alias("_quarantined_at"),
        )
        overwrite(silver, settings, silver_table(dataset, source_name))
        overwrite(quarantine, settings, quarantine_table(dataset, source_name))
        rows_in = checked.count()
        n_valid = valid.count()
    finally:
        checked.unpersist()
    n_silver = read(spark, silver_table(dataset, source_name)).count()
    counts = RefineCounts(rows_in, n_silver, n_valid - n_silver, rows_in - n_valid)
    metrics = spark.createDataFrame(
        [
            (
                run_id,
                dataset.name,
                source_name,
                counts.rows_in,
                counts.silver,
                counts.duplicates,
                counts.quarantined,
            )
        ],
        "run_id string, dataset string, source string, rows_in long, silver long, "
        "duplicates long, quarantined long",
    ).withColumn("measured_at", now)
    append(metrics, settings, QUALITY_METRICS)
    return counts
