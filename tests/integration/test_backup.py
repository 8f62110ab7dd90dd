"""Backup and restore of a small warehouse of path tables: a partitioned table, one with deletion
vectors, a kept one (the ledger) and a stream checkpoint, changed and vacuumed after the backup."""

from __future__ import annotations

import logging
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from lakestory.config import Settings, load_settings
from lakestory.io.backup import Manifest, backup, read_manifest, restore

from ..conftest import CONF

A_SCHEMA = "id int, day string"
B_SCHEMA = "id int, v string"
LEDGER_SCHEMA = "subject string"
DAY = "2024-01-01 10:00"  # a partition value whose folder name Delta URL-encodes in its log
OFFSET = Path("_checkpoints/silver/b/offsets/0")
LEDGER = "restricted.ledger"


@dataclass(frozen=True)
class Backedup:
    settings: Settings
    folder: Path
    manifest: Manifest
    a_files: frozenset[str]  # the data files bronze.a reads at the backup, by name


def _path(settings: Settings, table: str) -> str:
    return str(settings.root / table.replace(".", "/"))


def _write(
    spark: SparkSession,
    rows: list[tuple],
    schema: str,
    path: str,
    mode: str,
    partition_by: tuple[str, ...] = (),
    options: dict[str, str] | None = None,
) -> None:
    frame = spark.createDataFrame(rows, schema).coalesce(1)
    writer = frame.write.format("delta").mode(mode).partitionBy(*partition_by)
    writer.options(**(options or {})).save(path)


def _read(spark: SparkSession, settings: Settings, table: str) -> DataFrame:
    return spark.read.format("delta").load(_path(settings, table))


def _vacuum_everything(spark: SparkSession, path: str) -> None:
    """Delete every file the latest version does not read, as a retention of 0 would."""
    settings = {
        "spark.databricks.delta.retentionDurationCheck.enabled": "false",
        # VACUUM lists the table's folders in this many tasks (10,000 by default): minutes
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
    }
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        spark.sql(f"VACUUM delta.`{path}` RETAIN 0 HOURS")
    finally:
        for key in settings:
            spark.conf.unset(key)


@pytest.fixture(scope="module")
def backed_up(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Backedup:
    """A warehouse backed up, then changed: rows added and deleted, silver.b vacuumed, a table
    created, the checkpoint advanced."""
    tmp = tmp_path_factory.mktemp("backup")
    settings = load_settings(CONF, environ={"LAKESTORY_ROOT": str(tmp / "wh")})
    a, b, ledger = (_path(settings, t) for t in ("bronze.a", "silver.b", LEDGER))

    # bronze.a: versions 0-2, those of 0 and 1 no longer read at 2
    _write(spark, [(1, DAY), (2, "x y")], A_SCHEMA, a, "overwrite", partition_by=("day",))
    _write(spark, [(3, DAY)], A_SCHEMA, a, "append")
    _write(spark, [(1, DAY), (3, DAY)], A_SCHEMA, a, "overwrite")
    a_files = frozenset(Path(f).name for f in spark.read.format("delta").load(a).inputFiles())

    # silver.b: versions 0-2, its MERGE and DELETE recorded in deletion vectors
    dvs = {"delta.enableDeletionVectors": "true"}
    _write(spark, [(1, "a"), (2, "b"), (3, "c"), (4, "d")], B_SCHEMA, b, "overwrite", options=dvs)
    (
        DeltaTable.forPath(spark, b)
        .alias("t")
        .merge(spark.createDataFrame([(1, "a2")], B_SCHEMA).alias("s"), "t.id = s.id")
        .whenMatchedUpdateAll()
        .execute()
    )
    DeltaTable.forPath(spark, b).delete("id = 2")
    assert list(Path(b).glob("deletion_vector_*.bin"))  # precondition

    _write(spark, [("s1",)], LEDGER_SCHEMA, ledger, "overwrite")
    offset = settings.root / OFFSET
    offset.parent.mkdir(parents=True)
    offset.write_text("at backup")

    manifest = backup(spark, settings, tmp / "copy", extra={"reason": "test"})

    _write(spark, [(9, DAY)], A_SCHEMA, a, "append")
    DeltaTable.forPath(spark, b).delete("id = 3")
    _write(spark, [(5, "e")], B_SCHEMA, b, "append")
    _write(spark, [("s2",)], LEDGER_SCHEMA, ledger, "append")
    _write(spark, [(1, "new")], B_SCHEMA, _path(settings, "gold.c"), "overwrite")
    _vacuum_everything(spark, b)
    offset.write_text("after backup")
    (offset.parent / "1").write_text("after backup")

    # precondition: silver.b's files at the backup, deletion vector included, are gone
    backed_up_dvs = {f.name for f in (tmp / "copy/silver/b").glob("deletion_vector_*.bin")}
    assert backed_up_dvs.isdisjoint(f.name for f in Path(b).iterdir())
    return Backedup(settings, tmp / "copy", manifest, a_files)


@pytest.fixture
def restored(spark: SparkSession, backed_up: Backedup) -> Manifest:
    return restore(spark, backed_up.settings, backed_up.folder, keep=lambda t: t == LEDGER)


def test_manifest_records_each_table_at_its_version(backed_up: Backedup) -> None:
    manifest = read_manifest(backed_up.folder)
    assert manifest == backed_up.manifest
    assert {t.table: t.version for t in manifest.tables} == {
        "bronze.a": 2,
        "silver.b": 2,
        LEDGER: 0,
    }
    assert manifest.extra == {"reason": "test"}
    assert manifest.taken_at.utcoffset() is not None


def test_backup_copies_only_the_files_of_the_backed_up_version(backed_up: Backedup) -> None:
    copied = {f.name for f in (backed_up.folder / "bronze/a").rglob("*.parquet")}
    assert copied == backed_up.a_files
    assert not list((backed_up.folder / "bronze/a").glob("day=x*/*"))


def test_backup_copies_deletion_vectors(backed_up: Backedup) -> None:
    assert list((backed_up.folder / "silver/b").glob("deletion_vector_*.bin"))


def test_backup_of_the_restricted_layer_is_private(backed_up: Backedup) -> None:
    assert stat.S_IMODE((backed_up.folder / "restricted").stat().st_mode) == 0o700


def test_restore_puts_back_each_table_as_it_was(
    spark: SparkSession, backed_up: Backedup, restored: Manifest
) -> None:
    settings = backed_up.settings
    assert_df_equality(
        _read(spark, settings, "bronze.a"),
        spark.createDataFrame([(1, DAY), (3, DAY)], A_SCHEMA),
        ignore_row_order=True,
    )
    assert_df_equality(
        _read(spark, settings, "silver.b"),
        spark.createDataFrame([(1, "a2"), (3, "c"), (4, "d")], B_SCHEMA),
        ignore_row_order=True,
    )


def test_restore_leaves_kept_tables_as_they_are(
    spark: SparkSession, backed_up: Backedup, restored: Manifest
) -> None:
    assert_df_equality(
        _read(spark, backed_up.settings, LEDGER),
        spark.createDataFrame([("s1",), ("s2",)], LEDGER_SCHEMA),
        ignore_row_order=True,
    )


def test_restore_leaves_tables_the_backup_lacks(
    spark: SparkSession, backed_up: Backedup, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lakestory.backup"):
        restore(spark, backed_up.settings, backed_up.folder, keep=lambda t: t == LEDGER)
    assert _read(spark, backed_up.settings, "gold.c").count() == 1
    assert "gold.c" in caplog.text


def test_restore_puts_back_the_stream_checkpoints(backed_up: Backedup, restored: Manifest) -> None:
    offset = backed_up.settings.root / OFFSET
    assert offset.read_text() == "at backup"
    assert not (offset.parent / "1").exists()


def test_restored_table_takes_writes_after_its_backed_up_version(
    spark: SparkSession, backed_up: Backedup, restored: Manifest
) -> None:
    path = _path(backed_up.settings, "bronze.a")
    _write(spark, [(7, DAY)], A_SCHEMA, path, "append")
    history = DeltaTable.forPath(spark, path).history(1).first()
    assert history is not None and history["version"] == 3
    assert sorted(r["id"] for r in _read(spark, backed_up.settings, "bronze.a").collect()) == [
        1,
        3,
        7,
    ]


def test_backup_refuses_a_folder_that_is_not_empty(
    spark: SparkSession, backed_up: Backedup, tmp_path: Path
) -> None:
    (tmp_path / "something").write_text("")
    with pytest.raises(ValueError, match="not an empty folder"):
        backup(spark, backed_up.settings, tmp_path)


def test_backup_refuses_a_folder_inside_the_warehouse(
    spark: SparkSession, backed_up: Backedup
) -> None:
    with pytest.raises(ValueError, match="into itself"):
        backup(spark, backed_up.settings, backed_up.settings.root / "backups" / "one")


def test_failed_backup_leaves_nothing_behind(
    spark: SparkSession, backed_up: Backedup, tmp_path: Path
) -> None:
    def fail(table: str) -> bool:
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        backup(spark, backed_up.settings, tmp_path / "copy", skip=fail)
    assert list(tmp_path.iterdir()) == []


def test_restore_refuses_a_folder_without_manifest(
    spark: SparkSession, backed_up: Backedup, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "manifest.json"))):
        restore(spark, backed_up.settings, tmp_path)
