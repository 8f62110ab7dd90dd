"""The stage graph used by `run`, `demo` and the jobs: ingest -> refine -> features -> train
-> convert -> score.

A stage runs only when its inputs (upstream Delta versions, the registered model, the relevant
config) differ from those its last completed run recorded in `ops.stage_runs`; otherwise it is
skipped, says so, and commits nothing. Every stage replaces its outputs in single Delta commits,
so a rerun after a crash completes the work without duplicating it.

Each stage is a `Stage`: the dataset section it needs, what its inputs are, the work it does on
them and the report that work comes to. `run_stage` alone decides whether a stage has anything
to do, records what it did and builds its `Outcome`; the reports sit together below, so every
line `lakestory run` prints is written in one place. `reprocess` and `tune` are stages of the
same kind that `run` leaves out: each is run when asked for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pyspark.sql import SparkSession

from lakestory import console
from lakestory.config import Dataset, Settings, load_token_key
from lakestory.features import (
    ImageParams,
    Params,
    build_features,
    feature_inputs,
    next_params_version,
    read_params,
)
from lakestory.io import Catalog, TableRef, ensure_layers, table_version
from lakestory.io.runs import StageRun, Underway, last_run, record_run
from lakestory.operations.ingest import IngestResult, ingest_source
from lakestory.operations.refine import (
    RefineCounts,
    quarantine_versions,
    recorded_counts,
    refine_source,
    reprocess_source,
)

if TYPE_CHECKING:
    from lakestory.conversion.registry import ScoringModel
    from lakestory.conversion.report import ConversionReport
    from lakestory.inference.score import Scored
    from lakestory.training.train import TrainResult
    from lakestory.training.tune import TuneResult

log = logging.getLogger("lakestory")

Inputs = dict[str, Any]  # what decides a rerun; a None value is an input not there yet
R = TypeVar("R")


@dataclass(frozen=True)
class Context:
    spark: SparkSession
    settings: Settings
    dataset: Dataset
    full_refresh: bool = False  # refine all of bronze again, not only its new rows
    run: Underway | None = None  # the stage's run, while `run_stage` runs it

    @property
    def run_id(self) -> str:
        assert self.run is not None, "a stage's work runs inside run_stage"
        return self.run.run_id


@dataclass(frozen=True)
class Outcome:
    stage: str
    ran: bool
    message: str
    outputs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.stage:<9} {'ran    ' if self.ran else 'skipped'}  {self.message}"


@dataclass(frozen=True)
class Report:
    """What a stage's work comes to: its line, the outputs it records, whether it changed
    anything (scoring the same pair again, ingesting no new file, change nothing)."""

    message: str
    outputs: dict[str, Any] = field(default_factory=dict)
    ran: bool = True


def _never(ctx: Context) -> bool:
    return False


@dataclass(frozen=True)
class Stage(Generic[R]):
    """One step of the graph; `stage(ctx)` runs it through `run_stage`.

    Attributes:
        name: What its line and `ops.stage_runs` call it.
        run: The work, on the inputs `inputs` read (an empty dict for a stage without them).
        report: What the work's result comes to (see the reports below).
        inputs: What decides a rerun; None for a stage that runs every time it is asked and
            records nothing (ingest reads its own checkpoints; reprocess is asked for).
        needs: The dataset section without which the stage has nothing to do.
        forced: Whether to run even when the inputs are those of the last run.
        records_as: The stage whose latest run this one's result becomes (default: its own).
        resumes: Whether a run keeps a marker until it is recorded, so that the next run
            resumes one killed before that (`io.runs.Underway`); ingest keeps one per source
            of its own.
    """

    name: str
    run: Callable[[Context, Inputs], R]
    report: Callable[[Context, R], Report]
    inputs: Callable[[Context], Inputs] | None = None
    needs: str | None = None
    forced: Callable[[Context], bool] = _never
    records_as: str | None = None
    resumes: bool = True

    def __call__(self, ctx: Context) -> Outcome:
        return run_stage(ctx, self)


def run_stage(ctx: Context, stage: Stage[Any]) -> Outcome:
    """Run `stage` unless it has nothing to do, and record what it did in `ops.stage_runs`."""
    if stage.needs is not None and getattr(ctx.dataset, stage.needs) is None:
        return Outcome(stage.name, False, _undeclared(ctx.dataset, stage.needs))
    if stage.inputs is None:
        report = _run(ctx, stage, {})
        return Outcome(stage.name, report.ran, report.message, report.outputs)
    inputs = stage.inputs(ctx)
    if missing := [k for k, v in inputs.items() if v is None]:
        return Outcome(stage.name, False, _waiting(stage.name, missing))
    recorded = stage.records_as or stage.name
    if not stage.forced(ctx):
        previous = last_run(ctx.spark, ctx.dataset.name, recorded)
        if previous is not None and previous.inputs == inputs:
            return Outcome(stage.name, False, _UNCHANGED, previous.outputs)
    report = _run(ctx, stage, inputs, recorded)
    return Outcome(stage.name, report.ran, report.message, report.outputs)


def _run(ctx: Context, stage: Stage[Any], inputs: Inputs, recorded: str | None = None) -> Report:
    """The stage's work and report, under a run that a kill leaves to be resumed; recorded
    as the latest run of `recorded`, if given."""
    if stage.resumes:
        run = Underway.begin(ctx.spark, Catalog(ctx.dataset, ctx.settings), stage.name, inputs)
    else:
        run = Underway(ctx.spark, None, uuid.uuid4().hex)
    ctx = replace(ctx, run=run)
    report = stage.report(ctx, stage.run(ctx, inputs))
    if recorded is not None:
        done = StageRun(ctx.dataset.name, recorded, inputs, report.outputs, run.run_id)
        record_run(ctx.spark, ctx.settings, done)
    run.end()
    return report


def digest(*parts: Any) -> str:
    """A short fingerprint of config sections, so that a config change reruns a stage."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _versions(ctx: Context, tables: list[TableRef]) -> dict[str, int | None]:
    return {t.qualified: table_version(ctx.spark, t) for t in tables}


# What each stage reads and does. A `run` uses only the context and the inputs it is given,
# so what it did is what its recorded inputs say.


def _ingest(ctx: Context, inputs: Inputs) -> list[tuple[str, IngestResult | None]]:
    """Each source's ingestion, None for a source whose landing folder is not there."""
    run_id = uuid.uuid4().hex
    results: list[tuple[str, IngestResult | None]] = []
    for name, source in ctx.dataset.sources.items():
        if not Path(Catalog(ctx.dataset, ctx.settings).landing(source)).is_dir():
            results.append((name, None))
            continue
        results.append((name, ingest_source(ctx.spark, ctx.settings, ctx.dataset, name, run_id)))
    return results


def _refine_inputs(ctx: Context) -> Inputs:
    ds = ctx.dataset
    # the sources that have landed something: one whose files have not come yet waits
    landed = _versions(ctx, [Catalog(ds).bronze(s) for s in ds.structured()])
    structured = {
        name: source
        for name, source in ds.structured().items()
        if landed[Catalog(ds).bronze(name).qualified] is not None
    }
    inputs: Inputs = {k: v for k, v in landed.items() if v is not None} or landed
    inputs["config"] = digest({k: v.model_dump() for k, v in structured.items()})
    return inputs


def _refine(ctx: Context, inputs: Inputs) -> dict[str, RefineCounts]:
    """Each landed source's new bronze rows refined. A run that resumes one killed before it
    recorded itself counts the batches of both, from their rows of `ops.quality_metrics`:
    the killed run may have finished some sources, which this one then finds nothing new in."""
    ds = ctx.dataset
    key = load_token_key(ctx.settings)
    landed = [name for name in ds.structured() if Catalog(ds).bronze(name).qualified in inputs]
    counts = {
        name: refine_source(
            ctx.spark, ctx.settings, ds, name, key, ctx.run_id, full_refresh=ctx.full_refresh
        )
        for name in landed
    }
    if ctx.run is not None and ctx.run.resumed:
        recorded = recorded_counts(ctx.spark, ctx.settings, ds, ctx.run_id)
        return {name: recorded.get(name, c).timed(c.seconds) for name, c in counts.items()}
    return counts


def _reprocess(ctx: Context, inputs: Inputs) -> dict[str, RefineCounts]:
    """Quarantined rows through the current rules again, on request: each source's
    quarantine as it stood when the run began, so that a run resuming one that was killed
    moves the same rows (the writes the killed run made are skipped as done)."""
    key = load_token_key(ctx.settings)
    assert ctx.run is not None
    versions = ctx.run.planned(quarantine_versions(ctx.spark, ctx.settings, ctx.dataset))
    return {
        name: reprocess_source(
            ctx.spark, ctx.settings, ctx.dataset, name, key, ctx.run_id, versions[name]
        )
        if name in versions
        else RefineCounts.total([])  # nothing was quarantined when the run began
        for name in ctx.dataset.structured()
    }


def _features_inputs(ctx: Context) -> Inputs:
    ds = ctx.dataset
    inputs: Inputs = _versions(ctx, feature_inputs(ds))
    assert ds.features is not None
    inputs["config"] = digest(ds.features.model_dump(), ds.seed)
    return inputs


def _features(ctx: Context, inputs: Inputs) -> tuple[int, Params]:
    """The features, with the params version the run planned: a run resuming one killed after
    it stored its params uses them rather than storing another version."""
    assert ctx.run is not None
    next_version = next_params_version(ctx.spark, ctx.settings, ctx.dataset)
    planned = ctx.run.planned({"params_version": next_version})
    version = planned["params_version"]
    return build_features(ctx.spark, ctx.settings, ctx.dataset, version, ctx.run_id)


def _train_inputs(ctx: Context) -> Inputs:
    ds = ctx.dataset
    inputs: Inputs = _versions(ctx, [Catalog(ds).features(), Catalog(ds).feature_params()])
    inputs["config"] = digest(ds.model_spec.model_dump(), ds.seed)
    return inputs


def _lineage(ctx: Context, inputs: Inputs) -> dict[str, Any]:
    lineage = {k: v for k, v in inputs.items() if k != "config"}
    lineage.update(_versions(ctx, feature_inputs(ctx.dataset)))  # what the features were built of
    return lineage


def _train(ctx: Context, inputs: Inputs) -> TrainResult:
    from lakestory.training import train_model

    lineage = _lineage(ctx, inputs)
    return train_model(ctx.spark, ctx.settings, ctx.dataset, lineage, stage_run=ctx.run_id)


def _tune(ctx: Context, inputs: Inputs) -> TuneResult:
    """Run the dataset's tuning study and register its best settings' model.

    Always runs (a study is asked for, not implied by new data). Its model is recorded as the
    train stage's latest run, so that the next `lakestory run` converts and scores it, and
    trains again only when the features or the model config change.
    """
    from lakestory.training.tune import tune as run_study

    return run_study(ctx.spark, ctx.settings, ctx.dataset, _lineage(ctx, inputs), ctx.run_id)


def _convert_inputs(ctx: Context) -> Inputs:
    spec = ctx.dataset.model_spec
    trained = last_run(ctx.spark, ctx.dataset.name, "train")
    model = trained.outputs.get("model_version") if trained else None
    return {
        "model": f"{spec.registered_name}/{model}" if model else None,
        "config": digest(spec.quantization.model_dump()),
    }


@dataclass(frozen=True)
class _Converted:
    report: ConversionReport
    champion_version: str
    feature_params_version: int


def _convert(ctx: Context, inputs: Inputs) -> _Converted:
    """The trained version -> ONNX fp32, int8 dynamic and int8 static, measured side by side;
    the gate's choice is registered as a new version of the model under alias `champion`."""
    import mlflow

    from lakestory.conversion import convert as convert_model
    from lakestory.conversion.registry import publish
    from lakestory.training.tracking import use_store
    from lakestory.training.train import load_arrays

    ds, spec = ctx.dataset, ctx.dataset.model_spec
    trained = last_run(ctx.spark, ds.name, "train")  # the run whose model the inputs name
    assert trained is not None
    model = trained.outputs["model_version"]
    use_store(ctx.settings)
    torch_model = mlflow.pytorch.load_model(f"models:/{spec.registered_name}/{model}")
    out_dir = Catalog(ds, ctx.settings).artifacts(spec.registered_name, model)
    report = convert_model(
        torch_model,
        spec.registered_name,
        str(model),
        load_arrays(ctx.spark, ds),
        out_dir,
        class_names=tuple(ds.class_names),
        max_accuracy_drop=spec.quantization.max_accuracy_drop,
        calibration_rows=spec.quantization.calibration_rows,
        require_batch_invariance=spec.quantization.require_batch_invariance,
    )
    params_version = int(trained.outputs["feature_params_version"])
    run_id = trained.outputs["run_id"]
    published = publish(ctx.settings, report, run_id, params_version, out_dir, ctx.run_id)
    return _Converted(report, published.version, params_version)


def _score_inputs(ctx: Context) -> Inputs:
    from lakestory.conversion.registry import champion
    from lakestory.inference import scored_tables

    name = ctx.dataset.model_spec.registered_name
    inputs: Inputs = _versions(ctx, scored_tables(ctx.dataset))
    current = champion(ctx.settings, name)
    inputs["model"] = f"{name}/{current.version}" if current else None
    return inputs


@dataclass(frozen=True)
class _Scoring:
    scored: Scored
    model: ScoringModel
    table: TableRef
    rows: int


def _score(ctx: Context, inputs: Inputs) -> _Scoring:
    """The champion (alias `champion`) scores the silver rows into gold.<dataset>_predictions;
    a new champion or new input rescores, the same pair again writes nothing."""
    from lakestory.conversion.registry import load_version
    from lakestory.inference import score_dataset
    from lakestory.training.tracking import use_store

    ds = ctx.dataset
    name, version = str(inputs["model"]).rsplit("/", 1)
    # the version the inputs name, even if the alias has moved on since they were read
    model = load_version(ctx.settings, use_store(ctx.settings).get_model_version(name, version))
    params = read_params(ctx.spark, ds, model.feature_params_version)
    scored = score_dataset(
        ctx.spark, ctx.settings, ds, model.onnx, model.name, model.version, params
    )
    table = Catalog(ds).predictions()
    return _Scoring(scored, model, table, ctx.spark.read.table(table.qualified).count())


# What each stage says: the line `run_stages` prints after the stage's name, and the outputs
# it records. The lines of a stage that did not run come first.

_UNCHANGED = "inputs unchanged since the last run"


def _undeclared(ds: Dataset, section: str) -> str:
    return f"dataset {ds.name} declares no {section}"


def _waiting(stage: str, missing: list[str]) -> str:
    return f"nothing to {'tune' if stage == 'tune' else 'do'} yet: {', '.join(missing)} missing"


def _ingested(ctx: Context, results: list[tuple[str, IngestResult | None]]) -> Report:
    parts, outputs, changed = [], {}, False
    for name, result in results:
        if result is None:
            parts.append(f"{name}: no landing folder")
            continue
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
    return Report("; ".join(parts), outputs, changed)


def _refined(ctx: Context, counts: dict[str, RefineCounts]) -> Report:
    parts = [
        f"{Catalog(ctx.dataset).silver(name)} {c.silver} rows upserted, "
        f"{c.exact_duplicates} exact and {c.key_duplicates} key duplicates, "
        f"{c.unchanged} unchanged, "
        f"{c.quarantined} quarantined, {c.dropped} dropped"
        + (f", {c.unlabeled} unlabeled" if c.unlabeled else "")
        + f" (of {c.rows_in})"
        + (
            f": every row quarantined, see lakestory quarantine {ctx.dataset.name}"
            if c.rows_in and c.quarantined == c.rows_in
            else ""
        )
        for name, c in counts.items()
    ]
    return Report("; ".join(parts), {name: c.__dict__ for name, c in counts.items()})


def _reprocessed(ctx: Context, counts: dict[str, RefineCounts]) -> Report:
    parts = [
        f"{Catalog(ctx.dataset).silver(name)} {c.silver} rows upserted, "
        f"{c.duplicates + c.unchanged} collapsed or already there, "
        f"{c.dropped} dropped, {c.quarantined} still quarantined "
        f"(of {c.rows_in} reprocessed)"
        for name, c in counts.items()
    ]
    return Report("; ".join(parts), {name: c.__dict__ for name, c in counts.items()})


def _featured(ctx: Context, built: tuple[int, Params]) -> Report:
    ds, (features_version, params) = ctx.dataset, built
    if isinstance(params, ImageParams):
        what = (
            f"{params.height}x{params.width} pixels, mean {params.mean:.2f}, "
            f"std {params.std:.2f}, {params.classes} classes"
        )
    else:
        pca = f", PCA to {params.pca.k} of {len(params.prepared_names)}" if params.pca else ""
        what = f"{len(params.inputs)} inputs{pca}"
    return Report(
        f"{Catalog(ds).features()} v{features_version}, {Catalog(ds).feature_params()} "
        f"version {params.version} ({what})",
        {"features_version": features_version, "params_version": params.version},
    )


def _trained(ctx: Context, result: TrainResult) -> Report:
    m = result.metrics
    return Report(
        f"{result.model_name} v{result.model_version} (candidate): test accuracy "
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


def _tuned(ctx: Context, study: TuneResult) -> Report:
    trained = _trained(ctx, study.model)
    note = (
        f"{study.trials} trials, best #{study.best_trial} "
        f"({ctx.dataset.tune_spec.metric} {study.best_value:.4f}: "
        + ", ".join(f"{k}={v}" for k, v in study.best_settings.items())
        + "); "
    )
    outputs = {**trained.outputs, "tune_run_id": study.run_id, "best_settings": study.best_settings}
    return Report(note + trained.message, outputs)


def _converted(ctx: Context, converted: _Converted) -> Report:
    from lakestory.conversion import INT8_STATIC, ONNX_FP32
    from lakestory.conversion.registry import CHAMPION

    report, name = converted.report, ctx.dataset.model_spec.registered_name
    sizes = ", ".join(f"{f.artifact} {f.bytes:,} B acc {f.accuracy:.3f}" for f in report.figures)
    fp32, int8 = report.figure(ONNX_FP32), report.figure(INT8_STATIC)
    return Report(
        f"{sizes}; {CHAMPION}: {name} v{converted.champion_version} = "
        f"{report.gate.reason}; max |onnx - torch| {report.parity_max_abs_diff:.1e}",
        {
            **report.to_dict(),
            "champion_version": converted.champion_version,
            "feature_params_version": converted.feature_params_version,
            # the figures `lakestory summary` shows: ONNX fp32 and static int8
            "onnx_path": report.paths[ONNX_FP32],
            "onnx_bytes": fp32.bytes,
            "accuracy_onnx": fp32.accuracy,
            "int8_path": report.paths[INT8_STATIC],
            "int8_bytes": int8.bytes,
            "accuracy_int8": int8.accuracy,
        },
    )


def _scored(ctx: Context, scoring: _Scoring) -> Report:
    scored, model, name = scoring.scored, scoring.model, ctx.dataset.model_spec.registered_name
    what = "written" if scored.written else "already there, nothing written"
    return Report(
        f"{scoring.table} {scoring.rows} rows of {name} v{model.version} on "
        f"{scored.input_version} ({what}; v{scored.table_version})",
        {
            "table": scoring.table.qualified,
            "version": scored.table_version,
            "rows": scoring.rows,
            "model_name": name,
            "model_version": model.version,
            "input_version": scored.input_version,
        },
        ran=scored.written,
    )


# The graph. `run` runs the first six in order; `reprocess` and `tune` are run when asked for.


def _full_refresh(ctx: Context) -> bool:
    return ctx.full_refresh


def _always(ctx: Context) -> bool:
    return True


ingest = Stage("ingest", _ingest, _ingested, resumes=False)
refine = Stage("refine", _refine, _refined, inputs=_refine_inputs, forced=_full_refresh)
features = Stage("features", _features, _featured, inputs=_features_inputs, needs="features")
train = Stage("train", _train, _trained, inputs=_train_inputs, needs="model")
convert = Stage("convert", _convert, _converted, inputs=_convert_inputs, needs="model")
score = Stage("score", _score, _scored, inputs=_score_inputs, needs="model")
reprocess = Stage("reprocess", _reprocess, _reprocessed)
# a study's model becomes the train stage's latest run: the next `run` converts and scores it
tune = Stage(
    "tune", _tune, _tuned, inputs=_train_inputs, needs="tune", forced=_always, records_as="train"
)

GRAPH: dict[str, Stage[Any]] = {
    s.name: s for s in (ingest, refine, features, train, convert, score)
}
STAGES = tuple(GRAPH)  # ingest, refine, features, train, convert, score


def run_stages(ctx: Context, stages: tuple[str, ...] = STAGES) -> list[Outcome]:
    """Run `stages` in order; each prints what it did or why it was skipped."""
    ensure_layers(ctx.spark, ctx.settings)
    outcomes = []
    for name in stages:
        with console.working(f"{name:<9} running"):
            outcome = run_stage(ctx, GRAPH[name])
        console.say(outcome)
        outcomes.append(outcome)
    return outcomes
