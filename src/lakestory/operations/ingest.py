"""Landing files -> bronze Delta tables: incrementally, exactly once, nothing dropped.

New files are discovered by Structured Streaming's file source (format `binaryFile`, reading only
path, length and modification time) under `trigger(availableNow=True)`, with one checkpoint per
table. Each micro-batch's files are then read by format (see `structured` and `binary`) and
appended to bronze with `txnAppId`/`txnVersion`, so a batch replayed after a crash is not
appended twice: the checkpoint's offset log names the files of a batch before it runs, and
Delta skips a commit it has already made for the (query, batch) pair. A rerun with no new files
commits nothing.

Every bronze row carries `_source_file`, `_file_modification_time`, `_ingested_at`, `_batch_id`
and `_row_hash`; each batch also logs its files to `ops.ingestion_files` and any schema drift to
`ops.schema_drift` (both idempotent the same way), and each run that ingested something adds a
row to `ops.ingestion_runs`.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.columns import (
    BATCH_ID,
    CORRUPT,
    DECODE_ERROR,
    INGESTED_AT,
    LINEAGE,
    RESCUED,
    ROW_HASH,
    SOURCE_FILE,
)
from lakestory.config import BinarySource, Dataset, Settings, Source, load_token_key
from lakestory.ingestion import ops
from lakestory.ingestion.structured import (
    Drift,
    StructuredBatch,
    read_structured,
    sampled_type_changes,
)
from lakestory.io import (
    INGESTION_FILES,
    SCHEMA_DRIFT,
    Catalog,
    Shell,
    StreamTxns,
    TableRef,
    ensure_layers,
    local_frame,
)
from lakestory.io.commits import remove
from lakestory.io.files import LandedFile, list_files, read_text, write_text
from lakestory.operations.erasure import without_erased
from lakestory.privacy.vault import check_key

log = logging.getLogger("lakestory.ingest")
# Bronze keeps data-skipping statistics on its batch id and ingestion time only: its readers
# select by those. Min/max of raw text columns would skip nothing, would cost about a third of
# a plain write, and would copy raw values (names, e-mail addresses) into the transaction log,
# where erasure cannot reach them. `_source_file` is left out too: string statistics keep a
# 32-character prefix, which every path under one landing folder shares.
STATS_COLUMNS = [INGESTED_AT, BATCH_ID]
DISCOVERY_SCHEMA = "path string, modificationTime timestamp, length bigint, content binary"


@dataclass(frozen=True)
class IngestResult:
    table: TableRef
    version_before: int | None
    version_after: int | None
    rows: int
    run: ops.IngestionRun | None = None

    @property
    def changed(self) -> bool:
        return self.version_after != self.version_before


@dataclass
class _Ingestion:
    """The state of one ingest run of one source, shared by its micro-batches."""

    shell: Shell
    catalog: Catalog
    source_name: str
    run_id: str
    # the (app id, batch) of each batch's commits, and the one batch that may be a replay
    txns: StreamTxns
    # the token key, when the dataset has erasures whose tombstones ingest must apply
    erasure_key: bytes | None = None
    totals: ops.RunTotals = field(default_factory=ops.RunTotals)

    @property
    def spark(self) -> SparkSession:
        return self.shell.spark

    @property
    def dataset(self) -> Dataset:
        return self.catalog.dataset

    @property
    def source(self) -> Source | BinarySource:
        return self.dataset.sources[self.source_name]

    @property
    def table(self) -> TableRef:
        return self.catalog.bronze(self.source_name)

    def bronze_columns(self) -> list[str]:
        """The data columns bronze has now: the declared ones, then any added by evolution."""
        assert isinstance(self.source, Source)
        declared = list(self.source.schema_)
        if not self.shell.has(self.table):
            return declared
        existing = self.shell.read(self.table).columns
        added = [c for c in existing if not c.startswith("_") and c not in declared]
        return declared + added

    def process(self, discovered: DataFrame, batch_id: int) -> None:
        landed = [
            LandedFile(r.path, r.length, int(r.modificationTime.timestamp() * 1000))
            for r in discovered.collect()
        ]
        if not landed:
            return
        paths = [f.path for f in landed]
        source = self.source
        # Driver-side work that does not need the bronze write waits on it in a second thread,
        # so that its round trips overlap the write instead of following it.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lakestory-ingest") as aside:
            type_check = None
            if isinstance(source, BinarySource):
                from lakestory.ingestion.binary import read_binary

                frame = read_binary(self.spark, source, landed)
                batch = StructuredBatch(
                    frame.withColumn(ROW_HASH, F.col("sha256")),
                    encodings={p: "binary" for p in paths},
                )
            else:
                batch = read_structured(
                    self.spark, source, paths, self.bronze_columns(), type_check=False
                )
                type_check = aside.submit(
                    sampled_type_changes, self.spark, source.schema_, batch.samples
                )
            stats: dict[str, dict[str, Any]] = {}
            if batch.frame is not None:
                self._write(batch, batch_id)
                stats = self._file_stats(batch_id)
            if type_check is not None:
                batch.drift += type_check.result()
        self._log_batch(batch_id, landed, batch, stats, batch.drift)

    def _write(self, batch: StructuredBatch, batch_id: int) -> None:
        """Append the batch to bronze, once: Delta skips a (query, batch) it has committed."""
        assert batch.frame is not None
        out = batch.frame.withColumns(
            {INGESTED_AT: F.current_timestamp(), BATCH_ID: F.lit(batch_id).cast("bigint")}
        )
        ordered = [c for c in out.columns if c not in LINEAGE] + LINEAGE
        self.shell.append(
            self._without_erased(out).select(*ordered),
            self.table,
            self.txns.txn(batch_id),
            merge_schema=bool(batch.added_columns),
            stats_columns=STATS_COLUMNS,
        )

    def _without_erased(self, rows: DataFrame) -> DataFrame:
        """Rows of subjects erased by `lakestory forget` are left out, should their records
        land again (a landing file still holding them, a full refresh): see `erasure`."""
        source = self.source
        if self.erasure_key is None or not isinstance(source, Source):
            return rows
        log.info("%s: leaving out the rows of erased subjects", self.table)
        erased = without_erased(self.shell, self.catalog, source, self.erasure_key)
        return rows.transform(erased)

    def _file_stats(self, batch_id: int) -> dict[str, dict[str, Any]]:
        """Per-file counts of the batch just written, read back from bronze (a scan of a few
        mostly-null columns): from the data files its commit added, which spares loading the
        table's state, or else from the table filtered by batch."""
        if isinstance(self.source, BinarySource):
            counted = {"error": "corrupt_rows"}
        else:
            counted = {
                CORRUPT: "corrupt_rows",
                RESCUED: "rescued_rows",
                DECODE_ERROR: "decode_errors",
            }
        files = self.shell.latest_files(self.table, self.txns.txn(batch_id))
        if files is not None:
            # the columns read, named: Spark then reads no footer to plan the scan
            schema = ", ".join(f"`{c}` string" for c in [SOURCE_FILE, *counted])
            rows = self.spark.read.schema(schema).parquet(*files)
        else:
            rows = self.shell.read(self.table).where(F.col(BATCH_ID) == batch_id)
        flags = [F.count_if(F.col(c).isNotNull()).alias(name) for c, name in counted.items()]
        agg = rows.groupBy(SOURCE_FILE).agg(F.count(F.lit(1)).alias("rows"), *flags)
        return {r[SOURCE_FILE]: r.asDict() for r in agg.collect()}

    def record_empty_files(self, seen: list[LandedFile]) -> None:
        """Spark's file source plans empty files but reads no row from them, so a batch never
        sees them: record the new ones here, so that they are accounted for all the same."""
        empty = [f for f in seen if f.size == 0]
        if not empty:
            return
        known = ops.ingested_files(self.spark, self.dataset.name, self.source_name)
        new = [f for f in empty if f.path not in known]
        if new:
            self._log_batch(None, new, StructuredBatch(None, empty=[f.path for f in new]), {}, [])

    def _log_batch(
        self,
        batch_id: int | None,
        landed: list[LandedFile],
        batch: StructuredBatch,
        stats: dict[str, dict[str, Any]],
        drift: list[Drift],
    ) -> None:
        now = datetime.now(timezone.utc)
        ds, src, t = self.dataset.name, self.source_name, self.totals
        files = []
        for f in landed:
            s = stats.get(f.path, {})
            rows = int(s.get("rows", 0))
            counts = [int(s.get(k) or 0) for k in ("corrupt_rows", "rescued_rows", "decode_errors")]
            status = "empty" if f.path in batch.empty or rows == 0 else "ok"
            modified = datetime.fromtimestamp(f.modification_ms / 1000, timezone.utc)
            files.append(
                (
                    self.run_id,
                    ds,
                    src,
                    self.txns.app_id,
                    batch_id,
                    f.path,
                    f.size,
                    modified,
                    batch.encodings.get(f.path),
                    rows,
                    *counts,
                    status,
                    now,
                )
            )
            t.rows += rows
            t.corrupt_rows += counts[0]
            t.rescued_rows += counts[1]
            t.decode_errors += counts[2]
            t.bytes += f.size
            t.empty_files += status == "empty"
        t.files_new += len(landed)
        t.drift_events += len(drift)
        files_df = local_frame(self.spark, files, ops.FILES_SCHEMA)
        if batch_id is None:  # outside a streaming batch: a plain append
            ops.append_files(self.shell, files_df)
            return
        t.batches += 1
        app, replay = self.txns.app_id, self.txns.may_replay(batch_id)
        ops.append_batch_log(self.shell, files_df, INGESTION_FILES, app, batch_id, replay)
        if drift:
            for d in drift:
                log.warning(
                    "schema drift in %s: %s %s (%s) -> %s, in %d file(s)",
                    self.table,
                    d.change,
                    d.column,
                    d.detail,
                    d.action,
                    len(d.files),
                )
            drift_rows = [
                (
                    self.run_id,
                    ds,
                    src,
                    app,
                    batch_id,
                    list(d.files),
                    d.column,
                    d.change,
                    d.detail,
                    d.action,
                    now,
                )
                for d in drift
            ]
            drift_df = local_frame(self.spark, drift_rows, ops.DRIFT_SCHEMA)
            ops.append_batch_log(self.shell, drift_df, SCHEMA_DRIFT, app, batch_id, replay)


def _discovery_stream(
    spark: SparkSession, catalog: Catalog, source: Source | BinarySource
) -> DataFrame:
    reader = spark.readStream.format("binaryFile").schema(DISCOVERY_SCHEMA)
    reader = reader.option("recursiveFileLookup", "true")
    if source.glob:
        reader = reader.option("pathGlobFilter", source.glob)
    if source.max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", source.max_files_per_trigger)
    return reader.load(catalog.landing(source)).select("path", "modificationTime", "length")


def _erasure_key(shell: Shell, catalog: Catalog, source: Source | BinarySource) -> bytes | None:
    """The token key, checked against the vault's, when landed rows must be matched against
    the dataset's tombstones (before the stream starts: a wrong key stops the run here)."""
    if not isinstance(source, Source) or not shell.has(catalog.erasures()):
        return None
    key = load_token_key(shell.settings)
    check_key(shell, catalog, key)  # another key's tokens would match no tombstone
    return key


def _version_before(
    shell: Shell, table: TableRef, txns: StreamTxns, batches: list[int]
) -> int | None:
    """Bronze's version before the earliest commit of `batches` (batches of killed runs that
    this run completes or counts), or its version now when they made none."""
    now = shell.version(table)
    if now is None:
        return None
    commits = [v for b in batches if (v := shell.version_of(table, txns.txn(b))) is not None]
    if not commits:
        return now
    return min(commits) - 1 if min(commits) > 0 else None


def _unrecorded(
    shell: Shell, catalog: Catalog, source_name: str, txns: StreamTxns, run_id: str
) -> ops.Unrecorded:
    """What runs killed before recording themselves ingested (nothing when the last run
    finished: it removed its marker)."""
    if read_text(shell.spark, catalog.run_marker(catalog.bronze(source_name))) is None:
        return ops.Unrecorded(ops.RunTotals(), ())
    # the pending batch is replayed by this run, which counts it itself
    skip = {txns.pending} if txns.pending is not None else set()
    name = catalog.dataset.name
    return ops.unrecorded(shell, name, source_name, txns.app_id, run_id, skip)


def ingest_source(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    source_name: str,
    run_id: str | None = None,
) -> IngestResult:
    """Append the source's new landing files to its bronze table; wait until they are in."""
    ensure_layers(spark, settings)
    shell, catalog = Shell(spark, settings), Catalog(dataset, settings)
    source = dataset.sources[source_name]
    table = catalog.bronze(source_name)
    checkpoint = catalog.checkpoint(table)
    state = _Ingestion(
        shell,
        catalog,
        source_name,
        run_id or uuid.uuid4().hex,
        StreamTxns.starting(spark, "ingest", table, checkpoint),
        erasure_key=_erasure_key(shell, catalog, source),
    )
    # A run records itself (`ops.ingestion_runs`) once its stream has finished. One killed
    # before that leaves its marker, and the batches it completed are counted by the next
    # run's row (`adopted`), so that a kill loses no run's record: the rows of a killed run
    # and its rerun are those of one run (the chaos bench compares them).
    txns = state.txns
    adopted = _unrecorded(shell, catalog, source_name, txns, state.run_id)
    replayed = [txns.pending] if txns.pending is not None else []
    before = _version_before(shell, table, txns, [*adopted.batches, *replayed])
    write_text(spark, catalog.run_marker(table), state.run_id)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    seen = list_files(spark, catalog.landing(source), source.glob)
    query = (
        _discovery_stream(spark, catalog, source)
        .writeStream.foreachBatch(state.process)
        .option("checkpointLocation", checkpoint)
        .trigger(availableNow=True)
        .queryName(f"ingest_{table.name}")
        .start()
    )
    query.awaitTermination()
    state.record_empty_files(seen)
    after = shell.version(table)
    state.totals.add(adopted.totals)
    run = None
    if state.totals.files_new:
        duration = round(time.perf_counter() - clock, 3)
        run = state.totals.run(state.run_id, dataset.name, source_name, started, duration, seen)
        run = replace(run, bronze_version_before=before, bronze_version_after=after)
        ops.record_run(shell, run)
    remove(spark, catalog.run_marker(table))
    return IngestResult(table, before, after, state.totals.rows, run)
