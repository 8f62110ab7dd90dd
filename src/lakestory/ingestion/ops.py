"""The ingestion log in `ops`: one row per file ingested, per schema drift found, per run.

A batch's log rows are written once even when the batch is replayed after a crash. Only the
batch a checkpoint had planned but not finished when its last run stopped can be a replay, so
only that batch looks in the log first (by stream and batch id); every other batch just
appends, which spares each batch a replay of the log's Delta history.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.io import (
    INGESTION_FILES,
    INGESTION_RUNS,
    SCHEMA_DRIFT,
    Shell,
    TableRef,
    exists,
    local_frame,
)
from lakestory.io.files import LandedFile

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


@dataclass
class RunTotals:
    """What one run of one source ingested, counted batch by batch."""

    files_new: int = 0
    empty_files: int = 0
    rows: int = 0
    corrupt_rows: int = 0
    rescued_rows: int = 0
    decode_errors: int = 0
    bytes: int = 0
    batches: int = 0
    drift_events: int = 0

    def add(self, other: RunTotals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def run(
        self,
        run_id: str,
        dataset: str,
        source: str,
        started: datetime,
        duration_s: float,
        seen: list[LandedFile],
    ) -> IngestionRun:
        """The run's row of `ops.ingestion_runs` (bronze's versions to be filled in)."""
        return IngestionRun(
            run_id=run_id,
            dataset=dataset,
            source=source,
            started_at=started,
            finished_at=datetime.now(timezone.utc),
            duration_s=duration_s,
            files_seen=len(seen),
            **asdict(self),
            bronze_version_before=None,
            bronze_version_after=None,
        )


@dataclass(frozen=True)
class Unrecorded:
    """What runs that were killed before recording themselves ingested: their files, as
    `ops.ingestion_files` logged them, their schema drift, and their batches."""

    totals: RunTotals
    batches: tuple[int, ...]


def unrecorded(
    shell: Shell, dataset: str, source: str, stream: str, run_id: str, skip: set[int]
) -> Unrecorded:
    """The files a stream's earlier runs logged and no row of `ops.ingestion_runs` counts
    (runs killed after some batches), leaving out this run's own (`run_id`) and the batches
    in `skip` (those this run processed again, whose log rows a killed run had written)."""
    if not shell.has(INGESTION_FILES):
        return Unrecorded(RunTotals(), ())
    recorded: list[str] = []
    if shell.has(INGESTION_RUNS):
        runs = shell.read(INGESTION_RUNS)
        mine = (F.col("dataset") == dataset) & (F.col("source") == source)
        recorded = [r.run_id for r in runs.where(mine).select("run_id").distinct().collect()]

    def orphans(table: TableRef) -> DataFrame:
        rows = shell.read(table).where(
            (F.col("dataset") == dataset)
            & (F.col("source") == source)
            & (F.col("stream_id") == stream)
            & (F.col("run_id") != run_id)
            & ~F.col("run_id").isin(*recorded)
        )
        return rows.where(F.col("batch_id").isNull() | ~F.col("batch_id").isin(*skip))

    counts = (
        orphans(INGESTION_FILES)
        .agg(
            F.count(F.lit(1)).alias("files_new"),
            F.count_if(F.col("status") == "empty").alias("empty_files"),
            *[
                F.coalesce(F.sum(c), F.lit(0)).alias(c)
                for c in ("rows", "corrupt_rows", "rescued_rows", "decode_errors", "bytes")
            ],
            F.sort_array(F.collect_set("batch_id")).alias("batch_ids"),
        )
        .first()
    )
    assert counts is not None
    if not counts.files_new:
        return Unrecorded(RunTotals(), ())
    found = counts.asDict()
    batches = tuple(int(b) for b in found.pop("batch_ids"))
    drift = orphans(SCHEMA_DRIFT).count() if shell.has(SCHEMA_DRIFT) else 0
    totals = RunTotals(**{k: int(v) for k, v in found.items()})
    totals.batches, totals.drift_events = len(batches), drift
    return Unrecorded(totals, batches)


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
