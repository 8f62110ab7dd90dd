"""De-duplication: count exact and key duplicates, keep the latest row per business key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Row, Window
from pyspark.sql import functions as F

from lakestory.columns import ROW_HASH, Transform


@dataclass(frozen=True)
class Duplicates:
    """How the rows of a frame collapse to one row per business key."""

    rows: int
    exact: int  # rows whose content (row hash) a later row of the same key already has
    key: int  # further versions of a key, beyond its exact copies
    keys: int  # rows left: one per key

    @property
    def collapsed(self) -> int:
        return self.exact + self.key


RANK = "_rank"  # 1 for the latest version of its key
COPIES = "_copies"  # on each row: the rows of its key that repeat another's content (row hash)


def rank_versions(key: str, order_by: list[str], row_hash: str = ROW_HASH) -> Transform:
    """Add `_rank`, the row number of each row among the rows of its key, latest first by
    `order_by` (descending, nulls last), and `_copies`, how many rows of its key are exact
    copies of another (its rows less its distinct row hashes). Both come from one window,
    partitioned and ordered alike, so the rows are sorted once (`_copies` over the whole
    partition: a key has a few rows)."""

    def _apply(df: DataFrame) -> DataFrame:
        ordering = [F.col(c).desc_nulls_last() for c in order_by]
        by_key = Window.partitionBy(key).orderBy(*ordering)
        whole = by_key.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
        copies = F.count(F.lit(1)).over(whole) - F.size(F.collect_set(row_hash).over(whole))
        return df.withColumns({RANK: F.row_number().over(by_key), COPIES: copies})

    return _apply


def duplicate_counts() -> list[Column]:
    """Aggregates over a frame with `rank_versions`' columns, read by `duplicates_of`."""
    latest = F.col(RANK) == 1
    return [
        F.count(F.lit(1)).alias("dup_rows"),
        F.sum(F.when(latest, F.col(COPIES)).otherwise(F.lit(0))).alias("dup_exact"),
        F.count_if(latest).alias("dup_keys"),
    ]


def duplicates_of(row: Row | dict[str, Any]) -> Duplicates:
    rows, exact, keys = (int(row[c] or 0) for c in ("dup_rows", "dup_exact", "dup_keys"))
    return Duplicates(rows, exact, rows - exact - keys, keys)


def count_duplicates(df: DataFrame, key: str, order_by: list[str]) -> Duplicates:
    """Exact duplicates (same `key` and row hash) and key duplicates (same `key`, other
    content) of a frame, in one pass. Rows with a null key are not expected here: they fail
    `not_null(key)`."""
    row = df.transform(rank_versions(key, order_by)).agg(*duplicate_counts()).first()
    assert row is not None
    return duplicates_of(row)


def keep_latest_per_key(key: str, order_by: list[str]) -> Transform:
    """Keep, per `key`, the row that sorts first by `order_by` descending (latest wins). Exact
    duplicates collapse here too; end `order_by` with the row hash to make ties deterministic."""

    def _apply(df: DataFrame) -> DataFrame:
        ordering = [F.col(c).desc_nulls_last() for c in order_by]
        window = Window.partitionBy(key).orderBy(*ordering)
        return df.withColumn(RANK, F.row_number().over(window)).where(F.col(RANK) == 1).drop(RANK)

    return _apply
