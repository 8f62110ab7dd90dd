"""Train, validation and test: assigned per group key, so one customer never spans two splits.

Every assignment is a function of the data and the seed alone, never of partitioning or of the
session: the hash is xxhash64 of the key's text and the seed; a ranking breaks ties by the key.

- by key: a key's bucket in [0, 1) is cut at the configured fractions. A key keeps its split
  as the table grows.
- stratified: the keys of each label (a key's stratum is the least label of its rows) are
  ranked by bucket, and the first `train` share of each label's keys trains, and so on: every
  label gets the fractions exactly, at the price of ranking each label's keys in one task, and
  of a key's split depending on the other keys of its label.
- by time: a key's time is the latest `time_column` of its rows; keys up to the `train`
  quantile of those times train, those up to the `train + validation` quantile validate, the
  rest test, so that a model is judged on later data than it learned from. Keys with no time
  at all train.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lakestory.columns import Transform
from lakestory.config.models import Split

SPLIT_COLUMN = "split"
_BUCKET, _STRATUM, _TIME = "__split_bucket", "__split_stratum", "__split_time"


def split_bucket(key: Column, seed: int) -> Column:
    """A number in [0, 1) that depends only on the key and the seed, not on partitioning."""
    hashed = F.xxhash64(key.cast("string"), F.lit(seed))
    return F.pmod(hashed, F.lit(1_000_000)).cast("double") / 1_000_000.0


def _cut(position: Column, split: Split) -> Column:
    return (
        F.when(position < split.train, "train")
        .when(position < split.train + split.validation, "validation")
        .otherwise("test")
    )


def with_split(key: str, seed: int, split: Split, label: str | None = None) -> Transform:
    """Add `split` in {train, validation, test} to every row, the same for all rows of a key.

    `label` is needed when `split.stratify` is set.
    """

    def _apply(df: DataFrame) -> DataFrame:
        if split.by == "time":
            return _by_time(df, key, split)
        if not split.stratify:
            return df.withColumn(SPLIT_COLUMN, _cut(split_bucket(F.col(key), seed), split))
        if label is None:
            raise ValueError("a stratified split needs the label column")
        keys = df.groupBy(key).agg(F.min(label).alias(_STRATUM))
        ranked = Window.partitionBy(_STRATUM).orderBy(_BUCKET, key)
        assigned = (
            keys.withColumn(_BUCKET, split_bucket(F.col(key), seed))
            # (rank - 1) / keys of the label: the share of the label's keys before this one
            .withColumn(
                "__position",
                (F.row_number().over(ranked) - 1) / F.count("*").over(Window.partitionBy(_STRATUM)),
            )
            .select(key, _cut(F.col("__position"), split).alias(SPLIT_COLUMN))
        )
        return df.join(assigned, on=key, how="left")

    return _apply


def _by_time(df: DataFrame, key: str, split: Split) -> DataFrame:
    assert split.time_column is not None
    keys = df.groupBy(key).agg(
        F.max(F.col(split.time_column).cast("timestamp")).cast("double").alias(_TIME)
    )
    cuts = keys.agg(
        F.percentile(_TIME, F.array(F.lit(split.train), F.lit(split.train + split.validation)))
    ).first()
    assert cuts is not None
    if cuts[0] is None:  # no key has a time: all train
        return df.withColumn(SPLIT_COLUMN, F.lit("train"))
    train_until, validation_until = cuts[0]
    assigned = keys.select(
        key,
        F.when(F.col(_TIME).isNull() | (F.col(_TIME) <= train_until), "train")
        .when(F.col(_TIME) <= validation_until, "validation")
        .otherwise("test")
        .alias(SPLIT_COLUMN),
    )
    return df.join(assigned, on=key, how="left")
