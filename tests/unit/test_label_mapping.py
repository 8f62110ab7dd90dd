"""Any label: `allowed` (the class numbers), `positive` (binary) or `classes` (several) map a
numeric, boolean or text label to the class numbers a model learns, checked in config before any
data is read, and matched in Spark by the one function refine and features both use."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import ConfigError, Source, load_dataset
from lakestory.config.models import Label
from lakestory.quality.labels import class_index
from tests.conftest import CONF

VALUES = ["yes", "no", "Yes", " yes ", None, "maybe"]


def source(label: dict[str, Any], kind: str = "string") -> Source:
    return Source.model_validate(
        {
            "format": "csv",
            "path": "x",
            "schema": {"id": "string", "answer": kind},
            "key": "id",
            "label": {"column": "answer", **label},
        }
    )


def numbers(spark: SparkSession, src: Source, values: list[Any], kind: str = "string") -> list:
    df = spark.createDataFrame([(v,) for v in values], f"answer {kind}")
    rows = df.select(class_index(src, F.col("answer")).alias("n")).collect()
    return [r.n for r in rows]


@pytest.mark.parametrize(
    ("label", "names", "expected"),
    [
        # exact by default: `Yes` and ` yes ` are no class
        ({"positive": "yes", "negative": "no"}, ["no", "yes"], [1, 0, None, None, None, None]),
        # without `negative`, every other value is class 0
        ({"positive": "yes"}, ["not yes", "yes"], [1, 0, 0, 0, None, 0]),
        (
            {"positive": "yes", "negative": "no", "ignore_case": True},
            ["no", "yes"],
            [1, 0, 1, 1, None, None],
        ),
        ({"classes": ["no", "maybe", "yes"]}, ["no", "maybe", "yes"], [2, 0, None, None, None, 1]),
        (
            {"positive": ["yes", "Yes"], "negative": "no"},
            ["no", "yes"],
            [1, 0, 1, None, None, None],
        ),
    ],
)
def test_text_labels_map_to_class_numbers(
    spark: SparkSession, label: dict[str, Any], names: list[str], expected: list[int | None]
) -> None:
    src = source(label)
    assert src.label is not None and src.label.class_names() == names
    assert numbers(spark, src, VALUES) == expected


def test_boolean_and_numeric_labels(spark: SparkSession) -> None:
    flags = source({"allowed": [False, True]}, "boolean")  # YAML's [false, true]
    assert flags.label is not None and flags.label.allowed == [False, True]
    assert flags.label.numbered() and flags.label.class_names() == ["false", "true"]
    assert numbers(spark, flags, [True, False, None], "boolean") == [1, 0, None]
    # a boolean label named in any case matches Spark's `true`
    survived = source({"positive": "TRUE"}, "boolean")
    assert numbers(spark, survived, [True, False], "boolean") == [1, 0]
    digits = source({"allowed": [0, 1, 2]}, "int")
    assert numbers(spark, digits, [2, 0, 7, None], "int") == [2, 0, None, None]


@pytest.mark.parametrize(
    ("label", "kind", "expected"),
    [
        ({"allowed": [0, 1]}, "boolean", "0, 1 cannot be a value of the boolean column 'answer'"),
        ({"positive": "yes"}, "int", "'yes' cannot be a value of the int column"),
        ({"classes": ["a", "b"]}, "double", "must be of type string, int, bigint, boolean"),
        ({"allowed": [0, 1], "classes": ["a", "b"]}, "string", "not allowed and classes"),
        ({"negative": "no"}, "string", "give one of `allowed`"),
        ({"classes": ["a", "A"], "ignore_case": True}, "string", "'A' is given twice"),
        ({"positive": "yes", "negative": "yes"}, "string", "'yes' is given twice"),
    ],
)
def test_a_label_that_cannot_work_is_refused(
    label: dict[str, Any], kind: str, expected: str
) -> None:
    with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
        source(label, kind)


def test_label_values_stay_as_yaml_gives_them() -> None:
    assert Label.model_validate({"column": "x", "allowed": [0, 1]}).allowed == [0, 1]
    assert Label.model_validate({"column": "x", "classes": [1, "b"]}).class_names() == ["1", "b"]


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    target = tmp_path / "conf"
    shutil.copytree(CONF, target, ignore=shutil.ignore_patterns("local"))
    return target


def test_a_model_needs_class_numbers_or_a_mapping(conf: Path) -> None:
    """Text values under `allowed` cannot be learnt as they are: the config says so, with the
    file, the key and the mapping to write instead, before any data is read."""
    path = conf / "datasets" / "customers.yaml"
    text = path.read_text()
    old = "      column: churned\n      allowed: [0, 1]"
    assert old in text
    path.write_text(
        text.replace(old, "      column: churned\n      allowed: [stayed, left]").replace(
            "      churned: int", "      churned: string"
        )
    )
    with pytest.raises(ConfigError) as err:
        load_dataset("customers", conf)
    message = str(err.value)
    assert str(path) in message and "sources.accounts.label.allowed" in message, message
    assert "positive: left" in message and "classes: [...]" in message, message

    path.write_text(text.replace(old, "      column: churned\n      positive: 1"))
    assert load_dataset("customers", conf).classes == 1
    path.write_text(text.replace(old, "      column: churned\n      classes: [0, 1, 2]"))
    loaded = load_dataset("customers", conf)
    assert loaded.classes == 3 and loaded.class_names == ["0", "1", "2"]
