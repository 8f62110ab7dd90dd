"""Profile statistics on tiny in-memory frames, checked against the same figures computed in
Python from the rows; which columns a profile masks; drift between two profiles."""

from __future__ import annotations

import json
import statistics
from collections import Counter

import pytest
from pyspark.sql import SparkSession

from lakestory.config import Dataset
from lakestory.config.models import Outlier
from lakestory.io import TableRef
from lakestory.profiling import TableSpec, build_profile, parse_table, resolve
from lakestory.profiling.drift import compare
from lakestory.profiling.report import render
from lakestory.profiling.stats import BINS, IQR_K, TOP_K

ROWS = [
    # id, age, score, city, churned
    ("a01", 31, 1.5, "Utrecht", 0),
    ("a02", 45, 2.5, "Utrecht", 1),
    ("a03", None, 3.0, "Delft", 0),
    ("a04", 52, 2.0, None, 0),
    ("a05", 38, 250.0, "Delft", 1),
    ("a05", 38, 250.0, "Delft", 1),  # an exact duplicate
    ("a06", 29, 2.2, "Utrecht", None),
    ("a07", 61, 1.8, "Delft", 0),
    ("a08", 23, 2.4, "Leiden", 0),
    ("a09", 34, 2.1, "Utrecht", 1),
    ("a09", 35, 2.1, "Utrecht", 1),  # a key duplicate
    ("a10", 47, 1.9, "Leiden", 0),
    ("a11", 40, 2.6, "Delft", 0),
]
SCHEMA = "id string, age int, score double, city string, churned int"


@pytest.fixture(scope="module")
def profiled(spark: SparkSession) -> dict:
    df = spark.createDataFrame(ROWS, SCHEMA)
    spec = TableSpec(TableRef("silver", "t_people"), label="churned", key="id")
    profile, samples = build_profile(spark, df, spec)
    assert samples == []
    return profile


def test_counts_nulls_and_moments_match_the_rows(profiled: dict) -> None:
    assert profiled["rows"] == len(ROWS)
    ages = [r[1] for r in ROWS if r[1] is not None]
    age = profiled["columns"]["age"]
    assert age["nulls"] == len(ROWS) - len(ages)
    assert age["null_rate"] == pytest.approx(age["nulls"] / len(ROWS))
    assert (age["min"], age["max"]) == (min(ages), max(ages))
    assert age["mean"] == pytest.approx(statistics.mean(ages))
    assert age["std"] == pytest.approx(statistics.stdev(ages))
    assert age["quantiles"]["0.5"] in ages
    city = profiled["columns"]["city"]
    cities = [r[3] for r in ROWS if r[3] is not None]
    # HyperLogLog++ at Spark's default 5% error: a small count may be off by one
    assert abs(city["distinct"] - len(set(cities))) <= 1
    assert city["length"]["max"] == max(len(c) for c in cities)


def test_histograms_hold_every_value_once(profiled: dict) -> None:
    for name in ("age", "score"):
        present = len(ROWS) - profiled["columns"][name]["nulls"]
        hist = profiled["histograms"][name]
        assert sum(hist["counts"]) == present
        assert len(hist["edges"]) == len(hist["counts"]) + 1
    assert len(profiled["histograms"]["score"]["counts"]) == BINS
    # an integer column with few values gets a bucket per value
    churned = profiled["histograms"]["churned"]
    assert churned["counts"] == [
        sum(1 for r in ROWS if r[4] == 0),
        sum(1 for r in ROWS if r[4] == 1),
    ]


def test_top_values_label_balance_and_duplicates(profiled: dict) -> None:
    cities = Counter(r[3] for r in ROWS if r[3] is not None)
    top = profiled["top_values"]["city"]
    assert [(t["value"], t["count"]) for t in top] == sorted(
        cities.items(), key=lambda kv: (-kv[1], kv[0])
    )[:TOP_K]
    labels = Counter(str(r[4]) for r in ROWS if r[4] is not None)
    assert profiled["label"]["counts"] == dict(sorted(labels.items()))
    assert profiled["label"]["missing"] == sum(1 for r in ROWS if r[4] is None)
    assert profiled["duplicates"]["exact"] == len(ROWS) - len(set(ROWS))
    assert profiled["duplicates"]["key"] == len(ROWS) - len({r[0] for r in ROWS})


def test_outliers_outside_tukeys_fences(profiled: dict) -> None:
    score = profiled["outliers"]["score"]
    q = profiled["columns"]["score"]["quantiles"]
    iqr = q["0.75"] - q["0.25"]
    assert score["method"] == "iqr"
    assert score["low"] == pytest.approx(q["0.25"] - IQR_K * iqr)
    values = [r[2] for r in ROWS]
    assert score["rows"] == sum(1 for v in values if v < score["low"] or v > score["high"])
    assert score["rows"] >= 2  # the two 250.0 rows


def test_correlations_are_symmetric_with_a_unit_diagonal(profiled: dict) -> None:
    corr = profiled["correlations"]
    names = corr["columns"]
    assert {"age", "score", "churned"} <= set(names)
    matrix = corr["matrix"]
    for i in range(len(names)):
        assert matrix[i][i] == 1.0
        for j in range(len(names)):
            assert matrix[i][j] == matrix[j][i]
            assert matrix[i][j] is None or -1.0 <= matrix[i][j] <= 1.0


def test_the_profile_is_json_and_renders(profiled: dict) -> None:
    profile = {
        **profiled,
        "table": "silver.t_people",
        "version": 0,
        "profiled_at": "now",
        "previous": None,
    }
    text = json.dumps(profile, allow_nan=False)
    page = render(json.loads(text))
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    for name in profile["columns"]:
        assert f"id='col-{name}'" in page


def test_constant_and_unique_columns(spark: SparkSession) -> None:
    rows = [(f"k{i:03d}", 1, float(i % 7)) for i in range(3 * TOP_K)]
    df = spark.createDataFrame(rows, "key string, flat int, x double")
    profile, _ = build_profile(spark, df, TableSpec(TableRef("silver", "t_flat")))
    assert profile["correlations"]["columns"] == []  # a constant column correlates with nothing
    assert profile["columns"]["flat"]["std"] == 0.0
    assert profile["top_values"]["flat"] == [{"value": "1", "count": len(rows)}]
    assert "key" not in profile["top_values"]  # every key is distinct: no top values


def test_an_empty_table_has_a_profile(spark: SparkSession) -> None:
    df = spark.createDataFrame([], SCHEMA)
    spec = TableSpec(TableRef("silver", "t_empty"), label="churned", key="id")
    profile, _ = build_profile(spark, df, spec)
    assert profile["rows"] == 0
    assert profile["duplicates"] == {"exact": 0, "key_column": "id", "key": 0}
    assert profile["histograms"] == {} and profile["label"]["counts"] == {}
    json.dumps(profile, allow_nan=False)


def dirty_people() -> Dataset:
    source = {
        "format": "csv",
        "path": "t/people",
        "schema": {"id": "string", "name": "string", "email": "string", "balance": "double"},
        "key": "id",
        "personal": {"tokenize": {"id": "id", "email": "email"}, "drop": ["name"]},
        "outliers": {"balance": {"method": "mad"}},
    }
    return Dataset.model_validate({"name": "t", "seed": 1, "sources": {"people": source}})


def test_raw_tables_mask_the_personal_columns_silver_uses_its_names() -> None:
    ds = dirty_people()
    bronze = resolve(parse_table("bronze.t_people"), [ds])
    assert {"id", "name", "email", "_corrupt_record", "_rescued"} <= bronze.masked
    assert bronze.key == "id"
    silver = resolve(parse_table("silver.t_people"), [ds])
    assert silver.masked == frozenset()
    assert silver.key == "id_pseudonym"
    assert silver.outliers == {"balance": Outlier(method="mad")}
    unknown = resolve(parse_table("quarantine.other_things"), [ds])
    assert unknown.dataset is None and unknown.mask_text


def test_masked_values_never_reach_the_profile(spark: SparkSession) -> None:
    rows = [("person-0001", "Ann Ames", "ann@example.org", 10.0)] * 3 + [
        ("person-0002", "Bob Berg", "bob@example.org", 20.0)
    ]
    df = spark.createDataFrame(rows, "id string, name string, email string, balance double")
    spec = resolve(parse_table("bronze.t_people"), [dirty_people()])
    profile, _ = build_profile(spark, df, spec)
    text = json.dumps(profile) + render(
        {**profile, "table": "bronze.t_people", "version": 0, "profiled_at": "now"}
    )
    for raw in ("Ann Ames", "ann@example.org", "Bob Berg", "person-0001"):
        assert raw not in text
    name = profile["columns"]["name"]
    assert name["masked"] and "min" not in name
    assert [t["count"] for t in profile["top_values"]["name"]] == [3, 1]
    assert all(t["value"] is None for t in profile["top_values"]["name"])


def test_raw_text_is_counted_by_whether_it_casts_to_the_declared_type(
    spark: SparkSession,
) -> None:
    balances = ["10.5", " 20 ", "12,5", None, "abc"]
    df = spark.createDataFrame([(b,) for b in balances], "balance string")
    spec = resolve(parse_table("bronze.t_people"), [dirty_people()])
    profile, _ = build_profile(spark, df, spec)
    balance = profile["columns"]["balance"]
    assert balance["declared_type"] == "double"
    assert balance["uncastable"] == 2  # "12,5" and "abc"; a null is not a bad value


def test_an_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match="layer one of"):
        parse_table("gold")
    with pytest.raises(ValueError):
        parse_table("lake.customers")


def _profile(version: int, rows: int, mean: float, std: float, nulls: float, labels: dict) -> dict:
    return {
        "version": version,
        "rows": rows,
        "columns": {
            "balance": {"null_rate": nulls, "mean": mean, "std": std},
            "city": {"null_rate": 0.0},
        },
        "label": {"column": "churned", "counts": labels, "missing": 0},
    }


def test_drift_flags_moved_means_null_rates_and_labels() -> None:
    before = _profile(3, 100, mean=10.0, std=2.0, nulls=0.01, labels={"0": 80, "1": 20})
    same = compare(before, _profile(4, 110, 10.2, 2.0, 0.02, {"0": 88, "1": 22}))
    assert same["drifted"] == []
    assert same["means"][0]["shift_in_std"] == pytest.approx(0.1)

    after = _profile(5, 100, mean=12.0, std=2.0, nulls=0.2, labels={"0": 50, "1": 50})
    moved = compare(before, after)
    assert moved["version"] == 3
    assert moved["means"][0]["shift_in_std"] == pytest.approx(1.0)
    assert moved["label"]["distance"] == pytest.approx(0.3)
    assert set(moved["drifted"]) == {"mean of balance", "null rate of balance", "label balance"}
