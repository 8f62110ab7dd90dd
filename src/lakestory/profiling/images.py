"""Image tables (bronze rows of binary image files): size distribution, labels, a few samples.

An image file's label lives in another table, the dataset's label manifest refined to silver
(see `spec.resolve`), keyed by the file's name. Images are joined to it by the last part of
their `_source_file`; a file the manifest does not name is `unlabelled`. Only the sampled
images, a few per label picked by a window, ever reach the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lakestory.columns import SOURCE_FILE
from lakestory.profiling.spec import TableSpec
from lakestory.profiling.stats import LABEL_K, label_order

IMAGE_COLUMNS = ("image_width", "image_height")
SAMPLES_PER_LABEL = 8
MAX_GRID_LABELS = 20
MAX_SIZES = 20
UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class Sample:
    label: str
    file: str
    content: bytes


def is_image_table(df: DataFrame) -> bool:
    return all(c in df.columns for c in (*IMAGE_COLUMNS, SOURCE_FILE))


def _with_labels(df: DataFrame, spec: TableSpec, labels: DataFrame | None) -> DataFrame:
    """The images with `_file` (the file name) and `_label` (text; null when unlabelled)."""
    files = df.withColumn("_file", F.element_at(F.split(SOURCE_FILE, "/"), -1))
    key, column = spec.label_key, spec.label_column
    if labels is None or key is None or column is None:
        return files.withColumn("_label", F.lit(None).cast("string"))
    by_file = labels.select(
        F.col(key).alias("_file"), F.col(column).cast("string").alias("_label")
    ).dropDuplicates(["_file"])  # a manifest keyed by file name has one row per file
    return files.join(by_file, "_file", "left")


def image_summary(
    spark: SparkSession,
    df: DataFrame,
    spec: TableSpec,
    labels: DataFrame | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, list[Sample]]:
    """The `images` section, the `label` section (None without `labels`, the label table
    `spec` names) and the sampled images. (How many files decoded, the profile has from its
    column statistics: a file that did not decode has no size, see `ingestion.media`.)"""
    sizes = (
        df.where(F.col("image_width").isNotNull())
        .groupBy("image_width", "image_height")
        .count()
        .orderBy(F.col("count").desc(), "image_width", "image_height")
        .limit(MAX_SIZES)
        .collect()
    )
    files = _with_labels(df, spec, labels)
    decodable = F.col("image_width").isNotNull()
    section: dict[str, Any] = {
        "sizes": [
            {"width": r["image_width"], "height": r["image_height"], "rows": int(r["count"])}
            for r in sizes
        ],
    }
    label: dict[str, Any] | None = None
    if labels is not None and spec.label_table is not None:
        balance = (
            files.groupBy("_label")
            .count()
            .orderBy(F.col("count").desc(), "_label")
            .limit(LABEL_K + 1)
            .collect()
        )
        found = {r["_label"]: int(r["count"]) for r in balance if r["_label"] is not None}
        label = {
            "column": spec.label_column,
            "table": spec.label_table.qualified,
            "counts": {v: found[v] for v in label_order(list(found))},
            "missing": sum(int(r["count"]) for r in balance if r["_label"] is None),
        }
        conflicts = (
            files.where(F.col("_label").isNotNull() & F.col("sha256").isNotNull())
            .groupBy("sha256")
            .agg(F.count_distinct("_label").alias("labels"), F.count(F.lit(1)).alias("images"))
            .where(F.col("labels") > 1)
            .agg(F.count(F.lit(1)).alias("contents"), F.sum("images").alias("images"))
            .first()
        )
        assert conflicts is not None
        section["label_conflicts"] = {
            "contents": int(conflicts["contents"]),  # identical images with different labels
            "images": int(conflicts["images"] or 0),
        }
    samples = _samples(spark, files.where(decodable))
    section["samples"] = {}
    for s in samples:
        section["samples"].setdefault(s.label, []).append(s.file)
    return section, label, samples


def _samples(spark: SparkSession, decodable: DataFrame) -> list[Sample]:
    """Up to `SAMPLES_PER_LABEL` images of each of the first `MAX_GRID_LABELS` labels, the
    same ones each time (ordered by content hash). Content kept as a pointer is read from the
    file, for the sampled rows only."""
    label = F.coalesce(F.col("_label"), F.lit(UNLABELLED))
    per_label = Window.partitionBy(label).orderBy("sha256", "_file")
    picked = (
        decodable.withColumn("_n", F.row_number().over(per_label))
        .where(F.col("_n") <= SAMPLES_PER_LABEL)
        .select(label.alias("label"), "_file", SOURCE_FILE, "content", "_n")
        .orderBy("label", "_n")
        .limit(MAX_GRID_LABELS * SAMPLES_PER_LABEL)
        .collect()
    )
    pointers = [r[SOURCE_FILE] for r in picked if r["content"] is None]
    loaded: dict[str, bytes] = {}
    if pointers:
        files = spark.read.format("binaryFile").load(pointers).select("path", "content")
        loaded = {r["path"]: bytes(r["content"]) for r in files.collect()}
    out = []
    for r in picked:
        content = r["content"] if r["content"] is not None else loaded.get(r[SOURCE_FILE])
        if content is not None:
            out.append(Sample(r["label"], r["_file"], bytes(content)))
    return out
