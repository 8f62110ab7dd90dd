"""Declared expectations: built-in rules, actions, and config errors found before any data."""

from __future__ import annotations

from typing import Any

import pytest
from chispa import assert_df_equality
from pydantic import ValidationError
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import ConfigError, Dataset
from lakestory.config.models import Expectation, Source
from lakestory.operations.refine import validate_expectations
from lakestory.quality.rules import REASONS, Checks, expression, from_expectation, split

PEOPLE = "id string, age int, email string, country string"
ROWS = [
    ("a", 30, "ann@x.io", "NL"),
    ("b", 17, "bob@x", "NL"),
    ("c", None, "cy@x.io", "XX"),
    ("d", 150, "ann@x.io", None),
]


def rule(spark: SparkSession, **spec: Any) -> Any:
    return from_expectation(spark, Expectation.model_validate({"name": "r", **spec}))


def failing(spark: SparkSession, **spec: Any) -> list[str]:
    df = spark.createDataFrame(ROWS, PEOPLE)
    return sorted(r.id for r in split(df, [rule(spark, **spec)]).rejected.collect())


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"expr": "age >= 18"}, ["b", "c"]),  # a null result fails an expression
        ({"not_null": "age"}, ["c"]),
        ({"unique": "email"}, ["a", "d"]),
        ({"unique": ["email", "country"]}, []),  # d has no country: nulls pass
        ({"in_set": {"column": "country", "values": ["NL", "BE"]}}, ["c"]),
        ({"range": {"column": "age", "min": 18, "max": 120}}, ["b", "d"]),
        ({"range": {"column": "age", "max": 120}}, ["d"]),
        ({"regex": {"column": "email", "pattern": "[^@]+@[^@]+\\.[a-z]+"}}, ["b"]),
        ({"castable": {"column": "email", "type": "int"}}, ["a", "b", "c", "d"]),
    ],
)
def test_built_in_rules(spark: SparkSession, spec: dict[str, Any], expected: list[str]) -> None:
    assert failing(spark, **spec) == expected


def test_exists_in_another_table(spark: SparkSession) -> None:
    spark.sql("CREATE DATABASE IF NOT EXISTS ref")
    spark.sql(
        "CREATE OR REPLACE VIEW ref.countries AS SELECT * FROM VALUES ('NL'), ('BE') AS t(code)"
    )
    spec = {"column": "country", "table": "ref.countries", "key": "code"}
    assert failing(spark, exists_in=spec) == ["c"]


def test_actions_sort_rows_by_their_most_severe_failure(spark: SparkSession) -> None:
    df = spark.createDataFrame(ROWS, PEOPLE)
    rules = [
        rule(spark, expr="age >= 18", action="warn"),
        from_expectation(
            spark,
            Expectation(
                name="known_country", in_set={"column": "country", "values": ["NL"]}, action="drop"
            ),
        ),
        from_expectation(spark, Expectation(name="plausible", range={"column": "age", "max": 120})),
    ]
    parts = split(df, rules)
    assert_df_equality(  # b fails only a warn rule; d (no country) passes the in_set rule
        parts.kept.select("id"),
        spark.createDataFrame([("a",), ("b",)], "id string"),
        ignore_row_order=True,
    )
    assert [(r.id, r[REASONS]) for r in parts.dropped.collect()] == [("c", ["r", "known_country"])]
    assert [(r.id, r[REASONS]) for r in parts.rejected.collect()] == [("d", ["plausible"])]


def test_more_rules_than_one_mask_word_holds(spark: SparkSession) -> None:
    # 130 rules span three bigint masks; rule i fails where n == i (rule 0 drops the row),
    # rule 125 where n is 125 or 1, and rule 129 (drop) on every row but n == 0
    df = spark.createDataFrame([(n,) for n in (0, 1, 62, 63, 64, 125, 126)], "n int")
    rules = [expression(f"r{i}", f"n != {i}") for i in range(129)]
    rules.append(expression("r129", "n == 0", action="drop"))
    rules[0] = expression("r0", "n != 0", action="drop")
    rules[125] = expression("r125", "n != 125 AND n != 1")
    checks = Checks(tuple(rules))
    masked = checks.apply(df)
    reasons = {
        r.n: r.reasons for r in masked.select("n", checks.reasons().alias("reasons")).collect()
    }
    assert reasons == {
        0: ["r0"],
        1: ["r1", "r125", "r129"],
        62: ["r62", "r129"],
        63: ["r63", "r129"],
        64: ["r64", "r129"],
        125: ["r125", "r129"],
        126: ["r126", "r129"],
    }
    fates = masked.select(
        "n", checks.action().alias("action"), checks.dropped().alias("dropped")
    ).collect()
    assert {r.n: (r.action, r.dropped) for r in fates} == {
        0: ("drop", True),
        **{n: ("quarantine", False) for n in (1, 62, 63, 64, 125, 126)},
    }
    counts = masked.agg(*[F.count_if(checks.failed_rule(i)) for i in range(130)]).first()
    assert list(counts) == [1 if i in (0, 1, 62, 63, 64) else 0 for i in range(125)] + [
        2,
        1,
        0,
        0,
        6,
    ]


def test_an_expectation_gives_exactly_one_rule() -> None:
    with pytest.raises(ValidationError, match="exactly one of"):
        Expectation.model_validate({"name": "r", "expr": "x > 1", "not_null": "x"})
    with pytest.raises(ValidationError, match="exactly one of"):
        Expectation.model_validate({"name": "r", "action": "drop"})
    with pytest.raises(ValidationError, match="warn"):
        Expectation.model_validate({"name": "r", "expr": "x > 1", "action": "ignore"})


def test_a_built_in_rule_on_an_undeclared_column_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="'adult': columns not in schema: agee"):
        Source.model_validate(
            {
                "format": "csv",
                "path": "p",
                "schema": {"id": "string", "age": "int"},
                "key": "id",
                "expectations": [{"name": "adult", "range": {"column": "agee", "min": 18}}],
            }
        )


def _dataset(*expectations: dict[str, Any]) -> Dataset:
    source = {
        "format": "csv",
        "path": "p",
        "schema": {"id": "string", "age": "int"},
        "key": "id",
        "expectations": list(expectations),
    }
    return Dataset.model_validate({"name": "people", "seed": 1, "sources": {"rows": source}})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"expr": "agee > 1"}, "agee"),
        ({"expr": "age >"}, "sources.rows.expectations: bad"),
        ({"expr": "age + 1"}, "not boolean"),
        ({"regex": {"column": "id", "pattern": "(unclosed"}}, "bad"),
        ({"exists_in": {"column": "id", "table": "nowhere.nothing"}}, "no table nowhere.nothing"),
    ],
)
def test_a_bad_expectation_names_the_rule_before_any_data_is_read(
    spark: SparkSession, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        validate_expectations(spark, _dataset({"name": "bad", **spec}), "rows")
    assert "expectations: bad" in str(caught.value)


def test_good_expectations_pass_validation(spark: SparkSession) -> None:
    ds = _dataset(
        {"name": "adult", "expr": "age IS NULL OR age >= 18"},
        {"name": "id", "regex": {"column": "id", "pattern": "[a-z]+"}},
    )
    validate_expectations(spark, ds, "rows")
