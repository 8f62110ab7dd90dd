"""What a streaming checkpoint and a Delta log say about a micro-batch, for the stages that write
each batch with an idempotent commit (`txnAppId`/`txnVersion`): ingest and refine.

A batch's commits carry the pair (app id, batch id) in their `txn` action; Delta skips a commit
whose pair the table already has, so a batch replayed after a crash is written once. The app id
is taken from the checkpoint's query id: stable across restarts of one checkpoint, new for a
new one.
"""

from __future__ import annotations

import json
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from lakestory.io.files import _fs, list_files, read_text

_GLOB = set("{}[]*?\\")
# table features under which a data file does not hold a table's rows as they read: some rows
# deleted by a vector kept beside it, columns under physical names, or narrower types
_REWRITING_FEATURES = {"deletionVectors", "columnMapping", "typeWidening", "typeWidening-preview"}
# a commit is read back whole to find what it did; one larger than this (tens of thousands of
# files) is not read
COMMIT_READ_LIMIT = 16 << 20


def query_id(spark: SparkSession, checkpoint: str) -> str:
    """The id of the streaming query whose checkpoint this is ("unknown" before its start)."""
    meta = read_text(spark, f"{checkpoint}/metadata")
    return str(json.loads(meta)["id"]) if meta else "unknown"


def _batch_ids(spark: SparkSession, folder: str) -> list[int]:
    return [
        int(name)
        for f in list_files(spark, folder)
        if (name := f.path.rsplit("/", 1)[-1]).isdigit()
    ]


def pending_batch(spark: SparkSession, checkpoint: str) -> int | None:
    """The batch in the checkpoint's offset log but not in its commit log, if there is one: the
    stream re-runs it first."""
    planned = _batch_ids(spark, f"{checkpoint}/offsets")
    done = _batch_ids(spark, f"{checkpoint}/commits")
    if planned and max(planned) > max(done, default=-1):
        return max(planned)
    return None


def remove(spark: SparkSession, path: str) -> None:
    """Delete a folder (a checkpoint, say) on whatever filesystem holds it."""
    fs, hpath = _fs(spark, path)
    if fs.exists(hpath):
        fs.delete(hpath, True)


def commit_actions(spark: SparkSession, table: str, version: int) -> list[dict[str, Any]] | None:
    """The actions of one commit of the Delta table at `table`; None if it is not there or is
    too large to read back."""
    text = read_text(spark, f"{table}/_delta_log/{version:020d}.json", limit=COMMIT_READ_LIMIT)
    if text is None or len(text.encode("utf-8")) >= COMMIT_READ_LIMIT:
        return None
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def txn_of(actions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A commit's `txn` action (app id and version), if it has one."""
    return next((a["txn"] for a in actions if "txn" in a), None)


def carries(actions: list[dict[str, Any]], app_id: str, batch: int) -> bool:
    txn = txn_of(actions)
    return txn is not None and txn.get("appId") == app_id and txn.get("version") == batch


def _find_txn(
    spark: SparkSession, table: str, latest: int, app_id: str, batch: int, look_back: int
) -> tuple[int, list[dict[str, Any]]] | None:
    for version in range(latest, max(latest - look_back, -1), -1):
        actions = commit_actions(spark, table, version)
        if actions is not None and carries(actions, app_id, batch):
            return version, actions
    return None


def txn_version(
    spark: SparkSession, table: str, latest: int, app_id: str, batch: int, look_back: int = 50
) -> int | None:
    """The version of the commit that wrote (app id, batch), searched from version `latest`
    back; None if none of the last `look_back` commits did."""
    found = _find_txn(spark, table, latest, app_id, batch, look_back)
    return None if found is None else found[0]


def txn_commit(
    spark: SparkSession, table: str, latest: int, app_id: str, batch: int, look_back: int = 50
) -> list[dict[str, Any]] | None:
    """The actions of the commit that wrote (app id, batch) (see `txn_version`)."""
    found = _find_txn(spark, table, latest, app_id, batch, look_back)
    return None if found is None else found[1]


def operation_metrics(actions: list[dict[str, Any]]) -> dict[str, int]:
    """A commit's `operationMetrics` (Delta writes them as strings), as integers."""
    info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
    return {k: int(v) for k, v in info.get("operationMetrics", {}).items() if str(v).isdigit()}


def _file_scan(batch: DataFrame) -> Any | None:
    """The one file scan a foreachBatch frame's rows come from, found in the lineage of the RDD
    Spark already planned for the micro-batch; None if there is not exactly one."""
    plan = batch._jdf.queryExecution().analyzed()
    if not plan.getClass().getName().endswith(".LogicalRDD"):
        return None
    scans, stack, visited = [], [plan.rdd()], 0
    while stack and visited < 64:
        rdd, visited = stack.pop(), visited + 1
        if rdd.getClass().getName().endswith(".FileScanRDD"):
            scans.append(rdd)
            continue
        deps = rdd.dependencies()
        stack.extend(deps.apply(i).rdd() for i in range(deps.size()))
    return scans[0] if len(scans) == 1 and not stack else None


def batch_files(batch: DataFrame) -> list[str] | None:
    """The data files a micro-batch of a Delta stream reads, each of them whole and nothing
    else, in the order the batch reads them; None where the batch is not plainly that (no
    single file scan, partition values, per-file metadata such as a deletion vector's, or a
    file read only in part)."""
    scan = _file_scan(batch)
    if scan is None:
        return None
    covered: dict[str, list[tuple[int, int]]] = {}
    sizes: dict[str, int] = {}
    partitions = scan.filePartitions()
    for i in range(partitions.size()):
        for f in partitions.apply(i).files():
            if (
                f.partitionValues().numFields()
                or not f.otherConstantMetadataColumnValues().isEmpty()
            ):
                return None
            path = f.filePath().toPath().toString()
            if any(c in path for c in _GLOB):  # a reader would take the name for a pattern
                return None
            covered.setdefault(path, []).append((f.start(), f.start() + f.length()))
            sizes[path] = f.fileSize()
    for path, ranges in covered.items():
        end = 0
        for start, stop in sorted(ranges):
            if start > end:
                return None
            end = max(end, stop)
        if end < sizes[path]:
            return None
    return list(covered) or None


def rescanned(spark: SparkSession, batch: DataFrame, table: str) -> DataFrame:
    """A foreachBatch frame of a stream from the Delta table at `table`, as a plain scan of the
    batch's data files when that reads the same rows; else the frame itself.

    Spark hands foreachBatch the micro-batch as an RDD it has already planned, with every
    column and without the vectorized reader, and plans each action on it again from that RDD;
    a scan of the same files lets every action read only the columns it needs. The batch is
    the same set of whole files either way: a Delta stream takes whole data files into a batch."""
    files = batch_files(batch)
    if files is None:
        return batch
    features = DeltaTable.forPath(spark, table).detail().select("tableFeatures").first()
    if features is None or _REWRITING_FEATURES & set(features[0] or []):
        return batch
    return spark.read.schema(batch.schema).parquet(*files)
