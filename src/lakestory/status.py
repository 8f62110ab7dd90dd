"""`lakestory status`: the latest ingestion run of every source and what is waiting in landing."""

from __future__ import annotations

from pyspark.sql import SparkSession

from lakestory.config import Dataset, Settings
from lakestory.ingestion.ops import ingested_files, latest_runs
from lakestory.io import Catalog
from lakestory.io.files import list_files

COLUMNS = [
    ("source", 14),
    ("finished", 19),
    ("files", 7),
    ("rows", 10),
    ("corrupt", 8),
    ("rescued", 8),
    ("drift", 6),
    ("MB", 8),
    ("s", 7),
    ("waiting", 8),
]


def _row(values: list[object]) -> str:
    return "  ".join(
        f"{v!s:<{w}}" if i < 2 else f"{v!s:>{w}}"
        for i, (v, (_, w)) in enumerate(zip(values, COLUMNS, strict=True))
    )


def status(spark: SparkSession, settings: Settings, datasets: list[Dataset]) -> str:
    lines = []
    for ds in datasets:
        runs = latest_runs(spark, ds.name)
        latest = {r.source: r for r in runs.collect()} if runs is not None else {}
        lines.append(f"{ds.name}")
        lines.append("  " + _row([name for name, _ in COLUMNS]))
        for name, source in ds.sources.items():
            landed = {
                f.path
                for f in list_files(spark, Catalog(ds, settings).landing(source), source.glob)
            }
            waiting = len(landed - ingested_files(spark, ds.name, name))
            run = latest.get(name)
            if run is None:
                values: list[object] = [name, "never", "", "", "", "", "", "", "", waiting]
            else:
                values = [
                    name,
                    run.finished_at.strftime("%Y-%m-%d %H:%M:%S"),
                    run.files_new,
                    run.rows,
                    run.corrupt_rows,
                    run.rescued_rows,
                    run.drift_events,
                    f"{run.bytes / 1e6:.1f}",
                    f"{run.duration_s:.1f}",
                    waiting,
                ]
            lines.append("  " + _row(values) + f"   -> {Catalog(ds).bronze(name)}")
        lines.append("")
    lines.append("files, rows, ...: the latest run that ingested something; waiting: files in")
    lines.append(
        "landing not ingested yet. Per file: ops.ingestion_files; drift: ops.schema_drift."
    )
    return "\n".join(lines)
