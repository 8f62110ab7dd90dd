"""Erasure: `lakestory forget <dataset> --subjects FILE` removes people from every table.

A subject is named in a CSV file by any identifier the dataset tokenises (a header names the
column: `customer_id`, `email`, ...), never on the command line, where shells and process
lists keep it. From those identifiers forget finds:

- their keyed tokens, and in the vault their artificial ids; any row of silver or gold that
  carries one of those ids names the subject's other ids too (a person found by e-mail is
  also found under their customer id), and those ids' tokens join the set;
- in bronze and quarantine, whose rows are raw records, the rows whose identifier columns
  give one of the tokens, and the malformed rows whose raw text (`_corrupt_record`,
  `_rescued`) contains one of the identifiers as given (letter case aside).

Those rows are deleted from bronze, quarantine, silver, gold (features, predictions: every
table of the dataset with an id column) and the vault. Then each table changed is rewritten
without them: `REORG TABLE ... APPLY (PURGE)` rewrites files that hide rows behind deletion
vectors, and `VACUUM ... RETAIN 0 HOURS` removes every file no longer in the current version,
with Delta's retention check turned off for this command alone. Older versions of those
tables can then no longer be read (their files are gone), which is the point: time travel
must not bring the subject back. Delta's per-file statistics, which would copy values into
the transaction log, are off by default in lakestory's sessions (`session.spark_conf`).

Files still in landing are the source system's copy and are left as they are. What keeps a
subject from coming back is the tombstone list, `restricted.<dataset>_erasures`: the tokens
and raw-record hashes of what was erased, no identifier. Ingest leaves out every landed row
that matches it (`without_erased`), a full refresh included, and a restore from a backup
applies it again (`reapply`).

Each erasure writes a receipt to `ops.erasures`: how many subjects, which tables at which
versions, how many rows, when; never an identifier, token or id.

Forget deletes and vacuums under the tables of running refreshes: run it when no other
lakestory job writes the dataset.
"""

from __future__ import annotations

import csv
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.columns import CORRUPT, RESCUED, ROW_HASH, Transform, union
from lakestory.config import ConfigError, Dataset, Settings, Source
from lakestory.config.models import PSEUDONYM
from lakestory.io import ERASURES, Catalog, Shell, TableRef, ensure_layers, local_frame
from lakestory.privacy.tokens import with_keyed_tokens
from lakestory.privacy.vault import ID, TOKEN, check_key, key_fingerprint

log = logging.getLogger("lakestory.forget")

RECEIPT_SCHEMA = (
    "receipt_id string, dataset string, subjects long, found long, "
    "tables array<struct<table: string, version: long, rows: long>>, "
    "tombstones long, erased_at timestamp"
)
# a token tombstone names the fingerprint of the key that made it (`vault.key_fingerprint`);
# a raw record's hash needs no key (null)
LEDGER_SCHEMA = "kind string, value string, key string, receipt_id string, erased_at timestamp"
TOKEN_KIND, ROW_KIND = "token", "row"


def tombstones(entries: DataFrame, key: bytes) -> tuple[DataFrame, DataFrame]:
    """The tombstone list's tokens made with `key`, and its raw-record hashes (`value`)."""
    tokens = entries.where(
        (F.col("kind") == TOKEN_KIND) & (F.col("key") == key_fingerprint(key))
    ).select("value")
    return tokens, entries.where(F.col("kind") == ROW_KIND).select("value")


RAW_TEXT = (CORRUPT, RESCUED)


@dataclass(frozen=True)
class TableErased:
    table: str
    version: int
    rows: int


@dataclass(frozen=True)
class Receipt:
    """What an erasure did; no identifier, token or id."""

    receipt_id: str
    dataset: str
    subjects: int
    found: int  # subjects with an id in the vault
    tables: list[TableErased] = field(default_factory=list)
    tombstones: int = 0
    erased_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def __str__(self) -> str:
        where = ", ".join(f"{t.table} ({t.rows} rows, now v{t.version})" for t in self.tables)
        return (
            f"erasure {self.receipt_id}: {self.subjects} subject(s) of {self.dataset}, "
            f"{self.found} found in the vault; {self.rows} rows removed"
            + (f" from {where}" if where else "")
            + f"; {self.tombstones} tombstone(s) recorded; receipt in {ERASURES}"
        )


def _identifier_kinds(dataset: Dataset) -> dict[str, tuple[str, Source]]:
    """Each column the dataset tokenises, with its kind and a source that declares it."""
    kinds: dict[str, tuple[str, Source]] = {}
    for source in dataset.structured().values():
        for column, kind in source.personal.tokenize.items():
            kinds.setdefault(column, (kind, source))
    return kinds


@dataclass(frozen=True)
class Subjects:
    """The identifiers of a subjects file, by column, and how many subjects (rows) it names."""

    identifiers: dict[str, list[str]]
    count: int


def read_subjects(path: Path, dataset: Dataset) -> Subjects:
    """The identifiers in a subjects file: a CSV whose header names identifier columns the
    dataset tokenises, one subject a row (an empty cell names nothing)."""
    kinds = _identifier_kinds(dataset)
    known = ", ".join(sorted(kinds)) or "none"
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the subjects file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the subjects file is not UTF-8 text") from None
    if not rows:
        raise ConfigError(f"{path}: empty; the first line names the identifier columns ({known})")
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header if h not in kinds]
    if unknown or not header:
        raise ConfigError(
            f"{path}: the header names {', '.join(unknown) or 'nothing'}, which {dataset.name} "
            f"does not tokenise; name one or more of: {known}"
        )
    found: dict[str, list[str]] = {h: [] for h in header}
    count = 0
    for line, row in enumerate(rows[1:], start=2):
        if len(row) > len(header):
            raise ConfigError(f"{path}: line {line} has more cells than the header")
        named = [(c, v) for c, v in zip(header, row, strict=False) if v.strip()]
        for column, value in named:
            found[column].append(value)
        count += bool(named)
    if not count:
        raise ConfigError(f"{path}: no subject: every identifier cell is empty")
    return Subjects(found, count)


def _tokens_of(
    spark: SparkSession, dataset: Dataset, identifiers: dict[str, list[str]], key: bytes
) -> DataFrame:
    """One `token` per identifier, normalised as its column's kind says."""
    kinds = _identifier_kinds(dataset)
    frames = []
    for column, values in identifiers.items():
        kind, source = kinds[column]
        rows = local_frame(spark, [(v,) for v in values], f"`{column}` string")
        tokenised = rows.transform(
            with_keyed_tokens({column: kind}, key, source.personal.country_code)
        )
        frames.append(tokenised.select(F.col(f"{column}_token").alias(TOKEN)))
    out = union(frames)
    assert out is not None
    return out.where(F.col(TOKEN).isNotNull()).distinct()


def _id_columns(dataset: Dataset, columns: list[str]) -> list[str]:
    ids = {f"{c}_{PSEUDONYM}" for c in _identifier_kinds(dataset)}
    return [c for c in columns if c in ids]


def _values(frame: DataFrame, column: str) -> list[str]:
    return [r[0] for r in frame.select(column).where(F.col(column).isNotNull()).collect()]


def _delete_matching(shell: Shell, table: TableRef, doomed: DataFrame, on: list[str]) -> int:
    """Delete the rows of `table` that match a row of `doomed` on any of the columns `on`
    (each compared with `doomed`'s single column); returns how many. A MERGE, so that the
    values matched are data, never literals in the commit's recorded predicate."""
    if not on:
        return 0
    (name,) = doomed.columns
    condition = " OR ".join(f"t.`{c}` = s.`{name}`" for c in on)
    row = shell.merge(table, F.broadcast(doomed), condition, lambda m: m.whenMatchedDelete())
    return int(row["num_deleted_rows"]) if row is not None else 0


def _raw_rows(
    dataset: Dataset, rows: DataFrame, tokens: DataFrame, raw: list[str], key: bytes
) -> DataFrame:
    """The `_row_hash` of each raw record of `rows` (bronze's or quarantine's) that belongs to
    a subject: an identifier column giving one of `tokens`, or raw text containing one of
    `raw` (the identifiers as given)."""
    kinds = {c: k for c, (k, _) in _identifier_kinds(dataset).items() if c in rows.columns}
    sources = dataset.structured().values()
    code = next((s.personal.country_code for s in sources if s.personal.country_code), None)
    hits: DataFrame | None = None
    if kinds:
        tokenised = rows.select(ROW_HASH, *kinds).transform(with_keyed_tokens(kinds, key, code))
        every = F.explode(F.array(*[F.col(f"{c}_token") for c in kinds])).alias(TOKEN)
        found = tokenised.select(ROW_HASH, every).join(F.broadcast(tokens), TOKEN, "left_semi")
        hits = found.select(ROW_HASH)
    text = [c for c in RAW_TEXT if c in rows.columns]
    if text and raw:
        needles = local_frame(
            rows.sparkSession, [(v.strip().lower(),) for v in raw], "needle string"
        )
        contains = F.lit(False)
        for c in text:
            contains = contains | (F.instr(F.lower(F.col(c)), F.col("needle")) > 0)
        candidates = rows.where(" OR ".join(f"`{c}` IS NOT NULL" for c in text))
        matched = candidates.crossJoin(F.broadcast(needles)).where(contains).select(ROW_HASH)
        hits = matched if hits is None else hits.unionByName(matched)
    if hits is None:
        return rows.sparkSession.createDataFrame([], f"{ROW_HASH} string")
    return hits.distinct()


def forget(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    subjects: Path | Subjects,
    key: bytes,
) -> Receipt:
    """Erase the subjects named in the file `subjects` (or already read from one, by
    `read_subjects`) from every table of `dataset`."""
    named = read_subjects(subjects, dataset) if isinstance(subjects, Path) else subjects
    raw = [v for values in named.identifiers.values() for v in values]
    tokens = _tokens_of(spark, dataset, named.identifiers, key)
    return _erase(spark, settings, dataset, key, tokens, raw, [], subjects=named.count)


def reapply(
    spark: SparkSession, settings: Settings, dataset: Dataset, key: bytes
) -> Receipt | None:
    """Erase again every subject the tombstone list names (after a restore from a backup
    taken before some erasure): rows whose tokens or raw-row hashes it holds. None when the
    dataset has never had an erasure."""
    shell, catalog = Shell(spark, settings), Catalog(dataset, settings)
    if not shell.has(catalog.erasures()):
        return None
    entries = shell.read(catalog.erasures())
    made, rows = tombstones(entries, key)
    tokens = made.select(F.col("value").alias(TOKEN))
    hashes = _values(rows, "value")
    return _erase(spark, settings, dataset, key, tokens.distinct(), [], hashes, subjects=0)


def _erase(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    key: bytes,
    tokens: DataFrame,
    raw: list[str],
    row_hashes: list[str],
    subjects: int,
) -> Receipt:
    ensure_layers(spark, settings)
    shell, catalog = Shell(spark, settings), Catalog(dataset, settings)
    check_key(shell, catalog, key)  # another key's tokens would find nobody
    receipt_id = uuid.uuid4().hex
    vault = catalog.vault()
    has_vault = shell.has(vault)
    token_list = _values(tokens, TOKEN)
    # ids of the tokens, then every id on a row that carries one of them, then their tokens
    ids: set[str] = set()
    if has_vault and token_list:
        known = shell.read(vault)
        ids = set(_values(known.join(F.broadcast(tokens), TOKEN, "left_semi"), ID))
    found = len(ids)
    # the silver and gold tables with id columns, by their frames as they are now
    carriers = {
        t: (frame, columns)
        for t in catalog.stored(("silver", "gold"))
        if (columns := _id_columns(dataset, (frame := shell.read(t)).columns))
    }
    if ids:
        wanted = local_frame(spark, [(i,) for i in sorted(ids)], "id string")
        for frame, columns in carriers.values():
            match = " OR ".join(f"t.`{c}` = w.id" for c in columns)
            rows = frame.alias("t").join(F.broadcast(wanted).alias("w"), F.expr(match), "left_semi")
            for row in rows.select(*columns).collect():  # the subjects' rows: a few
                ids.update(v for v in row if v is not None)
    id_frame = local_frame(spark, [(i,) for i in sorted(ids)], f"{ID} string")
    if ids:
        linked = shell.read(vault).join(F.broadcast(id_frame), ID, "left_semi")
        token_list = sorted(set(token_list) | set(_values(linked, TOKEN)))
    all_tokens = local_frame(spark, [(t,) for t in token_list], f"{TOKEN} string")

    erased: list[TableErased] = []
    hashes = set(row_hashes)
    raw_tables = {
        t: rows
        for t in catalog.stored(("bronze", "quarantine"))
        if ROW_HASH in (rows := shell.read(t)).columns
    }
    for rows in raw_tables.values():
        hashes.update(_values(_raw_rows(dataset, rows, all_tokens, raw, key), ROW_HASH))
    hash_frame = local_frame(spark, [(h,) for h in sorted(hashes)], f"{ROW_HASH} string")

    def delete(table: TableRef, doomed: DataFrame, on: list[str]) -> None:
        n = _delete_matching(shell, table, doomed, on)
        if n:
            erased.append(TableErased(table.qualified, shell.purge(table), n))
            log.info("%s: %d row(s) erased and purged", table, n)

    if hashes:
        for table in raw_tables:
            delete(table, hash_frame, [ROW_HASH])
    if ids:
        for table, (_, columns) in carriers.items():
            delete(table, id_frame, columns)
    if has_vault and token_list:
        delete(vault, all_tokens, [TOKEN])

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    fingerprint = key_fingerprint(key)
    entries: list[tuple[str, str, str | None]] = [(TOKEN_KIND, t, fingerprint) for t in token_list]
    entries += [(ROW_KIND, h, None) for h in sorted(hashes)]
    new = record_tombstones(shell, catalog, entries, receipt_id, now)
    receipt = Receipt(receipt_id, dataset.name, subjects, found, erased, new)
    _record_receipt(shell, receipt, now)
    return receipt


def record_tombstones(
    shell: Shell,
    catalog: Catalog,
    entries: list[tuple[str, str, str | None]] | DataFrame,
    receipt_id: str,
    now: datetime,
) -> int:
    """Add the entries the tombstone list lacks; returns how many were new."""
    ledger = catalog.erasures()
    if isinstance(entries, DataFrame):  # (kind, value, key)
        when = F.lit(now).cast("timestamp").alias("erased_at")
        rows = entries.select("kind", "value", "key", F.lit(receipt_id).alias("receipt_id"), when)
    else:
        listed = [(k, v, f, receipt_id, now) for k, v, f in entries]
        rows = local_frame(shell.spark, listed, LEDGER_SCHEMA)
    if not shell.has(ledger):
        shell.replace(rows, ledger)
        return rows.count()
    on = "t.kind = s.kind AND t.value = s.value AND t.key <=> s.key"
    row = shell.merge(ledger, rows, on, lambda m: m.whenNotMatchedInsertAll())
    return int(row["num_inserted_rows"]) if row is not None else 0


def _record_receipt(shell: Shell, receipt: Receipt, now: datetime) -> None:
    tables = [(t.table, t.version, t.rows) for t in receipt.tables]
    row = (
        receipt.receipt_id,
        receipt.dataset,
        receipt.subjects,
        receipt.found,
        tables,
        receipt.tombstones,
        now,
    )
    shell.append(local_frame(shell.spark, [row], RECEIPT_SCHEMA), ERASURES)


def without_erased(shell: Shell, catalog: Catalog, source: Source, key: bytes) -> Transform:
    """Leave out of landed rows (bronze's text columns, `_row_hash`) those of erased subjects:
    a tokenised identifier whose token, or a raw record whose hash, the tombstone list holds.
    Rows pass unchanged when nothing was ever erased."""
    if not shell.has(catalog.erasures()):
        return lambda df: df
    made, rows = tombstones(shell.read(catalog.erasures()), key)
    tokens = made.select(F.col("value").alias("__erased"))
    hashes = rows.select(F.col("value").alias("__erased"))
    personal = source.personal

    def _apply(df: DataFrame) -> DataFrame:
        out = df.join(F.broadcast(hashes), df[ROW_HASH] == hashes["__erased"], "left_anti")
        if not personal.tokenize:
            return out
        kinds = {c: k for c, k in personal.tokenize.items() if c in df.columns}
        tokenised = out.withColumns({f"__id_{c}": F.col(c) for c in kinds}).transform(
            with_keyed_tokens(
                {f"__id_{c}": k for c, k in kinds.items()}, key, personal.country_code
            )
        )
        for c in kinds:
            column = F.col(f"__id_{c}_token")
            tokenised = tokenised.join(
                F.broadcast(tokens), column == F.col("__erased"), "left_anti"
            )
        return tokenised.drop(*[f"__id_{c}_token" for c in kinds])

    return _apply
