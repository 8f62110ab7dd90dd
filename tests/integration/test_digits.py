"""The digits images through the whole flow: bronze's PNGs decoded and labelled from silver,
split by content, a small CNN trained on two processes with augmentation, converted to ONNX and
int8, and the champion scoring every image.

The dataset is the shipped `digits` config renamed `digitsflow`, its files landed under their
own folder, so that its tables are its own in the shared test warehouse.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings, load_dataset
from lakestory.demo.digits import GeneratedDigits, generate_digits
from lakestory.features import read_params
from lakestory.features.images import ImageParams
from lakestory.io import LAYERS, Catalog
from lakestory.pipeline import Context, Outcome, run_stages
from lakestory.training.tracking import use_store

from ..conftest import CONF

pytestmark = pytest.mark.slow

KEY = "digits-flow-test-key-0123456789abcdef"
NAME = "digitsflow"


@pytest.fixture(scope="module")
def landed(settings: Settings) -> GeneratedDigits:
    return generate_digits(settings.root / "landing" / NAME, drops=2, seed=5)


@pytest.fixture(scope="module")
def digits(spark: SparkSession, settings: Settings, landed: GeneratedDigits) -> Iterator[Dataset]:
    shipped = load_dataset("digits", CONF)
    sources = {
        name: source.model_copy(update={"path": f"{NAME}/{source.path}"})
        for name, source in shipped.sources.items()
    }
    # fewer epochs than the demo's: enough to learn the digits, quick enough for a test
    model = shipped.model_spec.model_copy(update={"registered_name": f"{NAME}_cnn", "epochs": 12})
    dataset = shipped.model_copy(update={"name": NAME, "sources": sources, "model": model})
    yield dataset
    for layer in LAYERS:
        for folder in (settings.root / layer).glob(f"{NAME}_*"):
            spark.sql(f"DROP TABLE IF EXISTS {layer}.{folder.name}")
            shutil.rmtree(folder)


@pytest.fixture(scope="module")
def outcomes(spark: SparkSession, settings: Settings, digits: Dataset) -> dict[str, Outcome]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKESTORY_TOKEN_KEY", KEY)
        done = run_stages(Context(spark, settings, digits))
    return {o.stage: o for o in done}


def _pixels(png: bytes) -> list[float]:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("L"), dtype=np.float64).reshape(-1).tolist()


def test_features_hold_each_labelled_image_once_in_one_split(
    spark: SparkSession, landed: GeneratedDigits, digits: Dataset, outcomes: dict[str, Outcome]
) -> None:
    assert outcomes["features"].ran, outcomes["features"].message
    gold = spark.read.table(Catalog(digits).features().qualified)
    rows = gold.collect()
    by_hash = {r["sha256"]: r for r in rows}
    assert len(by_hash) == len(rows)  # one row per content: copies are one example
    # every file that decodes and has one usable label is there, through its content
    expected: dict[str, tuple[int, list[float]]] = {}
    labels = {}
    for manifest in landed.manifest_files:
        for line in manifest.read_text().splitlines()[1:]:
            name, label = line.split(",")
            labels[name] = label
    conflicted = set()
    for path in landed.image_files:
        data = path.read_bytes()
        try:
            pixels = _pixels(data)
        except OSError:
            continue  # truncated: no features
        label = labels[path.name]
        if not label.isdigit():
            continue  # unlabeled: waits in silver's unlabeled table
        digest = hashlib.sha256(data).hexdigest()
        if digest in expected and expected[digest][0] != int(label):
            conflicted.add(digest)
        expected[digest] = (int(label), pixels)
    for digest in conflicted:
        del expected[digest]  # label conflicts are quarantined, both sides
    assert set(by_hash) == set(expected)
    for digest, (label, pixels) in expected.items():
        assert by_hash[digest]["label"] == label
        assert by_hash[digest]["features"] == pixels
    # stratified by digit: each digit splits 70/15/15 (to within a row of its count)
    per = gold.groupBy("label", "split").count().collect()
    for digit in range(10):
        counts = {r["split"]: r["count"] for r in per if r["label"] == digit}
        total = sum(counts.values())
        assert abs(counts["train"] - 0.7 * total) <= 1.5, (digit, counts)


def test_pixel_statistics_are_the_train_splits(
    spark: SparkSession, digits: Dataset, outcomes: dict[str, Outcome]
) -> None:
    params = read_params(spark, digits, int(outcomes["features"].outputs["params_version"]))
    assert isinstance(params, ImageParams)
    train = spark.read.table(Catalog(digits).features().qualified).where("split = 'train'")
    pixels = np.array([r["features"] for r in train.collect()])
    assert (params.height, params.width, params.classes) == (8, 8, 10)
    assert params.mean == pytest.approx(pixels.mean(), rel=1e-9)
    assert params.std == pytest.approx(pixels.std(), rel=1e-9)


def test_the_cnn_learns_the_digits(settings: Settings, outcomes: dict[str, Outcome]) -> None:
    assert outcomes["train"].ran, outcomes["train"].message
    m = outcomes["train"].outputs["metrics"]
    assert m["test_accuracy"] > 0.9 and m["test_f1"] > 0.9, m
    assert m["majority_accuracy"] < 0.2
    run = use_store(settings).get_run(outcomes["train"].outputs["run_id"])
    # the images' bronze table is part of the model's lineage, with the labels' silver one
    assert f"lineage.bronze.{NAME}_images" in run.data.tags
    assert f"lineage.silver.{NAME}_labels" in run.data.tags
    assert run.data.params["classes"] == "10" and run.data.params["image_size"] == "8x8"
    assert "confusion_matrix.png" in {
        a.path for a in use_store(settings).list_artifacts(run.info.run_id)
    }


def test_scoring_predicts_a_digit_for_every_decoded_image(
    spark: SparkSession,
    landed: GeneratedDigits,
    digits: Dataset,
    outcomes: dict[str, Outcome],
) -> None:
    assert outcomes["score"].ran, outcomes["score"].message
    table = outcomes["score"].outputs["table"]
    predictions = spark.read.table(table)
    decoded = landed.images_written - landed.dirt["truncated"]
    assert predictions.count() == decoded
    assert predictions.select("file_name").distinct().count() == decoded
    row = predictions.orderBy("file_name").first()
    assert row is not None and len(row["probabilities"]) == 10
    assert row["prediction"] == int(np.argmax(row["probabilities"]))
    assert row["probability"] == pytest.approx(max(row["probabilities"]))
    # the champion is right about most images whose true digit is known
    truth = spark.createDataFrame(list(landed.true_labels.items()), "file_name string, truth int")
    joined = predictions.join(truth, "file_name")
    right = joined.where(F.col("prediction") == F.col("truth")).count()
    assert right / joined.count() > 0.9
