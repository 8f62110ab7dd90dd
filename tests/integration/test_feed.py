"""The train job's data feed on a real Delta table: a pinned version, one shard per rank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from lakestory.config import Settings
from lakestory.io import Shell, TableRef, ensure_layers
from lakestory.training.feed import materialise, read_split


def overwrite(df: DataFrame, settings: Settings, table: TableRef) -> int:
    """Replace `table` by `df` through the shell; its version after."""
    return Shell(df.sparkSession, settings).replace(df, table)


TABLE = TableRef("gold", "feedtest_features")


def test_each_shard_holds_its_rows_of_the_pinned_version(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    def rows(n: int, offset: float) -> list[tuple[str, str, int, list[float]]]:
        splits = ["train"] * 7 + ["validation", "test", "test"]
        return [(f"k{i:03d}", splits[i % 10], i % 2, [i + offset, -1.0]) for i in range(n)]

    ensure_layers(spark, settings)
    schema = "id string, split string, label int, features array<double>"
    pinned = overwrite(spark.createDataFrame(rows(200, 0.0), schema), settings, TABLE)
    overwrite(spark.createDataFrame(rows(50, 0.5), schema), settings, TABLE)  # a later version

    feed = materialise(spark, TABLE.qualified, "id", 7, 3, tmp_path / "feed", pinned)

    assert feed.version == pinned and feed.rows == {"train": 140, "validation": 20, "test": 40}
    assert sum(feed.shards) == 140 and min(feed.shards) > 20
    seen = []
    for shard in range(3):
        x, y = read_split(feed.path, "train", shard)
        assert len(x) == feed.shards[shard] and x.shape[1] == 2
        seen += x[:, 0].tolist()
        assert list(x[:, 0]) == sorted(x[:, 0], key=lambda v: f"k{int(v):03d}")  # key order
    assert sorted(seen) == [float(i) for i in range(200) if i % 10 < 7]  # version 0's, once each
    x_test, y_test = read_split(feed.path, "test")
    assert len(x_test) == 40 and np.array_equal(y_test, x_test[:, 0] % 2)
    # a global batch of 16 takes 6, 5 and 5 rows of the three shards each step
    assert feed.slices(16) == [6, 5, 5]
    assert feed.steps_per_epoch(16) == min(
        n // s for n, s in zip(feed.shards, [6, 5, 5], strict=True)
    )
    assert feed.owned(0, 1) == [0, 1, 2] and feed.owned(1, 3) == [1]
