"""Exactly once, the hard way: SIGKILL a real `lakestory ingest` process at several points of a
run, rerun it, and compare bronze with one clean run's.

The source takes one file per micro-batch, so a run has several batches to interrupt. The kills
land (a) after a batch is planned in the checkpoint's offset log and before it is committed,
(b) after its rows are committed to bronze and before the checkpoint records the batch done,
the case `txnAppId`/`txnVersion` exists for, (c) after its files are also logged in
`ops.ingestion_files` and before the checkpoint records the batch done, and (d) between batches.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.demo.generate import generate_customers

from ..conftest import CONF

pytestmark = pytest.mark.slow

FILES = 6
TABLE = "bronze/customers_accounts"
CHECKPOINT = "_checkpoints/bronze/customers_accounts"
FILE_LOG = "ops/ingestion_files"
CONTENT = [
    "customer_id",
    "name",
    "balance",
    "churned",
    "_rescued",
    "_corrupt_record",
    "_source_file",
    "_row_hash",
]


def _conf_dir(tmp: Path) -> Path:
    """The repo's conf with the accounts source taking one file per micro-batch."""
    conf = tmp / "conf"
    shutil.copytree(CONF / "base", conf / "base")
    (conf / "datasets").mkdir()
    text = (CONF / "datasets" / "customers.yaml").read_text()
    marker = "    path: customers/accounts"
    assert marker in text
    text = text.replace(marker, marker + "\n    max_files_per_trigger: 1", 1)
    (conf / "datasets" / "customers.yaml").write_text(text)
    return conf


def _start(root: Path, conf: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LAKESTORY_ROOT": str(root), "LAKESTORY_CONF_DIR": str(conf)}
    cli = Path(sys.executable).with_name("lakestory")
    return subprocess.Popen(
        [str(cli), "ingest", "customers"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the JVM child dies with it
    )


def _numbered(folder: Path) -> set[int]:
    if not folder.is_dir():
        return set()
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()}


def _versions(table: Path) -> set[int]:
    log = table / "_delta_log"
    return {int(p.name[:20]) for p in log.glob("*.json")} if log.is_dir() else set()


def _state(root: Path) -> dict[str, set[int]]:
    ck = root / CHECKPOINT
    return {
        "offsets": _numbered(ck / "offsets"),
        "commits": _numbered(ck / "commits"),
        "versions": _versions(root / TABLE),
        "logged": _versions(root / FILE_LOG),
    }


Point = Callable[[dict[str, set[int]], dict[str, set[int]]], bool]


def planned_not_done(start: dict[str, set[int]], now: dict[str, set[int]]) -> bool:
    """A batch this process planned is in the offset log and not committed."""
    return bool(now["offsets"] - start["offsets"] - now["commits"])


def written_not_done(start: dict[str, set[int]], now: dict[str, set[int]]) -> bool:
    """This process committed a batch's rows to bronze; the checkpoint does not know yet.
    (One bronze version per batch: version n holds batch n.)"""
    return bool(now["versions"] - start["versions"] - now["commits"])


def logged_not_done(start: dict[str, set[int]], now: dict[str, set[int]]) -> bool:
    """This process logged more batches in ops.ingestion_files than the checkpoint has done.
    (One log commit per batch.)"""
    return len(now["logged"] - start["logged"]) > len(now["commits"] - start["commits"])


def between_batches(start: dict[str, set[int]], now: dict[str, set[int]]) -> bool:
    """This process completed a batch and has not planned the next."""
    return bool(now["commits"] - start["commits"]) and now["offsets"] == now["commits"]


def _kill_when(root: Path, conf: Path, point: Point, timeout: float = 240) -> bool:
    """Run ingest until `point` holds, then SIGKILL its process group. False if it finished."""
    start = _state(root)
    proc = _start(root, conf)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if point(start, _state(root)):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"{point.__name__} never held within {timeout}s")


def _run(root: Path, conf: Path) -> None:
    proc = _start(root, conf)
    assert proc.wait(timeout=600) == 0


def _bronze(spark: SparkSession, root: Path) -> DataFrame:
    rows = spark.read.format("delta").load(str(root / TABLE))
    # the landing path differs between the two warehouses; the file name does not
    return rows.withColumn("_source_file", F.regexp_extract("_source_file", r"[^/]+$", 0))


def test_sigkill_at_any_point_then_rerun_equals_one_clean_run(
    spark: SparkSession, tmp_path: Path
) -> None:
    conf = _conf_dir(tmp_path)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    for root in (clean, killed):
        generate_customers(root / "landing", rows=1200, drops=FILES, seed=5)
        shutil.rmtree(root / "landing" / "customers" / "transactions")  # accounts only
    _run(clean, conf)

    points = (planned_not_done, written_not_done, logged_not_done, between_batches)
    kills = [_kill_when(killed, conf, point) for point in points]
    assert all(kills), f"a run finished before its kill point was reached: {kills}"
    _run(killed, conf)

    expected, actual = _bronze(spark, clean), _bronze(spark, killed)
    assert actual.count() == expected.count() > 1200
    assert actual.select(CONTENT).exceptAll(expected.select(CONTENT)).count() == 0
    assert expected.select(CONTENT).exceptAll(actual.select(CONTENT)).count() == 0
    # one batch per file, every file in exactly one batch
    per_file = actual.groupBy("_source_file").agg(F.countDistinct("_batch_id").alias("n"))
    assert per_file.count() == FILES and per_file.where("n != 1").count() == 0
    files = spark.read.format("delta").load(str(killed / "ops/ingestion_files"))
    assert files.count() == FILES == files.select("file").distinct().count()
