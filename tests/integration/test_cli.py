"""The commands as a user runs them: fresh processes, spark-submit, a persistent metastore."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _run(args: list[str], root: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LAKESTORY_ROOT": str(root),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    return subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_spark_submit_job_then_sql_in_a_fresh_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "lakehouse"
    gen = _run([str(BIN / "lakestory"), "generate", "customers", "--rows", "300"], root)
    assert gen.returncode == 0, gen.stderr
    expected = sum(
        len(p.read_text(encoding="utf-8").splitlines()) - 1
        for p in (root / "landing" / "customers" / "accounts").glob("*.csv")
    )

    submit = _run(
        [
            str(BIN / "spark-submit"),
            "--packages",
            "io.delta:delta-spark_4.2_2.13:4.4.0",
            "jobs/ingest.py",
            "--dataset",
            "customers",
        ],
        root,
    )
    assert submit.returncode == 0, submit.stderr[-3000:]
    assert "bronze.customers_accounts +" in submit.stdout

    query = "SELECT count(*) AS n FROM bronze.customers_accounts"
    sql = _run([str(BIN / "lakestory"), "sql", "--role", "engineer", query], root)
    assert sql.returncode == 0, sql.stderr[-3000:]
    assert f"|{expected}" in sql.stdout.replace(" ", ""), sql.stdout
    refused = _run([str(BIN / "lakestory"), "sql", "--role", "analyst", query], root)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "role 'analyst' may not read bronze.customers_accounts" in refused.stderr
    assert "Traceback" not in refused.stderr
    typo = _run([str(BIN / "lakestory"), "sql", query.replace("AS n", ", nme")], root)
    assert typo.returncode == 2, typo.stderr[-3000:]
    # Spark's own line, naming the column and what it might be, and no stack
    assert "UNRESOLVED_COLUMN" in typo.stderr and "`nme`" in typo.stderr, typo.stderr
    assert "Did you mean" in typo.stderr, typo.stderr
    assert "Traceback" not in typo.stderr and "\tat org.apache" not in typo.stderr, typo.stderr

    accounts = root / "landing" / "customers" / "accounts"
    first = sorted(accounts.glob("*.csv"))[0]
    (accounts / "late_drop.csv").write_bytes(first.read_bytes())
    status = _run([str(BIN / "lakestory"), "status", "customers"], root)
    assert status.returncode == 0, status.stderr[-3000:]
    line = next(x for x in status.stdout.splitlines() if x.strip().startswith("accounts"))
    fields = line.split()
    # source, date, time, files, rows, corrupt, rescued, drift, MB, s, waiting, ->, table
    assert fields[4] == str(expected) and fields[10] == "1", status.stdout
    assert fields[-1] == "bronze.customers_accounts"

    monkeypatch.setenv("LAKESTORY_TOKEN_KEY", "cli-test-key-0123456789abcdef0123")
    refine = _run([str(BIN / "lakestory"), "refine", "customers"], root)
    assert refine.returncode == 0, refine.stderr[-3000:]
    # quiet by default: lakestory's one line; Ivy's, Spark's and the libraries' in the log
    assert refine.stdout.splitlines()[-1].startswith("refine    ran"), refine.stdout
    assert refine.stderr == "", refine.stderr[-3000:]
    for noise in (":: ", "Ivy", "WARN", "log4j", "INFO", "Warning"):
        assert noise not in refine.stdout, refine.stdout
    (log,) = (root / "logs").glob("*-refine-*.log")
    assert ":: resolving dependencies" in log.read_text() and "refine    ran" in log.read_text()
    assert "cli-test-key" not in log.read_text()
    quarantine = _run([str(BIN / "lakestory"), "quarantine", "customers"], root)
    assert quarantine.returncode == 0, quarantine.stderr[-3000:]
    assert "accounts: " in quarantine.stdout and "rows in quarantine.customers_accounts" in (
        quarantine.stdout
    )
    assert "malformed_record" in quarantine.stdout, quarantine.stdout


def test_config_errors_name_the_dataset_and_exit_2(tmp_path: Path) -> None:
    result = _run([str(BIN / "lakestory"), "refine", "nosuch"], tmp_path)
    assert result.returncode == 2
    assert "nosuch.yaml: no such dataset (known: customers, digits)" in result.stderr
    assert "Traceback" not in result.stderr


def test_privacy_commands_check_their_inputs_before_spark_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad subjects file, a missing new key, a folder that is no backup: exit 2, a message
    that names the file, no value from it, no traceback."""
    monkeypatch.setenv("LAKESTORY_TOKEN_KEY", "cli-test-key-0123456789abcdef0123")
    subjects = tmp_path / "subjects.csv"
    subjects.write_text("phone\n+44 20 7946 0958\n")
    lakestory = str(BIN / "lakestory")
    cases = [
        ([lakestory, "forget", "customers", "--subjects", str(subjects)], str(subjects)),
        (
            [lakestory, "rotate-key", "customers", "--new-key-file", str(tmp_path / "k")],
            str(tmp_path / "k"),
        ),
        ([lakestory, "restore", "--from", str(tmp_path)], "manifest.json"),
    ]
    for args, named in cases:
        result = _run(args, tmp_path / "wh")
        assert result.returncode == 2, result.stderr
        assert named in result.stderr and "Traceback" not in result.stderr
        assert "7946" not in result.stderr
        assert not (tmp_path / "wh" / "metastore_db").exists()  # Spark never started
