from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pytest
import torch
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.config.models import Features, Split
from lakestory.errors import StageError
from lakestory.features import (
    FEATURES_COLUMN,
    FeatureParams,
    fit,
    prepared,
    with_feature_vector,
    with_split,
)
from lakestory.training import Preprocess

FRACTIONS = Split(train=0.7, validation=0.15, test=0.15)


def _features(**spec: object) -> Features:
    return Features.model_validate(
        {"source": "s", "key": "key", "label": "label", "split": FRACTIONS.model_dump(), **spec}
    )


def _splits(df: DataFrame) -> dict[str, str]:
    return {r.key: r.split for r in df.select("key", "split").distinct().collect()}


def test_split_is_a_function_of_key_and_seed_not_partitioning_or_session(
    spark: SparkSession,
) -> None:
    df = spark.range(2000).selectExpr("concat('k', id) AS key")
    a = df.repartition(7).transform(with_split("key", 42, FRACTIONS))
    b = df.coalesce(1).transform(with_split("key", 42, FRACTIONS))
    assert_df_equality(a, b, ignore_row_order=True)
    other = spark.newSession()  # its own SQL conf, temp views and functions
    other.conf.set("spark.sql.shuffle.partitions", "3")
    fresh = other.range(2000).selectExpr("concat('k', id) AS key")
    assert_df_equality(a, fresh.transform(with_split("key", 42, FRACTIONS)), ignore_row_order=True)
    other_seed = df.transform(with_split("key", 43, FRACTIONS))
    assert a.exceptAll(other_seed).count() > 0
    shares = {r.split: r["count"] / 2000 for r in a.groupBy("split").count().collect()}
    assert abs(shares["train"] - 0.7) < 0.05
    assert abs(shares["validation"] - 0.15) < 0.04
    assert abs(shares["test"] - 0.15) < 0.04


def test_stratified_split_gives_each_label_the_fractions_and_keeps_keys_whole(
    spark: SparkSession,
) -> None:
    # 1000 keys, two rows each; a tenth of the keys are positive
    df = spark.range(2000).selectExpr(
        "concat('k', id % 1000) AS key", "CAST(id % 1000 < 100 AS int) AS label"
    )
    stratified = Split(train=0.6, validation=0.2, test=0.2, stratify=True)
    out = df.repartition(5).transform(with_split("key", 7, stratified, "label"))
    again = df.coalesce(1).transform(with_split("key", 7, stratified, "label"))
    assert_df_equality(out, again, ignore_row_order=True)
    assert out.groupBy("key").agg(F.countDistinct("split").alias("n")).where("n > 1").count() == 0
    keys = out.select("key", "label", "split").distinct()
    counts = {
        (r.label, r.split): r["count"] for r in keys.groupBy("label", "split").count().collect()
    }
    assert counts == {
        (1, "train"): 60, (1, "validation"): 20, (1, "test"): 20,
        (0, "train"): 540, (0, "validation"): 180, (0, "test"): 180,
    }  # fmt: skip


def test_time_split_puts_the_latest_keys_in_test(spark: SparkSession) -> None:
    start = datetime(2024, 1, 1)
    rows = [(f"k{i}", start + timedelta(days=i)) for i in range(100)]
    rows += [("k0", start + timedelta(days=500)), ("nodate", None)]  # k0's latest row is last
    df = spark.createDataFrame(rows, "key string, at timestamp")
    by_time = Split(train=0.7, validation=0.1, test=0.2, by="time", time_column="at")
    splits = _splits(df.repartition(3).transform(with_split("key", 1, by_time)))
    assert splits["k0"] == "test" and splits["nodate"] == "train"
    order = [splits[f"k{i}"] for i in range(1, 100)]
    assert order == sorted(order, key=["train", "validation", "test"].index)
    assert order.count("train") == 70 and order.count("validation") == 10


def test_split_config_is_checked() -> None:
    with pytest.raises(ValueError, match="time_column"):
        Split(train=0.8, validation=0.1, test=0.1, by="time")
    with pytest.raises(ValueError, match="must be 1"):
        Split(train=0.8, validation=0.2, test=0.1)


def _train(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(
        [
            (1.0, 10.0, 5.0, "red", "s"),
            (3.0, 20.0, None, "blue", "m"),
            (None, 30.0, 7.0, "red", None),
            (8.0, 1000.0, 9.0, None, "l"),
        ],
        "a double, b double, c double, colour string, size string",
    )


def test_transforms_are_fitted_on_train_after_imputation(spark: SparkSession) -> None:
    spec = _features(
        columns=["a", "b", "c", "colour", "size"],
        transforms={
            "a": {"impute": "median", "scale": "minmax"},
            "b": {"scale": "robust"},
            "c": {"impute": "constant", "fill_value": 0, "scale": "none"},
            "colour": {"encode": "onehot"},
            "size": {"encode": "ordinal", "impute": "constant", "fill_value": "m"},
        },
    )
    params = fit(_train(spark), spec)
    a, b, c, colour, size = params.inputs
    assert (a.kind, a.fill, a.center, a.scale) == ("numeric", 3.0, 1.0, 7.0)  # 1, 3, [3], 8
    q1, median, q3 = np.percentile([10.0, 20.0, 30.0, 1000.0], [25, 50, 75])
    assert (b.fill, b.center, b.scale) == (265.0, median, q3 - q1)  # mean-imputed: no NaN here
    assert (c.fill, c.center, c.scale) == (0.0, 0.0, 1.0)
    assert colour.categories == ("blue", "red") and colour.fill == 1.0  # most frequent: red
    assert size.categories == ("l", "m", "s") and size.fill == 1.0
    assert params.prepared_names == ["a", "b", "c", "colour=blue", "colour=red", "size"]
    assert FeatureParams.from_json(params.to_json()) == params
    json.loads(params.to_json())  # plain JSON


def test_standard_scaler_never_divides_by_zero(spark: SparkSession) -> None:
    df = spark.createDataFrame([(5.0, None), (5.0, None)], "flat double, empty double")
    params = fit(df, _features(columns=["flat", "empty"]))
    assert [(i.fill, i.center, i.scale) for i in params.inputs] == [
        (5.0, 5.0, 1.0),
        (0.0, 0.0, 1.0),
    ]


def test_a_category_with_no_value_in_train_says_what_to_change(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1.0, None), (2.0, None)], "a double, colour string")
    spec = _features(columns=["a", "colour"], transforms={"colour": {"encode": "onehot"}})
    with pytest.raises(StageError, match="feature 'colour': no train row has a value of it"):
        fit(df, spec)


def test_feature_vector_encodes_categories_and_marks_missing_or_unseen_as_nan(
    spark: SparkSession,
) -> None:
    spec = _features(columns=["a", "colour"], transforms={"colour": {"encode": "onehot"}})
    params = fit(_train(spark), spec)
    scored = spark.createDataFrame(
        [(2.0, "red"), (None, "green"), (4.0, None)], "a double, colour string"
    )
    vectors = [r.features for r in scored.transform(with_feature_vector(params)).collect()]
    assert vectors[0] == [2.0, 1.0]
    assert math.isnan(vectors[1][0]) and math.isnan(vectors[1][1])  # green: never in train
    assert vectors[2][0] == 4.0 and math.isnan(vectors[2][1])


def _preprocess_in_torch(params: FeatureParams, vectors: list[list[float]]) -> np.ndarray:
    with torch.no_grad():
        return Preprocess(params)(torch.tensor(vectors, dtype=torch.float32)).numpy()


@pytest.mark.parametrize("pca", [None, {"variance": 0.9}, {"k": 2}])
def test_spark_and_torch_prepare_a_vector_alike(spark: SparkSession, pca: object) -> None:
    spec = _features(
        columns=["a", "b", "c", "colour", "size"],
        transforms={"colour": {"encode": "onehot"}, "size": {"encode": "ordinal"}},
        pca=pca,
    )
    train = _train(spark)
    params = fit(train, spec)
    vectors = train.transform(with_feature_vector(params))
    in_spark = np.array(
        vectors.select(F.array(*prepared(params, F.col(FEATURES_COLUMN))).alias("p"))
        .toPandas()["p"]
        .tolist()
    )
    raw = [r.features for r in vectors.select(FEATURES_COLUMN).collect()]
    in_torch = _preprocess_in_torch(params, raw)
    if params.pca is None:
        np.testing.assert_allclose(in_torch, in_spark, rtol=1e-5, atol=1e-5)
        return
    mean, components = np.array(params.pca.mean), np.array(params.pca.components)
    np.testing.assert_allclose(in_torch, (in_spark - mean) @ components.T, rtol=1e-4, atol=1e-4)


def test_pca_keeps_the_fewest_components_that_reach_the_target(spark: SparkSession) -> None:
    rng = np.random.default_rng(3)
    latent = rng.normal(size=(400, 2))
    mixed = latent @ rng.normal(size=(2, 5)) + rng.normal(scale=0.05, size=(400, 5))
    df = spark.createDataFrame(
        [tuple(map(float, row)) for row in mixed], [f"x{i}" for i in range(5)]
    )
    spec = _features(
        columns=[f"x{i}" for i in range(5)],
        transforms={f"x{i}": {"scale": "none"} for i in range(5)},
        pca={"variance": 0.95},
    )
    params = fit(df, spec)
    assert params.pca is not None and params.pca.k == 2 and params.width == 2
    # against numpy: eigenvalues of the sample covariance, largest first
    eigen = np.linalg.eigvalsh(np.cov(mixed, rowvar=False))[::-1]
    np.testing.assert_allclose(params.pca.explained, eigen / eigen.sum(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(params.pca.mean, mixed.mean(axis=0), rtol=1e-9)
    top = np.linalg.eigh(np.cov(mixed, rowvar=False))[1][:, ::-1][:, :2].T
    for got, want in zip(params.pca.components, top, strict=True):  # up to sign
        assert abs(abs(float(np.dot(got, want))) - 1.0) < 1e-6
