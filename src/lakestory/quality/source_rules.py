"""The checks of a source, assembled from its config: parseable record, required fields,
types, label, expectations; and the expectations validated against the schema before any row
is read."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.columns import (
    BATCH_ID,
    CORRUPT,
    DECODE_ERROR,
    FILE_MODIFICATION_TIME,
    INGESTED_AT,
    RESCUED,
    ROW_HASH,
    SOURCE_FILE,
)
from lakestory.config import ConfigError, Dataset, Source
from lakestory.io import Catalog
from lakestory.quality.casting import RAW_PREFIX
from lakestory.quality.labels import label_rules
from lakestory.quality.rules import Rule, castable, from_expectation, not_malformed, not_null
from lakestory.quality.silver import version_order
from lakestory.session import analysis_errors_unlogged


def rules_for(source: Source, catalog: Catalog | None = None) -> list[Rule]:
    """The checks of a source: parseable record, required fields, types, label, expectations.
    Label conflicts, which look at another source of the dataset, need its `catalog`."""
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
    if label is not None:
        raw = f"{RAW_PREFIX}{label}"
        order = version_order(source)
        rules.extend(label_rules(SparkSession.active(), source, raw, order, catalog))
    if source.expectations:
        spark = SparkSession.active()
        rules.extend(from_expectation(spark, e) for e in source.expectations)
    return rules


# the types bronze's metadata columns have, so that expectations may name them
_METADATA_TYPES = {
    SOURCE_FILE: "string",
    FILE_MODIFICATION_TIME: "timestamp",
    INGESTED_AT: "timestamp",
    BATCH_ID: "bigint",
    ROW_HASH: "string",
    RESCUED: "string",
    CORRUPT: "string",
    DECODE_ERROR: "string",
}


def validate_expectations(spark: SparkSession, dataset: Dataset, source_name: str) -> None:
    """Check every expectation of the source against its typed columns without reading data:
    SQL that does not parse, names an unknown column or is not boolean; a regular expression
    that does not compile; a table or key for `exists_in` that does not exist. The error names
    the file and the rule."""
    with analysis_errors_unlogged():  # answered here
        _validate_expectations(spark, dataset, source_name)


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
