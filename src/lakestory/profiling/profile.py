"""`lakestory profile <table>`: one version of a table profiled for a person, written as
`<root>/reports/<layer>.<name>/<version>.json` and `.html`, and compared with the profile of
the closest earlier version in the same folder.

The table is read at the version profiled (Delta time travel), so the numbers describe exactly
that version even while a writer commits a newer one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from lakestory.config import Dataset, Settings
from lakestory.io import Shell, TableRef
from lakestory.io.catalog import report_folder
from lakestory.profiling import stats
from lakestory.profiling.drift import compare
from lakestory.profiling.images import Sample, image_summary, is_image_table
from lakestory.profiling.report import render
from lakestory.profiling.spec import TableSpec, parse_table, resolve


class ProfileError(RuntimeError):
    """The table to profile does not exist or has no name of a table."""


@dataclass(frozen=True)
class ProfileReport:
    table: TableRef
    version: int
    json_path: Path
    html_path: Path
    profile: dict[str, Any]

    def summary(self) -> str:
        p = self.profile
        lines = [
            f"{self.table} v{self.version}: {p['rows']} rows, {len(p['columns'])} columns",
            f"  {self.html_path}",
            f"  {self.json_path}",
        ]
        previous = p.get("previous")
        if previous is None:
            lines.append("  first profile of this table")
        else:
            drifted = ", ".join(previous["drifted"])
            found = f"drift in {drifted}" if drifted else "no drift past the thresholds"
            lines.append(f"  since v{previous['version']}: {found}")
        return "\n".join(lines)


def build_profile(
    spark: SparkSession, df: DataFrame, spec: TableSpec, labels: DataFrame | None = None
) -> tuple[dict[str, Any], list[Sample]]:
    """The statistics of `df` (see `stats` for the passes) and, for an image table, the
    sampled images for the report (`labels`: the label table the spec names, if any)."""
    masked = set(spec.masked) & set(df.columns)
    if spec.mask_text:
        masked |= {
            f.name for f in df.schema.fields if stats.kind_of(f.dataType) in ("string", "list")
        }
    rows, columns, correlations = stats.column_summaries(df, masked, spec.declared)
    profile: dict[str, Any] = {
        "rows": rows,
        "columns": columns,
        "correlations": correlations,
        "histograms": stats.histograms(df, columns),
        "top_values": stats.top_values(df, columns, rows, spec.label),
        "duplicates": stats.duplicates(df, spec.key),
        "outliers": stats.outliers(df, columns, spec.outliers),
        "label": None,
    }
    if spec.label and spec.label in columns:
        found = {t["value"]: t["count"] for t in profile["top_values"].get(spec.label, [])}
        profile["label"] = {
            "column": spec.label,
            "counts": {v: found[v] for v in stats.label_order(list(found))},
            "missing": columns[spec.label]["nulls"],
        }
    samples: list[Sample] = []
    if is_image_table(df):
        images, image_label, samples = image_summary(spark, df, spec, labels)
        undecodable = columns["image_width"]["nulls"]  # a file that did not decode has no size
        profile["images"] = {"decoded": rows - undecodable, "undecodable": undecodable, **images}
        profile["label"] = image_label or profile["label"]
    return profile, samples


def previous_profile(folder: Path, version: int) -> dict[str, Any] | None:
    """The profile of the latest version before `version` in `folder`, if there is one."""
    earlier = [
        int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit() and int(p.stem) < version
    ]
    if not earlier:
        return None
    loaded: dict[str, Any] = json.loads((folder / f"{max(earlier)}.json").read_text("utf-8"))
    return loaded


def _write(path: Path, text: str) -> None:
    """Write whole or not at all: a reader never sees half a report."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def profile_table(
    spark: SparkSession,
    settings: Settings,
    table: TableRef | str,
    datasets: Iterable[Dataset] = (),
) -> ProfileReport:
    """Profile the latest version of `table` and write its JSON and HTML reports.

    Args:
        spark: The session.
        settings: Where the warehouse (and so the table and the reports) lives.
        table: A table, or its name such as `silver.customers_accounts`.
        datasets: The dataset configs to find the table's label, key, outlier settings and
            personal columns in (see `spec.resolve`); none means a table of unknown origin.

    Raises:
        ProfileError: The name is not a table name, or no table is there.
    """
    if isinstance(table, str):
        try:
            table = parse_table(table)
        except ValueError as exc:
            raise ProfileError(str(exc)) from None
    shell = Shell(spark, settings)
    version = shell.version(table)
    if version is None:
        raise ProfileError(f"no table {table} at {shell.location(table)}")
    df = shell.read(table, version)
    spec = resolve(table, datasets)
    labels = None
    if spec.label_table is not None and shell.has(spec.label_table):
        labels = shell.read(spec.label_table)
    profile, samples = build_profile(spark, df, spec, labels)
    profile = {
        "table": table.qualified,
        "version": version,
        "profiled_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": spec.dataset.name if spec.dataset else None,
        "source": spec.source,
        **profile,
    }
    folder = report_folder(settings, table)
    folder.mkdir(parents=True, exist_ok=True)
    before = previous_profile(folder, version)
    profile["previous"] = compare(before, profile) if before else None
    json_path, html_path = folder / f"{version}.json", folder / f"{version}.html"
    _write(json_path, json.dumps(profile, indent=1, allow_nan=False) + "\n")
    _write(html_path, render(profile, samples))
    return ProfileReport(table, version, json_path, html_path, profile)
