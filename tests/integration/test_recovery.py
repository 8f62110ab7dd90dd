"""Backup and restore of a whole warehouse, and the rule that a restore never brings back a
subject erased after the backup was taken."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.config import Settings
from lakestory.errors import WrongKeyError
from lakestory.io.backup import backup
from lakestory.operations.erasure import forget
from lakestory.operations.recovery import restore_backup
from lakestory.operations.refine import refine_source
from tests.integration.test_refine import KEY, dataset, land

pytestmark = pytest.mark.slow


def _tables(spark: SparkSession, root: Path) -> dict[str, DataFrame]:
    """Every table under `root`, its rows read now (kept in memory, not re-read later)."""
    out = {}
    for log in sorted(root.glob("*/*/_delta_log")):
        table = log.parent
        rows = spark.read.format("delta").load(str(table))
        name = f"{table.parent.name}.{table.name}"
        out[name] = spark.createDataFrame(rows.collect(), rows.schema)
    return out


def test_a_restore_brings_back_every_table_but_never_an_erased_subject(
    spark: SparkSession, tmp_path: Path, own_warehouse: Settings
) -> None:
    settings = own_warehouse
    ds = dataset("restored")
    land(spark, settings, ds)
    refine_source(spark, settings, ds, "people", KEY, "run-1")
    before = _tables(spark, settings.root)
    assert {"bronze.restored_people", "silver.restored_people"} <= before.keys()
    token = hmac.new(KEY, b"2", hashlib.sha256).hexdigest()
    (pid,) = [r.id for r in before["restricted.restored_vault"].collect() if r.token == token]

    manifest = backup(spark, settings, tmp_path / "backup")
    assert {c.table for c in manifest.tables} == set(before)
    subjects = tmp_path / "subjects.csv"
    subjects.write_text("id\n2\n")
    forget(spark, settings, ds, subjects, KEY)
    with pytest.raises(WrongKeyError, match="fingerprint"):  # checked before anything moves
        restore_backup(spark, settings, tmp_path / "backup", [ds], b"x" * 40)

    restored = restore_backup(spark, settings, tmp_path / "backup", [ds], KEY)

    assert restored.receipts[0].rows > 0  # the erasure done after the backup, done again
    after = _tables(spark, settings.root)
    not_the_subject = {
        "bronze.restored_people": F.trim("id") != "2",
        "quarantine.restored_people": F.col("id").isNull() | (F.trim("id") != "2"),
        "silver.restored_people": F.col("id_pseudonym") != pid,
        "restricted.restored_vault": F.col("token") != token,
    }
    for table, rows in before.items():
        expected = rows.where(not_the_subject.get(table, F.lit(True)))
        assert_df_equality(after[table], expected, ignore_row_order=True, ignore_nullable=True)
    assert before["silver.restored_people"].count() == after["silver.restored_people"].count() + 1
    # erasure records are never put back in time: the receipts of the forget and the restore
    assert {"ops.erasures", "restricted.restored_erasures"} <= after.keys() - before.keys()
    assert after["ops.erasures"].count() == 2
