"""`lakestory profile` on Delta tables: reports per version, drift against the previous
profile, an image table's labels and samples, the page as headless Chromium draws it, and the
command itself."""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import DataFrame, SparkSession
from sklearn.datasets import load_digits

from lakestory.cli import main
from lakestory.config import Dataset, Settings
from lakestory.ingestion.media import MEDIA_FIELDS, describe
from lakestory.io import Shell, TableRef, ensure_layers, table_version
from lakestory.profiling import ProfileReport, profile_table, report_folder
from lakestory.profiling.images import SAMPLES_PER_LABEL
from tests.conftest import CONF


def overwrite(df: DataFrame, settings: Settings, table: TableRef) -> int:
    """Replace `table` by `df` through the shell; its version after."""
    return Shell(df.sparkSession, settings).replace(df, table)


pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(autouse=True)
def layers(spark: SparkSession, settings: Settings) -> None:
    ensure_layers(spark, settings)


def accounts_dataset() -> Dataset:
    source = {
        "format": "csv",
        "path": "prof/accounts",
        "schema": {"id": "string", "balance": "double", "tenure": "int", "churned": "int"},
        "key": "id",
        "label": {"column": "churned", "allowed": [0, 1]},
        "outliers": {"balance": {"method": "mad"}},
    }
    return Dataset.model_validate({"name": "prof", "seed": 1, "sources": {"accounts": source}})


def accounts(shift: float, churn: float, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    return [
        (
            f"c{i:04d}",
            rng.gauss(1000.0 + shift, 100.0),
            rng.randint(0, 120),
            int(rng.random() < churn),
        )
        for i in range(300)
    ]


def test_each_version_gets_a_report_compared_with_the_previous_one(
    spark: SparkSession, settings: Settings
) -> None:
    table = TableRef("silver", "prof_accounts")
    schema = "id string, balance double, tenure int, churned int"
    first_rows = accounts(shift=0.0, churn=0.2, seed=1)
    first_version = overwrite(spark.createDataFrame(first_rows, schema), settings, table)
    first = profile_table(spark, settings, "silver.prof_accounts", [accounts_dataset()])

    folder = report_folder(settings, table)
    assert first.version == first_version
    assert first.json_path == folder / f"{first_version}.json"
    assert first.html_path == folder / f"{first_version}.html"
    on_disk = json.loads(first.json_path.read_text())
    assert on_disk["rows"] == len(first_rows) and on_disk["previous"] is None
    churned = sum(r[3] for r in first_rows)
    assert on_disk["label"]["counts"] == {"0": len(first_rows) - churned, "1": churned}
    assert on_disk["outliers"]["balance"]["method"] == "mad"  # as the dataset configures

    moved = accounts(shift=300.0, churn=0.5, seed=2)
    second_version = overwrite(spark.createDataFrame(moved, schema), settings, table)
    second = profile_table(spark, settings, table, [accounts_dataset()])
    assert second.version == second_version == table_version(spark, table)
    previous = second.profile["previous"]
    assert previous["version"] == first_version
    assert {"mean of balance", "label balance"} <= set(previous["drifted"])
    assert "mean of tenure" not in previous["drifted"]
    assert first.html_path.is_file()  # earlier reports stay
    assert "Compared with version" in second.html_path.read_text()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((pixels * 15).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_report(spark: SparkSession, settings: Settings) -> tuple[ProfileReport, dict]:
    """bronze.pics_images as ingestion writes it (metadata by `media.describe`), labels in
    silver.pics_labels: 40 digits, a truncated file, and a copy of one digit labelled
    differently."""
    digits = load_digits()
    rows, labels = [], {}
    files: list[tuple[str, bytes]] = [(f"d{i:03d}.png", _png(digits.images[i])) for i in range(40)]
    files.append(("cut.png", files[1][1][:40]))
    files.append(("copy.png", files[0][1]))
    for i, (name, _) in enumerate(files[:40]):
        labels[name] = int(digits.target[i])
    labels["copy.png"] = (labels["d000.png"] + 1) % 10
    for name, content in files:
        path = f"file:/landing/pics/images/{name}"
        meta = describe(content, path, "image")
        rows.append((*[meta[f] for f, _ in MEDIA_FIELDS], content, path))
    schema = (
        ", ".join(f"{f} {t}" for f, t in MEDIA_FIELDS) + ", content binary, _source_file string"
    )
    overwrite(spark.createDataFrame(rows, schema), settings, TableRef("bronze", "pics_images"))
    overwrite(
        spark.createDataFrame(list(labels.items()), "file_name string, label int"),
        settings,
        TableRef("silver", "pics_labels"),
    )
    dataset = Dataset.model_validate(
        {
            "name": "pics",
            "seed": 1,
            "sources": {
                "images": {"format": "binary", "path": "pics/images", "kind": "image"},
                "labels": {
                    "format": "csv",
                    "path": "pics/labels",
                    "schema": {"file_name": "string", "label": "int"},
                    "key": "file_name",
                    "label": {"column": "label", "allowed": list(range(10))},
                },
            },
        }
    )
    return profile_table(spark, settings, "bronze.pics_images", [dataset]), labels


def test_an_image_table_gets_sizes_labels_conflicts_and_samples(
    image_report: tuple[ProfileReport, dict],
) -> None:
    report, labels = image_report
    images = report.profile["images"]
    assert (images["decoded"], images["undecodable"]) == (41, 1)
    assert images["sizes"] == [{"width": 8, "height": 8, "rows": 41}]
    assert images["label_conflicts"] == {"contents": 1, "images": 2}
    expected: dict[str, int] = {}
    for label in labels.values():
        expected[str(label)] = expected.get(str(label), 0) + 1
    label = report.profile["label"]
    assert label["table"] == "silver.pics_labels"
    assert label["missing"] == 1  # the truncated file has no manifest line
    assert label["counts"] == {k: expected[k] for k in sorted(expected, key=int)}
    assert set(images["samples"]) == set(expected)  # every label has samples
    for value, names in images["samples"].items():
        assert 1 <= len(names) <= min(SAMPLES_PER_LABEL, expected[value])
        assert all(str(labels[n]) == value for n in names)
    assert report.profile["duplicates"]["key"] == 1  # the copy, by sha256


def test_the_report_draws_in_headless_chromium(
    image_report: tuple[ProfileReport, dict], tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    report, _ = image_report
    shot = tmp_path / "report.png"
    profile_dir = tmp_path / "chromium-profile"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        report.html_path.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        gray = image.convert("L")
        low, high = gray.getextrema()
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert high - low > 100  # dark text and plots on a light page
    assert colours is not None and len(colours) > 50  # plots and images, not a blank page
    shutil.rmtree(profile_dir, ignore_errors=True)


def test_the_command_writes_the_report_and_refuses_bad_names(
    spark: SparkSession,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LAKESTORY_ROOT", str(settings.root))
    table = TableRef("silver", "prof_cli")
    version = overwrite(
        spark.createDataFrame([(1, "a"), (2, "b")], "n int, s string"), settings, table
    )
    assert main(["profile", "silver.prof_cli", "--conf-dir", str(CONF)]) == 0
    out = capsys.readouterr().out
    html = report_folder(settings, table) / f"{version}.html"
    assert str(html) in out and html.is_file()

    assert main(["profile", "silver", "--conf-dir", str(CONF)]) == 2
    assert "not a table name" in capsys.readouterr().err
    assert main(["profile", "silver.nothing_here", "--conf-dir", str(CONF)]) == 2
    assert "no table silver.nothing_here" in capsys.readouterr().err
