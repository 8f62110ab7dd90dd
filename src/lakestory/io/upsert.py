"""MERGE the latest record per business key into silver: idempotent, and an older record that
arrives late never overwrites a newer one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.io.commits import operation_metrics, txn_commit
from lakestory.io.tables import log_version

TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"


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


@contextmanager
def idempotent(spark: SparkSession, app_id: str, version: int) -> Iterator[None]:
    """Make the Delta DML commands run in this block idempotent: Delta skips a commit whose
    (app id, version) the table already has. DataFrame writes take the same pair as options;
    MERGE only reads it from these session settings."""
    spark.conf.set(TXN_APP_ID, app_id)
    spark.conf.set(TXN_VERSION, str(version))
    try:
        yield
    finally:
        spark.conf.unset(TXN_APP_ID)
        spark.conf.unset(TXN_VERSION)


def upsert_latest(
    frame: DataFrame,
    path: str,
    key: str,
    order: list[str],
    txn: tuple[str, int],
    replace: bool = False,
    retract: str | None = None,
) -> int:
    """MERGE `frame` (one row per `key`) into the Delta table at `path`: insert new keys,
    replace a row only with a newer one by `order`. With `replace`, or when there is no table
    yet, the frame becomes the table instead. Either commit carries `txn` (app id, batch), so a
    replayed batch changes nothing. Returns the rows the commit for `txn` inserted or updated
    (read from that commit, so a replay returns what the first attempt did).

    With `retract`, a boolean column of `frame`, a row where it is true is not written: it
    takes its key out of the table, unless the table's row is newer."""
    spark = frame.sparkSession
    app_id, version = txn
    columns = [c for c in frame.columns if c != retract]
    before = log_version(spark, path)
    if replace or before is None:
        rows = frame if retract is None else frame.where(~F.col(retract))
        (
            rows.select(*columns)
            .write.format("delta")
            .mode("overwrite")
            .option("overwriteSchema", "true")
            .option("txnAppId", app_id)
            .option("txnVersion", version)
            .save(path)
        )
    else:
        target = DeltaTable.forPath(spark, path)
        merge = target.alias("t").merge(frame.alias("s"), f"{_q('t', key)} = {_q('s', key)}")
        if retract is None:
            merge = merge.whenMatchedUpdateAll(condition=newer(order)).whenNotMatchedInsertAll()
        else:
            kept = f"NOT {_q('s', retract)}"
            values: dict[str, str | Column] = {f"`{c}`": _q("s", c) for c in columns}
            merge = (
                merge.whenMatchedDelete(
                    condition=f"{_q('s', retract)} AND NOT {newer(order, 't', 's')}"
                )
                .whenMatchedUpdate(condition=f"{kept} AND {newer(order)}", set=values)
                .whenNotMatchedInsert(condition=kept, values=values)
            )
        with idempotent(spark, app_id, version):
            merge.execute()
    return committed_upserts(spark, path, txn)


def committed_upserts(spark: SparkSession, path: str, txn: tuple[str, int]) -> int:
    """The rows that the commit for `txn` (app id, batch) inserted or updated in the table."""
    latest = log_version(spark, path)
    actions = None if latest is None else txn_commit(spark, path, latest, *txn)
    if actions is None:
        raise RuntimeError(f"{path}: no commit for batch {txn[1]} of {txn[0]}")
    done = operation_metrics(actions)
    if "numTargetRowsInserted" in done:  # a MERGE
        return done["numTargetRowsInserted"] + done.get("numTargetRowsUpdated", 0)
    return done.get("numOutputRows", 0)
