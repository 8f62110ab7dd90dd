"""gold features -> a trained, tracked, registered model."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import Schema, TensorSpec
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings
from lakestory.config.models import Model as ModelSpec
from lakestory.features import (
    FEATURES_COLUMN,
    LABEL_COLUMN,
    PARAMS_VERSION_COLUMN,
    SPLIT_COLUMN,
    ImageParams,
    Params,
    read_params,
)
from lakestory.io import Catalog, read, table_version
from lakestory.training.backends import run_backend
from lakestory.training.feed import Feed, materialise, read_split
from lakestory.training.loop import train_ddp
from lakestory.training.tracking import (
    STAGE_RUN_TAG,
    classification_metrics,
    code_version,
    experiment_id,
    log_confusion_matrix,
    log_feature_params,
    registered_by,
    use_store,
)

if TYPE_CHECKING:
    import torch

CANDIDATE = "candidate"  # the alias of the latest trained version, before conversion's gate
FINAL_METRICS = "metrics.json"  # the run's artifact with the metrics `TrainResult` carries
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_name: str
    model_version: str
    metrics: dict[str, float]
    feature_params_version: int


def load_arrays(spark: SparkSession, dataset: Dataset) -> dict[str, np.ndarray]:
    """x_<split> (float32 feature vectors) and y_<split> (labels) for each split, key-ordered.

    Collects the table to the driver: convert uses it for the test rows; training reads the
    data feed (`lakestory.training.feed`) instead.
    """
    pdf: pd.DataFrame = (
        read(spark, Catalog(dataset).features())
        .select(SPLIT_COLUMN, LABEL_COLUMN, FEATURES_COLUMN)
        .orderBy(F.col(dataset.features_key))
        .toPandas()
    )
    width = input_width(dataset)
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        part = pdf[pdf[SPLIT_COLUMN] == split]
        arrays[f"x_{split}"] = np.array(part[FEATURES_COLUMN].tolist(), dtype=np.float32).reshape(
            -1, width
        )
        arrays[f"y_{split}"] = part[LABEL_COLUMN].to_numpy(dtype=np.float32)
    return arrays


def input_width(dataset: Dataset) -> int:
    """The length of the dataset's raw input vectors (features, or an image's pixels)."""
    image = dataset.image_spec
    return image.height * image.width if image else len(dataset.feature_spec.names)


def features_params(spark: SparkSession, dataset: Dataset) -> Params:
    """The fitted transforms the features table was encoded with."""
    versions = [
        r[0]
        for r in read(spark, Catalog(dataset).features())
        .select(PARAMS_VERSION_COLUMN)
        .distinct()
        .collect()
    ]
    if len(versions) != 1:
        raise ValueError(
            f"{Catalog(dataset).features()} should name one feature-params version, not {versions}"
        )
    return read_params(spark, dataset, int(versions[0]))


@dataclass(frozen=True)
class Fit:
    """What a distributed training run returned, with the data it was fed."""

    state_dict: bytes
    metrics: dict[str, float]  # rank 0's: loss and accuracy per split, best_epoch, epochs_run
    history: list[dict[str, float]]  # one point per epoch
    world_size: int
    backend: str
    feed: Feed
    steps_per_epoch: int
    x_test: np.ndarray
    y_test: np.ndarray
    y_train: np.ndarray


@contextmanager
def pinned_feed(
    spark: SparkSession, settings: Settings, dataset: Dataset, shards: int
) -> Iterator[Feed]:
    """The features table at its current Delta version, materialised as a data feed of
    `shards` train shards in a folder of its own under `<root>/_feeds`, removed on exit."""
    version = table_version(spark, Catalog(dataset).features())
    assert version is not None
    feed_root = Catalog(dataset, settings).feeds()
    feed_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{dataset.name}-", dir=feed_root) as tmp:
        feed = materialise(
            spark,
            Catalog(dataset).features().qualified,
            dataset.features_key,
            dataset.seed,
            shards,
            Path(tmp) / "feed",
            version,
        )
        counts = feed.rows
        if min(counts["train"], counts["test"]) == 0:
            raise ValueError(f"train and test splits must not be empty (rows per split: {counts})")
        yield feed


def fit(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    params: Params,
    model: ModelSpec | None = None,
    feed: Feed | None = None,
) -> Fit:
    """Train on the features table at its current Delta version with the configured backend.

    The table is pinned and materialised as the run's data feed, which is removed afterwards,
    unless `feed` gives one already (a tuning study's trials share theirs). `model` overrides
    the dataset's model settings (a tuning trial, a backend comparison). Nothing is logged or
    registered.
    """
    cfg = model or dataset.model_spec
    if feed is None:
        with pinned_feed(spark, settings, dataset, cfg.feed_shards) as own:
            return fit(spark, settings, dataset, params, cfg, own)
    if len(feed.shards) != cfg.feed_shards:
        raise ValueError(f"the feed has {len(feed.shards)} shards, the model {cfg.feed_shards}")
    steps = feed.steps_per_epoch(cfg.batch_size)
    spec = {
        **cfg.model_dump(exclude={"registered_name", "num_processes", "backend"}),
        "seed": dataset.seed,
        "params": params.to_json(),
        "feed": str(feed.path),
        "slices": feed.slices(cfg.batch_size),
        "steps_per_epoch": steps,
        "classes": dataset.classes,
        "augmentation": augmentation(dataset, cfg),
    }
    result = run_backend(spark, cfg.backend, train_ddp, spec, cfg.num_processes)
    x_test, y_test = read_split(feed.path, "test")
    y_train = read_split(feed.path, "train")[1]
    return Fit(
        state_dict=result["state_dict"],
        metrics=dict(result["metrics"]),
        history=list(result["history"]),
        world_size=int(result["world_size"]),
        backend=cfg.backend,
        feed=feed,
        steps_per_epoch=steps,
        x_test=x_test,
        y_test=y_test,
        y_train=y_train,
    )


def train_model(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    lineage: dict[str, Any],
    model: ModelSpec | None = None,
    tags: dict[str, str] | None = None,
    nested: bool = False,
    feed: Feed | None = None,
    stage_run: str | None = None,
) -> TrainResult:
    """Train with the configured backend; log params, per-epoch and test metrics, plots, the
    feature params and the model to MLflow; register a model version with alias `candidate`.

    `model` overrides the dataset's model settings (the best trial of a tuning study); `tags`
    are added to the run; `nested` makes it a child of the active run. `stage_run` is the
    pipeline's run of the train stage: the version is registered with it, and a run resuming
    one killed after registering takes that version rather than training another.
    """
    cfg = model or dataset.model_spec
    params = features_params(spark, dataset)
    done = None if stage_run is None else registered_by(settings, cfg.registered_name, stage_run)
    if done is not None:
        return _registered(settings, done, int(params.version or 0))
    run = fit(spark, settings, dataset, params, cfg, feed)
    network = trained_model(params, cfg, run.state_dict, dataset.classes)
    probabilities = predict(network, run.x_test)
    if isinstance(params, ImageParams):
        example = run.x_test[:4]  # a few test images
    else:  # every input missing: the fitted fills (NaN would not survive the JSON)
        example = np.tile(np.array([i.fill for i in params.inputs], np.float32), (4, 1))
    metrics = {
        **run.metrics,
        **classification_metrics(run.y_test, probabilities, prefix="test_"),
        "majority_accuracy": majority_accuracy(run.y_train, run.y_test),
    }
    client = use_store(settings)
    mlflow.set_experiment(experiment_id=experiment_id(settings, dataset))
    with mlflow.start_run(run_name=f"{dataset.name}-train", nested=nested) as active:
        log_fit(dataset, cfg, run, metrics)
        log_feature_params(params)
        log_confusion_matrix(run.y_test, probabilities)
        mlflow.set_tags(
            {
                **{f"lineage.{k}": str(v) for k, v in lineage.items()},
                "lineage.features_version": str(run.feed.version),
                "lineage.seed": str(dataset.seed),
                "lineage.code_version": code_version(),
                **(tags or {}),
            }
        )
        version_tags = {
            "lakestory.feature_params_version": str(params.version or 0),
            "lakestory.features_version": str(run.feed.version),
            "lakestory.artifact": "torch",
            **({STAGE_RUN_TAG: stage_run} if stage_run else {}),
        }
        info = log_torch_model(network, example, cfg.registered_name, version_tags)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(cfg.registered_name, CANDIDATE, version)
    return TrainResult(
        active.info.run_id, cfg.registered_name, version, metrics, int(params.version or 0)
    )


def _registered(settings: Settings, version: ModelVersion, params_version: int) -> TrainResult:
    """The result of the killed run that registered `version`, read back from its MLflow
    run (its final metrics as `log_fit` kept them), with the alias it did not get to set."""
    client = use_store(settings)
    assert version.run_id is not None
    metrics = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{FINAL_METRICS}")
    client.set_registered_model_alias(version.name, CANDIDATE, version.version)
    return TrainResult(version.run_id, version.name, str(version.version), metrics, params_version)


def augmentation(dataset: Dataset, cfg: ModelSpec) -> dict[str, float] | None:
    """The train function's augmentation settings: the configured strengths and the image
    size; None for tabular data or none configured."""
    image = dataset.image_spec
    if image is None or cfg.augmentation is None:
        return None
    return {**cfg.augmentation.model_dump(), "height": image.height, "width": image.width}


def trained_model(
    params: Params, cfg: ModelSpec, state_dict: bytes, classes: int = 1
) -> torch.nn.Module:
    """The network a run trained (`classes` outputs, as `Dataset.classes`), in inference
    mode."""
    import torch

    from lakestory.training.model import build_network

    network = build_network(
        {
            "params": params.to_json(),
            "hidden": cfg.hidden,
            "dropout": cfg.dropout,
            "channels": cfg.channels,
            "classes": classes,
        }
    )
    network.load_state_dict(torch.load(io.BytesIO(state_dict), weights_only=True))
    network.eval()
    return network


def predict(network: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """P(label = 1) for each row of `x` (N,), or each class's probability (N, K)."""
    import torch

    from lakestory.training.model import WithProbability

    with torch.no_grad():
        p = WithProbability(network)(torch.from_numpy(x)).numpy()
    return p.reshape(-1) if p.shape[1] == 1 else p


def log_fit(dataset: Dataset, cfg: ModelSpec, run: Fit, metrics: dict[str, float]) -> None:
    """The run's settings, data and metrics, per epoch and final, to the active MLflow run."""
    mlflow.log_params(
        {
            **cfg.model_dump(exclude={"registered_name", "early_stopping"}),
            "early_stopping": json.dumps(
                cfg.early_stopping.model_dump() if cfg.early_stopping else None
            ),
            "seed": dataset.seed,
            "features": (
                f"{dataset.image_spec.height}x{dataset.image_spec.width} pixels"
                if dataset.image_spec
                else ",".join(dataset.feature_spec.names)
            ),
            "world_size": run.world_size,
            **{f"rows_{k}": v for k, v in run.feed.rows.items()},
            "features_version": run.feed.version,  # the pinned Delta version trained on
            "rows_train_per_shard": ",".join(map(str, run.feed.shards)),
            "steps_per_epoch": run.steps_per_epoch,
        }
    )
    mlflow.log_metrics(metrics)
    # the final metrics as one document too: the run's metrics mix them with the feature
    # params' and, later, conversion's figures
    mlflow.log_dict(metrics, FINAL_METRICS)
    for point in run.history:
        step = int(point["epoch"])
        for name in ("train_loss", "val_loss", "val_accuracy", "learning_rate"):
            mlflow.log_metric(f"epoch_{name}", point[name], step=step)


def log_torch_model(
    network: torch.nn.Module,
    example: np.ndarray,
    registered_name: str,
    version_tags: dict[str, str] | None = None,
) -> ModelInfo:
    """Log the network (raw feature vectors in, logits out) with its signature and `example`
    rows as input example, and register it as a new version of `registered_name`, created
    with `version_tags`."""
    import torch

    # pt2 serialisation traces the model; an example of one row would fix the batch size at
    # 1, so give several. The signature says: any number of rows of `width` floats. Its
    # tensors are unnamed: MLflow turns a named input into a dict, which the PyTorch flavour
    # cannot take, and would warn that the example fails its own serving check.
    with torch.no_grad():
        logits = network(torch.from_numpy(example)).numpy()
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, example.shape[1]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, logits.shape[1]))]),
    )
    return mlflow.pytorch.log_model(
        network,
        name="model",
        registered_model_name=registered_name,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        serialization_format="pt2",
        signature=signature,
        input_example=example,
        tags=version_tags,
    )


def majority_accuracy(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of always predicting the train split's most frequent class (ties: the
    larger label): the bar to beat."""
    labels, counts = np.unique(y_train, return_counts=True)
    majority = labels[len(counts) - 1 - int(np.argmax(counts[::-1]))]
    return float(np.mean(y_test == majority))
