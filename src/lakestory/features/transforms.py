"""Fitted feature transforms: imputation, scaling, encoding and PCA, fitted on train only.

The gold features table holds each row's *raw* input vector: numeric values as they are, a
categorical value as the index of its category (from the fitted categories), NaN for a missing
value or an unknown category. Everything else, imputation, scaling, one-hot and the PCA
projection, is a fixed function of that vector and of the fitted `FeatureParams`: the model's
first layer (`lakestory.training.model.Preprocess`) applies it in training, its ONNX graph in
scoring, and `prepared` here (Spark) where a fit needs the prepared train vectors (PCA). The
parameters are plain JSON, stored with a version in `gold.<dataset>_feature_params` and logged
with every model trained on them.

Fitting takes two aggregate jobs over the train split (fill values and categories, then the
scalers' statistics of the imputed values, as a pipeline imputing before scaling sees them),
and for PCA a mean and Spark ML's covariance-based PCA of the prepared vectors. Exact
statistics throughout (`median`, `percentile`), so that a fit is a function of the data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakestory import columns
from lakestory.config.models import Features, Transform
from lakestory.errors import StageError

FEATURES_COLUMN = "features"
Kind = Literal["numeric", "onehot", "ordinal"]
Scaling = Literal["standard", "minmax", "robust", "none"]


@dataclass(frozen=True)
class Input:
    """One element of the raw input vector and how it is prepared.

    `fill` replaces a missing value (a category's index for a categorical input); the value is
    then mapped to `(value - center) / scale` (categoricals: 0 and 1, so unchanged) and, for
    `onehot`, spread over one 0/1 output per category.
    """

    name: str
    kind: Kind
    fill: float
    center: float = 0.0
    scale: float = 1.0
    categories: tuple[str, ...] = ()

    @property
    def outputs(self) -> list[str]:
        if self.kind == "onehot":
            return [f"{self.name}={c}" for c in self.categories]
        return [self.name]


@dataclass(frozen=True)
class Projection:
    """PCA: prepared vector -> (vector - mean) @ components.T, `k` components kept of the
    full curve `explained` (each component's share of the variance, largest first)."""

    mean: list[float]
    components: list[list[float]]
    explained: list[float]

    @property
    def k(self) -> int:
        return len(self.components)


@dataclass(frozen=True)
class FeatureParams:
    inputs: tuple[Input, ...]
    pca: Projection | None = None
    version: int | None = field(default=None, compare=False)

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def prepared_names(self) -> list[str]:
        """The prepared vector's elements, before any projection."""
        return [name for i in self.inputs for name in i.outputs]

    @property
    def width(self) -> int:
        """The model's input width after preparation (and projection)."""
        return self.pca.k if self.pca else len(self.prepared_names)

    def to_json(self) -> str:
        body: dict[str, Any] = {"inputs": [asdict(i) for i in self.inputs]}
        body["pca"] = asdict(self.pca) if self.pca else None
        return json.dumps(body, sort_keys=True)

    @staticmethod
    def from_json(text: str, version: int | None = None) -> FeatureParams:
        body = json.loads(text)
        inputs = tuple(Input(**{**i, "categories": tuple(i["categories"])}) for i in body["inputs"])
        pca = Projection(**body["pca"]) if body.get("pca") else None
        return FeatureParams(inputs, pca, version)

    def with_version(self, version: int) -> FeatureParams:
        return FeatureParams(self.inputs, self.pca, version)


def _categorical(t: Transform) -> bool:
    return t.encode is not None


def fit(train: DataFrame, spec: Features) -> FeatureParams:
    """Fit every column's transform on `train` (feature columns by name), then PCA if asked."""
    names = spec.names
    fills, categories = _fit_fills(train, spec)
    inputs: list[Input] = []
    imputed = train.select(
        *[
            F.coalesce(F.col(n).cast("double"), F.lit(fills[n])).alias(n)
            for n in names
            if not _categorical(spec.transform(n))
        ]
    )
    stats = _fit_scalers(imputed, spec)
    for n in names:
        t = spec.transform(n)
        if _categorical(t):
            cats = categories[n]
            if str(fills[n]) not in cats:
                raise ValueError(
                    f"feature {n!r}: the fill value is not one of the train split's categories"
                )
            assert t.encode is not None
            inputs.append(
                Input(n, t.encode, float(cats.index(str(fills[n]))), categories=tuple(cats))
            )
        else:
            center, scale = stats[n]
            inputs.append(Input(n, "numeric", float(fills[n]), center, scale))
    params = FeatureParams(tuple(inputs))
    if spec.pca is None:
        return params
    vectors = train.transform(with_feature_vector(params))
    return FeatureParams(params.inputs, fit_pca(vectors, params, spec.pca.variance, spec.pca.k))


def _fit_fills(train: DataFrame, spec: Features) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Each column's fill value and each categorical column's sorted categories: one job."""
    aggs: list[Column] = []
    for n in spec.names:
        t = spec.transform(n)
        value = F.col(n).cast("string") if _categorical(t) else F.col(n).cast("double")
        how = t.imputation
        if how == "mean":
            aggs.append(F.avg(value).alias(f"fill_{n}"))
        elif how == "median":
            aggs.append(F.median(value).alias(f"fill_{n}"))
        elif how == "most_frequent":
            aggs.append(F.mode(value, deterministic=True).alias(f"fill_{n}"))
        if _categorical(t):
            aggs.append(F.array_sort(F.collect_set(value)).alias(f"cats_{n}"))
    row = train.agg(*aggs).first() if aggs else None
    fills: dict[str, Any] = {}
    categories: dict[str, list[str]] = {}
    for n in spec.names:
        t = spec.transform(n)
        if t.imputation == "constant":
            fills[n] = t.fill_value if _categorical(t) else float(t.fill_value)  # type: ignore[arg-type]
        else:
            assert row is not None
            value = row[f"fill_{n}"]
            fills[n] = value if value is not None else ("" if _categorical(t) else 0.0)
        if _categorical(t):
            assert row is not None
            categories[n] = list(row[f"cats_{n}"] or [])
            if not categories[n]:
                raise StageError(
                    f"feature {n!r}: no train row has a value of it to encode; fix its values "
                    "or leave it out of features.columns"
                )
    return fills, categories


def _fit_scalers(imputed: DataFrame, spec: Features) -> dict[str, tuple[float, float]]:
    """(center, scale) of each numeric column of `imputed`: one job. A column with no spread
    gets scale 1, so that scaling never divides by zero."""
    aggs: list[Column] = []
    methods: dict[str, Scaling] = {}
    for n in imputed.columns:
        method = methods[n] = spec.transform(n).scale
        c = F.col(n)
        if method == "standard":
            aggs += [F.avg(c).alias(f"c_{n}"), F.stddev_pop(c).alias(f"s_{n}")]
        elif method == "minmax":
            aggs += [F.min(c).alias(f"c_{n}"), (F.max(c) - F.min(c)).alias(f"s_{n}")]
        elif method == "robust":
            quartiles = F.percentile(c, F.array(F.lit(0.25), F.lit(0.5), F.lit(0.75)))
            aggs.append(quartiles.alias(f"q_{n}"))
    row = imputed.agg(*aggs).first() if aggs else None
    stats: dict[str, tuple[float, float]] = {}
    for n, method in methods.items():
        if method == "none":
            stats[n] = (0.0, 1.0)
            continue
        assert row is not None
        if method == "robust":
            q1, median, q3 = row[f"q_{n}"] or (0.0, 0.0, 0.0)
            center, spread = median, q3 - q1
        else:
            center, spread = row[f"c_{n}"], row[f"s_{n}"]
        center = 0.0 if center is None else float(center)
        good = spread is not None and spread > 0 and np.isfinite(spread)
        stats[n] = (center, float(spread) if good else 1.0)
    return stats


def encoded(params: FeatureParams) -> list[Column]:
    """The raw input vector's elements, from the feature columns (by name): numbers as doubles,
    a category as its index; NaN where missing or (categories) not seen in train."""
    values: list[Column] = []
    for i in params.inputs:
        if i.kind == "numeric":
            value = F.col(i.name).cast("double")
        else:
            # index + 1 in the array, 0 when absent (categories come from the params, not
            # from the data: they are the train split's values of a non-personal column)
            found = F.array_position(
                F.array(*[F.lit(c) for c in i.categories]), F.col(i.name).cast("string")
            )
            value = F.when(found > 0, (found - 1).cast("double"))
        values.append(F.coalesce(value, F.lit(float("nan"))))
    return values


def with_feature_vector(params: FeatureParams) -> columns.Transform:
    """Add `features`, the raw input vector (array<double>) in the order of `params.inputs`."""

    def _apply(df: DataFrame) -> DataFrame:
        return df.withColumn(FEATURES_COLUMN, F.array(*encoded(params)))

    return _apply


def prepared(params: FeatureParams, vector: Column) -> list[Column]:
    """What `Preprocess` computes before the projection, in Spark: the prepared elements of a
    raw input vector column."""
    out: list[Column] = []
    for position, i in enumerate(params.inputs):
        x = vector[position]
        x = F.when(F.isnan(x), F.lit(i.fill)).otherwise(x)
        if i.kind == "onehot":
            out += [(x == float(k)).cast("double") for k in range(len(i.categories))]
        else:
            out.append((x - F.lit(i.center)) / F.lit(i.scale))
    return out


def fit_pca(
    train: DataFrame, params: FeatureParams, variance: float | None, k: int | None
) -> Projection:
    """PCA of the prepared train vectors (`train` has the raw vector in `features`): mean,
    components and the explained-variance curve.

    Spark ML's PCA (the covariance, by a distributed pass; its eigenvectors on the driver)
    fitted with every component, then cut to `k` or to the fewest components whose shares
    add up to `variance`.
    """
    from pyspark.ml.feature import PCA
    from pyspark.ml.functions import array_to_vector
    from pyspark.ml.stat import Summarizer

    vectors = train.select(
        array_to_vector(F.array(*prepared(params, F.col(FEATURES_COLUMN)))).alias("v")
    )
    width = len(params.prepared_names)
    if k is not None and k > width:
        raise ValueError(f"pca.k is {k}, but the prepared vector has only {width} elements")
    mean = vectors.select(Summarizer.mean(F.col("v")).alias("m")).first()
    assert mean is not None
    model = PCA(k=width, inputCol="v").fit(vectors)
    explained = [float(e) for e in model.explainedVariance.toArray()]
    components = model.pc.toArray().T  # width x width, one component a row
    if k is None:
        assert variance is not None
        cumulative = np.cumsum(explained)
        k = int(np.searchsorted(cumulative, variance - 1e-12) + 1)
        k = min(k, width)
    return Projection(
        mean=[float(m) for m in mean["m"].toArray()],
        components=[[float(c) for c in row] for row in components[:k]],
        explained=explained,
    )
