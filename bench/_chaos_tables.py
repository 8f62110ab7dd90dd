"""The chaos bench's view of a warehouse: Delta versions and torn logs read from `_delta_log`,
and each table's rows as a multiset that two independent runs of one stage can be compared by.

Nothing here writes to the warehouse. Tables are read by path with a Spark session of the
bench's own (in-memory catalog: the warehouse's embedded Derby metastore admits one process at
a time, and the stages under test need it).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import Row, SparkSession

LAYERS = ("bronze", "silver", "gold", "quarantine", "ops", "restricted")
DELTA_LOG = "_delta_log"
_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.[^/]+)?\.(?:parquet|json)$")

# Columns whose values legitimately differ between two runs of a stage from the same starting
# state, whatever the table; left out of the row comparison. Everything else must be equal.
VOLATILE: Mapping[str, str] = {
    "_ingested_at": "wall-clock time the row was ingested",
    "_quarantined_at": "wall-clock time the row was quarantined",
    "ingested_at": "wall-clock time a file was logged (ops.ingestion_files)",
    "started_at": "wall-clock time a run started (ops.ingestion_runs)",
    "finished_at": "wall-clock time a run finished (ops.ingestion_runs, ops.stage_runs)",
    "duration_s": "how long a run took",
    "measured_at": "wall-clock time a refine batch was measured (ops.quality_metrics)",
    "fitted_at": "wall-clock time the feature transforms were fitted",
    "scored_at": "wall-clock time the predictions were made",
    "minted_at": "wall-clock time an artificial id was minted (the vault)",
    "erased_at": "wall-clock time of an erasure (ops.erasures, restricted.*_erasures)",
    "run_id": "a random id per run of a stage (lakestory's own, or MLflow's in stage outputs)",
    "_run_id": "the random id of the refine run that quarantined the row",
    "tune_run_id": "MLflow's random id of a tuning study's run",
    "receipt_id": "a random id per erasure receipt",
    "stream_id": "names the streaming checkpoint's random id, new when a run creates it",
    "_batch_id": "the micro-batch a row landed in: a run that replans after a kill may number "
    "the batches of the files the killed run had not committed otherwise",
    "batch_id": "the same micro-batch numbering, in ops.ingestion_files and ops.quality_metrics",
    # inside the JSON of ops.stage_runs.outputs (convert's report)
    "latency_p50_ms": "a measured latency",
    "latency_p95_ms": "a measured latency",
    "throughput_rows_s": "a measured throughput",
    # inside the JSON of ops.stage_runs.outputs (refine's counts)
    "seconds": "wall seconds of each of refine's passes",
}
# Artificial ids are random UUIDs, different in two warehouses refined independently: they are
# compared through the vault, each replaced by the token the warehouse's vault links it to.
PSEUDONYM_SUFFIX = "_pseudonym"
VAULT_SUFFIX = "_vault"
VAULT_ID = "id"  # the vault's own artificial id column; its rows are compared by token alone
VAULT_TOKEN = "token"
# Floats are compared to 9 significant digits: an aggregate over rows that a rerun wrote into
# other files (sums, means, quantiles) may differ in the last bits.
FLOAT_DIGITS = 9


@dataclass(frozen=True)
class TableState:
    """One table's log as found on disk."""

    version: int | None  # the latest commit, None when the log holds none
    problems: tuple[str, ...] = ()  # what makes the log torn
    notes: tuple[str, ...] = ()  # harmless leftovers (temporary files of an interrupted write)


def table_paths(root: Path) -> dict[str, Path]:
    """Every Delta table under the warehouse root, by `<layer>.<name>`. A dot folder is a
    restore's or a backup's unfinished copy, not a table."""
    out = {}
    for layer in LAYERS:
        folder = root / layer
        if not folder.is_dir():
            continue
        for table in sorted(folder.iterdir()):
            if not table.name.startswith(".") and _has_commit(table):
                out[f"{layer}.{table.name}"] = table
    return out


def _has_commit(table: Path) -> bool:
    """Whether `table` holds a Delta table: a log with a commit or a checkpoint. A writer
    killed before a new table's first commit leaves an empty `_delta_log`, which Delta reads
    as no table at all (the state before the stage); a table that had commits and lost them
    is then missing, which the checks report."""
    log = table / DELTA_LOG
    return log.is_dir() and any(
        _COMMIT.match(p.name) or _CHECKPOINT.match(p.name) for p in log.iterdir()
    )


def leftovers(root: Path) -> list[str]:
    """Dot folders an interrupted restore or backup left beside the tables, and the empty
    logs of tables whose first commit was cut."""
    found = []
    for layer in LAYERS:
        folder = root / layer
        if folder.is_dir():
            found += [f"{layer}/{p.name}" for p in folder.iterdir() if p.name.startswith(".")]
            found += [
                f"{layer}/{p.name}: a _delta_log without a commit (a new table's first commit "
                "cut; no table yet)"
                for p in folder.iterdir()
                if (p / DELTA_LOG).is_dir() and not _has_commit(p)
            ]
    return sorted(found)


def read_log(table: Path) -> TableState:
    """The latest version of `table` and whatever makes its log torn: a gap between commits,
    a commit that is not whole JSON lines, a log that starts after 0 with no checkpoint."""
    log = table / DELTA_LOG
    names = [p.name for p in log.iterdir()] if log.is_dir() else []
    commits = sorted(int(m.group(1)) for n in names if (m := _COMMIT.match(n)))
    checkpoints = {int(m.group(1)) for n in names if (m := _CHECKPOINT.match(n))}
    if not commits:
        return TableState(None, ("its _delta_log holds no commit",))
    problems = []
    gaps = sorted(set(range(commits[0], commits[-1] + 1)) - set(commits))
    if gaps:
        problems.append(f"commits missing from its log: {gaps}")
    if commits[0] > 0 and not any(c >= commits[0] - 1 for c in checkpoints):
        problems.append(f"its log starts at v{commits[0]} with no checkpoint before it")
    for version in commits:
        path = log / f"{version:020d}.json"
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    json.loads(line)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            problems.append(f"commit v{version} is not whole JSON: {exc}")
    # Hadoop's checksums are `.N.json.crc`; an interrupted write leaves `.N.json.<uuid>.tmp`
    notes = tuple(f"temporary file in its log: {n}" for n in sorted(names) if n.endswith(".tmp"))
    return TableState(commits[-1], tuple(problems), notes)


def log_states(root: Path) -> dict[str, TableState]:
    return {name: read_log(path) for name, path in table_paths(root).items()}


def reader(app_name: str = "lakestory-chaos") -> SparkSession:
    """A Spark session that reads Delta tables by path, without the warehouse's metastore."""
    from delta import configure_spark_with_delta_pip

    builder = (
        SparkSession.builder.master("local[2]")
        .appName(app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
        .config("spark.sql.catalogImplementation", "in-memory")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
    )
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def forget_cached_logs(spark: SparkSession) -> None:
    """Drop Delta's cached snapshots: the bench replaces the warehouse folder between runs, and
    a cached snapshot of a path could outlive the log it was read from."""
    jvm = spark._jvm
    assert jvm is not None
    jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    spark.catalog.clearCache()


def read_rows(spark: SparkSession, table: Path) -> list[dict[str, Any]]:
    """Every row of the table's latest version; reading every data file is also the check
    that none the log names is missing."""
    return [r.asDict(recursive=True) for r in spark.read.format("delta").load(str(table)).collect()]


def properties(spark: SparkSession, table: Path) -> dict[str, str]:
    target = str(table).replace("`", "``")
    row = spark.sql(f"DESCRIBE DETAIL delta.`{target}`").select("properties").first()
    return dict(row[0] or {}) if row is not None else {}


def _canonical(value: Any) -> Any:
    """A JSON-able form of a value that is equal for equal data in two warehouses."""
    if isinstance(value, Row):
        value = value.asDict(recursive=True)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return float(f"{value:.{FLOAT_DIGITS}g}")
    if isinstance(value, (dt.datetime, dt.date, decimal.Decimal)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, str) and value[:1] in ("{", "["):
        # JSON held as text (stage outputs, fitted params, rescued fields): compared parsed, so
        # that volatile keys inside it can be left out and floats rounded like any other
        try:
            return {"json": _canonical(json.loads(value))}
        except ValueError:
            return value
    return value


def vault_links(rows: list[dict[str, Any]]) -> dict[str, str]:
    """id -> token, from the rows of a vault."""
    return {r[VAULT_ID]: r[VAULT_TOKEN] for r in rows}


def multiset(name: str, rows: list[dict[str, Any]], links: Mapping[str, str]) -> Counter[str]:
    """The table's rows as comparable text, volatile columns left out, artificial ids
    replaced by their tokens (`links`: the warehouse's vault, id -> token)."""
    out: Counter[str] = Counter()
    is_vault = name.startswith("restricted.") and name.endswith(VAULT_SUFFIX)
    for row in rows:
        kept = {}
        for column, value in row.items():
            if column in VOLATILE or (is_vault and column == VAULT_ID):
                continue
            if column.endswith(PSEUDONYM_SUFFIX) and value is not None:
                value = "token:" + links.get(value, "<an id no vault entry links>")
            kept[column] = _canonical(value)
        out[json.dumps(kept, sort_keys=True, default=str)] += 1
    return out


def vault_problems(rows: list[dict[str, Any]]) -> list[str]:
    """A vault must link each token to one id and each id to one token: a replayed mint that
    gave someone a second id shows here."""
    tokens = Counter(r[VAULT_TOKEN] for r in rows)
    ids = Counter(r[VAULT_ID] for r in rows)
    problems = []
    if twice := sum(1 for n in tokens.values() if n > 1):
        problems.append(f"{twice} token(s) with more than one id")
    if twice := sum(1 for n in ids.values() if n > 1):
        problems.append(f"{twice} id(s) with more than one token")
    return problems


@dataclass
class Contents:
    """Every table of a warehouse: rows as multisets, table properties, and problems found
    reading them."""

    versions: dict[str, TableState] = field(default_factory=dict)
    rows: dict[str, Counter[str]] = field(default_factory=dict)
    properties: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def read_contents(spark: SparkSession, root: Path, with_rows: bool = True) -> Contents:
    """Read every table under `root`: its log, and (with `with_rows`) its rows and properties."""
    forget_cached_logs(spark)
    contents = Contents(versions=log_states(root))
    raw: dict[str, list[dict[str, Any]]] = {}
    for name, path in table_paths(root).items():
        try:
            raw[name] = read_rows(spark, path)
            if with_rows:
                contents.properties[name] = properties(spark, path)
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            contents.problems.append(f"{name}: cannot be read: {first[:300]}")
    if not with_rows:
        return contents
    links: dict[str, str] = {}
    for name, rows in raw.items():
        if name.startswith("restricted.") and name.endswith(VAULT_SUFFIX):
            links.update(vault_links(rows))
            contents.problems += [f"{name}: {p}" for p in vault_problems(rows)]
    contents.rows = {name: multiset(name, rows, links) for name, rows in raw.items()}
    return contents


def differences(name: str, expected: Counter[str], actual: Counter[str], shown: int = 2) -> str:
    """What differs between two multisets of one table, in a line."""
    missing, extra = expected - actual, actual - expected
    parts = [f"{sum(expected.values())} rows in the clean run, {sum(actual.values())} here"]
    if missing:
        sample = "; ".join(r[:400] for r in list(missing)[:shown])
        parts.append(f"{sum(missing.values())} only in the clean run (e.g. {sample})")
    if extra:
        sample = "; ".join(r[:400] for r in list(extra)[:shown])
        parts.append(f"{sum(extra.values())} only here (e.g. {sample})")
    return f"{name}: " + ", ".join(parts)
