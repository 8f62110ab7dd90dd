from __future__ import annotations

import hashlib
import hmac

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config.models import Outlier, Source
from lakestory.io.upsert import newer
from lakestory.privacy.pseudonyms import with_pseudonyms
from lakestory.quality import (
    REASONS,
    count_duplicates,
    expression,
    keep_latest_per_key,
    not_null,
    split,
)
from lakestory.quality.casting import with_declared_types
from lakestory.quality.outliers import OUTLIERS, fences, flag_and_clip, quarantine_rules
from lakestory.quality.source_rules import rules_for


def test_split_names_every_failed_rule(spark: SparkSession) -> None:
    df = spark.createDataFrame([("a", 5), (None, 50), ("c", 500)], "id string, score int")
    rules = [not_null("id"), expression("score_small", "score < 100")]
    parts = split(df, rules)
    assert_df_equality(parts.kept, spark.createDataFrame([("a", 5)], "id string, score int"))
    reasons = {r.score: r[REASONS] for r in parts.rejected.collect()}
    assert reasons == {50: ["not_null:id"], 500: ["score_small"]}


def test_a_null_condition_fails_the_rule(spark: SparkSession) -> None:
    df = spark.createDataFrame([(None,)], "score int")
    parts = split(df, [expression("score_small", "score < 100")])
    assert parts.kept.count() == 0
    assert parts.rejected.first()[REASONS] == ["score_small"]


def test_exact_and_key_duplicates_are_counted_apart(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            ("a", 1, "h1"),
            ("a", 1, "h1"),  # exact copy
            ("a", 1, "h1"),  # exact copy
            ("a", 2, "h2"),  # another version of a
            ("b", 3, "h3"),
            ("c", 1, "h4"),
            ("c", 2, "h5"),  # another version of c, sorted between c's two copies
            ("c", 3, "h4"),  # an exact copy landed later (v standing for the file's time)
        ],
        "id string, v int, _row_hash string",
    )
    counts = count_duplicates(df, "id", ["v", "_row_hash"])
    assert (counts.rows, counts.exact, counts.key, counts.keys) == (8, 3, 2, 3)
    assert counts.collapsed == counts.rows - counts.keys


def test_exact_copies_collapse_with_the_key_deterministically(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("a", 1, "2024-01-01", "h1"), ("a", 1, "2024-01-01", "h1"), ("a", 2, "2024-01-01", "h2")],
        "id string, v int, updated string, _row_hash string",
    )
    for parts in (1, 3):
        kept = df.repartition(parts).transform(keep_latest_per_key("id", ["updated", "_row_hash"]))
        assert [(r.v, r._row_hash) for r in kept.collect()] == [(2, "h2")]


def test_latest_record_per_key_wins(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("a", 1, "2024-01-01"), ("a", 2, "2024-03-01"), ("b", 3, None), ("b", 4, "2024-01-01")],
        "id string, v int, updated string",
    )
    actual = df.transform(keep_latest_per_key("id", ["updated"]))
    expected = spark.createDataFrame(
        [("a", 2, "2024-03-01"), ("b", 4, "2024-01-01")], "id string, v int, updated string"
    )
    assert_df_equality(actual, expected, ignore_row_order=True)


SOURCE = Source.model_validate(
    {
        "format": "csv",
        "path": "x",
        "schema": {"id": "string", "email": "string", "age": "int", "label": "int"},
        "key": "id",
        "required": ["id", "label"],
        "label": {"column": "label", "allowed": [0, 1]},
        "expectations": [{"name": "adult", "expr": "age IS NULL OR age >= 18"}],
        "personal": {"tokenize": {"id": "id"}, "drop": ["email"]},
    }
)


def test_bronze_text_is_cast_and_checked(spark: SparkSession) -> None:
    bronze = spark.createDataFrame(
        [
            ("c1", "a@b.io", "41", "1", None, None),
            ("c2", "x@y.io", "forty", "0", None, None),
            ("c3", "z@y.io", "12", "1", None, None),
            ("c4", "w@y.io", "", "maybe", None, None),
            ("c5", "v@y.io", "30", "", None, None),
            ("", "u@y.io", "30", "0", None, None),
            ("c7", None, None, None, "c7,broken", None),
            ("c8", "t\u00e9@y.io", "30", "1", None, "bytes not valid UTF-8 were replaced"),
            ("c9", "s@y.io", " 42\t", " 1 ", None, None),  # spaces around a number are no error
            ("c10", "r@y.io", " \t", "0", None, None),  # blank is missing, not malformed
        ],
        "id string, email string, age string, label string, _corrupt_record string, "
        "_decode_error string",
    )
    typed = bronze.transform(with_declared_types(SOURCE))
    parts = split(typed, rules_for(SOURCE))
    assert [(r.id, r.age, r.label) for r in parts.kept.collect()] == [
        ("c1", 41, 1),
        ("c9", 42, 1),
        ("c10", None, 0),
    ]
    reasons = {r.id: r[REASONS] for r in parts.rejected.collect()}
    assert reasons == {
        "c2": ["castable:age:int"],
        "c3": ["adult"],
        "c4": ["label_invalid"],
        "c5": ["label_missing"],
        "": ["not_null:id"],
        "c7": ["malformed_record", "label_missing"],
        "c8": ["undecodable_bytes"],
    }


def test_pseudonyms_leave_no_direct_identifier(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("c1", "a@b.io", 41, 1)], "id string, email string, age int, label int"
    )
    key = b"k" * 32
    token = hmac.new(key, b"c1", hashlib.sha256).hexdigest()
    vault = spark.createDataFrame(
        [(token, "0b7a-4f1e", None)], "token string, id string, minted_at timestamp"
    )
    out = df.transform(with_pseudonyms(SOURCE, key, vault))
    assert out.columns == ["age", "label", "id_pseudonym"]
    row = out.first()
    assert row is not None and row.id_pseudonym == "0b7a-4f1e"
    assert "c1" not in str(row) and token not in str(row)


def test_newer_orders_like_latest_wins_with_null_oldest(spark: SparkSession) -> None:
    cases = [  # (source o, source m, target o, target m, source is newer)
        (2, 1, 1, 9, True),
        (1, 9, 2, 1, False),
        (1, 2, 1, 1, True),  # a tie on o goes to m
        (1, 1, 1, 1, False),  # the same: keep the target
        (1, 1, None, 5, True),  # a value is newer than no value
        (None, 5, 1, 1, False),
        (None, 2, None, 1, True),
    ]
    rows = spark.createDataFrame(cases, "so int, sm int, to int, tm int, expected boolean")
    s = rows.selectExpr("so AS o", "sm AS m", "monotonically_increasing_id() AS i").alias("s")
    t = rows.selectExpr("to AS o", "tm AS m", "expected", "monotonically_increasing_id() AS i")
    joined = s.join(t.alias("t"), F.col("s.i") == F.col("t.i"))
    got = joined.select(F.expr(newer(["o", "m"])).alias("newer"), "t.expected").collect()
    assert [r.newer for r in got] == [r.expected for r in got] == [c[4] for c in cases]


def test_outlier_fences_from_quartiles_and_median_absolute_deviation(spark: SparkSession) -> None:
    df = spark.createDataFrame([(v, v) for v in [1, 2, 3, 4, 5, 100]], "a int, b int")
    spec = {"a": Outlier(method="iqr"), "b": Outlier(method="mad", action="clip")}
    iqr, mad = fences(df, spec)
    assert (iqr.low, iqr.high) == (2 - 1.5 * 3, 5 + 1.5 * 3)  # Q1 2, Q3 5
    spread = 3.5 * 1 / 0.6745  # median 3, MAD 1
    assert mad.low == pytest.approx(3 - spread) and mad.high == pytest.approx(3 + spread)

    out = df.withColumns(dict(flag_and_clip([iqr, mad], {"a": "int", "b": "int"})))
    # a is only flagged in OUTLIERS: only a is a flag column; b is clipped to the integers within
    rows = sorted((r.a, r.b, r[OUTLIERS]) for r in out.collect())
    assert rows[-1] == (100, 8, ["a"])
    assert rows[0] == (1, 1, [])


def test_a_column_without_spread_gets_no_fences(spark: SparkSession) -> None:
    df = spark.createDataFrame([(5,), (5,), (5,), (9,)], "a int")
    (fence,) = fences(df, {"a": Outlier(action="quarantine")})
    assert fence.low is None and fence.high is None  # MAD 0: every 9 would be "infinitely" far
    (rule,) = quarantine_rules([fence])
    assert df.where(~rule.condition).count() == 0
