"""silver -> gold features: the model's input vector, a seeded split, fitted scaling params.

The vector keeps missing values as NaN and stays unscaled: the fitted parameters (train means
and standard deviations) travel inside the model and its ONNX graph, so training and serving
apply the very same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings
from lakestory.config.models import SplitFractions
from lakestory.io import TableRef, local_frame, overwrite, read

Transform = Callable[[DataFrame], DataFrame]

FEATURES_COLUMN = "features"
SPLIT_COLUMN = "split"
LABEL_COLUMN = "label"


def features_table(dataset: Dataset) -> TableRef:
    return TableRef("gold", f"{dataset.name}_features")


def params_table(dataset: Dataset) -> TableRef:
    return TableRef("gold", f"{dataset.name}_feature_params")


def silver_ref(dataset: Dataset, source_name: str) -> TableRef:
    return TableRef("silver", f"{dataset.name}_{source_name}")


def split_bucket(key: Column, seed: int) -> Column:
    """A number in [0, 1) that depends only on the key and the seed, not on partitioning."""
    hashed = F.xxhash64(key.cast("string"), F.lit(seed))
    return F.pmod(hashed, F.lit(1_000_000)).cast("double") / 1_000_000.0


def with_split(key: str, seed: int, fractions: SplitFractions) -> Transform:
    """Add `split` in {train, validation, test}, a stable function of (key, seed)."""

    def _apply(df: DataFrame) -> DataFrame:
        bucket = split_bucket(F.col(key), seed)
        split = (
            F.when(bucket < fractions.train, "train")
            .when(bucket < fractions.train + fractions.validation, "validation")
            .otherwise("test")
        )
        return df.withColumn(SPLIT_COLUMN, split)

    return _apply


def feature_frame(spark: SparkSession, dataset: Dataset) -> DataFrame:
    """One row per key of the main source: key, label, and the feature columns (nullable)."""
    feats = dataset.feature_spec
    main = read(spark, silver_ref(dataset, feats.source))
    frame = main.select(feats.key, feats.label, *feats.columns)
    for source_name in dict.fromkeys(a.source for a in feats.aggregates):
        aggs = [a for a in feats.aggregates if a.source == source_name]
        grouped = (
            read(spark, silver_ref(dataset, source_name))
            .groupBy(feats.key)
            .agg(*[F.expr(a.expr).alias(a.name) for a in aggs])
        )
        frame = frame.join(grouped, on=feats.key, how="left")
        fills: dict[str, bool | float | int | str] = {
            a.name: a.fill for a in aggs if a.fill is not None
        }
        if fills:
            frame = frame.fillna(fills)
    return frame


def with_feature_vector(names: list[str]) -> Transform:
    """Add `features` array<double> in the order of `names`; missing values become NaN."""

    def _apply(df: DataFrame) -> DataFrame:
        values = [F.coalesce(F.col(n).cast("double"), F.lit(float("nan"))) for n in names]
        return df.withColumn(FEATURES_COLUMN, F.array(*values))

    return _apply


@dataclass(frozen=True)
class ScalerParams:
    """Per-feature mean and standard deviation, fitted on the train split."""

    names: list[str]
    means: list[float]
    stds: list[float]

    def rows(self) -> list[tuple[int, str, float, float]]:
        return [
            (i, n, m, s)
            for i, (n, m, s) in enumerate(zip(self.names, self.means, self.stds, strict=True))
        ]


def fit_standard_scaler(train: DataFrame, names: list[str]) -> ScalerParams:
    """Fit mean and population std of each column on `train`, ignoring missing values.

    One aggregate job; a column with no spread (or no values) gets std 1 so that scaling
    never divides by zero.
    """
    aggs = []
    for n in names:
        aggs += [F.avg(F.col(n)).alias(f"m_{n}"), F.stddev_pop(F.col(n)).alias(f"s_{n}")]
    row = train.agg(*aggs).first()
    assert row is not None
    means, stds = [], []
    for n in names:
        mean, std = row[f"m_{n}"], row[f"s_{n}"]
        means.append(0.0 if mean is None else float(mean))
        stds.append(1.0 if std is None or std == 0 or math.isnan(std) else float(std))
    return ScalerParams(names, means, stds)


def params_frame(spark: SparkSession, params: ScalerParams) -> DataFrame:
    return local_frame(
        spark, params.rows(), "position int, feature string, mean double, std double"
    )


def read_params(spark: SparkSession, dataset: Dataset, version: int | None = None) -> ScalerParams:
    """The fitted parameters, at a given Delta version of the params table if asked."""
    query = f"SELECT * FROM {params_table(dataset).qualified}"
    if version is not None:
        query += f" VERSION AS OF {int(version)}"
    rows = sorted(spark.sql(query).collect(), key=lambda r: r["position"])
    return ScalerParams(
        [r["feature"] for r in rows], [r["mean"] for r in rows], [r["std"] for r in rows]
    )


def build_features(spark: SparkSession, settings: Settings, dataset: Dataset) -> tuple[int, int]:
    """Write gold.<dataset>_features and the fitted params; return both Delta versions."""
    feats = dataset.feature_spec
    frame = (
        feature_frame(spark, dataset)
        .where(F.col(feats.label).isNotNull())
        .transform(with_split(feats.key, dataset.seed, feats.split))
    )
    params = fit_standard_scaler(frame.where(F.col(SPLIT_COLUMN) == "train"), feats.names)
    gold = frame.transform(with_feature_vector(feats.names)).select(
        feats.key,
        SPLIT_COLUMN,
        F.col(feats.label).cast("int").alias(LABEL_COLUMN),
        FEATURES_COLUMN,
    )
    params_version = overwrite(params_frame(spark, params), settings, params_table(dataset))
    features_version = overwrite(gold, settings, features_table(dataset))
    return features_version, params_version
