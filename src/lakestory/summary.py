"""What a run left behind: rows per table, the model's figures, artifacts, where to look."""

from __future__ import annotations

import shlex
from typing import Any

from lakestory.conversion.registry import CHAMPION
from lakestory.io import LAYERS, Catalog
from lakestory.io.runs import last_run
from lakestory.pipeline import Context
from lakestory.quality.labels import UNLABELED
from lakestory.session import spark_conf


def table_counts(ctx: Context) -> dict[str, int]:
    """Rows of every table of the dataset (and the ops tables), by qualified name."""
    counts = {}
    for layer in LAYERS:
        if not ctx.spark.catalog.databaseExists(layer):  # nothing run yet
            continue
        for table in ctx.spark.catalog.listTables(layer):
            if layer == "ops" or Catalog(ctx.dataset).owns(table.name):
                name = f"{layer}.{table.name}"
                counts[name] = ctx.spark.read.table(name).count()
    return counts


def spark_sql_command(ctx: Context) -> str:
    """A `spark-sql` command line that sees the same tables as lakestory."""
    conf = spark_conf(ctx.settings)
    wanted = [
        "spark.sql.extensions",
        "spark.sql.catalog.spark_catalog",
        "spark.sql.warehouse.dir",
        "spark.hadoop.javax.jdo.option.ConnectionURL",
        "spark.driver.extraJavaOptions",
    ]
    parts = ["spark-sql", "--packages", ctx.settings.spark.delta_package]
    for key in wanted:
        parts += ["--conf", f"{key}={conf[key]}"]
    return " ".join(shlex.quote(p) for p in parts)


def _champion(o: dict[str, Any]) -> list[str]:
    """The champion the last conversion chose (its artifact, version, alias, size and test
    accuracy) and every artifact of the converted version, the champion marked."""
    champion = o["gate"]["champion"]
    figures = {f["artifact"]: f for f in o["figures"]}
    chosen = figures[champion]
    names = o.get("class_names") or []
    lines = [
        f"Champion {o['model_name']} v{o['champion_version']} (alias {CHAMPION}): {champion}, "
        f"{o['paths'][champion]}, {chosen['bytes']:,} bytes, test accuracy "
        f"{chosen['accuracy']:.3f}",
        f"  converted from v{o['source_version']}; {o['gate']['reason']}",
    ]
    if names:
        lines.append("  classes: " + ", ".join(f"{i} = {n}" for i, n in enumerate(names)))
    lines.append(f"Artifacts of v{o['source_version']}'s conversion:")
    for artifact, path in o["paths"].items():
        f = figures[artifact]
        mark = "  (champion)" if artifact == champion else ""
        lines.append(
            f"  {artifact:<18} {path}  {f['bytes']:,} bytes, test accuracy "
            f"{f['accuracy']:.3f}{mark}"
        )
    return lines


def summary(ctx: Context) -> str:
    ds = ctx.dataset
    lines = [f"lakestory — {ds.name} at {ctx.settings.root}", "", "Tables (rows):"]
    lines += [f"  {name:<42} {rows:>9}" for name, rows in table_counts(ctx).items()]
    trained = last_run(ctx.spark, ds.name, "train")
    if trained:
        m = trained.outputs["metrics"]
        lines += [
            "",
            f"Model {trained.outputs['model_name']} v{trained.outputs['model_version']} "
            f"(MLflow run {trained.outputs['run_id']}):",
            f"  test accuracy {m['test_accuracy']:.3f}  vs majority class "
            f"{m['majority_accuracy']:.3f}   test loss {m['test_loss']:.3f}",
        ]
    converted = last_run(ctx.spark, ds.name, "convert")
    if converted:
        lines += ["", *_champion(converted.outputs)]
    lines += ["", "Look further:", f"  lakestory status {ds.name}"]
    if ds.model:
        lines.append(
            f'  lakestory sql "SELECT predicted_class, count(*) FROM {Catalog(ds).predictions()} '
            'GROUP BY predicted_class"'
        )
    for source in list(ds.structured())[:1]:
        lines.append(
            f'  lakestory sql "SELECT _reasons, count(*) FROM {Catalog(ds).quarantine(source)} '
            'GROUP BY _reasons"'
        )
    for source, spec in ds.structured().items():
        if spec.label and UNLABELED in (spec.label.on_missing, spec.label.on_invalid):
            table = Catalog(ds).unlabeled(source).qualified
            lines.append(f'  lakestory sql "SELECT * FROM {table} LIMIT 10"')
    if ds.model:
        lines.append(f"  mlflow ui --backend-store-uri {ctx.settings.tracking_uri}")
    lines += [
        "  spark-sql sees the same tables (with .venv activated):",
        f"  {spark_sql_command(ctx)}",
    ]
    return "\n".join(lines)
