"""De-duplication: count exact and key duplicates, keep the latest row per business key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

Transform = Callable[[DataFrame], DataFrame]


@dataclass(frozen=True)
class Duplicates:
    """How the rows of a frame collapse to one row per business key."""

    rows: int
    exact: int  # rows whose content (row hash) an earlier row already has
    key: int  # further versions of a key, beyond its exact copies
    keys: int  # rows left: one per key

    @property
    def collapsed(self) -> int:
        return self.exact + self.key


def count_duplicates(df: DataFrame, key: str, row_hash: str = "_row_hash") -> Duplicates:
    """Exact duplicates (same `row_hash`) and key duplicates (same `key`, other content), in
    one aggregate. Rows with a null key are not expected here: they fail `not_null(key)`."""
    row = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_distinct(row_hash).alias("hashes"),
        F.count_distinct(key).alias("keys"),
    ).first()
    assert row is not None
    rows, hashes, keys = int(row["rows"]), int(row["hashes"]), int(row["keys"])
    return Duplicates(rows, rows - hashes, hashes - keys, keys)


def keep_latest_per_key(key: str, order_by: list[str]) -> Transform:
    """Keep, per `key`, the row that sorts first by `order_by` descending (latest wins). Exact
    duplicates collapse here too; end `order_by` with the row hash to make ties deterministic."""

    def _apply(df: DataFrame) -> DataFrame:
        ordering = [F.col(c).desc_nulls_last() for c in order_by]
        window = Window.partitionBy(key).orderBy(*ordering)
        return (
            df.withColumn("_rank", F.row_number().over(window))
            .where(F.col("_rank") == 1)
            .drop("_rank")
        )

    return _apply
