"""`lakestory rotate-key <dataset> --new-key-file FILE`: the vault's tokens made again under a
new key, every artificial id kept, so silver and gold stay as they are.

A token cannot be turned into another key's token: both are made from the identifier. The
identifiers are in bronze (raw records), so rotation reads each tokenised column of each
source's bronze table, makes both tokens of every value, and replaces each old token of the
vault by its new one in a single commit (`CREATE OR REPLACE TABLE ... AS SELECT`) that also
records the new key's fingerprint. From then on the vault refuses the old key (`check_key`):
the new key must be the one lakestory reads (`LAKESTORY_TOKEN_KEY` or the key file).

The tombstone list of erased subjects holds tokens too, whose identifiers bronze no longer
has; for those still in a landing file (the very records that could come back) the new key's
tokens are added. The old key's stay, for a restore of a backup made with that key. A subject
whose identifier is nowhere left has no new-key token; the hashes of their raw records, which
no key makes, still keep out a record landed again.

Run it when no other lakestory job writes the dataset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.columns import union
from lakestory.config import Dataset, Settings, Source
from lakestory.ingestion.structured import read_structured
from lakestory.io import Catalog, Shell
from lakestory.io.files import list_files
from lakestory.operations.erasure import TOKEN_KIND, record_tombstones, tombstones
from lakestory.privacy.tokens import with_keyed_tokens
from lakestory.privacy.vault import FINGERPRINT, ID, TOKEN, check_key, key_fingerprint
from lakestory.quality.casting import with_declared_types

log = logging.getLogger("lakestory.rotate")

OLD, NEW = "__old", "__new"


@dataclass(frozen=True)
class Rotation:
    dataset: str
    ids: int  # vault entries, every one keeping its id
    rekeyed: int  # of them, re-made under the new key
    tombstones: int  # tombstone tokens re-made under the new key
    fingerprint: str  # of the new key

    def __str__(self) -> str:
        left = self.ids - self.rekeyed
        return (
            f"{self.dataset}: {self.rekeyed} of {self.ids} vault tokens re-made under the key "
            f"with fingerprint {self.fingerprint}, every id unchanged"
            + (f" ({left} whose identifier no table holds keep their old token)" if left else "")
            + f"; {self.tombstones} tombstone(s) re-made. Make the new key the one lakestory "
            "reads before the next run: the vault now refuses the old one."
        )


def _pairs(rows: DataFrame, source: Source, old: bytes, new: bytes) -> DataFrame | None:
    """(old token, new token) of every identifier value in `rows` (the source's text)."""
    personal = source.personal
    columns = [c for c in personal.tokenize if c in rows.columns]
    if not columns:
        return None
    typed = rows.transform(with_declared_types(source)).select(*columns)
    out = []
    for column in columns:
        kind = {column: personal.tokenize[column]}
        both = typed.select(F.col(column).alias(OLD), F.col(column).alias(NEW)).distinct()
        both = both.transform(with_keyed_tokens({OLD: kind[column]}, old, personal.country_code))
        both = both.transform(with_keyed_tokens({NEW: kind[column]}, new, personal.country_code))
        pairs = both.select(F.col(f"{OLD}_token").alias(OLD), F.col(f"{NEW}_token").alias(NEW))
        out.append(pairs)
    return union(out)


def _union(frames: list[DataFrame | None]) -> DataFrame | None:
    out = union(frames)
    return None if out is None else out.where(F.col(OLD).isNotNull()).distinct()


def _landed(spark: SparkSession, catalog: Catalog, source: Source) -> DataFrame | None:
    """The source's records still in landing, as text."""
    files = [f.path for f in list_files(spark, catalog.landing(source), source.glob)]
    if not files:
        return None
    return read_structured(spark, source, files, list(source.schema_), type_check=False).frame


def rotate_key(
    spark: SparkSession, settings: Settings, dataset: Dataset, old: bytes, new: bytes
) -> Rotation:
    """Re-make the dataset's vault (and tombstone list) under `new`; ids do not change."""
    fingerprint = key_fingerprint(new)
    shell, catalog = Shell(spark, settings), Catalog(dataset, settings)
    table = catalog.vault()
    if not shell.has(table):
        return Rotation(dataset.name, 0, 0, 0, fingerprint)
    check_key(shell, catalog, old)
    held = []
    for name, source in dataset.structured().items():
        bronze = catalog.bronze(name)
        if shell.has(bronze):
            held.append(_pairs(shell.read(bronze), source, old, new))
    pairs = _union(held)
    # tombstones first: they only gain the new key's tokens, so a rotation that stops between
    # the two leaves a vault that still takes the old key, and can be run again
    remade = _rotate_tombstones(shell, catalog, old, new)
    vault = shell.read(table)
    if pairs is None:
        pairs = spark.createDataFrame([], f"{OLD} string, {NEW} string")
    # a snapshot of the vault to rewrite: the table is replaced by a query over itself
    joined = vault.join(pairs, vault[TOKEN] == pairs[OLD], "left").localCheckpoint()
    ids = joined.count()
    rekeyed = joined.where(F.col(NEW).isNotNull()).count()
    rows = joined.select(F.coalesce(F.col(NEW), F.col(TOKEN)).alias(TOKEN), ID, "minted_at")
    shell.replace_as(table, rows, {FINGERPRINT: fingerprint})
    log.info("%s: %d of %d tokens re-made under the new key", table, rekeyed, ids)
    return Rotation(dataset.name, ids, rekeyed, remade, fingerprint)


def _rotate_tombstones(shell: Shell, catalog: Catalog, old: bytes, new: bytes) -> int:
    """Add the new key's token for each tombstone of the old key whose identifier a landing
    file still holds; the old key's entries stay, for a restore of a backup made with it."""
    ledger = catalog.erasures()
    if not shell.has(ledger):
        return 0
    sources = catalog.dataset.structured().values()
    landed = [(s, _landed(shell.spark, catalog, s)) for s in sources]
    pairs = _union([_pairs(f, s, old, new) for s, f in landed if f is not None])
    if pairs is None:
        return 0
    made, _ = tombstones(shell.read(ledger), old)
    remade = made.join(pairs, made["value"] == pairs[OLD]).select(
        F.lit(TOKEN_KIND).alias("kind"),
        F.col(NEW).alias("value"),
        F.lit(key_fingerprint(new)).alias("key"),
    )
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return record_tombstones(shell, catalog, remade, "rotate-key", now)
