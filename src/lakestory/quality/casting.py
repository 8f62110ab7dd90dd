"""Bronze's text to the declared types: each column cast with `try_cast` (null where it does
not parse), the raw text kept aside so that a failed cast can be told from a missing value."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakestory.columns import Transform
from lakestory.config import Source

RAW_PREFIX = "__raw_"

# types whose cast from text ignores the whitespace around it, as `trim` would remove it
_SELF_TRIMMING = {
    "tinyint", "byte", "smallint", "short", "int", "integer", "bigint", "long", "float", "real",
    "double", "decimal", "dec", "numeric", "boolean", "date", "timestamp", "timestamp_ltz",
    "timestamp_ntz",
}  # fmt: skip


def _typed(column: str, spark_type: str) -> Column:
    """The text of `column` cast to `spark_type` with `try_cast` (null where it does not parse),
    surrounding spaces ignored; trimmed explicitly only for types whose cast does not."""
    if spark_type == "string":
        return F.col(column)
    if spark_type.split("(")[0].strip().lower() in _SELF_TRIMMING:
        return F.col(column).try_cast(spark_type).alias(column)
    return F.trim(F.col(column)).try_cast(spark_type).alias(column)


def with_declared_types(source: Source) -> Transform:
    """Cast each declared column (text in bronze) with `try_cast`, keeping the raw text aside."""

    def _apply(df: DataFrame) -> DataFrame:
        raw = [F.col(c).alias(f"{RAW_PREFIX}{c}") for c in source.schema_]
        typed = [_typed(c, t) for c, t in source.schema_.items()]
        meta = [c for c in df.columns if c not in source.schema_]
        return df.select(*typed, *meta, *raw)

    return _apply
