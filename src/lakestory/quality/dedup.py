"""De-duplication transforms."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

Transform = Callable[[DataFrame], DataFrame]


def drop_exact_duplicates(columns: list[str]) -> Transform:
    """Keep one row of each group of rows equal on `columns` (metadata columns aside)."""

    def _apply(df: DataFrame) -> DataFrame:
        return df.dropDuplicates(columns)

    return _apply


def keep_latest_per_key(key: str, order_by: list[str]) -> Transform:
    """Keep, per `key`, the row that sorts first by `order_by` descending (latest wins)."""

    def _apply(df: DataFrame) -> DataFrame:
        ordering = [F.col(c).desc_nulls_last() for c in order_by]
        window = Window.partitionBy(key).orderBy(*ordering)
        return (
            df.withColumn("_rank", F.row_number().over(window))
            .where(F.col("_rank") == 1)
            .drop("_rank")
        )

    return _apply
