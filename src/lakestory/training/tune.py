"""`lakestory tune`: a seeded Optuna TPE search over the model's settings, each trial a nested
MLflow run; the best settings are trained once more, logged and registered as `candidate`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import mlflow
from pyspark.sql import SparkSession

from lakestory.config import Dataset, Settings
from lakestory.config.models import Model as ModelSpec
from lakestory.config.models import SearchSpace, Tune
from lakestory.training.tracking import experiment_id, use_store
from lakestory.training.train import (
    TrainResult,
    features_params,
    fit,
    pinned_feed,
    train_model,
)

if TYPE_CHECKING:
    import optuna

    from lakestory.features import Params
    from lakestory.training.feed import Feed

log = logging.getLogger("lakestory")

# the metric a trial is scored by: the name rank 0 reports and whether lower is better
OBJECTIVES: dict[str, tuple[str, Literal["minimize", "maximize"]]] = {
    "val_loss": ("validation_loss", "minimize"),
    "val_accuracy": ("validation_accuracy", "maximize"),
}


@dataclass(frozen=True)
class TuneResult:
    run_id: str  # the parent run of the study
    trials: int
    best_trial: int
    best_value: float
    best_settings: dict[str, Any]
    model: TrainResult  # the best settings trained again and registered


def suggest(trial: optuna.Trial, name: str, space: SearchSpace, integer: bool) -> Any:
    """A value for `name` from its space. Choices are offered to Optuna as their JSON text,
    since a choice may be a list (hidden layer sizes), which Optuna cannot store."""
    if space.choices is not None:
        texts = [json.dumps(c) for c in space.choices]
        return json.loads(trial.suggest_categorical(name, texts))
    assert space.low is not None and space.high is not None
    if integer:
        step = int(space.step or 1)
        return trial.suggest_int(name, int(space.low), int(space.high), step=step, log=space.log)
    return trial.suggest_float(name, space.low, space.high, step=space.step, log=space.log)


def within(space: SearchSpace, value: Any) -> bool:
    """Whether `value` is one the space can yield: a choice, or in range (on its grid)."""
    if space.choices is not None:
        return value in space.choices
    assert space.low is not None and space.high is not None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not space.low <= value <= space.high:
        return False
    if space.step is None:
        return True
    steps = (value - space.low) / space.step
    return abs(steps - round(steps)) < 1e-9


def trial_settings(base: ModelSpec, values: dict[str, Any]) -> ModelSpec:
    """The model settings of a trial: the configured ones with the sampled values."""
    return ModelSpec.model_validate({**base.model_dump(), **values})


def _new_study(
    spec: Tune, base: ModelSpec, direction: Literal["minimize", "maximize"], seed: int
) -> tuple[optuna.Study, bool]:
    """A TPE study seeded by `seed`, and whether the configured settings are its first trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
    # the settings as configured are the first trial when the space holds them, so the study's
    # best is never worse, by its metric, than the model it set out to improve
    configured = {n: getattr(base, n) for n in spec.space}
    first = all(within(spec.space[n], v) for n, v in configured.items())
    if first:
        study.enqueue_trial(
            {
                n: json.dumps(v) if spec.space[n].choices is not None else v
                for n, v in configured.items()
            }
        )
    return study, first


def _objective(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    params: Params,
    feed: Feed,
    metric: str,
) -> Callable[[optuna.Trial], float]:
    """The study's objective: train with a trial's settings on `feed` in a nested MLflow run
    and score it by `metric`."""
    spec, base = dataset.tune_spec, dataset.model_spec
    integers = {n for n in spec.space if ModelSpec.model_fields[n].annotation in (int, "int")}

    def objective(trial: optuna.Trial) -> float:
        values = {n: suggest(trial, n, s, n in integers) for n, s in spec.space.items()}
        cfg = trial_settings(base, values)
        with mlflow.start_run(run_name=f"trial-{trial.number:03d}", nested=True):
            mlflow.log_params({**values, "trial": trial.number})
            run = fit(spark, settings, dataset, params, cfg, feed)
            mlflow.log_metrics(run.metrics)
            for point in run.history:
                mlflow.log_metric("epoch_val_loss", point["val_loss"], step=int(point["epoch"]))
        value = float(run.metrics[metric])
        log.info("tune trial %d: %s %.4f with %s", trial.number, metric, value, values)
        return value

    return objective


def _study_params(
    spec: Tune, metric: str, direction: str, configured_first: bool, seed: int
) -> dict[str, Any]:
    """What the parent run logs about the study, so that it can be repeated from the run."""
    return {
        "trials": spec.trials,
        "metric": metric,
        "direction": direction,
        "sampler": "TPESampler",
        "configured_first": configured_first,
        "seed": seed,
        "space": json.dumps({n: s.model_dump(exclude_none=True) for n, s in spec.space.items()}),
    }


def _log_best(study: optuna.Study, spec: Tune, metric: str) -> tuple[int, float, dict[str, Any]]:
    """Log the best trial to the parent run; return its number, value and settings (choices
    decoded from the JSON text Optuna stores them as, see `suggest`)."""
    best = study.best_trial
    assert best.value is not None
    best_settings = {
        n: json.loads(v) if spec.space[n].choices is not None else v for n, v in best.params.items()
    }
    mlflow.log_metric(f"best_{metric}", float(best.value))
    mlflow.log_params({f"best_{n}": v for n, v in best_settings.items()})
    mlflow.set_tag("lakestory.best_trial", str(best.number))
    return best.number, float(best.value), best_settings


def tune(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    lineage: dict[str, Any],
    stage_run: str | None = None,
) -> TuneResult:
    """Run the study declared in the dataset's `tune` section; register the best settings.

    Every trial trains on the same pinned features with the dataset's seed, so the trials
    differ by their settings alone; the sampler is seeded by the dataset's seed too, so a study
    is repeatable. `stage_run` is the pipeline's run, as for `train_model`: a run resumed after
    a kill that came once the best model was registered takes that version rather than
    registering a second (the study itself, being seeded, runs again to the same best trial).
    """
    spec = dataset.tune_spec
    base = dataset.model_spec
    metric, direction = OBJECTIVES[spec.metric]
    params = features_params(spark, dataset)
    study, first = _new_study(spec, base, direction, dataset.seed)
    use_store(settings)
    mlflow.set_experiment(experiment_id=experiment_id(settings, dataset))

    # one data feed for every trial and the retraining: the same pinned rows, written once
    with (
        pinned_feed(spark, settings, dataset, base.feed_shards) as feed,
        mlflow.start_run(run_name=f"{dataset.name}-tune") as parent,
    ):
        mlflow.log_params(_study_params(spec, metric, direction, first, dataset.seed))
        objective = _objective(spark, settings, dataset, params, feed, metric)
        study.optimize(objective, n_trials=spec.trials)
        best_number, best_value, best_settings = _log_best(study, spec, metric)
        model = train_model(
            spark,
            settings,
            dataset,
            lineage,
            model=trial_settings(base, best_settings),
            tags={"lakestory.tuned_by": parent.info.run_id, "lakestory.trial": str(best_number)},
            nested=True,
            feed=feed,
            stage_run=stage_run,
        )
    return TuneResult(
        parent.info.run_id, len(study.trials), best_number, best_value, best_settings, model
    )
