"""Backups of the warehouse: each Delta table at its current version, and the stream checkpoints.

A backup is a folder holding, for every table, a copy of `<layer>/<name>` that is a Delta table
by itself at the version N it was taken at: the log up to N and exactly the files (data and
deletion vectors) the snapshot at N reads, not those of older versions. Next to the tables lie
`_checkpoints` and `manifest.json`. It works by paths alone; the metastore is not asked.

Restoring replaces the tables' folders (and `_checkpoints`) under the root by the backup's
copies. Nothing else may use the warehouse meanwhile: a process that read a table before it
went back in time keeps the newer state in its Delta cache, and would commit on top of a
version the table no longer has.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.config import Settings
from lakestory.io.tables import LAYERS, RESTRICTED, TableRef, private_folder

log = logging.getLogger("lakestory.backup")

MANIFEST = "manifest.json"
CHECKPOINTS = "_checkpoints"
DELTA_LOG = "_delta_log"

# The log's entries by version: commits (`N.json`), checksums (`N.crc`), checkpoints (classic
# `N.checkpoint.parquet`, multi-part `N.checkpoint.i.n.parquet`, v2 `N.checkpoint.<id>.json`
# or `.parquet`) and compacted commits (`N.M.compacted.json`, by their last version M).
_VERSIONED = re.compile(r"(\d{20})\.(?:json|crc|checkpoint(?:\.[^/]+)?\.(?:parquet|json))")
_COMPACTED = re.compile(r"\d{20}\.(\d{20})\.compacted\.json")
_LAST_CHECKPOINT = "_last_checkpoint"
# Where a v2 checkpoint's parts live. They are few and copied whole: telling those of
# checkpoints after N apart would mean reading the checkpoints.
_SIDECARS = "_sidecars"


@dataclass(frozen=True)
class TableCopy:
    """One table of a backup: `files` and `bytes` count everything copied for it (data files,
    deletion vectors and log)."""

    table: str
    version: int
    files: int
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """What a backup holds; `taken_at` is in UTC, `extra` is the caller's, verbatim."""

    taken_at: datetime
    tables: tuple[TableCopy, ...]
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "taken_at": self.taken_at.isoformat(),
                "tables": [asdict(copy) for copy in self.tables],
                "extra": self.extra,
            },
            indent=2,
        )


def backup(
    spark: SparkSession,
    settings: Settings,
    to: Path,
    extra: dict[str, str] | None = None,
    skip: Callable[[str], bool] = lambda table: False,
) -> Manifest:
    """Copy every Delta table under the root (but those `skip` names, by `<layer>.<name>`) at
    its current version, and the stream checkpoints, into the new folder `to`.

    The checkpoints are copied first: a stream that runs meanwhile can then only have
    committed more to its sink than its copied checkpoint says, which the sink's idempotent
    commits skip on a replay, never less, which would lose the batch.

    The copy is made in a sibling folder renamed to `to` once the manifest is written, so that
    a backup that stopped half-way is never taken for a whole one.

    Raises:
        ValueError: `to` is inside the warehouse root, or exists and is not an empty folder.
    """
    root = settings.root.resolve()
    to = to.resolve()
    if to.is_relative_to(root):
        raise ValueError(f"cannot back up the warehouse {root} into itself ({to})")
    if to.exists() and not (to.is_dir() and not any(to.iterdir())):
        raise ValueError(f"cannot back up into {to}: it exists and is not an empty folder")
    to.parent.mkdir(parents=True, exist_ok=True)
    partial = to.with_name(f".{to.name}.partial-{uuid.uuid4().hex}")
    partial.mkdir()
    try:
        _copy_checkpoints(root / CHECKPOINTS, partial / CHECKPOINTS)
        copies = []
        for table in _tables(root):
            if skip(table.qualified):
                log.info("%s: skipped", table)
                continue
            copy = _copy_table(spark, root / table.layer / table.name, partial, table)
            if copy is not None:
                copies.append(copy)
        manifest = Manifest(datetime.now(timezone.utc), tuple(copies), dict(extra or {}))
        (partial / MANIFEST).write_text(manifest.to_json())
        if to.exists():
            to.rmdir()
        partial.rename(to)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def read_manifest(where: Path) -> Manifest:
    """The manifest of the backup in the folder `where`.

    Raises:
        ValueError: the folder has no manifest, or one lakestory cannot read.
    """
    path = where / MANIFEST
    try:
        raw = json.loads(path.read_text())
        return Manifest(
            taken_at=datetime.fromisoformat(raw["taken_at"]),
            tables=tuple(
                TableCopy(
                    table=str(t["table"]),
                    version=int(t["version"]),
                    files=int(t["files"]),
                    bytes=int(t["bytes"]),
                )
                for t in raw["tables"]
            ),
            extra={str(k): str(v) for k, v in raw.get("extra", {}).items()},
        )
    except FileNotFoundError:
        raise ValueError(f"{path} not found: {where} is not a lakestory backup") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not a valid backup manifest: {e!r}") from e


def restore(
    spark: SparkSession,
    settings: Settings,
    source: Path,
    keep: Callable[[str], bool] = lambda table: False,
) -> Manifest:
    """Put back the tables of the backup in `source` (but those `keep` names, which stay as
    they are now) and the stream checkpoints; returns the backup's manifest.

    Each table's copy is checked against the manifest before anything is replaced. A table is
    then copied next to its folder and swapped in, so that it is at any moment either wholly
    the old or wholly the restored one. Tables under the root that the backup lacks are left
    alone. Delta's and Spark's caches of the replaced tables are emptied.

    Raises:
        ValueError: `source` holds no valid manifest, or a table's copy does not match it.
    """
    root = settings.root.resolve()
    source = source.resolve()
    manifest = read_manifest(source)
    kept: list[tuple[TableCopy, TableRef]] = []
    replaced: list[tuple[TableCopy, TableRef]] = []
    for copy in manifest.tables:
        table = _table_ref(copy.table)
        (kept if keep(table.qualified) else replaced).append((copy, table))
    for copy, table in replaced:
        _check_copy(source / table.layer / table.name, copy)

    in_backup = {copy.table for copy in manifest.tables}
    absent = [t.qualified for t in _tables(root) if t.qualified not in in_backup]
    if absent:
        log.warning("not in the backup, left as they are: %s", ", ".join(absent))
    for _, table in kept:
        log.info("%s: kept as it is, not restored", table)

    if (source / CHECKPOINTS).is_dir():
        _swap_in(source / CHECKPOINTS, root / CHECKPOINTS)
    for copy, table in replaced:
        if table.layer == RESTRICTED:
            private_folder(root / RESTRICTED)
        _swap_in(source / table.layer / table.name, root / table.layer / table.name)
        log.info("%s: restored at version %d (%d files)", table, copy.version, copy.files)

    # Delta keeps each table's latest snapshot in a cache of the JVM, Spark the data of cached
    # tables. Delta did notice a log that went back in our tests, but no read should rest on a
    # cache of a table whose past was just rewritten.
    jvm = spark._jvm
    assert jvm is not None
    jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    spark.catalog.clearCache()
    return manifest


def _tables(root: Path) -> list[TableRef]:
    """The Delta tables under `root`: the `<layer>/<name>` folders holding a log. A dot folder
    is a restore's or a backup's unfinished copy, not a table."""
    return [
        TableRef(layer, folder.name)
        for layer in LAYERS
        if (root / layer).is_dir()
        for folder in sorted((root / layer).iterdir())
        if not folder.name.startswith(".") and (folder / DELTA_LOG).is_dir()
    ]


def _table_ref(qualified: str) -> TableRef:
    """The table a manifest names, refusing a name that would lead out of its layer folder."""
    layer, _, name = qualified.partition(".")
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"invalid table name in the manifest: {qualified!r}")
    return TableRef(layer, name)


def _copy_checkpoints(checkpoints: Path, to: Path) -> None:
    """Copy the stream checkpoints; an empty folder if there are none, so that a restore
    also takes back checkpoints made after the backup."""
    if checkpoints.is_dir():
        shutil.copytree(checkpoints, to, copy_function=_copy_file)
    else:
        to.mkdir()
    log.info("%s: copied", CHECKPOINTS)


def _copy_table(
    spark: SparkSession, path: Path, backup_root: Path, table: TableRef
) -> TableCopy | None:
    """Copy the table at `path` at its current version into `<backup_root>/<layer>/<name>`."""
    snapshot = _latest_snapshot(spark, path)
    version = int(snapshot.version())
    if version < 0:
        log.warning("%s: its log has no commit yet; not backed up", table)
        return None
    layer = backup_root / table.layer
    if table.layer == RESTRICTED:
        private_folder(layer)
    target = layer / table.name
    files = [path / DELTA_LOG / name for name in _log_entries(path / DELTA_LOG, version)]
    files += [path / relative for relative in _snapshot_files(spark, snapshot, path)]
    size = 0
    for source in files:
        destination = target / source.relative_to(path)
        destination.parent.mkdir(parents=True, exist_ok=True)
        _copy_file(source, destination)
        size += destination.stat().st_size
    log.info("%s: copied at version %d (%d files, %d bytes)", table, version, len(files), size)
    return TableCopy(table.qualified, version, len(files), size)


def _latest_snapshot(spark: SparkSession, path: Path) -> Any:
    """Delta's snapshot (a JVM object) of the table at `path` at its latest version."""
    jvm = spark._jvm
    assert jvm is not None
    delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, str(path))
    none = jvm.scala.Option.empty()
    # update(stalenessAcceptable, checkIfUpdatedSinceTs, catalogTableOpt): read the log again
    return delta_log.update(False, none, none)


def _log_entries(delta_log: Path, version: int) -> list[str]:
    """The names of the log's entries (relative to it) that make the table at `version`:
    those of versions up to it, and `_last_checkpoint` only if it points at one of them
    (without it Delta finds the latest checkpoint by listing the log)."""
    names = [
        entry.name
        for entry in sorted(delta_log.iterdir())
        if entry.is_file() and (entry_version := _log_version(entry.name)) is not None
        if entry_version <= version
    ]
    last_checkpoint = delta_log / _LAST_CHECKPOINT
    if last_checkpoint.is_file() and json.loads(last_checkpoint.read_text())["version"] <= version:
        names.append(_LAST_CHECKPOINT)
    sidecars = delta_log / _SIDECARS
    if sidecars.is_dir():
        names += [
            f"{_SIDECARS}/{part.name}"
            for part in sorted(sidecars.iterdir())
            if part.is_file() and not part.name.startswith(".")
        ]
    return names


def _log_version(name: str) -> int | None:
    """The version the log entry `name` belongs to; None for any other file of the log."""
    match = _VERSIONED.fullmatch(name) or _COMPACTED.fullmatch(name)
    return None if match is None else int(match[1])


def _snapshot_files(spark: SparkSession, snapshot: Any, path: Path) -> list[Path]:
    """The files, relative to the table's folder, that `snapshot` reads: its data files and
    the deletion vector files their rows' deletions are kept in, as Delta itself lists them."""
    jvm = spark._jvm
    assert jvm is not None
    adds = DataFrame(snapshot.allFiles().toDF(), spark).select(
        "path",
        F.col("deletionVector.storageType").alias("dv_type"),
        F.col("deletionVector.pathOrInlineDv").alias("dv_path"),
    )
    files: set[Path] = set()
    deletion_vectors: set[tuple[str, str]] = set()
    for row in adds.collect():
        files.add(_relative_to(path, _decoded(row["path"])))
        # "i": the deletion vector is inline in the log, "u" / "p": in a file of its own
        if row["dv_type"] in ("u", "p"):
            deletion_vectors.add((row["dv_type"], row["dv_path"]))
    table_path = jvm.org.apache.hadoop.fs.Path(str(path))
    descriptor = jvm.org.apache.spark.sql.delta.actions.DeletionVectorDescriptor
    none = jvm.scala.Option.empty()
    for storage_type, path_or_inline in deletion_vectors:
        # Delta's own rule from descriptor to file (a random prefix and a Z85-encoded UUID for
        # "u"); offset, size and cardinality play no part in it.
        dv = descriptor.apply(storage_type, path_or_inline, none, 0, 0, none)
        files.add(_relative_to(path, dv.absolutePath(table_path).toUri().getPath()))
    return sorted(files)


def _decoded(encoded: str) -> str:
    """The path of an add action, stored URL-encoded (a relative path or an absolute URI)."""
    parts = urlsplit(encoded)
    return unquote(parts.path if parts.scheme else encoded)


def _relative_to(table: Path, file: str) -> Path:
    """`file` (relative to the table's folder, or absolute) relative to the table's folder."""
    base = table.resolve()
    absolute = (base / file).resolve()
    if not absolute.is_relative_to(base):
        raise ValueError(
            f"the table at {table} reads a file outside its folder ({file}), e.g. a shallow "
            "clone's; such a table cannot be backed up by copying its folder"
        )
    return absolute.relative_to(base)


def _copy_file(source: Path | str, destination: Path | str) -> None:
    # copy2 keeps the modification time, which Delta takes for a commit's timestamp (without
    # in-commit timestamps) and VACUUM for a file's age
    shutil.copy2(source, destination)


def _check_copy(copy: Path, expected: TableCopy) -> None:
    """Refuse a table's copy in a backup whose files are not those its manifest counts."""
    if not (copy / DELTA_LOG).is_dir():
        raise ValueError(f"{expected.table}: the backup has no Delta table at {copy}")
    files = [f for f in copy.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    if (len(files), size) != (expected.files, expected.bytes):
        raise ValueError(
            f"{expected.table}: the backup's copy at {copy} has {len(files)} files, {size} "
            f"bytes; its manifest says {expected.files} files, {expected.bytes} bytes"
        )


def _swap_in(copy: Path, target: Path) -> None:
    """Replace the folder `target` (if any) by a copy of the folder `copy`: copied next to it
    first, then renamed over it, so that `target` is never half replaced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    staged = target.with_name(f".{target.name}.restoring-{token}")
    try:
        shutil.copytree(copy, staged, copy_function=_copy_file)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    if target.exists():
        replaced = target.with_name(f".{target.name}.replaced-{token}")
        target.rename(replaced)
        staged.rename(target)
        shutil.rmtree(replaced)
    else:
        staged.rename(target)
