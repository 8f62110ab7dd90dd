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
from typing import TYPE_CHECKING, Any

from pyspark.sql import SparkSession

from lakestory.config import Dataset, Settings, load_token_key
from lakestory.features import (
    ImageParams,
    build_features,
    feature_inputs,
    features_table,
    params_table,
    read_params,
)
from lakestory.ingestion import bronze_table, ingest_source
from lakestory.io import ensure_layers, table_version
from lakestory.io.runs import StageRun, last_run, record_run
from lakestory.quality.refine import RefineCounts, refine_source, reprocess_source, silver_table

if TYPE_CHECKING:
    from lakestory.training.train import TrainResult

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
    inputs: dict[str, Any] = _versions(ctx, feature_inputs(ds))
    assert ds.features is not None
    inputs["config"] = digest(ds.features.model_dump(), ds.seed)

    def work() -> Outcome:
        features_version, params = build_features(ctx.spark, ctx.settings, ds)
        outputs = {"features_version": features_version, "params_version": params.version}
        if isinstance(params, ImageParams):
            what = (
                f"{params.height}x{params.width} pixels, mean {params.mean:.2f}, "
                f"std {params.std:.2f}, {params.classes} classes"
            )
        else:
            pca = f", PCA to {params.pca.k} of {len(params.prepared_names)}" if params.pca else ""
            what = f"{len(params.inputs)} inputs{pca}"
        return Outcome(
            "features",
            True,
            f"{features_table(ds)} v{features_version}, {params_table(ds)} "
            f"version {params.version} ({what})",
            outputs,
        )

    return _skip_if_unchanged(ctx, "features", inputs, work)


def _train_inputs(ctx: Context) -> dict[str, Any]:
    ds = ctx.dataset
    inputs: dict[str, Any] = _versions(ctx, [features_table(ds), params_table(ds)])
    inputs["config"] = digest(ds.model_spec.model_dump(), ds.seed)
    return inputs


def _lineage(ctx: Context, inputs: dict[str, Any]) -> dict[str, Any]:
    lineage = {k: v for k, v in inputs.items() if k != "config"}
    lineage.update(_versions(ctx, feature_inputs(ctx.dataset)))  # what the features were built of
    return lineage


def _trained(stage: str, result: TrainResult, note: str = "") -> Outcome:
    m = result.metrics
    return Outcome(
        stage,
        True,
        f"{note}{result.model_name} v{result.model_version} (candidate): test accuracy "
        f"{m['test_accuracy']:.3f}, F1 {m['test_f1']:.3f}, ROC AUC {m['test_roc_auc']:.3f} "
        f"(majority class {m['majority_accuracy']:.3f})",
        {
            "model_name": result.model_name,
            "model_version": result.model_version,
            "run_id": result.run_id,
            "metrics": m,
            "feature_params_version": result.feature_params_version,
        },
    )


def train(ctx: Context) -> Outcome:
    from lakestory.training import train_model

    if undeclared := _unless_declared(ctx, "train", "model"):
        return undeclared
    inputs = _train_inputs(ctx)

    def work() -> Outcome:
        return _trained(
            "train", train_model(ctx.spark, ctx.settings, ctx.dataset, _lineage(ctx, inputs))
        )

    return _skip_if_unchanged(ctx, "train", inputs, work)


def tune(ctx: Context) -> Outcome:
    """Run the dataset's tuning study and register its best settings' model.

    Always runs (a study is asked for, not implied by new data). Its model is recorded as the
    train stage's latest run, so that the next `lakestory run` converts and scores it, and
    trains again only when the features or the model config change.
    """
    from lakestory.training.tune import tune as run_study

    if undeclared := _unless_declared(ctx, "tune", "tune"):
        return undeclared
    inputs = _train_inputs(ctx)
    if any(v is None for v in inputs.values()):
        missing = ", ".join(k for k, v in inputs.items() if v is None)
        return Outcome("tune", False, f"nothing to tune yet: {missing} missing")
    study = run_study(ctx.spark, ctx.settings, ctx.dataset, _lineage(ctx, inputs))
    note = (
        f"{study.trials} trials, best #{study.best_trial} "
        f"({ctx.dataset.tune_spec.metric} {study.best_value:.4f}: "
        + ", ".join(f"{k}={v}" for k, v in study.best_settings.items())
        + "); "
    )
    outcome = _trained("tune", study.model, note)
    outputs = {**outcome.outputs, "tune_run_id": study.run_id, "best_settings": study.best_settings}
    record_run(ctx.spark, ctx.settings, StageRun(ctx.dataset.name, "train", inputs, outputs))
    return Outcome("tune", True, outcome.message, outputs)


def convert(ctx: Context) -> Outcome:
    """The trained version -> ONNX fp32, int8 dynamic and int8 static, measured side by side;
    the gate's choice is registered as a new version of the model under alias `champion`."""
    if undeclared := _unless_declared(ctx, "convert", "model"):
        return undeclared
    ds = ctx.dataset
    spec = ds.model_spec
    trained = last_run(ctx.spark, ds.name, "train")
    model = trained.outputs.get("model_version") if trained else None
    inputs = {
        "model": f"{spec.registered_name}/{model}" if model else None,
        "config": digest(spec.quantization.model_dump()),
    }

    def work() -> Outcome:
        import mlflow

        from lakestory.conversion import INT8_STATIC, ONNX_FP32
        from lakestory.conversion import convert as convert_model
        from lakestory.conversion.registry import CHAMPION, publish
        from lakestory.training.tracking import use_store
        from lakestory.training.train import load_arrays

        assert trained is not None
        use_store(ctx.settings)
        torch_model = mlflow.pytorch.load_model(f"models:/{spec.registered_name}/{model}")
        out_dir = ctx.settings.root / "artifacts" / ds.name / spec.registered_name / f"v{model}"
        report = convert_model(
            torch_model,
            spec.registered_name,
            str(model),
            load_arrays(ctx.spark, ds),
            out_dir,
            max_accuracy_drop=spec.quantization.max_accuracy_drop,
            calibration_rows=spec.quantization.calibration_rows,
            require_batch_invariance=spec.quantization.require_batch_invariance,
        )
        params_version = int(trained.outputs["feature_params_version"])
        published = publish(
            ctx.settings, report, trained.outputs["run_id"], params_version, out_dir
        )
        sizes = ", ".join(
            f"{f.artifact} {f.bytes:,} B acc {f.accuracy:.3f}" for f in report.figures
        )
        fp32, int8 = report.figure(ONNX_FP32), report.figure(INT8_STATIC)
        return Outcome(
            "convert",
            True,
            f"{sizes}; {CHAMPION}: {spec.registered_name} v{published.version} = "
            f"{report.gate.reason}; max |onnx - torch| {report.parity_max_abs_diff:.1e}",
            {
                **report.to_dict(),
                "champion_version": published.version,
                "feature_params_version": params_version,
                # the figures `lakestory summary` shows: ONNX fp32 and static int8
                "onnx_path": report.paths[ONNX_FP32],
                "onnx_bytes": fp32.bytes,
                "accuracy_onnx": fp32.accuracy,
                "int8_path": report.paths[INT8_STATIC],
                "int8_bytes": int8.bytes,
                "accuracy_int8": int8.accuracy,
            },
        )

    return _skip_if_unchanged(ctx, "convert", inputs, work)


def score(ctx: Context) -> Outcome:
    """The champion (alias `champion`) scores the silver rows into gold.<dataset>_predictions;
    a new champion or new input rescores, the same pair again writes nothing."""
    from lakestory.conversion.registry import champion, load_version
    from lakestory.inference import predictions_table, score_dataset, scored_tables

    if undeclared := _unless_declared(ctx, "score", "model"):
        return undeclared
    ds = ctx.dataset
    name = ds.model_spec.registered_name
    inputs: dict[str, Any] = _versions(ctx, scored_tables(ds))
    current = champion(ctx.settings, name)
    inputs["model"] = f"{name}/{current.version}" if current else None

    def work() -> Outcome:
        assert current is not None
        model = load_version(ctx.settings, current)  # the version the inputs name
        params = read_params(ctx.spark, ds, model.feature_params_version)
        scored = score_dataset(
            ctx.spark, ctx.settings, ds, model.onnx, model.name, model.version, params
        )
        table = predictions_table(ds)
        rows = ctx.spark.read.table(table.qualified).count()
        what = "written" if scored.written else "already there, nothing written"
        return Outcome(
            "score",
            scored.written,
            f"{table} {rows} rows of {name} v{model.version} on {scored.input_version} "
            f"({what}; v{scored.table_version})",
            {
                "table": table.qualified,
                "version": scored.table_version,
                "rows": rows,
                "model_name": name,
                "model_version": model.version,
                "input_version": scored.input_version,
            },
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
