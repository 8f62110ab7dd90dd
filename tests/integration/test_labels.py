"""Labels: missing labels wait in the unlabeled table until a labelled version lands, invalid
labels go to quarantine, and identical images under different labels are label conflicts."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings
from lakestory.operations.ingest import ingest_source
from lakestory.operations.refine import QUALITY_METRICS, refine_source

pytestmark = pytest.mark.slow

KEY = b"labels-test-key-0123456789abcdef"


def labels_source(name: str, **label: Any) -> dict[str, Any]:
    return {
        "format": "csv",
        "path": f"{name}/labels",
        "options": {"header": "true"},
        "schema": {"file_name": "string", "label": "int"},
        "key": "file_name",
        "required": ["file_name"],
        "label": {"column": "label", "allowed": [0, 1, 2, 3, 4, 5], **label},
    }


def land(settings: Settings, ds: Dataset, source: str, name: str, data: bytes, at: int) -> None:
    """Write a landing file with modification time `at` (seconds), so later drops sort later."""
    folder = settings.root / "landing" / ds.name / source
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    os.utime(path, (at, at))


def manifest(rows: list[str]) -> bytes:
    return ("file_name,label\n" + "\n".join(rows) + "\n").encode()


def rows_of(spark: SparkSession, table: str, *columns: str) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in spark.read.table(table).select(*columns).collect()}


def test_missing_labels_wait_unlabeled_until_a_labelled_version_lands(
    spark: SparkSession, settings: Settings
) -> None:
    source = labels_source(
        "unlab", missing=["unknown", "?"], on_missing="unlabeled", on_invalid="quarantine"
    )
    ds = Dataset.model_validate({"name": "unlab", "seed": 1, "sources": {"labels": source}})
    first = ["a.png,1", "b.png,", "c.png,unknown", "d.png, ? ", "e.png,7", "f.png,2"]
    land(settings, ds, "labels", "m1.csv", manifest(first), 1_700_000_000)
    ingest_source(spark, settings, ds, "labels")
    counts = refine_source(spark, settings, ds, "labels", KEY, "run-1")

    assert (counts.rows_in, counts.silver, counts.unlabeled, counts.quarantined) == (6, 2, 3, 1)
    assert counts.reconciles
    assert rows_of(spark, "silver.unlab_labels", "file_name", "label") == {
        ("a.png", 1),
        ("f.png", 2),
    }
    unlabeled = "silver.unlab_labels_unlabeled"
    assert rows_of(spark, unlabeled, "file_name", "label", "_label_text") == {
        ("b.png", None, None),
        ("c.png", None, "unknown"),
        ("d.png", None, " ? "),
    }
    assert {tuple(r._reasons) for r in spark.read.table(unlabeled).collect()} == {
        ("label_missing",)
    }
    quarantined = spark.read.table("quarantine.unlab_labels").collect()
    assert [(r.file_name, r.label, list(r._reasons)) for r in quarantined] == [
        ("e.png", "7", ["label_invalid"])
    ]

    # b gets its label; c is still unknown (a newer unlabeled version); a is relabelled
    second = ["b.png,0", "c.png,unknown", "a.png,3"]
    land(settings, ds, "labels", "m2.csv", manifest(second), 1_700_000_100)
    ingest_source(spark, settings, ds, "labels")
    counts = refine_source(spark, settings, ds, "labels", KEY, "run-2")

    assert (counts.rows_in, counts.silver, counts.unlabeled) == (3, 2, 1)
    assert counts.reconciles
    assert rows_of(spark, "silver.unlab_labels", "file_name", "label") == {
        ("a.png", 3),
        ("b.png", 0),
        ("f.png", 2),
    }
    assert rows_of(spark, unlabeled, "file_name", "_label_text") == {
        ("c.png", "unknown"),
        ("d.png", " ? "),
    }
    assert rows_of(spark, unlabeled, "_source_file") == {
        (f"file:{settings.root}/landing/unlab/labels/m2.csv",),
        (f"file:{settings.root}/landing/unlab/labels/m1.csv",),
    }
    metrics = spark.read.table(QUALITY_METRICS.qualified).where(F.col("dataset") == "unlab")
    assert sorted(r.unlabeled for r in metrics.collect()) == [1, 3]


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()


def test_identical_images_under_different_labels_are_conflicts(
    spark: SparkSession, settings: Settings
) -> None:
    images = {"format": "binary", "path": "conflicts/images", "kind": "image", "glob": "*.png"}
    labels = labels_source(
        "conflicts", conflicts={"source": "images", "file": "file_name", "action": "quarantine"}
    )
    ds = Dataset.model_validate(
        {"name": "conflicts", "seed": 1, "sources": {"images": images, "labels": labels}}
    )
    rng = np.random.default_rng(7)
    x, y, z = (png(rng.integers(0, 255, (8, 8))) for _ in range(3))
    t = 1_700_000_000
    for name, data in [("x1.png", x), ("x2.png", x), ("y.png", y), ("z1.png", z), ("z2.png", z)]:
        land(settings, ds, "images", name, data, t)
    rows = ["x1.png,3", "x2.png,5", "y.png,1", "z1.png,2", "z2.png,2"]
    land(settings, ds, "labels", "m1.csv", manifest(rows), t)
    ingest_source(spark, settings, ds, "images")
    ingest_source(spark, settings, ds, "labels")
    counts = refine_source(spark, settings, ds, "labels", KEY, "run-1")

    assert (counts.rows_in, counts.silver, counts.quarantined) == (5, 3, 2)
    assert counts.rule_failures["label_conflict"] == 2
    assert rows_of(spark, "silver.conflicts_labels", "file_name") == {
        ("y.png",),
        ("z1.png",),
        ("z2.png",),
    }
    quarantine = spark.read.table("quarantine.conflicts_labels")
    assert {(r.file_name, tuple(r._reasons)) for r in quarantine.collect()} == {
        ("x1.png", ("label_conflict",)),
        ("x2.png", ("label_conflict",)),
    }

    # a later copy of z under another label conflicts with what silver holds
    land(settings, ds, "images", "z3.png", z, t + 100)
    land(settings, ds, "labels", "m2.csv", manifest(["z3.png,4"]), t + 100)
    ingest_source(spark, settings, ds, "images")
    ingest_source(spark, settings, ds, "labels")
    counts = refine_source(spark, settings, ds, "labels", KEY, "run-2")
    assert (counts.rows_in, counts.silver, counts.quarantined) == (1, 0, 1)
    assert rows_of(spark, "quarantine.conflicts_labels", "file_name") == {
        ("x1.png",),
        ("x2.png",),
        ("z3.png",),
    }


def test_label_config_is_checked(tmp_path: Path) -> None:
    from pydantic import ValidationError

    labels = labels_source("bad", conflicts={"source": "nowhere", "file": "file_name"})
    with pytest.raises(ValidationError, match="not a binary source"):
        Dataset.model_validate({"name": "bad", "seed": 1, "sources": {"labels": labels}})
    with pytest.raises(ValidationError, match="on_missing"):
        Dataset.model_validate(
            {"name": "bad", "seed": 1, "sources": {"labels": labels_source("bad", on_missing="x")}}
        )
