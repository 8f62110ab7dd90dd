"""gold features -> a trained, tracked, registered model."""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings
from lakestory.features import (
    FEATURES_COLUMN,
    LABEL_COLUMN,
    PARAMS_VERSION_COLUMN,
    SPLIT_COLUMN,
    FeatureParams,
    features_table,
    read_params,
)
from lakestory.io import read, table_version
from lakestory.training.backends import run_torch_distributor
from lakestory.training.feed import materialise, read_split
from lakestory.training.loop import train_ddp
from lakestory.training.tracking import code_version, experiment_id, log_feature_params

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
        read(spark, features_table(dataset))
        .select(SPLIT_COLUMN, LABEL_COLUMN, FEATURES_COLUMN)
        .orderBy(F.col(dataset.feature_spec.key))
        .toPandas()
    )
    width = len(dataset.feature_spec.names)
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        part = pdf[pdf[SPLIT_COLUMN] == split]
        arrays[f"x_{split}"] = np.array(part[FEATURES_COLUMN].tolist(), dtype=np.float32).reshape(
            -1, width
        )
        arrays[f"y_{split}"] = part[LABEL_COLUMN].to_numpy(dtype=np.float32)
    return arrays


def features_params(spark: SparkSession, dataset: Dataset) -> FeatureParams:
    """The fitted transforms the features table was encoded with."""
    versions = [
        r[0]
        for r in read(spark, features_table(dataset))
        .select(PARAMS_VERSION_COLUMN)
        .distinct()
        .collect()
    ]
    if len(versions) != 1:
        raise ValueError(
            f"{features_table(dataset)} should name one feature-params version, not {versions}"
        )
    return read_params(spark, dataset, int(versions[0]))


def train_model(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    lineage: dict[str, Any],
) -> TrainResult:
    """Train with TorchDistributor, log params/metrics/model to MLflow, register a version."""
    import torch

    from lakestory.training.model import build_model

    cfg = dataset.model_spec
    params = features_params(spark, dataset)
    version = table_version(spark, features_table(dataset))
    assert version is not None
    feed_root = settings.root / "_feeds"
    feed_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{dataset.name}-", dir=feed_root) as tmp:
        feed = materialise(
            spark,
            features_table(dataset).qualified,
            dataset.feature_spec.key,
            dataset.seed,
            cfg.num_processes,
            Path(tmp) / "feed",
            version,
        )
        counts = feed.rows
        if min(counts["train"], counts["test"]) == 0:
            raise ValueError(f"train and test splits must not be empty (rows per split: {counts})")
        rank_batch = cfg.batch_size // cfg.num_processes
        spec = {
            **cfg.model_dump(exclude={"registered_name", "num_processes"}),
            "seed": dataset.seed,
            "params": params.to_json(),
            "feed": str(feed.path),
            "steps_per_epoch": feed.steps_per_epoch(rank_batch),
        }
        result = run_torch_distributor(spark, train_ddp, spec, cfg.num_processes)
        y_train, y_test = read_split(feed.path, "train")[1], read_split(feed.path, "test")[1]

    model = build_model(params, cfg.hidden, cfg.dropout)
    model.load_state_dict(torch.load(io.BytesIO(result["state_dict"]), weights_only=True))
    model.eval()

    metrics: dict[str, float] = dict(result["metrics"])
    metrics["majority_accuracy"] = majority_accuracy(y_train, y_test)

    mlflow.set_experiment(experiment_id=experiment_id(settings, dataset))
    with mlflow.start_run(run_name=f"{dataset.name}-train") as run:
        mlflow.log_params(
            {
                **cfg.model_dump(exclude={"registered_name"}),
                "seed": dataset.seed,
                "features": ",".join(dataset.feature_spec.names),
                "world_size": result["world_size"],
                "backend": "torch_distributor",
                **{f"rows_{k}": v for k, v in counts.items()},
                "features_version": feed.version,  # the pinned Delta version trained on
                "rows_train_per_rank": ",".join(map(str, feed.shards)),
                "steps_per_epoch": spec["steps_per_epoch"],
            }
        )
        log_feature_params(params)
        mlflow.set_tags(
            {
                **{f"lineage.{k}": str(v) for k, v in lineage.items()},
                "lineage.code_version": code_version(),
            }
        )
        mlflow.log_metrics(metrics)
        for point in result["history"]:
            step = point["epoch"]
            mlflow.log_metric("epoch_train_loss", point["train_loss"], step=step)
            mlflow.log_metric("epoch_val_loss", point["val_loss"], step=step)
            mlflow.log_metric("epoch_val_accuracy", point["val_accuracy"], step=step)
            mlflow.log_metric("epoch_learning_rate", point["learning_rate"], step=step)
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            registered_model_name=cfg.registered_name,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            # pt2 serialisation traces the model; an example of one row would fix the batch
            # size at 1, so give several.
            serialization_format="pt2",
            input_example=np.tile(np.array([i.fill for i in params.inputs], np.float32), (4, 1)),
        )
    return TrainResult(
        run.info.run_id,
        cfg.registered_name,
        str(info.registered_model_version),
        metrics,
        int(params.version or 0),
    )


def majority_accuracy(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of always predicting the train split's majority class: the bar to beat."""
    majority = 1.0 if float(np.mean(y_train)) >= 0.5 else 0.0
    return float(np.mean(y_test == majority))
