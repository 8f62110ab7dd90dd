"""Exactly once, the hard way: SIGKILL a real `lakestory ingest` (or `refine`) process at several
points of a run, rerun it, and compare bronze (or silver and quarantine) with one clean run's.

The source takes one file per micro-batch, so a run has several batches to interrupt. The kills
land (a) after a batch is planned in the checkpoint's offset log and before it is committed,
(b) after its rows are committed to bronze and before the checkpoint records the batch done,
the case `txnAppId`/`txnVersion` exists for, (c) after its files are also logged in
`ops.ingestion_files` and before the checkpoint records the batch done, and (d) between batches.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from lakestory.demo.generate import generate_customers

from ..conftest import CONF

pytestmark = pytest.mark.slow

FILES = 6
TABLE = "bronze/customers_accounts"
CHECKPOINT = "_checkpoints/bronze/customers_accounts"
FILE_LOG = "ops/ingestion_files"
RUN_LOG = "ops/ingestion_runs"
TOKEN_KEY = "exactly-once-test-key-0123456789abcdef"  # a throwaway key for throwaway data
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


def _conf_dir(tmp: Path, files_per_batch: int | None = 1) -> Path:
    """The repo's conf with the accounts source taking `files_per_batch` files per
    micro-batch (landing files at ingest, bronze data files at refine)."""
    conf = tmp / f"conf-{files_per_batch}"
    shutil.copytree(CONF / "base", conf / "base")
    (conf / "datasets").mkdir()
    text = (CONF / "datasets" / "customers.yaml").read_text()
    marker = "    path: customers/accounts"
    assert marker in text
    if files_per_batch:
        text = text.replace(marker, f"{marker}\n    max_files_per_trigger: {files_per_batch}", 1)
    (conf / "datasets" / "customers.yaml").write_text(text)
    return conf


def _start(root: Path, conf: Path, stage: str = "ingest") -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LAKESTORY_ROOT": str(root),
        "LAKESTORY_CONF_DIR": str(conf),
        "LAKESTORY_TOKEN_KEY": TOKEN_KEY,
    }
    cli = Path(sys.executable).with_name("lakestory")
    return subprocess.Popen(
        [str(cli), stage, "customers"],
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
        "runs": _versions(root / RUN_LOG),
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


def streamed_not_recorded(start: dict[str, set[int]], now: dict[str, set[int]]) -> bool:
    """This process's stream has done every file's batch, and the run has not recorded
    itself in ops.ingestion_runs yet."""
    done = len(now["commits"]) == FILES and now["offsets"] == now["commits"]
    return done and now["runs"] == start["runs"]


def _kill_when(
    root: Path,
    conf: Path,
    point: Point,
    stage: str = "ingest",
    state: Callable[[Path], dict[str, set[int]]] | None = None,
    timeout: float = 240,
) -> bool:
    """Run the stage until `point` holds, then SIGKILL its process group. False if it
    finished first."""
    state = state or _state
    start = state(root)
    proc = _start(root, conf, stage)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if point(start, state(root)):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"{point.__name__} never held within {timeout}s")


def _run(root: Path, conf: Path, stage: str = "ingest") -> None:
    proc = _start(root, conf, stage)
    assert proc.wait(timeout=600) == 0


def _bronze(spark: SparkSession, root: Path) -> DataFrame:
    rows = spark.read.format("delta").load(str(root / TABLE))
    # the landing path differs between the two warehouses; the file name does not
    return rows.withColumn("_source_file", F.regexp_extract("_source_file", r"[^/]+$", 0))


@dataclass(frozen=True)
class Warehouses:
    conf: Path
    clean: Path  # ingested in one run
    killed: Path  # ingested by runs killed at each point, then one run to the end


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Warehouses:
    tmp = tmp_path_factory.mktemp("exactly-once")
    conf = _conf_dir(tmp)
    clean, killed = tmp / "clean", tmp / "killed"
    for root in (clean, killed):
        generate_customers(root / "landing", rows=1200, drops=FILES, seed=5)
        shutil.rmtree(root / "landing" / "customers" / "transactions")  # accounts only
    _run(clean, conf)

    # streamed_not_recorded last: the run it kills completes the batch written_not_done left
    # pending, and the final run then has no file left to ingest, only runs to record
    points = (
        planned_not_done,
        logged_not_done,
        between_batches,
        written_not_done,
        streamed_not_recorded,
    )
    kills = [_kill_when(killed, conf, point) for point in points]
    assert all(kills), f"a run finished before its kill point was reached: {kills}"
    _run(killed, conf)
    return Warehouses(conf, clean, killed)


def test_sigkill_at_any_point_then_rerun_equals_one_clean_run(
    spark: SparkSession, ingested: Warehouses
) -> None:
    clean, killed = ingested.clean, ingested.killed
    expected, actual = _bronze(spark, clean), _bronze(spark, killed)
    assert actual.count() == expected.count() > 1200
    assert actual.select(CONTENT).exceptAll(expected.select(CONTENT)).count() == 0
    assert expected.select(CONTENT).exceptAll(actual.select(CONTENT)).count() == 0
    # one batch per file, every file in exactly one batch
    per_file = actual.groupBy("_source_file").agg(F.countDistinct("_batch_id").alias("n"))
    assert per_file.count() == FILES and per_file.where("n != 1").count() == 0
    files = spark.read.format("delta").load(str(killed / "ops/ingestion_files"))
    assert files.count() == FILES == files.select("file").distinct().count()


# what differs between two runs' rows in ops.ingestion_runs whatever happens
RUN_MOVING = ["run_id", "started_at", "finished_at", "duration_s"]


def test_runs_killed_before_recording_themselves_are_counted_by_the_run_that_follows(
    spark: SparkSession, ingested: Warehouses
) -> None:
    """Every run the ingest test killed ended before recording itself in ops.ingestion_runs;
    the final run, which found no file left to ingest, records what they ingested. The
    warehouse then holds one row, the clean run's: every file and batch, and bronze's
    versions from before the first batch's commit to the last's."""
    clean, killed = (
        spark.read.format("delta").load(str(root / RUN_LOG)).drop(*RUN_MOVING).collect()
        for root in (ingested.clean, ingested.killed)
    )
    assert killed == clean
    assert len(clean) == 1
    run = clean[0]
    assert run.files_new == run.batches == FILES and run.bronze_version_before is None
    assert run.bronze_version_after == FILES - 1  # one bronze commit per batch


SILVER = "silver/customers_accounts"
QUARANTINE = "quarantine/customers_accounts"
REFINE_CHECKPOINT = "_checkpoints/silver/customers_accounts"
METRICS = "ops/quality_metrics"
STAGE_RUNS = "ops/stage_runs"
VAULT = "restricted/customers_vault"
# columns that differ between two warehouses whatever happens: times, and paths under the root
MOVING = ["_file_modification_time", "_ingested_at", "_quarantined_at", "_run_id", "_batch_id"]


def _refine_state(root: Path) -> dict[str, set[int]]:
    ck = root / REFINE_CHECKPOINT
    return {
        "offsets": _numbered(ck / "offsets"),
        "commits": _numbered(ck / "commits"),
        "silver": _versions(root / SILVER),
        "quarantine": _versions(root / QUARANTINE),
        "metrics": _versions(root / METRICS),
        "stage_runs": _versions(root / STAGE_RUNS),
    }


def refined_not_recorded(start: dict[str, set[int]], now: dict[str, set[int]]) -> bool:
    """This process's stream has done a batch, and the run has not recorded itself in
    ops.stage_runs yet."""
    return bool(now["commits"] - start["commits"]) and now["stage_runs"] == start["stage_runs"]


def _ahead(table: str) -> Point:
    """This process committed more batches to `table` than the checkpoint has done (each
    batch commits once to each table it writes)."""

    def point(start: dict[str, set[int]], now: dict[str, set[int]]) -> bool:
        return len(now[table] - start[table]) > len(now["commits"] - start["commits"])

    point.__name__ = f"{table}_written_not_done"
    return point


def _comparable(spark: SparkSession, path: Path) -> DataFrame:
    """The table's rows with what differs between warehouses by design replaced: file paths
    by file names, artificial ids (random) by the tokens the warehouse's vault has for them."""
    rows = spark.read.format("delta").load(str(path))
    rows = rows.withColumn("_source_file", F.regexp_extract("_source_file", r"[^/]+$", 0))
    vault = spark.read.format("delta").load(str(path.parents[1] / VAULT))
    for column in [c for c in rows.columns if c.endswith("_pseudonym")]:
        tokens = vault.select(F.col("id").alias(column), F.col("token").alias(f"{column}_t"))
        rows = rows.join(tokens, column, "left").drop(column)
    return rows.drop(*[c for c in MOVING if c in rows.columns])


def test_refine_killed_at_any_point_then_rerun_equals_one_clean_run(
    spark: SparkSession, ingested: Warehouses
) -> None:
    """On the two warehouses the ingest test compares, refine in one micro-batch (all six
    bronze files), killed after the batch is planned and then, in each rerun of it, after
    each of the three tables it writes has its commit: every rerun replays the batch, and
    must write only what the killed runs did not. A last kill lands after the batch is done
    and before the run records itself in ops.stage_runs: the run after it has no batch left,
    and must record the killed runs' counts, the clean run's. (Replays of later batches,
    which MERGE into silver, are in test_refine.)"""
    conf = _conf_dir(ingested.conf.parent, files_per_batch=None)
    clean, killed = ingested.clean, ingested.killed
    _run(clean, conf, "refine")
    points = (
        planned_not_done,
        _ahead("silver"),
        _ahead("quarantine"),
        _ahead("metrics"),
        refined_not_recorded,
    )
    kills = [_kill_when(killed, conf, p, "refine", _refine_state) for p in points]
    assert all(kills), f"a run finished before its kill point was reached: {kills}"
    _run(killed, conf, "refine")

    for table in (SILVER, QUARANTINE):
        expected, actual = _comparable(spark, clean / table), _comparable(spark, killed / table)
        assert actual.count() == expected.count() > 0
        assert actual.exceptAll(expected).count() == 0 and expected.exceptAll(actual).count() == 0
    # the replays minted no id twice: one id per token, the clean run's tokens
    vaults = [spark.read.format("delta").load(str(w / VAULT)) for w in (clean, killed)]
    assert vaults[1].count() == vaults[1].select("token").distinct().count()
    assert {r.token for r in vaults[1].collect()} == {r.token for r in vaults[0].collect()}
    (metrics,) = spark.read.format("delta").load(str(killed / METRICS)).collect()
    bronze = spark.read.format("delta").load(str(killed / TABLE))
    assert metrics.batch_id == 0 and metrics.rows_in == bronze.count()

    # every killed run resumed the first one's id; the last run recorded it, with the counts
    # of the batch the killed runs refined, as the clean run recorded its own
    runs = [_stage_runs(spark, w, "refine") for w in (clean, killed)]
    assert [len(r) for r in runs] == [1, 1]
    assert runs[1][0].run_id == metrics.run_id
    outputs = [json.loads(r[0].outputs) for r in runs]
    for counts in outputs:
        counts["accounts"].pop("seconds")
    assert outputs[1] == outputs[0]
    assert outputs[1]["accounts"]["batches"] == 1
    assert not (killed / "_checkpoints" / "_stages" / "customers" / "refine").exists()


def _stage_runs(spark: SparkSession, root: Path, stage: str) -> list[Row]:
    runs = spark.read.format("delta").load(str(root / STAGE_RUNS))
    return runs.where(F.col("stage") == stage).collect()
