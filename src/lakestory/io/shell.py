"""The shell: the one writer of the warehouse.

Every Delta commit a stage makes goes through a `Shell`: appends, replacements, MERGEs, the
counts observed while a write's rows go by, and the registration of the table it wrote. A
commit that a stream's micro-batch makes carries the batch's transaction, `(app id, batch)`
(`Txn`): Delta skips a commit whose pair the table already has, so a batch replayed after a
crash writes nothing twice. `StreamTxns` gives a stream's batches their pairs and knows which
batch may be a replay.

Stages compute frames (pure transforms) and hand them here with the table they go to; nothing
else in lakestory says `format("delta")`, sets a Delta write option or opens a `DeltaTable`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from delta.tables import DeltaMergeBuilder, DeltaTable
from pyspark.sql import Column, DataFrame, DataFrameWriter, Observation, Row, SparkSession

from lakestory.config import Settings
from lakestory.io.commits import (
    carries,
    commit_actions,
    pending_batch,
    query_id,
    txn_of,
    txn_version,
)
from lakestory.io.tables import TableRef, clear_cut_log, log_version, register
from lakestory.io.upsert import idempotent, upsert_latest

# (app id, version): the pair a commit carries in its `txn` action
Txn = tuple[str, int]
RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
LISTING_TASKS = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


@dataclass
class StreamTxns:
    """The transactions of one stream's micro-batches: the app id comes from the stream's
    checkpoint (its query id: stable across restarts of one checkpoint, new for a new one),
    the version is the batch id. Only the batch the checkpoint had planned but not finished
    when its last run stopped (`pending`) can be a replay of one already (partly) written."""

    spark: SparkSession
    kind: str  # what writes: "ingest", "refine"
    table: TableRef  # the table the stream is named after
    checkpoint: str
    pending: int | None = None
    _app_id: str | None = field(default=None, repr=False)

    @classmethod
    def starting(
        cls, spark: SparkSession, kind: str, table: TableRef, checkpoint: str
    ) -> StreamTxns:
        """The stream's transactions as its checkpoint stands before the stream starts."""
        return cls(spark, kind, table, checkpoint, pending_batch(spark, checkpoint))

    @property
    def app_id(self) -> str:
        if self._app_id is None:
            query = query_id(self.spark, self.checkpoint)
            app_id = f"lakestory-{self.kind}:{self.table.qualified}:{query}"
            if query == "unknown":  # asked before the stream's start wrote its id: not kept
                return app_id
            self._app_id = app_id
        return self._app_id

    def txn(self, batch: int) -> Txn:
        return (self.app_id, batch)

    def may_replay(self, batch: int) -> bool:
        return batch == self.pending


@dataclass(frozen=True)
class Shell:
    """Reads and writes the Delta tables of the warehouse at `settings.root`."""

    spark: SparkSession
    settings: Settings

    def location(self, table: TableRef) -> str:
        return str(table.path(self.settings))

    # reading
    def version(self, table: TableRef) -> int | None:
        """The table's latest version, from its log (None: there is no table yet)."""
        return log_version(self.spark, self.location(table))

    def has(self, table: TableRef) -> bool:
        return self.version(table) is not None

    def read(self, table: TableRef, version: int | None = None) -> DataFrame:
        """The table as it is now, or at `version`, read by its location."""
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.location(table))

    def stream(self, table: TableRef, max_files: int | None = None) -> DataFrame:
        """A stream of the rows appended to the table (MERGEs and deletes skipped)."""
        reader = self.spark.readStream.format("delta").option("skipChangeCommits", "true")
        if max_files:
            reader = reader.option("maxFilesPerTrigger", max_files)
        return reader.load(self.location(table))

    def properties(self, table: TableRef) -> dict[str, str]:
        """The table's properties (its `TBLPROPERTIES`)."""
        return self.properties_at(self.location(table))

    def properties_at(self, location: str) -> dict[str, str]:
        """The properties of the Delta table at `location` (a backup's copy, say)."""
        row = DeltaTable.forPath(self.spark, location).detail().select("properties").first()
        return dict(row[0] or {}) if row is not None else {}

    def features(self, table: TableRef) -> set[str]:
        """The table features its protocol names (deletion vectors, column mapping...)."""
        row = self._delta(table).detail().select("tableFeatures").first()
        return set(row[0] or []) if row is not None else set()

    def committed(self, table: TableRef, txn: Txn, after: int | None) -> bool:
        """Whether a commit since version `after` (None: since the table began) carries
        `txn`; False when Delta skipped the write, an earlier attempt having made it."""
        first = -1 if after is None else after
        latest = self.version(table)
        path = self.location(table)
        return any(
            (actions := commit_actions(self.spark, path, v)) is not None and carries(actions, *txn)
            for v in range(first + 1, -1 if latest is None else latest + 1)
        )

    def written_by(self, table: TableRef, version: int, app_id: str) -> bool:
        """Whether the table's commit of `version` carries a transaction of `app_id`."""
        actions = commit_actions(self.spark, self.location(table), version)
        txn = None if actions is None else txn_of(actions)
        return txn is not None and txn.get("appId") == app_id

    def version_of(self, table: TableRef, txn: Txn) -> int | None:
        """The version of the table's commit that carries `txn`, among its latest 50; None if
        none does."""
        latest = self.version(table)
        if latest is None:
            return None
        return txn_version(self.spark, self.location(table), latest, *txn)

    def latest_files(self, table: TableRef, txn: Txn) -> list[str] | None:
        """The data files that the table's latest commit added, read from the commit
        itself, when that commit carries `txn`; None if it does not (another writer
        committed since, or Delta skipped a replayed write it had already committed)."""
        version = self.version(table)
        if version is None:
            return None
        path = self.location(table)
        actions = commit_actions(self.spark, path, version)
        if actions is None or not carries(actions, *txn):
            return None
        adds = [unquote(a["add"]["path"]) for a in actions if "add" in a]
        return [a if "://" in a or a.startswith("file:") else f"{path}/{a}" for a in adds]

    # writing
    def append(
        self,
        rows: DataFrame,
        table: TableRef,
        txn: Txn | None = None,
        merge_schema: bool = False,
        stats_columns: list[str] | None = None,
    ) -> int:
        """Append `rows` in one commit; with `txn`, once per transaction. `merge_schema`
        adds the columns the table lacks; `stats_columns` are the only columns Delta keeps
        data-skipping statistics on (for a new table). Returns the table's version after."""
        writer = rows.write.format("delta").mode("append")
        if txn is not None:
            writer = writer.option("txnAppId", txn[0]).option("txnVersion", txn[1])
        if merge_schema:
            writer = writer.option("mergeSchema", "true")
        if stats_columns:
            writer = writer.option("delta.dataSkippingStatsColumns", ",".join(stats_columns))
        return self._saved(writer, table)

    def replace(self, rows: DataFrame, table: TableRef, txn: Txn | None = None) -> int:
        """Replace the table's rows (and schema) by `rows` in one commit; with `txn`, once.
        Returns the table's version after."""
        writer = rows.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
        if txn is not None:
            writer = writer.option("txnAppId", txn[0]).option("txnVersion", txn[1])
        return self._saved(writer, table)

    def _saved(self, writer: DataFrameWriter, table: TableRef) -> int:
        writer.save(self.location(table))
        register(self.spark, self.settings, table)
        version = self.version(table)
        assert version is not None
        return version

    def write_once(self, rows: DataFrame, table: TableRef, txn: Txn, replace: bool = False) -> None:
        """Append `rows` (or, with `replace`, replace the table with them), once per
        transaction; an older table gains the columns it lacks."""
        if replace:
            self.replace(rows, table, txn)
        else:
            self.append(rows, table, txn, merge_schema=True)

    def upsert(
        self,
        rows: DataFrame,
        table: TableRef,
        key: str,
        order: list[str],
        txn: Txn,
        replace: bool = False,
        retract: str | None = None,
    ) -> int:
        """MERGE the latest row per `key` into the table, once per transaction (see
        `io.upsert.upsert_latest`); returns the rows inserted or updated."""
        done = upsert_latest(rows, self.location(table), key, order, txn, replace, retract)
        register(self.spark, self.settings, table)
        return done

    def merge(
        self,
        table: TableRef,
        rows: DataFrame,
        on: str,
        clauses: Callable[[DeltaMergeBuilder], DeltaMergeBuilder],
        txn: Txn | None = None,
    ) -> Row | None:
        """MERGE `rows` (alias `s`) into the table (alias `t`) on `on`, with the clauses
        `clauses` adds to the builder; with `txn`, once. Returns MERGE's row of counts
        (`num_inserted_rows`, `num_deleted_rows`, ...)."""
        builder = clauses(self._delta(table).alias("t").merge(rows.alias("s"), on))
        with self._txn(txn):
            result = builder.execute()
        register(self.spark, self.settings, table)
        return result.first()

    def create(self, table: TableRef, rows: DataFrame, properties: dict[str, str]) -> None:
        """Create the empty table with the schema of `rows` and `properties`, unless a table
        is already there. A log left without a commit by a cut creation is no table, and is
        cleared first."""
        clear_cut_log(self.spark, self.location(table))
        builder = DeltaTable.createIfNotExists(self.spark).location(self.location(table))
        builder = builder.addColumns(rows.schema)
        for name, value in properties.items():
            builder = builder.property(name, value)
        builder.execute()
        register(self.spark, self.settings, table)

    def replace_as(self, table: TableRef, rows: DataFrame, properties: dict[str, str]) -> None:
        """Replace the table by `rows` in one commit that also sets `properties`; `rows` may
        be a query over the table itself."""
        view = "__lakestory_replacement"
        rows.createOrReplaceTempView(view)
        props = ", ".join(f"'{k}' = '{v}'" for k, v in properties.items())
        try:
            self.spark.sql(
                f"CREATE OR REPLACE TABLE {self._sql_name(table)} USING DELTA "
                f"TBLPROPERTIES ({props}) AS SELECT * FROM {view}"
            )
        finally:
            self.spark.catalog.dropTempView(view)

    def purge(self, table: TableRef) -> int:
        """Rewrite the files that hide deleted rows, then remove every file the current
        version does not use (Delta's retention check off for this command only): older
        versions can no longer be read. Returns the version after."""
        self.spark.sql(f"REORG TABLE {self._sql_name(table)} APPLY (PURGE)")
        with self._vacuum_now():
            self.spark.sql(f"VACUUM {self._sql_name(table)} RETAIN 0 HOURS")
        version = self.version(table)
        assert version is not None
        return version

    def observed(
        self,
        rows: DataFrame,
        counts: list[Column],
        write: Callable[[DataFrame], None],
        table: TableRef,
        txn: Txn,
    ) -> dict[str, Any]:
        """Write `rows` with `write`, a commit to `table` that carries `txn`, and return
        `counts` over the rows, computed by the write's own pass (an `Observation`). When
        Delta skips the write, because an earlier attempt of the transaction committed it,
        the rows are never computed, and the counts take a pass of their own."""
        before = self.version(table)
        observation = Observation()
        write(rows.observe(observation, *counts))
        if self.committed(table, txn, before):
            return observation.get
        row = rows.agg(*counts).first()
        assert row is not None
        return row.asDict()

    def _delta(self, table: TableRef) -> DeltaTable:
        return DeltaTable.forPath(self.spark, self.location(table))

    def _sql_name(self, table: TableRef) -> str:
        return "delta.`" + self.location(table).replace("`", "``") + "`"

    @contextmanager
    def _vacuum_now(self) -> Iterator[None]:
        """In this block only, VACUUM may remove files younger than Delta's safety retention,
        and lists a table's folders in as many tasks as there are cores rather than Spark's
        10,000 (which took 10 to 40 s a table here)."""
        conf = self.spark.conf
        settings = {
            RETENTION_CHECK: "false",
            LISTING_TASKS: str(self.spark.sparkContext.defaultParallelism),
        }
        before = {k: conf.get(k, None) for k in settings}
        for k, value in settings.items():
            conf.set(k, value)
        try:
            yield
        finally:
            for k, was in before.items():
                if was is None:
                    conf.unset(k)
                else:
                    conf.set(k, was)

    @contextmanager
    def _txn(self, txn: Txn | None) -> Iterator[None]:
        if txn is None:
            yield
            return
        with idempotent(self.spark, *txn):
            yield
