"""A newcomer's own files with text labels, through `init`, `check` and `run`: a three-class
label named by species, and a yes/no label, each reach predictions that name their class, with
no edit of the config `init` wrote. A value outside the mapping takes the invalid-label
route."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Settings, load_dataset
from lakestory.io import Catalog
from lakestory.operations.check import check_dataset
from lakestory.operations.starter import Started, init_dataset
from lakestory.pipeline import Context, Outcome, run_stages
from lakestory.summary import summary
from tests.conftest import CONF

pytestmark = pytest.mark.slow

KEY = "any-label-test-key-0123456789abcdef"
SPECIES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKESTORY_TOKEN_KEY", KEY)


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(CONF / "base", conf / "base")
    return conf


def _check_and_run(
    spark: SparkSession, settings: Settings, conf_dir: Path, started: Started, name: str
) -> dict[str, Outcome]:
    """`lakestory check NAME`, then `lakestory run NAME`, on the config init wrote."""
    ds = load_dataset(name, conf_dir)
    forecast = check_dataset(spark, settings, ds, started.config)
    assert forecast.ok, str(forecast)
    outcomes = {o.stage: o for o in run_stages(Context(spark, settings, ds))}
    assert all(o.ran for o in outcomes.values()), [str(o) for o in outcomes.values()]
    return outcomes


def test_a_three_class_text_label_reaches_predictions_that_name_their_class(
    spark: SparkSession, settings: Settings, conf_dir: Path, tmp_path: Path
) -> None:
    rng = random.Random(3)
    header = "plant_id,petal_length,petal_width,species"
    rows = []
    for i in range(240):
        k = i % 3
        length = (1.5, 4.3, 6.0)[k] + rng.uniform(-0.4, 0.4)
        width = (0.3, 1.3, 2.1)[k] + rng.uniform(-0.15, 0.15)
        rows.append(f"p{i:03d},{length:.2f},{width:.2f},{SPECIES[k]}")
    file = tmp_path / "plants.csv"
    file.write_text("\n".join([header, *rows]) + "\n")

    started = init_dataset(settings, conf_dir, "flowers", file, "species")
    assert 'classes: ["setosa", "versicolor", "virginica"]' in started.config.read_text()
    # a later drop holds a species the mapping does not know
    started.landed.with_name("late.csv").write_text(f"{header}\np900,3.0,1.0,orchid\n")
    outcomes = _check_and_run(spark, settings, conf_dir, started, "flowers")

    catalog = Catalog(load_dataset("flowers", conf_dir))
    quarantined = spark.read.table(catalog.quarantine("plants").qualified).collect()
    assert [(r.plant_id, list(r._reasons)) for r in quarantined] == [("p900", ["label_invalid"])]
    labels = spark.read.table(catalog.features().qualified).select("plant_id", "label")
    numbers = {r.plant_id: r.label for r in labels.collect()}
    assert len(numbers) == 240 and [numbers[f"p{i:03d}"] for i in range(3)] == [0, 1, 2]

    report = outcomes["convert"].outputs  # the conversion report, as convert recorded it
    assert report["classes"] == 3 and list(report["class_names"]) == SPECIES
    written = Path(report["paths"]["onnx_fp32"]).with_name("conversion_report.json")
    assert json.loads(written.read_text())["class_names"] == SPECIES

    predictions = spark.read.table(catalog.predictions().qualified)
    assert {"prediction", "predicted_class", "probabilities"} <= set(predictions.columns)
    scored = predictions.collect()
    assert len(scored) == 240
    assert all(r.predicted_class == SPECIES[r.prediction] for r in scored)
    assert all(len(r.probabilities) == 3 for r in scored)
    truth = {f"p{i:03d}": SPECIES[i % 3] for i in range(240)}
    right = sum(r.predicted_class == truth[r.plant_id] for r in scored)
    assert right / len(scored) > 0.9, right

    # the summary names the champion and lists the converted version's artifacts
    text = summary(Context(spark, settings, load_dataset("flowers", conf_dir)))
    champion = f"Champion flowers_model v{report['champion_version']} (alias champion): "
    assert champion + report["gate"]["champion"] in text, text
    assert "classes: 0 = setosa, 1 = versicolor, 2 = virginica" in text, text
    assert all(path in text for path in report["paths"].values()), text


def test_a_yes_no_label_without_an_id_column_reaches_predictions(
    spark: SparkSession, settings: Settings, conf_dir: Path, tmp_path: Path
) -> None:
    """No id column: init keys the rows by a personal column, tokenised; the label's `yes` is
    the positive class."""
    rows = ["email,age,fare,survived"]
    for i in range(120):
        survived = "yes" if (i % 3 == 0) != (i % 17 == 0) else "no"
        rows.append(
            f"p{i}@mail.example.org,{20 + i % 50},{5 + (i % 3 == 0) * 40 + i % 7},{survived}"
        )
    file = tmp_path / "passengers.csv"
    file.write_text("\n".join(rows) + "\n")

    started = init_dataset(settings, conf_dir, "voyage", file, "survived")
    text = started.config.read_text()
    assert "key: email" in text and "tokenize:\n        email: email" in text, text
    assert 'positive: "yes"\n      negative: "no"' in text, text
    _check_and_run(spark, settings, conf_dir, started, "voyage")

    catalog = Catalog(load_dataset("voyage", conf_dir))
    silver = spark.read.table(catalog.silver("passengers").qualified)
    assert "email" not in silver.columns and "email_pseudonym" in silver.columns
    # silver keeps the label as it landed; the features hold its class number
    gold = spark.read.table(catalog.features().qualified)
    pairs = gold.join(silver, "email_pseudonym").select("survived", "label").distinct()
    assert {(r.survived, r.label) for r in pairs.collect()} == {("yes", 1), ("no", 0)}
    predictions = spark.read.table(catalog.predictions().qualified)
    assert predictions.count() == 120
    classes = predictions.select("prediction", "predicted_class").distinct().collect()
    assert all(r.predicted_class == ("yes" if r.prediction else "no") for r in classes)
    assert predictions.where(F.col("predicted_class").isNull()).count() == 0
