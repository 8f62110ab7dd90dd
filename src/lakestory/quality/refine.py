"""bronze -> silver + quarantine: cast, check, de-duplicate, pseudonymise; counts reconcile.

Every bronze row ends in exactly one of: a silver row, a collapsed duplicate (an exact copy by
row hash, or an older version of its business key), a row silver already holds as it is or
newer (`unchanged`: refine re-reads bronze), a quarantine row carrying the names of every rule
it failed, or a row dropped by a `drop` expectation. A
`fail` expectation that any row fails stops the run before anything is written. The counts,
with each rule's failures, go to `ops.quality_metrics`.

Silver is written with MERGE on the business key (`upsert`): the latest version of each record
replaces an older one, never the reverse, and a rerun changes nothing. Refine still reads the
whole bronze table each run; quarantine is replaced with the run's rejected rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.config import ConfigError, Dataset, Settings, Source
from lakestory.errors import ExpectationError
from lakestory.ingestion import (
    CORRUPT,
    DECODE_ERROR,
    METADATA_COLUMNS,
    RESCUED,
    bronze_table,
)
from lakestory.io import TableRef, append, overwrite, read, register
from lakestory.privacy import with_keyed_tokens
from lakestory.quality.dedup import count_duplicates, keep_latest_per_key
from lakestory.quality.outliers import OUTLIERS, Fence, fences, flag_and_clip, quarantine_rules
from lakestory.quality.quarantine import quarantine_table
from lakestory.quality.rules import (
    ACTION,
    REASONS,
    Rule,
    castable,
    check,
    from_expectation,
    not_malformed,
    not_null,
    split_checked,
)
from lakestory.quality.upsert import upsert_latest

Transform = Callable[[DataFrame], DataFrame]

RAW_PREFIX = "__raw_"
# kept in silver: where each row came from, and what orders two versions of a record
SILVER_METADATA = ["_source_file", "_file_modification_time", "_ingested_at"]
QUALITY_METRICS = TableRef("ops", "quality_metrics")


def silver_table(dataset: Dataset, source_name: str) -> TableRef:
    return TableRef("silver", f"{dataset.name}_{source_name}")


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
    if source.expectations:
        spark = SparkSession.active()
        rules.extend(from_expectation(spark, e) for e in source.expectations)
    return rules


# the types bronze's metadata columns have, so that expectations may name them
_METADATA_TYPES = {
    "_source_file": "string",
    "_file_modification_time": "timestamp",
    "_ingested_at": "timestamp",
    "_batch_id": "bigint",
    "_row_hash": "string",
    RESCUED: "string",
    CORRUPT: "string",
    DECODE_ERROR: "string",
}


def validate_expectations(spark: SparkSession, dataset: Dataset, source_name: str) -> None:
    """Check every expectation of the source against its typed columns without reading data:
    SQL that does not parse, names an unknown column or is not boolean; a regular expression
    that does not compile; a table or key for `exists_in` that does not exist. The error names
    the file and the rule."""
    # PySpark logs every analysis error it raises, stack and all; these are answered here
    spark_errors = logging.getLogger("SQLQueryContextLogger")
    level = spark_errors.level
    spark_errors.setLevel(logging.CRITICAL)
    try:
        _validate_expectations(spark, dataset, source_name)
    finally:
        spark_errors.setLevel(level)


def _validate_expectations(spark: SparkSession, dataset: Dataset, source_name: str) -> None:
    source = dataset.structured()[source_name]
    columns = {**source.schema_, **_METADATA_TYPES}
    empty = spark.createDataFrame([], ", ".join(f"`{c}` {t}" for c, t in columns.items()))
    for e in source.expectations:
        where = (
            f"{dataset.origin('sources', source_name, 'expectations')}: "
            f"sources.{source_name}.expectations: {e.name}"
        )
        try:
            if e.expr is not None:
                dtype = empty.select(F.expr(e.expr).alias("ok")).schema["ok"].dataType
                if dtype.simpleString() != "boolean":
                    raise ConfigError(f"{where}: expr is {dtype.simpleString()}, not boolean")
            elif e.regex is not None:
                spark.range(1).select(F.lit("").rlike(e.regex.pattern)).collect()
            elif e.exists_in is not None:
                spec = e.exists_in
                if not spark.catalog.tableExists(spec.table):
                    raise ConfigError(f"{where}: exists_in: no table {spec.table}")
                key = spec.key or spec.column
                if key not in spark.read.table(spec.table).columns:
                    raise ConfigError(f"{where}: exists_in: {spec.table} has no column {key}")
        except ConfigError:
            raise
        except Exception as exc:  # Spark's parse and analysis errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{where}: {first}") from None


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
    """Where a refine run's rows went; `silver` counts rows inserted or updated by the MERGE."""

    rows_in: int
    silver: int
    exact_duplicates: int
    key_duplicates: int
    quarantined: int
    dropped: int = 0
    unchanged: int = 0  # latest versions silver already had, as they are or newer
    rule_failures: dict[str, int] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        return self.exact_duplicates + self.key_duplicates

    @property
    def reconciles(self) -> bool:
        return self.rows_in == (
            self.silver + self.duplicates + self.unchanged + self.quarantined + self.dropped
        )


@dataclass(frozen=True)
class _Tally:
    rows: int
    kept: int
    dropped: int
    rejected: int
    failures: dict[str, int]


def _tally(checked: DataFrame, rules: list[Rule]) -> _Tally:
    """Rows in, rows per fate, and rows failing each rule: one aggregate over checked rows."""
    action = F.col(ACTION)
    aggs = [
        F.count(F.lit(1)).alias("rows"),
        F.count_if(action.isNull() | (action == "warn")).alias("kept"),
        F.count_if(action == "drop").alias("dropped"),
        F.count_if(action.isin("quarantine", "fail")).alias("rejected"),
        *[
            F.count_if(F.array_contains(F.col(REASONS), r.name)).alias(f"rule{i}")
            for i, r in enumerate(rules)
        ],
    ]
    row = checked.agg(*aggs).first()
    assert row is not None
    failures = {r.name: int(row[f"rule{i}"]) for i, r in enumerate(rules)}
    return _Tally(
        int(row["rows"]), int(row["kept"]), int(row["dropped"]), int(row["rejected"]), failures
    )


METRICS_SCHEMA = (
    "run_id string, dataset string, source string, rows_in long, silver long, "
    "duplicates long, quarantined long, dropped long, "
    "exact_duplicates long, key_duplicates long, unchanged long, "
    "rules array<struct<name: string, action: string, failed: long, passed: long>>, "
    "outliers array<struct<column: string, method: string, threshold: double, action: string, "
    "low: double, high: double, rows: long>>"
)


def _outside_counts(kept: DataFrame, found: list[Fence]) -> dict[str, int]:
    """Rows outside each column's fences, in one aggregate."""
    if not found:
        return {}
    row = kept.agg(*[F.count_if(f.outside()).alias(f"c{i}") for i, f in enumerate(found)]).first()
    assert row is not None
    return {f.column: int(row[f"c{i}"]) for i, f in enumerate(found)}


def refine_source(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    source_name: str,
    key: bytes,
    run_id: str,
) -> RefineCounts:
    source = dataset.structured()[source_name]
    validate_expectations(spark, dataset, source_name)
    rules = rules_for(source)
    bronze = read(spark, bronze_table(dataset, source_name))
    checked = (
        bronze.transform(with_declared_types(source))
        .transform(check(rules))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        tally = _tally(checked, rules)
        fatal = [r for r in rules if r.action == "fail" and tally.failures[r.name]]
        if fatal:
            detail = "; ".join(
                f"{r.name!r} failed on {tally.failures[r.name]} row(s)" for r in fatal
            )
            raise ExpectationError(
                f"{bronze_table(dataset, source_name)}: expectation {detail} "
                f"(of {tally.rows}); nothing was written to silver or quarantine"
            )
        parts = split_checked(checked)
        found = fences(parts.kept, dict(source.outliers))
        outlier_rules = quarantine_rules(found)
        outlier_checked = parts.kept.transform(check(outlier_rules))
        by_outlier = split_checked(outlier_checked)
        outlier_tally = _tally(outlier_checked, outlier_rules) if outlier_rules else None
        kept = by_outlier.kept.withColumns(dict(flag_and_clip(found, dict(source.schema_))))
        outside = _outside_counts(parts.kept, found)
        order = [c for c in [source.order_by] if c] + ["_file_modification_time", "_source_file"]
        extra = [OUTLIERS] if OUTLIERS in kept.columns else []
        dups = count_duplicates(kept, source.key)
        silver = (
            # exact copies collapse with the other versions of their key; the row hash last
            # makes the choice among equals the same in every run
            kept.transform(keep_latest_per_key(source.key, [*order, "_row_hash"]))
            .transform(with_pseudonyms(source, key))
            .select(*source.silver_columns(), *extra, *SILVER_METADATA)
        )
        now = F.lit(datetime.now(timezone.utc).replace(tzinfo=None)).cast("timestamp")
        rejected = parts.rejected.unionByName(by_outlier.rejected)
        quarantine = rejected.select(
            *[F.col(f"{RAW_PREFIX}{c}").alias(c) for c in source.schema_],
            *[c for c in [CORRUPT, RESCUED, DECODE_ERROR] if c in bronze.columns],
            *METADATA_COLUMNS,
            REASONS,
            F.lit(run_id).alias("_run_id"),
            now.alias("_quarantined_at"),
        )
        target = silver_table(dataset, source_name)
        silver_order = [source.silver_name(c) for c in order]
        upserted = upsert_latest(
            silver, str(target.path(settings)), source.silver_name(source.key), silver_order
        )
        register(spark, settings, target)
        overwrite(quarantine, settings, quarantine_table(dataset, source_name))
    finally:
        checked.unpersist()
    outlier_rejected = outlier_tally.rejected if outlier_tally else 0
    failures = {**tally.failures, **(outlier_tally.failures if outlier_tally else {})}
    counts = RefineCounts(
        rows_in=tally.rows,
        silver=upserted,
        exact_duplicates=dups.exact,
        key_duplicates=dups.key,
        quarantined=tally.rejected + outlier_rejected,
        dropped=tally.dropped,
        unchanged=dups.keys - upserted,
        rule_failures=failures,
    )
    per_rule = [
        (r.name, r.action, failures[r.name], tally.rows - failures[r.name])
        for r in [*rules, *outlier_rules]
    ]
    per_column = [
        (f.column, f.method, f.threshold, f.action, f.low, f.high, outside[f.column]) for f in found
    ]
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
                counts.dropped,
                counts.exact_duplicates,
                counts.key_duplicates,
                counts.unchanged,
                per_rule,
                per_column,
            )
        ],
        METRICS_SCHEMA,
    ).withColumn("measured_at", now)
    append(metrics, settings, QUALITY_METRICS, merge_schema=True)  # older runs lack columns
    return counts
