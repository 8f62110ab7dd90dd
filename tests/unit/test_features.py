from __future__ import annotations

import math

from chispa import assert_df_equality
from pyspark.sql import SparkSession

from lakestory.config.models import SplitFractions
from lakestory.features import fit_standard_scaler, with_feature_vector, with_split

FRACTIONS = SplitFractions(train=0.7, validation=0.15, test=0.15)


def test_split_is_a_function_of_key_and_seed_not_partitioning(spark: SparkSession) -> None:
    df = spark.range(2000).selectExpr("concat('k', id) AS key")
    a = df.repartition(7).transform(with_split("key", 42, FRACTIONS))
    b = df.coalesce(1).transform(with_split("key", 42, FRACTIONS))
    assert_df_equality(a, b, ignore_row_order=True)
    other_seed = df.transform(with_split("key", 43, FRACTIONS))
    assert a.exceptAll(other_seed).count() > 0
    shares = {r.split: r["count"] / 2000 for r in a.groupBy("split").count().collect()}
    assert abs(shares["train"] - 0.7) < 0.05
    assert abs(shares["validation"] - 0.15) < 0.04
    assert abs(shares["test"] - 0.15) < 0.04


def test_scaler_ignores_missing_values_and_never_divides_by_zero(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [(1.0, 5.0, None), (3.0, 5.0, None), (None, 5.0, None)], "a double, b double, c double"
    )
    params = fit_standard_scaler(df, ["a", "b", "c"])
    assert params.means == [2.0, 5.0, 0.0]
    assert params.stds == [1.0, 1.0, 1.0]  # a: population std of (1, 3); b, c: no spread


def test_feature_vector_keeps_order_and_marks_missing_as_nan(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1, None), (2, 7.5)], "a int, b double")
    rows = df.transform(with_feature_vector(["b", "a"])).orderBy("a").collect()
    assert math.isnan(rows[0].features[0]) and rows[0].features[1] == 1.0
    assert rows[1].features == [7.5, 2.0]
