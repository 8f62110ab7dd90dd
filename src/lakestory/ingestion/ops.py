"""The ingestion log in `ops`: one row per file ingested, per schema drift found, per run.

A batch's log rows are written once even when the batch is replayed after a crash. Only the
batch a checkpoint had planned but not finished when its last run stopped can be a replay, so
only that batch looks in the log first (by stream and batch id); every other batch just
appends, which spares each batch a replay of the log's Delta history.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.io import (
    INGESTION_FILES,
    INGESTION_RUNS,
    Shell,
    TableRef,
    exists,
    local_frame,
)

# readers of the log select by dataset and source; statistics on the other columns would only
# make every small append slower
STATS = ["dataset", "source"]

FILES_SCHEMA = (
    "run_id string, dataset string, source string, stream_id string, batch_id bigint, "
    "file string, bytes bigint, "
    "modified_at timestamp, encoding string, rows bigint, corrupt_rows bigint, "
    "rescued_rows bigint, decode_errors bigint, status string, ingested_at timestamp"
)
DRIFT_SCHEMA = (
    "run_id string, dataset string, source string, stream_id string, batch_id bigint, "
    "files array<string>, "
    "`column` string, change string, detail string, action string, detected_at timestamp"
)
RUNS_SCHEMA = (
    "run_id string, dataset string, source string, started_at timestamp, "
    "finished_at timestamp, duration_s double, files_seen bigint, files_new bigint, "
    "empty_files bigint, rows bigint, corrupt_rows bigint, rescued_rows bigint, "
    "decode_errors bigint, bytes bigint, batches bigint, drift_events bigint, "
    "bronze_version_before bigint, bronze_version_after bigint"
)


@dataclass(frozen=True)
class IngestionRun:
    """What one `ingest` of one source did; `ops.ingestion_runs` gets one row of these."""

    run_id: str
    dataset: str
    source: str
    started_at: datetime
    finished_at: datetime
    duration_s: float
    files_seen: int
    files_new: int
    empty_files: int
    rows: int
    corrupt_rows: int
    rescued_rows: int
    decode_errors: int
    bytes: int
    batches: int
    drift_events: int
    bronze_version_before: int | None
    bronze_version_after: int | None


def logged(shell: Shell, table: TableRef, stream: str, batch: int) -> bool:
    """Whether `table` already has rows of this stream's batch."""
    if not shell.has(table):
        return False
    rows = shell.read(table)
    return bool(rows.where((F.col("stream_id") == stream) & (F.col("batch_id") == batch)).take(1))


def append_batch_log(
    shell: Shell, df: DataFrame, table: TableRef, stream: str, batch: int, replay: bool
) -> None:
    """Append a streaming batch's log rows; a replayed batch's only if they are not there."""
    if replay and logged(shell, table, stream, batch):
        return
    shell.append(df, table, stats_columns=STATS)


def append_files(shell: Shell, df: DataFrame) -> None:
    shell.append(df, INGESTION_FILES, stats_columns=STATS)


def record_run(shell: Shell, run: IngestionRun) -> None:
    row = local_frame(shell.spark, [tuple(asdict(run).values())], RUNS_SCHEMA)
    shell.append(row, INGESTION_RUNS, stats_columns=STATS)


def latest_runs(spark: SparkSession, dataset: str | None = None) -> DataFrame | None:
    """The latest run of every (dataset, source), newest first; None before the first run."""
    if not exists(spark, INGESTION_RUNS):
        return None
    runs = spark.read.table(INGESTION_RUNS.qualified)
    if dataset:
        runs = runs.where(F.col("dataset") == dataset)
    latest = runs.groupBy("dataset", "source").agg(F.max("finished_at").alias("finished_at"))
    return runs.join(latest, ["dataset", "source", "finished_at"]).orderBy(
        F.col("finished_at").desc()
    )


def ingested_files(spark: SparkSession, dataset: str, source: str) -> set[str]:
    if not exists(spark, INGESTION_FILES):
        return set()
    rows = (
        spark.read.table(INGESTION_FILES.qualified)
        .where((F.col("dataset") == dataset) & (F.col("source") == source))
        .select("file")
        .distinct()
        .collect()
    )
    return {r.file for r in rows}
