"""Text labels end to end: a three-class label named by species goes through the six stages
to predictions that name their class; a yes/no label reaches the features as 0 and 1. Values
outside the mapping take the invalid-label route."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings
from lakestory.io import Catalog
from lakestory.pipeline import Context, run_stages

pytestmark = pytest.mark.slow

KEY = "any-label-test-key-0123456789abcdef"
SPECIES = ["setosa", "versicolor", "virginica"]


def _land(settings: Settings, path: str, header: str, rows: list[str]) -> None:
    folder = settings.root / "landing" / path
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-1.csv").write_text("\n".join([header, *rows]) + "\n")


def _source(path: str, schema: dict[str, str], key: str, label: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "csv",
        "path": path,
        "options": {"header": "true"},
        "schema": schema,
        "key": key,
        "required": [key],
        "label": label,
    }


def _flowers(settings: Settings) -> Dataset:
    """Plants whose petals tell three species apart; one row's species is unknown to the
    mapping, one is written ` Virginica ` (matched: `ignore_case`)."""
    rng = random.Random(3)
    rows = []
    for i in range(240):
        k = i % 3
        length = (1.5, 4.3, 6.0)[k] + rng.uniform(-0.4, 0.4)
        width = (0.3, 1.3, 2.1)[k] + rng.uniform(-0.15, 0.15)
        rows.append(f"p{i:03d},{length:.2f},{width:.2f},{SPECIES[k]}")
    rows += ["p900,5.9,2.0, Virginica ", "p901,3.0,1.0,orchid"]
    _land(settings, "flowers/plants", "plant_id,petal_length,petal_width,species", rows)
    schema = {
        "plant_id": "string",
        "petal_length": "double",
        "petal_width": "double",
        "species": "string",
    }
    label = {"column": "species", "classes": SPECIES, "ignore_case": True}
    return Dataset.model_validate(
        {
            "name": "flowers",
            "seed": 7,
            "sources": {"plants": _source("flowers/plants", schema, "plant_id", label)},
            "features": {
                "source": "plants",
                "key": "plant_id",
                "label": "species",
                "columns": ["petal_length", "petal_width"],
                "split": {"train": 0.6, "validation": 0.2, "test": 0.2, "stratify": True},
            },
            "model": {
                "registered_name": "flowers_species",
                "hidden": [8],
                "dropout": 0.0,
                "epochs": 40,
                "batch_size": 16,
                "learning_rate": 0.05,
                "weight_decay": 0.0,
                "num_processes": 1,
                "feed_shards": 2,
            },
        }
    )


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKESTORY_TOKEN_KEY", KEY)


def test_a_three_class_text_label_reaches_predictions_that_name_their_class(
    spark: SparkSession, settings: Settings
) -> None:
    ds = _flowers(settings)
    outcomes = {o.stage: o for o in run_stages(Context(spark, settings, ds))}
    assert all(o.ran for o in outcomes.values()), [str(o) for o in outcomes.values()]
    catalog = Catalog(ds)

    quarantined = spark.read.table(catalog.quarantine("plants").qualified).collect()
    assert [(r.plant_id, list(r._reasons)) for r in quarantined] == [("p901", ["label_invalid"])]
    labels = {
        r.plant_id: r.label
        for r in spark.read.table(catalog.features().qualified)
        .select("plant_id", "label")
        .collect()
    }
    assert len(labels) == 241 and labels["p900"] == 2
    assert {labels[f"p{i:03d}"] for i in range(3)} == {0, 1, 2}

    report = outcomes["convert"].outputs  # the conversion report, as convert recorded it
    assert report["classes"] == 3 and list(report["class_names"]) == SPECIES
    written = Path(report["paths"]["onnx_fp32"]).with_name("conversion_report.json")
    assert json.loads(written.read_text())["class_names"] == SPECIES

    predictions = spark.read.table(catalog.predictions().qualified)
    assert {"prediction", "predicted_class", "probabilities"} <= set(predictions.columns)
    rows = predictions.collect()
    assert len(rows) == 241
    assert all(r.predicted_class == SPECIES[r.prediction] for r in rows)
    assert all(len(r.probabilities) == 3 for r in rows)
    truth = {
        r.plant_id: r.species.strip().lower()
        for r in spark.read.table(catalog.silver("plants").qualified).collect()
    }
    right = sum(r.predicted_class == truth[r.plant_id] for r in rows)
    assert right / len(rows) > 0.9, right


def test_a_yes_no_label_reaches_the_features_as_one_and_zero(
    spark: SparkSession, settings: Settings
) -> None:
    rows = [f"v{i:03d},{20 + i % 50},{'yes' if i % 3 == 0 else 'no'}" for i in range(60)]
    _land(settings, "voyage/passengers", "ticket,age,survived", [*rows, "v900,31,maybe"])
    schema = {"ticket": "string", "age": "int", "survived": "string"}
    label = {"column": "survived", "positive": "yes", "negative": "no"}
    ds = Dataset.model_validate(
        {
            "name": "voyage",
            "seed": 1,
            "sources": {"passengers": _source("voyage/passengers", schema, "ticket", label)},
            "features": {
                "source": "passengers",
                "key": "ticket",
                "label": "survived",
                "columns": ["age"],
                "split": {"train": 0.6, "validation": 0.2, "test": 0.2},
            },
        }
    )
    run_stages(Context(spark, settings, ds), ("ingest", "refine", "features"))

    catalog = Catalog(ds)
    quarantined = spark.read.table(catalog.quarantine("passengers").qualified)
    assert [r.ticket for r in quarantined.collect()] == ["v900"]
    # silver keeps the label as it landed; the features hold its class number
    silver = spark.read.table(catalog.silver("passengers").qualified)
    assert {r.survived for r in silver.select("survived").distinct().collect()} == {"yes", "no"}
    gold = spark.read.table(catalog.features().qualified)
    joined = gold.join(silver.select(F.col("ticket"), "survived"), "ticket")
    assert {
        (r.survived, r.label) for r in joined.select("survived", "label").distinct().collect()
    } == {
        ("yes", 1),
        ("no", 0),
    }
