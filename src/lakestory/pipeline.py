"""The stage graph used by `run`, `demo` and the jobs: ingest -> refine -> features -> train
-> convert -> score.

A stage runs only when its inputs (upstream Delta versions, the registered model, the relevant
config) differ from those its last completed run recorded in `ops.stage_runs`; otherwise it is
skipped, says so, and commits nothing. Every stage replaces its outputs in single Delta commits,
so a rerun after a crash completes the work without duplicating it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from lakestory.config import Dataset, Settings, load_token_key
from lakestory.features import build_features, features_table, params_table, read_params
from lakestory.ingestion import bronze_table, ingest_source
from lakestory.io import ensure_layers, table_version
from lakestory.io.runs import StageRun, last_run, record_run
from lakestory.quality.refine import RefineCounts, refine_source, reprocess_source, silver_table

log = logging.getLogger("lakestory")

STAGES = ("ingest", "refine", "features", "train", "convert", "score")


@dataclass(frozen=True)
class Context:
    spark: SparkSession
    settings: Settings
    dataset: Dataset
    full_refresh: bool = False  # refine all of bronze again, not only its new rows


@dataclass(frozen=True)
class Outcome:
    stage: str
    ran: bool
    message: str
    outputs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.stage:<9} {'ran    ' if self.ran else 'skipped'}  {self.message}"


def digest(*parts: Any) -> str:
    """A short fingerprint of config sections, so that a config change reruns a stage."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _versions(ctx: Context, tables: list[Any]) -> dict[str, int | None]:
    return {t.qualified: table_version(ctx.spark, t) for t in tables}


def _skip_if_unchanged(
    ctx: Context,
    stage: str,
    inputs: dict[str, Any],
    work: Callable[[], Outcome],
    force: bool = False,
) -> Outcome:
    missing = [k for k, v in inputs.items() if v is None]
    if missing:
        return Outcome(stage, False, f"nothing to do yet: {', '.join(missing)} missing")
    previous = last_run(ctx.spark, ctx.dataset.name, stage)
    if not force and previous is not None and previous.inputs == inputs:
        return Outcome(stage, False, "inputs unchanged since the last run", previous.outputs)
    outcome = work()
    record_run(ctx.spark, ctx.settings, StageRun(ctx.dataset.name, stage, inputs, outcome.outputs))
    return outcome


def ingest(ctx: Context) -> Outcome:
    parts, outputs, changed = [], {}, False
    run_id = uuid.uuid4().hex
    for name in ctx.dataset.sources:
        source = ctx.dataset.sources[name]
        if not (ctx.settings.root / "landing" / source.path).is_dir():
            parts.append(f"{name}: no landing folder")
            continue
        result = ingest_source(ctx.spark, ctx.settings, ctx.dataset, name, run_id)
        outputs[result.table.qualified] = result.version_after
        run = result.run
        if run is None:
            parts.append(f"{result.table}: no new files")
            continue
        changed = True
        flags = [
            f"{n} {what}"
            for n, what in [
                (run.corrupt_rows, "corrupt"),
                (run.rescued_rows, "rescued"),
                (run.decode_errors, "undecodable"),
                (run.empty_files, "empty files"),
                (run.drift_events, "schema drift"),
            ]
            if n
        ]
        detail = f" ({', '.join(flags)})" if flags else ""
        parts.append(
            f"{result.table} +{run.rows} rows from {run.files_new} files{detail} "
            f"(v{result.version_after})"
        )
    return Outcome("ingest", changed, "; ".join(parts), outputs)


def _unless_declared(ctx: Context, stage: str, section: str) -> Outcome | None:
    if getattr(ctx.dataset, section) is None:
        return Outcome(stage, False, f"dataset {ctx.dataset.name} declares no {section}")
    return None


def _refined(ds: Dataset, name: str, counts: RefineCounts) -> str:
    return (
        f"{silver_table(ds, name)} {counts.silver} rows upserted, "
        f"{counts.exact_duplicates} exact and {counts.key_duplicates} key duplicates, "
        f"{counts.unchanged} unchanged, "
        f"{counts.quarantined} quarantined, {counts.dropped} dropped"
        + (f", {counts.unlabeled} unlabeled" if counts.unlabeled else "")
        + f" (of {counts.rows_in})"
    )


def refine(ctx: Context) -> Outcome:
    ds = ctx.dataset
    # the sources that have landed something: one whose files have not come yet waits
    landed = _versions(ctx, [bronze_table(ds, s) for s in ds.structured()])
    structured = {
        name: source
        for name, source in ds.structured().items()
        if landed[bronze_table(ds, name).qualified] is not None
    }
    inputs: dict[str, Any] = {k: v for k, v in landed.items() if v is not None} or landed
    inputs["config"] = digest({k: v.model_dump() for k, v in structured.items()})

    def work() -> Outcome:
        key = load_token_key(ctx.settings)
        run_id = uuid.uuid4().hex
        parts, outputs = [], {}
        for name in structured:
            counts = refine_source(
                ctx.spark, ctx.settings, ds, name, key, run_id, full_refresh=ctx.full_refresh
            )
            outputs[name] = counts.__dict__
            parts.append(_refined(ds, name, counts))
        return Outcome("refine", True, "; ".join(parts), outputs)

    return _skip_if_unchanged(ctx, "refine", inputs, work, force=ctx.full_refresh)


def reprocess(ctx: Context) -> Outcome:
    """Not a stage of `run`: quarantined rows through the current rules again, on request."""
    ds = ctx.dataset
    key = load_token_key(ctx.settings)
    run_id = uuid.uuid4().hex
    parts, outputs = [], {}
    for name in ds.structured():
        counts = reprocess_source(ctx.spark, ctx.settings, ds, name, key, run_id)
        outputs[name] = counts.__dict__
        parts.append(
            f"{silver_table(ds, name)} {counts.silver} rows upserted, "
            f"{counts.duplicates + counts.unchanged} collapsed or already there, "
            f"{counts.dropped} dropped, {counts.quarantined} still quarantined "
            f"(of {counts.rows_in} reprocessed)"
        )
    return Outcome("reprocess", True, "; ".join(parts), outputs)


def features(ctx: Context) -> Outcome:
    if undeclared := _unless_declared(ctx, "features", "features"):
        return undeclared
    ds = ctx.dataset
    inputs: dict[str, Any] = _versions(ctx, [silver_table(ds, s) for s in ds.structured()])
    inputs["config"] = digest(ds.feature_spec.model_dump(), ds.seed)

    def work() -> Outcome:
        features_version, params = build_features(ctx.spark, ctx.settings, ds)
        outputs = {"features_version": features_version, "params_version": params.version}
        pca = f", PCA to {params.pca.k} of {len(params.prepared_names)}" if params.pca else ""
        return Outcome(
            "features",
            True,
            f"{features_table(ds)} v{features_version}, {params_table(ds)} "
            f"version {params.version} ({len(params.inputs)} inputs{pca})",
            outputs,
        )

    return _skip_if_unchanged(ctx, "features", inputs, work)


def train(ctx: Context) -> Outcome:
    from lakestory.training import train_model

    if undeclared := _unless_declared(ctx, "train", "model"):
        return undeclared
    ds = ctx.dataset
    inputs: dict[str, Any] = _versions(ctx, [features_table(ds), params_table(ds)])
    inputs["config"] = digest(ds.model_spec.model_dump(), ds.seed)

    def work() -> Outcome:
        lineage = {k: v for k, v in inputs.items() if k != "config"}
        lineage.update(_versions(ctx, [silver_table(ds, s) for s in ds.structured()]))
        result = train_model(ctx.spark, ctx.settings, ds, lineage)
        m = result.metrics
        return Outcome(
            "train",
            True,
            f"{result.model_name} v{result.model_version}: test accuracy "
            f"{m['test_accuracy']:.3f} (majority class {m['majority_accuracy']:.3f})",
            {
                "model_name": result.model_name,
                "model_version": result.model_version,
                "run_id": result.run_id,
                "metrics": m,
                "feature_params_version": result.feature_params_version,
            },
        )

    return _skip_if_unchanged(ctx, "train", inputs, work)


def convert(ctx: Context) -> Outcome:
    if undeclared := _unless_declared(ctx, "convert", "model"):
        return undeclared
    ds = ctx.dataset
    trained = last_run(ctx.spark, ds.name, "train")
    model = trained.outputs.get("model_version") if trained else None
    inputs = {"model": f"{ds.model_spec.registered_name}/{model}" if model else None}

    def work() -> Outcome:
        import mlflow

        from lakestory.conversion import convert as convert_model
        from lakestory.training.tracking import use_store
        from lakestory.training.train import load_arrays

        assert trained is not None
        client = use_store(ctx.settings)
        torch_model = mlflow.pytorch.load_model(f"models:/{ds.model_spec.registered_name}/{model}")
        arrays = load_arrays(ctx.spark, ds)
        out_dir = (
            ctx.settings.root / "artifacts" / ds.name / ds.model_spec.registered_name / f"v{model}"
        )
        report = convert_model(
            torch_model,
            ds.model_spec.registered_name,
            str(model),
            arrays["x_test"],
            arrays["y_test"],
            out_dir,
        )
        run_id = trained.outputs["run_id"]
        client.log_artifacts(run_id, str(out_dir), "onnx")
        for metric in ("accuracy_onnx", "accuracy_int8", "max_abs_diff_vs_torch"):
            client.log_metric(run_id, f"test_{metric}", getattr(report, metric))
        client.log_metric(run_id, "onnx_bytes", report.onnx_bytes)
        client.log_metric(run_id, "onnx_int8_bytes", report.int8_bytes)
        return Outcome(
            "convert",
            True,
            f"onnx {report.onnx_bytes} B (test accuracy {report.accuracy_onnx:.3f}), "
            f"int8 {report.int8_bytes} B (test accuracy {report.accuracy_int8:.3f}), "
            f"max |onnx - torch| {report.max_abs_diff_vs_torch:.1e}",
            {
                **report.__dict__,
                "feature_params_version": trained.outputs["feature_params_version"],
            },
        )

    return _skip_if_unchanged(ctx, "convert", inputs, work)


def score(ctx: Context) -> Outcome:
    from lakestory.inference import predictions_table, score_dataset

    if undeclared := _unless_declared(ctx, "score", "model"):
        return undeclared
    ds = ctx.dataset
    converted = last_run(ctx.spark, ds.name, "convert")
    inputs: dict[str, Any] = _versions(ctx, [silver_table(ds, s) for s in ds.structured()])
    inputs["model"] = converted.inputs["model"] if converted else None

    def work() -> Outcome:
        assert converted is not None
        onnx_path = Path(converted.outputs["onnx_path"])
        params = read_params(ctx.spark, ds, int(converted.outputs["feature_params_version"]))
        version = score_dataset(
            ctx.spark, ctx.settings, ds, onnx_path, converted.outputs["model_version"], params
        )
        rows = ctx.spark.read.table(predictions_table(ds).qualified).count()
        return Outcome(
            "score",
            True,
            f"{predictions_table(ds)} {rows} rows (v{version})",
            {"table": predictions_table(ds).qualified, "version": version, "rows": rows},
        )

    return _skip_if_unchanged(ctx, "score", inputs, work)


RUNNERS: dict[str, Callable[[Context], Outcome]] = {
    "ingest": ingest,
    "refine": refine,
    "features": features,
    "train": train,
    "convert": convert,
    "score": score,
}


def run_stages(ctx: Context, stages: tuple[str, ...] = STAGES) -> list[Outcome]:
    """Run `stages` in order; each prints what it did or why it was skipped."""
    ensure_layers(ctx.spark, ctx.settings)
    outcomes = []
    for stage in stages:
        outcome = RUNNERS[stage](ctx)
        print(outcome, flush=True)
        outcomes.append(outcome)
    return outcomes
