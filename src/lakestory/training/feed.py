"""The train job's data feed: the gold features at one pinned Delta version, materialised as
Parquet in a folder of the run's own, the train split cut into a fixed number of shards; each
rank reads its own shards with pyarrow, and rank 0 the validation and test splits (and, for
the final figures, the whole train split).

Layout: `<feed>/split=<split>/shard=<shard>/part-*.parquet`, columns key, label, features
(validation and test are shard 0). A train row's shard is a hash of its key and the seed, one
of `shards` (`model.feed_shards`), a number that does not depend on how many processes train:
rank r of w takes the shards s with s % w == r. Every step of an epoch takes the same slice of
the global batch from each shard (`Feed.slices`), in an order that is a function of the seed,
the epoch and the shard alone, so one process and two see the very same global batches. Shards
differ in size by chance; an epoch has as many steps as the shortest shard fills (no row is
always left out: each epoch draws a fresh permutation of every shard).
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
    shards: list[int]  # train rows per shard

    def slices(self, global_batch: int) -> list[int]:
        """Rows each shard gives to every global batch: the batch shared out as evenly as it
        goes, the first shards taking one more when it does not divide."""
        base, extra = divmod(global_batch, len(self.shards))
        return [base + (s < extra) for s in range(len(self.shards))]

    def steps_per_epoch(self, global_batch: int) -> int:
        per_shard = zip(self.shards, self.slices(global_batch), strict=True)
        return max(1, min(n // size for n, size in per_shard if size))

    def owned(self, rank: int, world: int) -> list[int]:
        """The shards rank `rank` of `world` trains on."""
        return [s for s in range(len(self.shards)) if s % world == rank]


def materialise(
    spark: SparkSession, table: str, key: str, seed: int, shards: int, where: Path, version: int
) -> Feed:
    """Write `table` (key, split, label, features) at Delta `version` under `where`, the train
    split in `shards` shards."""
    pinned = spark.sql(f"SELECT * FROM {table} VERSION AS OF {int(version)}")
    shard = F.when(
        F.col("split") == "train", F.pmod(F.xxhash64(F.col(key), F.lit(seed)), F.lit(shards))
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
    return Feed(
        where, int(version), per_split, [counts.get(("train", s), 0) for s in range(shards)]
    )


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
