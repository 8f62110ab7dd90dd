"""Image features: bronze's images decoded to pixels, labelled from silver, split by content.

A binary source has no silver: its bronze table holds each file's bytes (or a pointer to the
file), sha256, decoded size and decode error. The features of an image dataset are one row per
distinct content (key: the sha256, so copies of an image are one example and never span two
splits) that decoded to `height` x `width` and carries exactly one label among the label rows
that name its files. Pixels are grey levels (0-255) row by row, as `array<double>` like the
tabular vectors; the model normalises them with the train split's mean and standard deviation
(`ImageParams`), which travel inside it and its ONNX graph.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.columns import FILE_MODIFICATION_TIME, SOURCE_FILE
from lakestory.config import Dataset
from lakestory.config.models import ImageFeatures
from lakestory.features.transforms import FEATURES_COLUMN
from lakestory.io import Catalog, TableRef, read
from lakestory.quality.labels import class_index, file_name, url_file_name

FILE_COLUMN = "file_name"  # the images' file name, in features and predictions


@dataclass(frozen=True)
class ImageParams:
    """What an image model is fitted with: the image size, the train split's pixel mean and
    standard deviation, and the number of classes."""

    height: int
    width: int
    mean: float
    std: float
    classes: int
    version: int | None = None

    kind = "image"

    @property
    def inputs(self) -> int:
        return self.height * self.width

    def to_json(self) -> str:
        body = {k: v for k, v in asdict(self).items() if k != "version"}
        return json.dumps({"kind": self.kind, **body}, sort_keys=True)

    @staticmethod
    def from_json(text: str, version: int | None = None) -> ImageParams:
        body = json.loads(text)
        body.pop("kind", None)
        return ImageParams(**body, version=version)

    def with_version(self, version: int) -> ImageParams:
        return ImageParams(self.height, self.width, self.mean, self.std, self.classes, version)


def bronze_images(dataset: Dataset) -> TableRef:
    """The bronze table of the image files."""
    return Catalog(dataset).bronze(_spec(dataset).images)


def silver_labels(dataset: Dataset) -> TableRef:
    """The silver table of the images' labels."""
    return Catalog(dataset).silver(_spec(dataset).labels)


def _spec(dataset: Dataset) -> ImageFeatures:
    feats = dataset.image_spec
    if feats is None:
        raise ValueError(f"dataset {dataset.name!r} has no image features")
    return feats


def decode_pixels(height: int, width: int) -> Any:
    """A pandas UDF (content binary, path string) -> array<double> of grey levels, row by row;
    null for content that does not decode or is not `height` x `width`. Content kept as a
    pointer (null bytes) is read from its file."""

    @F.pandas_udf("array<double>")  # type: ignore[call-overload]
    def decode(content: pd.Series, path: pd.Series) -> pd.Series:
        from urllib.parse import unquote, urlparse

        import numpy as np
        from PIL import Image

        out: list[Any] = []
        for data, where in zip(content, path, strict=True):
            try:
                if data is None:
                    with open(unquote(urlparse(where).path), "rb") as f:
                        data = f.read()
                with Image.open(io.BytesIO(data)) as image:
                    grey = image.convert("L")
                    if grey.size != (width, height):
                        out.append(None)
                        continue
                    out.append(np.asarray(grey, dtype=np.float64).reshape(-1))
            except Exception:  # noqa: BLE001 - bad content is left out, never raised
                out.append(None)
        return pd.Series(out, dtype=object)

    return decode


def image_frame(spark: SparkSession, dataset: Dataset) -> DataFrame:
    """Every image file bronze holds, at its latest content: file_name, sha256, features (the
    pixels; null when the file does not decode to the configured size)."""
    feats = _spec(dataset)
    bronze = read(spark, bronze_images(dataset)).where(F.col("error").isNull())
    latest = bronze.groupBy(url_file_name(F.col(SOURCE_FILE)).alias(FILE_COLUMN)).agg(
        F.max_by(F.struct("sha256", "content", SOURCE_FILE), FILE_MODIFICATION_TIME).alias(
            "__latest"
        )
    )
    decode = decode_pixels(feats.height, feats.width)
    return latest.select(
        FILE_COLUMN,
        F.col("__latest.sha256").alias("sha256"),
        decode(F.col("__latest.content"), F.col("__latest._source_file")).alias(FEATURES_COLUMN),
    )


def labelled_images(spark: SparkSession, dataset: Dataset) -> DataFrame:
    """One row per distinct decoded content with exactly one label: sha256, label, features."""
    feats = _spec(dataset)
    labels = read(spark, silver_labels(dataset)).select(
        file_name(F.col(feats.file)).alias(FILE_COLUMN),
        class_index(dataset.label_source, F.col(feats.label)).alias(feats.label),
    )
    images = image_frame(spark, dataset).where(F.col(FEATURES_COLUMN).isNotNull())
    return (
        images.join(labels, FILE_COLUMN)
        .where(F.col(feats.label).isNotNull())
        .groupBy("sha256")
        .agg(
            F.first(FEATURES_COLUMN).alias(FEATURES_COLUMN),
            F.min(feats.label).alias(feats.label),
            F.count_distinct(feats.label).alias("__labels"),
        )
        .where(F.col("__labels") == 1)
        .drop("__labels")
    )


def fit_images(train: DataFrame, feats: ImageFeatures, classes: int) -> ImageParams:
    """The train split's pixel mean and standard deviation, over every pixel of every image."""
    row = (
        train.select(F.explode(FEATURES_COLUMN).alias("p"))
        .agg(F.avg("p"), F.stddev_pop("p"))
        .first()
    )
    if row is None or row[0] is None:
        raise ValueError("the train split holds no images to fit the pixel statistics on")
    mean, std = float(row[0]), float(row[1])
    if std <= 0:
        raise ValueError("every train pixel has the same value: nothing to standardise with")
    return ImageParams(feats.height, feats.width, mean, std, classes)
