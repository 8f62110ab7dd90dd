"""MERGE the latest record per business key into silver: idempotent, and an older record that
arrives late never overwrites a newer one."""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame


def _q(alias: str, column: str) -> str:
    return f"{alias}.`{column}`"


def newer(order: list[str], source: str = "s", target: str = "t") -> str:
    """SQL that holds when the source row sorts after the target row by `order`, compared
    column by column, a null being older than any value (as `keep_latest_per_key` sorts)."""
    if not order:
        return "false"
    column, rest = order[0], order[1:]
    s, t = _q(source, column), _q(target, column)
    later = f"(coalesce({s} > {t}, false) OR ({t} IS NULL AND {s} IS NOT NULL))"
    if not rest:
        return later
    return f"({later} OR ({s} <=> {t} AND {newer(rest, source, target)}))"


def upsert_latest(frame: DataFrame, path: str, key: str, order: list[str]) -> int:
    """MERGE `frame` (one row per `key`) into the Delta table at `path`: insert new keys,
    replace a row only with a newer one by `order`. Returns the rows inserted or updated.

    A table whose columns differ from the frame's (the config changed) is replaced instead:
    the frame is recomputed from the whole of bronze, so it is the whole of silver."""
    spark = frame.sparkSession
    if not DeltaTable.isDeltaTable(spark, path):
        frame.write.format("delta").save(path)
        return spark.read.format("delta").load(path).count()
    target = DeltaTable.forPath(spark, path)
    if target.toDF().columns != frame.columns:
        frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)
        return spark.read.format("delta").load(path).count()
    (
        target.alias("t")
        .merge(frame.alias("s"), f"{_q('t', key)} = {_q('s', key)}")
        .whenMatchedUpdateAll(condition=newer(order))
        .whenNotMatchedInsertAll()
        .execute()
    )
    metrics = target.history(1).select("operation", "operationMetrics").first()
    assert metrics is not None and metrics["operation"] == "MERGE"
    done = metrics["operationMetrics"]
    return int(done.get("numTargetRowsInserted", 0)) + int(done.get("numTargetRowsUpdated", 0))
