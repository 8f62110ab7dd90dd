"""bronze -> silver + quarantine: cast, check, de-duplicate, pseudonymise; counts reconcile.

Refine reads only the bronze rows it has not refined yet: a stream from the bronze table with a
checkpoint of its own (`_checkpoints/silver/<table>`), run with `trigger(availableNow=True)`.
Each micro-batch of new rows is checked, split and written, and every table it writes (silver,
quarantine, its `ops.quality_metrics` row) is written with the batch's (app id, batch id), so a
batch replayed after a crash writes nothing twice: exactly once, as ingestion is.

Every row of a batch ends in exactly one of: a silver row, a collapsed duplicate (an exact copy
by row hash, or an older version of its business key within the batch), a row silver already
holds as it is or newer (`unchanged`), a quarantine row carrying the names of every rule it
failed, or a row dropped by a `drop` expectation. A `fail` expectation that any row of a batch
fails stops the run before that batch writes anything; earlier batches stay written, and the
next run retries the failed one. Outlier fences are computed on each batch's rows.

Silver is written with MERGE on the business key (`upsert`): the latest version of each record
replaces an older one, never the reverse. Quarantine is appended to. The first batch of a
checkpoint replaces both instead: a new table, a `full_refresh`, or a config that changed
silver's columns (which starts a new checkpoint) refines all of bronze again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings, Source
from lakestory.errors import ExpectationError
from lakestory.io import (
    QUALITY_METRICS,
    Catalog,
    Shell,
    StreamTxns,
    TableRef,
    Txn,
    local_frame,
    table_version,
)
from lakestory.io.commits import remove, rescanned
from lakestory.privacy.pseudonyms import mint
from lakestory.privacy.vault import check_key, read_vault
from lakestory.quality.accounting import (
    METRICS_SCHEMA,
    RefineCounts,
    Tally,
    counts_of,
    counts_of_rows,
    metrics_row,
    outside_counts,
    tally_counts,
    tally_of,
)
from lakestory.quality.casting import RAW_PREFIX, with_declared_types
from lakestory.quality.dedup import duplicate_counts, duplicates_of
from lakestory.quality.labels import LABEL_TEXT, UNLABELED
from lakestory.quality.outliers import Fence, counted_fences, quarantine_rules
from lakestory.quality.quarantine import (
    OUTCOME_MATCH,
    QUARANTINE_COLUMNS,
    outcomes,
    rejected_columns,
    resolution,
)
from lakestory.quality.rules import REASONS, Checks, Rule
from lakestory.quality.silver import (
    ranked,
    same_shape,
    silver_rows,
    silver_schema,
    version_order,
)
from lakestory.quality.source_rules import rules_for, validate_expectations

log = logging.getLogger("lakestory.refine")

RETRACT = "__retract"  # a labelled row, which takes its key out of the unlabeled table


class _Clock:
    """Wall seconds of consecutive passes, by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now


@dataclass(frozen=True)
class _Batch:
    """One batch's rows, checked: what every write of the batch shares."""

    checked: DataFrame
    checks: Checks
    rules: list[Rule]
    found: list[Fence]
    rows_in: int
    txn: Txn
    replace: bool  # the first batch of a checkpoint replaces silver and quarantine
    resolve: bool  # the rows come from quarantine (reprocess)


@dataclass
class Refinement:
    """Refines rows of one source; `process` handles each micro-batch of new bronze rows and
    `reprocess` the rows quarantine holds.

    Each batch goes through the data twice: once to write its rejected rows to quarantine, and
    once to write silver; the counts are observed on the way (`Shell.observed`), those of the
    rules only on the rows that fail some rule (the others add nothing to them), so that the
    rows passing everything are never copied out of the compiled pipeline for it. The rows in
    are counted apart, by the outlier fences' aggregate (or a count of their own), so that the
    accounts compare two independent counts. Every pass reads the batch's bronze data files
    again (`rescanned`), each only the columns it needs, rather than the whole rows of the
    RDD Spark hands to foreachBatch. Only a source with a `fail` expectation pays one more
    pass, to count before anything is written.
    Every table a batch writes (silver, quarantine, its metrics row) is written through the
    shell with the batch's (app id, batch id), so a batch replayed after a crash writes
    nothing twice."""

    shell: Shell
    catalog: Catalog
    source_name: str
    key: bytes
    run_id: str
    rules: list[Rule]
    txns: StreamTxns | None = None  # the stream's, when refining new bronze rows
    counts: list[RefineCounts] = field(default_factory=list)
    error: Exception | None = None

    @property
    def spark(self) -> SparkSession:
        return self.shell.spark

    @property
    def source(self) -> Source:
        return self.catalog.dataset.structured()[self.source_name]

    @property
    def silver(self) -> TableRef:
        return self.catalog.silver(self.source_name)

    @property
    def quarantine(self) -> TableRef:
        return self.catalog.quarantine(self.source_name)

    def process(self, bronze: DataFrame, batch_id: int) -> None:
        assert self.txns is not None
        try:
            location = self.shell.location(self.catalog.bronze(self.source_name))
            rows = rescanned(self.spark, bronze, location)
            self.counts.append(self._refine(rows, self.txns.txn(batch_id), batch_id == 0))
        except ExpectationError as exc:
            self.error = exc  # raised again as itself once the stream has stopped
            raise

    def _refine(
        self,
        rows: DataFrame,
        txn: Txn,
        replace: bool = False,
        found: list[Fence] | None = None,
        resolve: bool = False,
    ) -> RefineCounts:
        """Check `rows` (bronze's columns), write the rejected ones to quarantine and the rest
        to silver, and record the counts. With `resolve`, `rows` come from quarantine itself:
        the ones that now pass leave it, the others get their new reasons."""
        clock = _Clock()
        batch = self._checked(rows, txn, replace, found, resolve)
        clock.lap("check")
        # ids for the batch's identifiers before anything is written that carries them (a
        # batch run again mints nothing twice)
        mint(self.shell, self.catalog, self.source, batch.checked, self.key)
        vault = read_vault(self.shell, self.catalog)
        clock.lap("mint")
        # silver first: a row that leaves quarantine (`resolve`) must be in silver already
        upserted, kept = self._write_silver(batch, vault)
        clock.lap("silver")
        if any(r.action == UNLABELED for r in batch.rules):
            self._write_unlabeled(batch, vault)
            clock.lap("unlabeled")
        counted = self._write_quarantine(batch)
        clock.lap("quarantine")
        tally = tally_of(counted, batch.rules, batch.found, batch.rows_in, kept)
        counts = counts_of(tally, upserted, duplicates_of(kept))
        self._record(counts, tally, batch)
        clock.lap("record")
        counts.seconds.update(clock.seconds)
        log.debug(  # below the console's level: bench/refine.py reads `counts.seconds`
            "%s: batch of %d rows refined in %s",
            self.silver,
            batch.rows_in,
            ", ".join(f"{name} {s:.2f}s" for name, s in clock.seconds.items()),
        )
        return counts

    def _checked(
        self, rows: DataFrame, txn: Txn, replace: bool, found: list[Fence] | None, resolve: bool
    ) -> _Batch:
        """The batch's rows typed and checked; a `fail` rule that some row fails stops the
        run here, before anything is written."""
        source = self.source
        typed = rows.transform(with_declared_types(source))
        if found is None:  # a pass over the outlier columns alone, which counts the rows too
            rows_in, found = counted_fences(typed, dict(source.outliers))
        else:
            rows_in = rows.count()
        rules = [*self.rules, *quarantine_rules(found)]
        checks = Checks(tuple(rules))
        batch = _Batch(checks.apply(typed), checks, rules, found, rows_in, txn, replace, resolve)
        if any(r.action == "fail" for r in rules):  # counted before anything is written
            first = self._failing(batch).agg(*tally_counts(checks, found)).first()
            assert first is not None
            self._stop_on_failures(tally_of(first, rules, found, rows_in), rules)
        return batch

    @staticmethod
    def _failing(batch: _Batch) -> DataFrame:
        """The rows quarantine's write and counts need: when reprocessing, every row (a row
        that passes now leaves quarantine), else only those that fail some rule."""
        return batch.checked if batch.resolve else batch.checked.where(batch.checks.failed())

    def _upsert(self, rows: DataFrame, table: TableRef, batch: _Batch, retract: str | None) -> int:
        source = self.source
        return self.shell.upsert(
            rows,
            table,
            source.silver_name(source.key),
            [source.silver_name(c) for c in version_order(source)],
            batch.txn,
            replace=batch.replace,
            retract=retract,
        )

    def _write_silver(self, batch: _Batch, vault: DataFrame) -> tuple[int, dict[str, int]]:
        """MERGE the latest kept version of each key into silver; returns the rows the MERGE
        inserted or updated, and the counts of duplicates and outliers observed on the way."""
        source, checks = self.source, batch.checks
        ranks = ranked(batch.checked.where(checks.kept()), source, batch.found, self.key)
        upserted = 0

        def upsert(frame: DataFrame) -> None:
            nonlocal upserted
            rows = silver_rows(frame, source, self.key, vault)
            upserted = self._upsert(rows, self.silver, batch, retract=None)

        counts = [*duplicate_counts(), *outside_counts(batch.found)]
        kept = self.shell.observed(ranks, counts, upsert, self.silver, batch.txn)
        return upserted, kept

    def _write_quarantine(self, batch: _Batch) -> dict[str, int]:
        """Append the batch's rejected rows to quarantine (or, reprocessing, apply each row's
        new outcome to it); returns the tally's counts, observed on the way."""
        checks, quarantine, run_id = batch.checks, self.quarantine, self.run_id
        now = F.lit(datetime.now(timezone.utc).replace(tzinfo=None)).cast("timestamp")
        present = batch.checked.columns

        def write(frame: DataFrame) -> None:
            if batch.resolve:
                changes = outcomes(frame, checks)
                self.shell.merge(quarantine, changes, OUTCOME_MATCH, resolution(run_id), batch.txn)
                return
            columns = rejected_columns(self.source, checks, present, run_id, now)
            rejected = frame.where(checks.rejected()).select(*columns)
            self.shell.write_once(rejected, quarantine, batch.txn, batch.replace)

        counts = tally_counts(checks, batch.found)
        return self.shell.observed(self._failing(batch), counts, write, quarantine, batch.txn)

    def _write_unlabeled(self, batch: _Batch, vault: DataFrame) -> None:
        """MERGE the latest unlabeled version of each key into the unlabeled table, with the
        label as it landed and the reasons; a key whose latest version in the batch has a
        label leaves the table instead (unless the table's version is newer)."""
        source, checks = self.source, batch.checks
        assert source.label is not None
        both = batch.checked.where(checks.kept() | checks.unlabeled()).withColumns(
            {
                RETRACT: checks.kept(),
                LABEL_TEXT: F.col(f"{RAW_PREFIX}{source.label.column}"),
                REASONS: checks.reasons(),
            }
        )
        ranks = ranked(both, source, batch.found, self.key)
        rows = silver_rows(ranks, source, self.key, vault, keep=(LABEL_TEXT, REASONS, RETRACT))
        self._upsert(rows, self.catalog.unlabeled(self.source_name), batch, retract=RETRACT)

    def _stop_on_failures(self, tally: Tally, rules: list[Rule]) -> None:
        fatal = [r for r in rules if r.action == "fail" and tally.failures[r.name]]
        if fatal:
            detail = "; ".join(
                f"{r.name!r} failed on {tally.failures[r.name]} row(s)" for r in fatal
            )
            raise ExpectationError(
                f"{self.catalog.bronze(self.source_name)}: expectation {detail} "
                f"(of {tally.rows} new rows); nothing of them was written to silver or quarantine"
            )

    def _record(self, counts: RefineCounts, tally: Tally, batch: _Batch) -> None:
        """The batch's row in `ops.quality_metrics`, written once per (app id, batch)."""
        where = (self.run_id, self.catalog.dataset.name, self.source_name)
        row = metrics_row(counts, tally, batch.rules, batch.found, where, batch.txn)
        now = F.lit(datetime.now(timezone.utc).replace(tzinfo=None)).cast("timestamp")
        metrics = local_frame(self.spark, [row], METRICS_SCHEMA).withColumn("measured_at", now)
        self.shell.write_once(metrics, QUALITY_METRICS, batch.txn)

    def reprocess(self, version: int | None = None) -> RefineCounts:
        """Run the rows in quarantine (as of `version`, default its latest) through the
        current rules again: the ones that pass now go to silver (MERGE, latest wins) and
        leave quarantine; the others stay, with their new reasons. Outlier fences are those
        the latest refine run recorded. Both writes carry (app id, quarantine version), so a
        rerun after a crash, given the version the crashed run read, completes the move
        without doing any part of it twice. The app id names the rules (`_fingerprint`): a
        quarantine whose version a reprocess under the same rules wrote has nothing to move,
        and is left alone (a reprocess asked for twice does the work once)."""
        if version is None:
            version = self.shell.version(self.quarantine)
        if version is None:
            return RefineCounts.total([])
        app_id = f"lakestory-reprocess:{self.quarantine.qualified}:{self._fingerprint()}"
        if self.shell.written_by(self.quarantine, version, app_id):
            # a reprocess under the same rules left quarantine as it is: it would move nothing
            log.info("%s: unchanged since it was last reprocessed", self.quarantine)
            return RefineCounts.total([])
        rows = self.shell.read(self.quarantine, version).drop(*QUARANTINE_COLUMNS)
        return self._refine(rows, (app_id, version), found=self._latest_fences(), resolve=True)

    def _fingerprint(self) -> str:
        """What decides a quarantined row's fate besides the row: the source's config and
        the versions of the tables its `exists_in` rules look into."""
        looked_up = sorted({e.exists_in.table for e in self.source.expectations if e.exists_in})
        versions = {t: table_version(self.spark, TableRef.parse(t)) for t in looked_up}
        text = json.dumps([self.source.model_dump(mode="json"), versions], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _latest_fences(self) -> list[Fence] | None:
        """The fences the latest refine batch of this source used; None before any."""
        if not self.shell.has(QUALITY_METRICS):
            return None
        latest = (
            self.shell.read(QUALITY_METRICS)
            .where(
                (F.col("dataset") == self.catalog.dataset.name)
                & (F.col("source") == self.source_name)
                & F.col("stream_id").startswith("lakestory-refine:")
            )
            .orderBy(F.col("measured_at").desc())
            .select("outliers")
            .first()
        )
        if latest is None:
            return None
        configured = dict(self.source.outliers)
        return [
            Fence(o.column, o.method, o.threshold, o.action, o.low, o.high)
            for o in latest.outliers
            if o.column in configured
        ]


def _config_changed(shell: Shell, catalog: Catalog, source_name: str) -> bool:
    """Whether the config gives silver other columns than the table has now."""
    target = catalog.silver(source_name)
    if not shell.has(target):
        return False
    bronze = shell.read(catalog.bronze(source_name))
    expected = silver_schema(shell.spark, bronze, catalog.dataset.structured()[source_name])
    return not same_shape(shell.read(target).schema, expected)


def refine_source(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    source_name: str,
    key: bytes,
    run_id: str,
    full_refresh: bool = False,
) -> RefineCounts:
    """Refine the bronze rows of the source that no earlier run refined (all of them with
    `full_refresh`, or when the config changed silver's columns), in micro-batches of a
    stream from bronze with a checkpoint of its own. Returns the counts of all its batches."""
    shell, catalog = Shell(spark, settings), Catalog(dataset, settings)
    source = dataset.structured()[source_name]
    validate_expectations(spark, dataset, source_name)
    if source.personal.tokenize:  # a run with another key stops before it reads a row
        check_key(shell, catalog, key)
    bronze = catalog.bronze(source_name)
    if not shell.has(bronze):
        log.info("%s: nothing ingested yet; nothing to refine", bronze)
        return RefineCounts.total([])
    target = catalog.silver(source_name)
    checkpoint = catalog.checkpoint(target)
    if not full_refresh and _config_changed(shell, catalog, source_name):
        log.warning("%s: the config changed its columns; refining all of bronze again", target)
        full_refresh = True
    if full_refresh:
        remove(spark, checkpoint)
    txns = StreamTxns(spark, "refine", target, checkpoint)
    state = Refinement(shell, catalog, source_name, key, run_id, rules_for(source, catalog), txns)
    query = (
        shell.stream(bronze, source.max_files_per_trigger)
        .writeStream.foreachBatch(state.process)
        .option("checkpointLocation", checkpoint)
        .trigger(availableNow=True)
        .queryName(f"refine_{target.name}")
    )
    try:
        query.start().awaitTermination()
    except Exception:
        if state.error is not None:
            raise state.error from None
        raise
    return RefineCounts.total(state.counts)


def reprocess_source(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    source_name: str,
    key: bytes,
    run_id: str,
    version: int | None = None,
) -> RefineCounts:
    """Run the source's quarantined rows (as of `version`, default the latest) through the
    current rules again (after a fix to a rule or to the rows themselves): the rows that pass
    now move to silver, exactly once; the others stay in quarantine with their new reasons.
    See `Refinement.reprocess`."""
    validate_expectations(spark, dataset, source_name)
    catalog = Catalog(dataset, settings)
    rules = rules_for(dataset.structured()[source_name], catalog)
    state = Refinement(Shell(spark, settings), catalog, source_name, key, run_id, rules)
    return state.reprocess(version)


def quarantine_versions(
    spark: SparkSession, settings: Settings, dataset: Dataset
) -> dict[str, int]:
    """The latest version of each structured source's quarantine, for those that have one."""
    shell, catalog = Shell(spark, settings), Catalog(dataset, settings)
    versions = {name: shell.version(catalog.quarantine(name)) for name in dataset.structured()}
    return {name: v for name, v in versions.items() if v is not None}


def recorded_counts(
    spark: SparkSession, settings: Settings, dataset: Dataset, run_id: str
) -> dict[str, RefineCounts]:
    """The counts of every refine batch that run `run_id` recorded in `ops.quality_metrics`,
    by source: those of a run and of the runs that resumed it, which share its id."""
    shell = Shell(spark, settings)
    if not shell.has(QUALITY_METRICS):
        return {}
    rows = (
        shell.read(QUALITY_METRICS)
        .where(
            (F.col("run_id") == run_id)
            & (F.col("dataset") == dataset.name)
            & F.col("stream_id").startswith("lakestory-refine:")
        )
        .collect()
    )
    by_source: dict[str, list[Row]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    return {name: counts_of_rows(batches) for name, batches in by_source.items()}
