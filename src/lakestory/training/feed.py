"""The train job's data feed: the gold features at one pinned Delta version, materialised as
Parquet in a folder of the run's own, one shard of the train split per rank; each rank reads
its own shard with pyarrow, and rank 0 the validation and test splits.

Layout: `<feed>/split=<split>/shard=<rank>/part-*.parquet`, columns key, label, features
(validation and test are shard 0). A train row's shard is a hash of its key and the seed, so
shards differ in size by chance; every rank takes the same number of steps an epoch (the
smallest shard's batches), each epoch from a fresh permutation of its shard, so no rank waits
on another's gradient and no row is always left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Feed:
    path: Path
    version: int  # of the features table
    rows: dict[str, int]  # per split
    shards: list[int]  # train rows per rank

    def steps_per_epoch(self, rank_batch: int) -> int:
        return max(1, min(self.shards) // rank_batch)


def materialise(
    spark: SparkSession, table: str, key: str, seed: int, world: int, where: Path, version: int
) -> Feed:
    """Write `table` (key, split, label, features) at Delta `version` under `where`."""
    pinned = spark.sql(f"SELECT * FROM {table} VERSION AS OF {int(version)}")
    shard = F.when(
        F.col("split") == "train", F.pmod(F.xxhash64(F.col(key), F.lit(seed)), F.lit(world))
    ).otherwise(F.lit(0))
    rows = pinned.select(
        F.col(key).cast("string").alias("key"), "split", "label", "features", shard.alias("shard")
    )
    rows.write.partitionBy("split", "shard").parquet(str(where))
    counts = {
        (r["split"], r["shard"]): r["count"]
        for r in rows.groupBy("split", "shard").count().collect()
    }
    per_split = {s: sum(n for (split, _), n in counts.items() if split == s) for s in SPLITS}
    return Feed(where, int(version), per_split, [counts.get(("train", r), 0) for r in range(world)])


def read_split(
    where: Path | str, split: str, shard: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one split, or of one shard of it, as float32, in key order."""
    folder = Path(where) / f"split={split}"
    if shard is not None:
        folder = folder / f"shard={shard}"
    if not folder.exists():
        return np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
    table = pq.read_table(folder, columns=["key", "label", "features"]).sort_by("key")
    n = table.num_rows
    values = table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    x = values.astype(np.float32).reshape(n, -1) if n else np.zeros((0, 0), np.float32)
    return x, table.column("label").to_numpy().astype(np.float32)
