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

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, Observation, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, MapType, StructField, StructType

from lakestory.config import ConfigError, Dataset, Settings, Source
from lakestory.errors import ExpectationError
from lakestory.ingestion import (
    CORRUPT,
    DECODE_ERROR,
    METADATA_COLUMNS,
    RESCUED,
    bronze_table,
)
from lakestory.ingestion.streams import carries, commit_actions, query_id, remove, rescanned
from lakestory.io import TableRef, checkpoint_path, local_frame, log_version, register
from lakestory.privacy import normalised, with_hmac, with_keyed_tokens
from lakestory.privacy.generalise import generalised
from lakestory.privacy.vault import (
    ID,
    TOKEN,
    check_key,
    mint_ids,
    read_vault,
    with_artificial_ids,
)
from lakestory.privacy.vault import SCHEMA as VAULT_SCHEMA
from lakestory.quality.dedup import RANK, duplicate_counts, duplicates_of, rank_versions
from lakestory.quality.labels import LABEL_TEXT, UNLABELED, label_rules
from lakestory.quality.outliers import (
    OUTLIERS,
    Fence,
    counted_fences,
    flag_and_clip,
    quarantine_rules,
)
from lakestory.quality.quarantine import quarantine_table
from lakestory.quality.rules import (
    REASONS,
    Checks,
    Rule,
    castable,
    from_expectation,
    not_malformed,
    not_null,
)
from lakestory.quality.upsert import idempotent, upsert_latest

Transform = Callable[[DataFrame], DataFrame]
log = logging.getLogger("lakestory.refine")

RAW_PREFIX = "__raw_"
# kept in silver: where each row came from, and what orders two versions of a record
SILVER_METADATA = ["_source_file", "_file_modification_time", "_ingested_at"]
QUALITY_METRICS = TableRef("ops", "quality_metrics")
RETRACT = "__retract"  # a labelled row, which takes its key out of the unlabeled table
OUTSIDE = "__outside"  # `__outside<i>`: the row is outside fence i (before clipping)


def silver_table(dataset: Dataset, source_name: str) -> TableRef:
    return TableRef("silver", f"{dataset.name}_{source_name}")


def unlabeled_table(dataset: Dataset, source_name: str) -> TableRef:
    """Rows whose label is missing or invalid, kept for later labelling (see `Label`)."""
    return TableRef("silver", f"{dataset.name}_{source_name}_unlabeled")


# types whose cast from text ignores the whitespace around it, as `trim` would remove it
_SELF_TRIMMING = {
    "tinyint", "byte", "smallint", "short", "int", "integer", "bigint", "long", "float", "real",
    "double", "decimal", "dec", "numeric", "boolean", "date", "timestamp", "timestamp_ltz",
    "timestamp_ntz",
}  # fmt: skip


def _typed(column: str, spark_type: str) -> Column:
    """The text of `column` cast to `spark_type` with `try_cast` (null where it does not parse),
    surrounding spaces ignored; trimmed explicitly only for types whose cast does not."""
    if spark_type == "string":
        return F.col(column)
    if spark_type.split("(")[0].strip().lower() in _SELF_TRIMMING:
        return F.col(column).try_cast(spark_type).alias(column)
    return F.trim(F.col(column)).try_cast(spark_type).alias(column)


def with_declared_types(source: Source) -> Transform:
    """Cast each declared column (text in bronze) with `try_cast`, keeping the raw text aside."""

    def _apply(df: DataFrame) -> DataFrame:
        raw = [F.col(c).alias(f"{RAW_PREFIX}{c}") for c in source.schema_]
        typed = [_typed(c, t) for c, t in source.schema_.items()]
        meta = [c for c in df.columns if c not in source.schema_]
        return df.select(*typed, *meta, *raw)

    return _apply


def rules_for(source: Source, dataset: Dataset | None = None) -> list[Rule]:
    """The checks of a source: parseable record, required fields, types, label, expectations.
    Label conflicts, which look at another source of the dataset, need `dataset`."""
    label = source.label.column if source.label else None
    rules = [
        not_malformed(CORRUPT),
        Rule("undecodable_bytes", F.col(DECODE_ERROR).isNull()),
    ]
    for column in dict.fromkeys([source.key, *source.required]):
        if column != label:
            rules.append(not_null(column))
    for column, spark_type in source.schema_.items():
        if spark_type != "string" and column != label:
            rules.append(castable(column, f"{RAW_PREFIX}{column}", spark_type))
    if label is not None:
        raw = f"{RAW_PREFIX}{label}"
        rules.extend(label_rules(SparkSession.active(), source, raw, _order(source), dataset))
    if source.expectations:
        spark = SparkSession.active()
        rules.extend(from_expectation(spark, e) for e in source.expectations)
    return rules


# the types bronze's metadata columns have, so that expectations may name them
_METADATA_TYPES = {
    "_source_file": "string",
    "_file_modification_time": "timestamp",
    "_ingested_at": "timestamp",
    "_batch_id": "bigint",
    "_row_hash": "string",
    RESCUED: "string",
    CORRUPT: "string",
    DECODE_ERROR: "string",
}


def validate_expectations(spark: SparkSession, dataset: Dataset, source_name: str) -> None:
    """Check every expectation of the source against its typed columns without reading data:
    SQL that does not parse, names an unknown column or is not boolean; a regular expression
    that does not compile; a table or key for `exists_in` that does not exist. The error names
    the file and the rule."""
    # PySpark logs every analysis error it raises, stack and all; these are answered here
    spark_errors = logging.getLogger("SQLQueryContextLogger")
    level = spark_errors.level
    spark_errors.setLevel(logging.CRITICAL)
    try:
        _validate_expectations(spark, dataset, source_name)
    finally:
        spark_errors.setLevel(level)


def _validate_expectations(spark: SparkSession, dataset: Dataset, source_name: str) -> None:
    source = dataset.structured()[source_name]
    columns = {**source.schema_, **_METADATA_TYPES}
    empty = spark.createDataFrame([], ", ".join(f"`{c}` {t}" for c, t in columns.items()))
    for e in source.expectations:
        where = (
            f"{dataset.origin('sources', source_name, 'expectations')}: "
            f"sources.{source_name}.expectations: {e.name}"
        )
        try:
            if e.expr is not None:
                dtype = empty.select(F.expr(e.expr).alias("ok")).schema["ok"].dataType
                if dtype.simpleString() != "boolean":
                    raise ConfigError(f"{where}: expr is {dtype.simpleString()}, not boolean")
            elif e.regex is not None:
                spark.range(1).select(F.lit("").rlike(e.regex.pattern)).collect()
            elif e.exists_in is not None:
                spec = e.exists_in
                if not spark.catalog.tableExists(spec.table):
                    raise ConfigError(f"{where}: exists_in: no table {spec.table}")
                key = spec.key or spec.column
                if key not in spark.read.table(spec.table).columns:
                    raise ConfigError(f"{where}: exists_in: {spec.table} has no column {key}")
        except ConfigError:
            raise
        except Exception as exc:  # Spark's parse and analysis errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{where}: {first}") from None


def with_pseudonyms(source: Source, key: bytes, vault: DataFrame) -> Transform:
    """Generalise quasi-identifiers, drop direct identifiers, and replace each identifier by
    its artificial id: its keyed token looked up in the dataset's `vault`, where `mint` has
    put it (the token itself never reaches silver). An identifier whose id is already there
    (the business key's, looked up by `_ranked`) is only dropped."""

    personal = source.personal
    as_of = F.col(personal.age_as_of)

    def _apply(df: DataFrame) -> DataFrame:
        for column, kind in personal.generalise.items():
            coarse = generalised(F.col(column), kind, as_of, personal.age_band_width)
            df = df.withColumn(source.silver_name(column), coarse)
        df = df.drop(*personal.generalise, *personal.drop)
        done = [c for c in personal.tokenize if source.silver_name(c) in df.columns]
        pending: dict[str, str] = {c: k for c, k in personal.tokenize.items() if c not in done}
        tokens = with_keyed_tokens(pending, key, personal.country_code)
        ids = {f"{c}_token": source.silver_name(c) for c in pending}
        return df.drop(*done).transform(tokens).transform(with_artificial_ids(vault, ids))

    return _apply


def mint(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    source: Source,
    typed: DataFrame,
    key: bytes,
) -> int:
    """Give each identifier of `typed` (rows with the source's declared types) that the
    dataset's vault lacks an artificial id; returns how many were minted."""
    personal = source.personal
    if not personal.tokenize:
        return 0
    tokens = typed.select(*personal.tokenize).transform(
        with_keyed_tokens(dict(personal.tokenize), key, personal.country_code)
    )
    every = F.explode(F.array(*[F.col(f"{c}_token") for c in personal.tokenize]))
    return mint_ids(spark, settings, dataset, tokens.select(every.alias(TOKEN)), key)


@dataclass(frozen=True)
class RefineCounts:
    """Where a refine run's rows went; `silver` counts rows inserted or updated by the MERGE."""

    rows_in: int
    silver: int
    exact_duplicates: int
    key_duplicates: int
    quarantined: int
    dropped: int = 0
    unchanged: int = 0  # latest versions silver already had, as they are or newer
    unlabeled: int = 0  # rows sent to the unlabeled table (missing or invalid label)
    rule_failures: dict[str, int] = field(default_factory=dict)
    batches: int = 0

    @classmethod
    def total(cls, parts: list[RefineCounts]) -> RefineCounts:
        """The counts of a run made of several batches (all zero for a run with none)."""
        failures: dict[str, int] = {}
        for p in parts:
            for name, n in p.rule_failures.items():
                failures[name] = failures.get(name, 0) + n
        fields = ("rows_in", "silver", "exact_duplicates", "key_duplicates", "quarantined")
        more = ("dropped", "unchanged", "unlabeled", "batches")
        sums = {f: sum(getattr(p, f) for p in parts) for f in (*fields, *more)}
        return cls(**sums, rule_failures=failures)

    @property
    def duplicates(self) -> int:
        return self.exact_duplicates + self.key_duplicates

    @property
    def reconciles(self) -> bool:
        return self.rows_in == (
            self.silver
            + self.duplicates
            + self.unchanged
            + self.quarantined
            + self.dropped
            + self.unlabeled
        )


@dataclass(frozen=True)
class _Tally:
    rows: int
    dropped: int
    rejected: int
    unlabeled: int
    failures: dict[str, int]
    outside: dict[str, int]  # rows outside each column's fences


def _tally_counts(checks: Checks, found: list[Fence]) -> list[Column]:
    """Rows per fate, rows failing each rule, and the rows outside each fence among those that
    do not go to silver: bit tests on the masks of checked rows, computed while the rows go
    by (see `_observed`). Rows that fail no rule add nothing to them, so they are computed
    over the rows that fail any (and `_ranked` counts the kept rows outside a fence)."""
    return [
        F.count_if(checks.dropped()).alias("dropped"),
        F.count_if(checks.rejected()).alias("rejected"),
        F.count_if(checks.unlabeled()).alias("unlabeled"),
        *[F.count_if(checks.failed_rule(i)).alias(f"rule{i}") for i in range(len(checks.rules))],
        *[
            F.count_if(~checks.kept() & f.outside()).alias(f"outside{i}")
            for i, f in enumerate(found)
        ],
    ]


def _outside_counts(found: list[Fence]) -> list[Column]:
    """The kept rows outside each fence, over `_ranked` rows (before any clipping)."""
    return [F.count_if(F.col(f"{OUTSIDE}{i}")).alias(f"outside{i}") for i in range(len(found))]


def _tally_of(
    row: Row | dict[str, Any],
    rules: list[Rule],
    found: list[Fence],
    rows: int,
    kept: Row | dict[str, Any] | None = None,
) -> _Tally:
    """The tally of a batch of `rows` rows from `_tally_counts` (in `row`) and, when given,
    `_outside_counts` over its kept rows (in `kept`)."""

    def n(name: str, counts: Row | dict[str, Any] | None = row) -> int:
        return 0 if counts is None else int(counts[name] or 0)

    return _Tally(
        rows,
        n("dropped"),
        n("rejected"),
        n("unlabeled"),
        {r.name: n(f"rule{i}") for i, r in enumerate(rules)},
        {f.column: n(f"outside{i}") + n(f"outside{i}", kept) for i, f in enumerate(found)},
    )


def _observed(
    frame: DataFrame,
    counts: list[Column],
    write: Callable[[DataFrame], None],
    table: str,
    txn: tuple[str, int],
) -> dict[str, Any]:
    """Write `frame` with `write`, a commit to the Delta table at `table` that carries `txn`,
    and return `counts` over its rows, computed by the write's own pass (an `Observation`).
    When Delta skips the write, because an earlier attempt of the batch committed it, the
    frame is never computed and the counts take a pass of their own."""
    spark = frame.sparkSession
    before = log_version(spark, table)
    observation = Observation()
    write(frame.observe(observation, *counts))
    after = log_version(spark, table)
    first = -1 if before is None else before
    new = range(first + 1, -1 if after is None else after + 1)
    if any((a := commit_actions(spark, table, v)) is not None and carries(a, *txn) for v in new):
        return observation.get
    row = frame.agg(*counts).first()
    assert row is not None
    return row.asDict()


METRICS_SCHEMA = (
    "run_id string, dataset string, source string, stream_id string, batch_id long, "
    "rows_in long, silver long, "
    "duplicates long, quarantined long, dropped long, "
    "exact_duplicates long, key_duplicates long, unchanged long, unlabeled long, "
    "rules array<struct<name: string, action: string, failed: long, passed: long>>, "
    "outliers array<struct<column: string, method: string, threshold: double, action: string, "
    "low: double, high: double, rows: long>>"
)


def silver_frame(
    kept: DataFrame, source: Source, key: bytes, found: list[Fence], vault: DataFrame
) -> DataFrame:
    """The rows silver gets from the rows that passed every rule: outliers flagged or clipped,
    the latest version of each business key, pseudonymised, in silver's column order."""
    return _silver_rows(_ranked(kept, source, found, key, vault), source, key, vault)


KEY_TOKEN = "__key_token"


def _ranked(
    kept: DataFrame, source: Source, found: list[Fence], key: bytes, vault: DataFrame
) -> DataFrame:
    """Kept rows with outliers flagged or clipped, and ranked among the versions of their key
    (`rank_versions`): exact copies collapse with the other versions of their key, and the
    row hash last makes the choice among equals the same in every run.

    A tokenised business key is ranked by its token, after its artificial id is looked up in
    `vault`: the lookup's join and the ranking's window then share one exchange of the rows
    (by the token), and two ways of writing one key (" C1", "C1") are one key, as in silver."""
    outside = {f"{OUTSIDE}{i}": f.outside() for i, f in enumerate(found)}
    kept = kept.withColumns({**outside, **dict(flag_and_clip(found, dict(source.schema_)))})
    by = source.key
    kind = source.personal.tokenize.get(source.key)
    if kind is not None:
        value = normalised(F.col(source.key), kind, source.personal.country_code)
        kept = kept.transform(with_hmac({KEY_TOKEN: F.when(value != "", value)}, key))
        ids = vault.select(F.col(TOKEN).alias(KEY_TOKEN), F.col(ID).alias(source.silver_name(by)))
        kept, by = kept.join(ids, KEY_TOKEN, "left"), KEY_TOKEN
    return kept.transform(rank_versions(by, [*_order(source), "_row_hash"]))


def _silver_rows(
    ranked: DataFrame, source: Source, key: bytes, vault: DataFrame, keep: tuple[str, ...] = ()
) -> DataFrame:
    extra = [OUTLIERS] if OUTLIERS in ranked.columns else []
    return (
        ranked.where(F.col(RANK) == 1)
        .transform(with_pseudonyms(source, key, vault))
        .select(*source.silver_columns(), *extra, *SILVER_METADATA, *keep)
    )


def _order(source: Source) -> list[str]:
    """What makes one version of a record later than another: the configured column, then the
    landing file's modification time and name."""
    return [c for c in [source.order_by] if c] + ["_file_modification_time", "_source_file"]


def silver_schema(spark: SparkSession, bronze: DataFrame, source: Source) -> StructType:
    """The schema silver gets under the current config, from the plan alone (no data read)."""
    typed = bronze.limit(0).transform(with_declared_types(source))
    placeholders = [
        Fence(c, o.method, o.k, o.action, None, None) for c, o in source.outliers.items()
    ]
    vault = spark.createDataFrame([], VAULT_SCHEMA)
    return silver_frame(typed, source, b"schema-only", placeholders, vault).schema


def _same_shape(a: StructType, b: StructType) -> bool:
    """Same column names and types, nullability aside: a table's schema has every field,
    array element and map value nullable (Spark writes files so), a plan's may not."""
    return [(f.name, _nullable(f.dataType)) for f in a.fields] == [
        (f.name, _nullable(f.dataType)) for f in b.fields
    ]


def _nullable(dtype: DataType) -> DataType:
    if isinstance(dtype, StructType):
        return StructType([StructField(f.name, _nullable(f.dataType)) for f in dtype.fields])
    if isinstance(dtype, ArrayType):
        return ArrayType(_nullable(dtype.elementType))
    if isinstance(dtype, MapType):
        return MapType(_nullable(dtype.keyType), _nullable(dtype.valueType))
    return dtype


# identifies a quarantined row: exact copies within one file share it, and share their fate
QUARANTINE_ID = ["_source_file", "_row_hash", "_batch_id"]
QUARANTINE_COLUMNS = [REASONS, "_run_id", "_quarantined_at"]


@dataclass
class Refinement:
    """Refines rows of one source; `process` handles each micro-batch of new bronze rows and
    `reprocess` the rows quarantine holds.

    Each batch goes through the data twice: once to write its rejected rows to quarantine, and
    once to write silver; the counts are observed on the way (`_observed`), those of the rules
    only on the rows that fail some rule (the others add nothing to them), so that the rows
    passing everything are never copied out of the compiled pipeline for it. The rows in are
    counted apart, by the outlier fences' aggregate (or a count of their own), so that the
    accounts compare two independent counts. Every pass reads the batch's bronze data files
    again (`rescanned`), each only the columns it needs, rather than the whole rows of the
    RDD Spark hands to foreachBatch. Only a source with a `fail` expectation pays one more
    pass, to count before anything is written.
    Every table a batch writes (silver, quarantine, its metrics row) is written with the
    batch's (app id, batch id), so a batch replayed after a crash writes nothing twice."""

    spark: SparkSession
    settings: Settings
    dataset: Dataset
    source_name: str
    key: bytes
    run_id: str
    rules: list[Rule]
    checkpoint: str = ""
    counts: list[RefineCounts] = field(default_factory=list)
    error: Exception | None = None
    _app_id: str | None = None

    @property
    def source(self) -> Source:
        return self.dataset.structured()[self.source_name]

    @property
    def bronze(self) -> TableRef:
        return bronze_table(self.dataset, self.source_name)

    @property
    def silver(self) -> TableRef:
        return silver_table(self.dataset, self.source_name)

    @property
    def quarantine(self) -> TableRef:
        return quarantine_table(self.dataset, self.source_name)

    @property
    def unlabeled(self) -> TableRef:
        return unlabeled_table(self.dataset, self.source_name)

    @property
    def app_id(self) -> str:
        """Stable across restarts of the checkpoint, new for a new one (a full refresh)."""
        if self._app_id is None:
            query = query_id(self.spark, self.checkpoint)
            self._app_id = f"lakestory-refine:{self.silver.qualified}:{query}"
        return self._app_id

    def process(self, bronze: DataFrame, batch_id: int) -> None:
        try:
            txn = (self.app_id, batch_id)
            rows = rescanned(self.spark, bronze, str(self.bronze.path(self.settings)))
            self.counts.append(self._refine(rows, txn, replace=batch_id == 0))
        except ExpectationError as exc:
            self.error = exc  # raised again as itself once the stream has stopped
            raise

    def _refine(
        self,
        rows: DataFrame,
        txn: tuple[str, int],
        replace: bool = False,
        found: list[Fence] | None = None,
        resolve: bool = False,
    ) -> RefineCounts:
        """Check `rows` (bronze's columns), write the rejected ones to quarantine and the rest
        to silver, and record the counts. With `resolve`, `rows` come from quarantine itself:
        the ones that now pass leave it, the others get their new reasons."""
        spark, settings, source = self.spark, self.settings, self.source
        typed = rows.transform(with_declared_types(source))
        if found is None:  # a pass over the outlier columns alone, which counts the rows too
            rows_in, found = counted_fences(typed, dict(source.outliers))
        else:
            rows_in = rows.count()
        rules = [*self.rules, *quarantine_rules(found)]
        checks = Checks(tuple(rules))
        checked = checks.apply(typed)
        # the rows quarantine's write and counts need: when reprocessing, every row (a row
        # that passes now leaves quarantine), else only those that fail some rule
        failing = checked if resolve else checked.where(checks.failed())
        if any(r.action == "fail" for r in rules):  # counted before anything is written
            first = failing.agg(*_tally_counts(checks, found)).first()
            assert first is not None
            self._stop_on_failures(_tally_of(first, rules, found, rows_in), rules)
        now = F.lit(datetime.now(timezone.utc).replace(tzinfo=None)).cast("timestamp")
        is_rejected = checks.rejected()
        quarantine = self.quarantine
        if resolve:
            # every row reprocessed, with its new reasons (null: it passes now)
            def write_quarantine(frame: DataFrame) -> None:
                outcome = frame.select(
                    *QUARANTINE_ID, F.when(is_rejected, checks.reasons()).alias(REASONS)
                )
                _resolve_quarantine(outcome, settings, quarantine, txn, self.run_id)

        else:
            columns = [
                *[F.col(f"{RAW_PREFIX}{c}").alias(c) for c in source.schema_],
                *[F.col(c) for c in [CORRUPT, RESCUED, DECODE_ERROR] if c in rows.columns],
                *[F.col(c) for c in METADATA_COLUMNS],
                checks.reasons().alias(REASONS),
                F.lit(self.run_id).alias("_run_id"),
                now.alias("_quarantined_at"),
            ]

            def write_quarantine(frame: DataFrame) -> None:
                rejected = frame.where(is_rejected).select(*columns)
                _write_once(rejected, settings, quarantine, txn, replace)

        # ids for the batch's identifiers before anything is written that carries them (a
        # batch run again mints nothing twice)
        mint(spark, settings, self.dataset, source, typed, self.key)
        vault = read_vault(spark, settings, self.dataset)
        ranked = _ranked(checked.where(checks.kept()), source, found, self.key, vault)
        silver_path = str(self.silver.path(settings))
        upserted = 0

        def upsert(frame: DataFrame) -> None:
            nonlocal upserted
            upserted = upsert_latest(
                _silver_rows(frame, source, self.key, vault),
                silver_path,
                source.silver_name(source.key),
                [source.silver_name(c) for c in _order(source)],
                txn,
                replace=replace,
            )

        # silver first: a row that leaves quarantine (`resolve`) must be in silver already
        kept = _observed(
            ranked, [*duplicate_counts(), *_outside_counts(found)], upsert, silver_path, txn
        )
        dups = duplicates_of(kept)
        if any(r.action == UNLABELED for r in rules):
            self._write_unlabeled(checked, checks, found, vault, txn, replace)
        quarantine_path = str(quarantine.path(settings))
        counted = _observed(
            failing, _tally_counts(checks, found), write_quarantine, quarantine_path, txn
        )
        tally = _tally_of(counted, rules, found, rows_in, kept)
        register(spark, settings, self.silver)
        counts = RefineCounts(
            rows_in=tally.rows,
            silver=upserted,
            exact_duplicates=dups.exact,
            key_duplicates=dups.key,
            quarantined=tally.rejected,
            dropped=tally.dropped,
            unchanged=dups.keys - upserted,
            unlabeled=tally.unlabeled,
            rule_failures=tally.failures,
            batches=1,
        )
        self._record(counts, tally, rules, found, txn, now)
        return counts

    def _write_unlabeled(
        self,
        checked: DataFrame,
        checks: Checks,
        found: list[Fence],
        vault: DataFrame,
        txn: tuple[str, int],
        replace: bool,
    ) -> None:
        """MERGE the latest unlabeled version of each key into the unlabeled table, with the
        label as it landed and the reasons; a key whose latest version in the batch has a
        label leaves the table instead (unless the table's version is newer)."""
        source = self.source
        assert source.label is not None
        both = checked.where(checks.kept() | checks.unlabeled()).withColumns(
            {
                RETRACT: checks.kept(),
                LABEL_TEXT: F.col(f"{RAW_PREFIX}{source.label.column}"),
                REASONS: checks.reasons(),
            }
        )
        ranked = _ranked(both, source, found, self.key, vault)
        rows = _silver_rows(ranked, source, self.key, vault, keep=(LABEL_TEXT, REASONS, RETRACT))
        upsert_latest(
            rows,
            str(self.unlabeled.path(self.settings)),
            source.silver_name(source.key),
            [source.silver_name(c) for c in _order(source)],
            txn,
            replace=replace,
            retract=RETRACT,
        )
        register(self.spark, self.settings, self.unlabeled)

    def _stop_on_failures(self, tally: _Tally, rules: list[Rule]) -> None:
        fatal = [r for r in rules if r.action == "fail" and tally.failures[r.name]]
        if fatal:
            detail = "; ".join(
                f"{r.name!r} failed on {tally.failures[r.name]} row(s)" for r in fatal
            )
            raise ExpectationError(
                f"{bronze_table(self.dataset, self.source_name)}: expectation {detail} "
                f"(of {tally.rows} new rows); nothing of them was written to silver or quarantine"
            )

    def _record(
        self,
        counts: RefineCounts,
        tally: _Tally,
        rules: list[Rule],
        found: list[Fence],
        txn: tuple[str, int],
        now: Column,
    ) -> None:
        """The batch's row in `ops.quality_metrics`, written once per (app id, batch)."""
        per_rule = [
            (r.name, r.action, tally.failures[r.name], tally.rows - tally.failures[r.name])
            for r in rules
        ]
        per_column = [
            (f.column, f.method, f.threshold, f.action, f.low, f.high, tally.outside[f.column])
            for f in found
        ]
        row = (
            self.run_id,
            self.dataset.name,
            self.source_name,
            txn[0],
            txn[1],
            counts.rows_in,
            counts.silver,
            counts.duplicates,
            counts.quarantined,
            counts.dropped,
            counts.exact_duplicates,
            counts.key_duplicates,
            counts.unchanged,
            counts.unlabeled,
            per_rule,
            per_column,
        )
        metrics = local_frame(self.spark, [row], METRICS_SCHEMA).withColumn("measured_at", now)
        _write_once(metrics, self.settings, QUALITY_METRICS, txn)

    def reprocess(self) -> RefineCounts:
        """Run the rows in quarantine through the current rules again: the ones that pass now
        go to silver (MERGE, latest wins) and leave quarantine; the others stay, with their
        new reasons. Outlier fences are those the latest refine run recorded. Both writes
        carry (app id, quarantine version), so a rerun after a crash completes the move
        without doing any part of it twice."""
        path = str(self.quarantine.path(self.settings))
        version = log_version(self.spark, path)
        if version is None:
            return RefineCounts.total([])
        snapshot = self.spark.read.format("delta").option("versionAsOf", version).load(path)
        rows = snapshot.drop(*QUARANTINE_COLUMNS)
        self._app_id = f"lakestory-reprocess:{self.quarantine.qualified}"
        txn = (self.app_id, version)
        return self._refine(rows, txn, found=self._latest_fences(), resolve=True)

    def _latest_fences(self) -> list[Fence] | None:
        """The fences the latest refine batch of this source used; None before any."""
        if log_version(self.spark, str(QUALITY_METRICS.path(self.settings))) is None:
            return None
        latest = (
            self.spark.read.format("delta")
            .load(str(QUALITY_METRICS.path(self.settings)))
            .where(
                (F.col("dataset") == self.dataset.name)
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


def _write_once(
    rows: DataFrame,
    settings: Settings,
    table: TableRef,
    txn: tuple[str, int],
    replace: bool = False,
) -> None:
    """Append `rows` (or, with `replace`, replace the table with them), once per (app id,
    batch); an older table gains the columns it lacks."""
    writer = rows.write.format("delta").option("txnAppId", txn[0]).option("txnVersion", txn[1])
    if replace:
        writer = writer.mode("overwrite").option("overwriteSchema", "true")
    else:
        writer = writer.mode("append").option("mergeSchema", "true")
    writer.save(str(table.path(settings)))
    register(rows.sparkSession, settings, table)


def _resolve_quarantine(
    outcome: DataFrame, settings: Settings, table: TableRef, txn: tuple[str, int], run_id: str
) -> None:
    """MERGE reprocessed rows' outcomes into quarantine: a row that passes now (null reasons)
    is deleted; one that still fails gets its new reasons and this run's id."""
    spark = outcome.sparkSession
    target = DeltaTable.forPath(spark, str(table.path(settings)))
    on = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in QUARANTINE_ID)
    with idempotent(spark, *txn):
        (
            target.alias("t")
            .merge(outcome.dropDuplicates(QUARANTINE_ID).alias("s"), on)
            .whenMatchedDelete(condition=f"s.`{REASONS}` IS NULL")
            .whenMatchedUpdate(
                set={
                    REASONS: F.col(f"s.`{REASONS}`"),
                    "_run_id": F.lit(run_id),
                    "_quarantined_at": F.current_timestamp(),
                }
            )
            .execute()
        )


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
    source = dataset.structured()[source_name]
    validate_expectations(spark, dataset, source_name)
    if source.personal.tokenize:  # a run with another key stops before it reads a row
        check_key(spark, settings, dataset, key)
    bronze = bronze_table(dataset, source_name)
    bronze_path = str(bronze.path(settings))
    if log_version(spark, bronze_path) is None:
        log.info("%s: nothing ingested yet; nothing to refine", bronze)
        return RefineCounts.total([])
    target = silver_table(dataset, source_name)
    checkpoint = str(checkpoint_path(settings, target))
    if not full_refresh and log_version(spark, str(target.path(settings))) is not None:
        current = spark.read.format("delta").load(str(target.path(settings))).schema
        expected = silver_schema(spark, spark.read.format("delta").load(bronze_path), source)
        if not _same_shape(current, expected):
            log.warning("%s: the config changed its columns; refining all of bronze again", target)
            full_refresh = True
    if full_refresh:
        remove(spark, checkpoint)
    rules = rules_for(source, dataset)
    state = Refinement(
        spark,
        settings,
        dataset,
        source_name,
        key,
        run_id,
        rules,
        checkpoint,
    )
    stream = spark.readStream.format("delta").option("skipChangeCommits", "true")
    if source.max_files_per_trigger:
        stream = stream.option("maxFilesPerTrigger", source.max_files_per_trigger)
    query = (
        stream.load(bronze_path)
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
) -> RefineCounts:
    """Run the source's quarantined rows through the current rules again (after a fix to a
    rule or to the rows themselves): the rows that pass now move to silver, exactly once; the
    others stay in quarantine with their new reasons. See `Refinement.reprocess`."""
    validate_expectations(spark, dataset, source_name)
    rules = rules_for(dataset.structured()[source_name], dataset)
    state = Refinement(spark, settings, dataset, source_name, key, run_id, rules)
    return state.reprocess()
