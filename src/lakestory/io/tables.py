"""Delta tables of the warehouse: `<layer>.<name>` stored at `<root>/<layer>/<name>`."""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from lakestory.config import Settings

LAYERS = ("bronze", "silver", "gold", "quarantine", "ops", "restricted")
# the layer of the links back from pseudonyms to people (the token vault): its folder is kept
# readable by its owner only
RESTRICTED = "restricted"
_TABLE = re.compile(r"^([a-z]+)\.([a-z_][a-z0-9_]*)$")


@dataclass(frozen=True)
class TableRef:
    """A table of the warehouse, e.g. `TableRef("bronze", "customers_accounts")`."""

    layer: str
    name: str

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValueError(f"unknown layer {self.layer!r}; expected one of {LAYERS}")

    @classmethod
    def parse(cls, name: str) -> TableRef:
        """`silver.customers_accounts` -> TableRef; a ValueError names the layers if it is
        not one."""
        match = _TABLE.match(name)
        if not match or match.group(1) not in LAYERS:
            raise ValueError(f"{name!r} is not a table name <layer>.<name>, layer one of {LAYERS}")
        return cls(match.group(1), match.group(2))

    @property
    def qualified(self) -> str:
        return f"{self.layer}.{self.name}"

    def path(self, settings: Settings) -> Path:
        return settings.root / self.layer / self.name

    def __str__(self) -> str:
        return self.qualified


# What this process has already found or made in each session's metastore (layer databases,
# registered tables), so that a run's every write does not ask the metastore again (~50 ms a
# question). lakestory never drops a database or unregisters a table.
_known: dict[str, set[str]] = {}


def _known_in(spark: SparkSession) -> set[str]:
    return _known.setdefault(spark.sparkContext.applicationId, set())


def ensure_layers(spark: SparkSession, settings: Settings) -> None:
    """Create the layer databases (bronze, silver, ...) at their places under the root."""
    known = _known_in(spark)
    if f"layers:{settings.root}" in known:
        return
    private_folder(settings.root / RESTRICTED)
    existing = {db.name for db in spark.catalog.listDatabases()}
    for layer in LAYERS:
        if layer not in existing:
            location = settings.root / layer
            spark.sql(f"CREATE DATABASE IF NOT EXISTS {layer} LOCATION '{location}'")
    known.add(f"layers:{settings.root}")


def private_folder(path: Path) -> None:
    """Make `path` a folder only its owner may list, read or enter (mode 0700), tightening
    the mode of one that exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)


def stored(settings: Settings, qualified: str) -> bool:
    """Whether the warehouse has a Delta table `<layer>.<name>` on disk."""
    layer, _, name = qualified.partition(".")
    return (settings.root / layer / name / "_delta_log").is_dir()


def exists(spark: SparkSession, table: TableRef) -> bool:
    return spark.catalog.tableExists(table.qualified)


def register(spark: SparkSession, settings: Settings, table: TableRef) -> None:
    """Register the Delta table at the table's path in the metastore, if it is not yet."""
    known = _known_in(spark)
    if f"table:{table.qualified}" in known:
        return
    if not exists(spark, table):
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS {table.qualified} USING DELTA "
            f"LOCATION '{table.path(settings)}'"
        )
    known.add(f"table:{table.qualified}")


def log_version(spark: SparkSession, path: str) -> int | None:
    """The latest version of the Delta table at `path`, from its log's file names (as Delta
    itself finds it, without loading the table's state); None if there is no table there."""
    fs, log = _delta_log(spark, path)
    if not fs.exists(log):
        return None
    versions = [
        int(name[: -len(".json")])
        for status in fs.listStatus(log)
        if (name := status.getPath().getName()).endswith(".json") and name[:-5].isdigit()
    ]
    return max(versions, default=None)


def clear_cut_log(spark: SparkSession, path: str) -> bool:
    """Remove the `_delta_log` at `path` if it holds no file at all: what a kill leaves when
    it cuts a new table's first commit (Delta makes the folders before it writes commit 0).
    Delta's writer reads such a log as no table, but `CREATE TABLE IF NOT EXISTS` sees the
    folder, skips the creation, then finds no table to open. Folders are removed one by one,
    deepest first, each only while it is empty, so a commit that another writer lands
    meanwhile stops the removal instead of being lost. Returns whether a log was removed."""
    fs, log = _delta_log(spark, path)
    if not fs.exists(log) or fs.listFiles(log, True).hasNext():
        return False
    try:
        _remove_empty(fs, log)
    except Exception:  # a file landed meanwhile: that writer's table stays as it is
        return False
    return True


def _remove_empty(fs: Any, folder: Any) -> None:
    """Remove `folder` and the folders under it, children first; Hadoop's non-recursive
    delete refuses a folder that is no longer empty."""
    for status in fs.listStatus(folder):
        if status.isDirectory():
            _remove_empty(fs, status.getPath())
    fs.delete(folder, False)


def _delta_log(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """The Hadoop FileSystem of the table at `path` and its `_delta_log` folder's Path."""
    jvm = spark._jvm
    assert jvm is not None
    log = jvm.org.apache.hadoop.fs.Path(f"{path}/_delta_log")
    return log.getFileSystem(spark._jsc.hadoopConfiguration()), log


def read(spark: SparkSession, table: TableRef) -> DataFrame:
    return spark.read.table(table.qualified)


def table_version(spark: SparkSession, table: TableRef) -> int | None:
    """The latest Delta version of `table`, or None if it does not exist yet."""
    if not exists(spark, table):
        return None
    row = spark.sql(f"DESCRIBE HISTORY {table.qualified} LIMIT 1").select("version").first()
    return None if row is None else int(row[0])
