"""silver -> gold features: the raw input vector, a seeded split, the fitted transforms.

The vector keeps missing values as NaN and stays unprepared: the fitted transforms
(`lakestory.features.transforms`) travel inside the model and its ONNX graph, so training
and serving apply the very same numbers. Each build appends its parameters to
`gold.<dataset>_feature_params` under the next version, and every features row names the
version it was encoded with.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings
from lakestory.errors import StageError
from lakestory.features.images import (
    ImageParams,
    bronze_images,
    fit_images,
    labelled_images,
    silver_labels,
)
from lakestory.features.split import SPLIT_COLUMN, with_split
from lakestory.features.transforms import FEATURES_COLUMN, FeatureParams, fit, with_feature_vector
from lakestory.io import Catalog, Shell, TableRef, Txn, local_frame, read, register
from lakestory.quality.labels import class_index
from lakestory.quality.quarantine import by_reason

LABEL_COLUMN = "label"
PARAMS_VERSION_COLUMN = "feature_params_version"

Params = FeatureParams | ImageParams  # what a features build fitted


def load_params(text: str, version: int | None = None) -> Params:
    """Fitted parameters from their JSON: image ones say so (`"kind": "image"`)."""
    if json.loads(text).get("kind") == ImageParams.kind:
        return ImageParams.from_json(text, version)
    return FeatureParams.from_json(text, version)


def feature_inputs(dataset: Dataset) -> list[TableRef]:
    """The tables a features build reads: the silver tables of the structured sources, or
    for images bronze's images and silver's labels."""
    if dataset.image_spec is not None:
        return [bronze_images(dataset), silver_labels(dataset)]
    return [Catalog(dataset).silver(name) for name in dataset.structured()]


def feature_frame(spark: SparkSession, dataset: Dataset) -> DataFrame:
    """One row per key of the main source: key, label, the feature columns (nullable) and, for
    a split by time, its time column."""
    feats = dataset.feature_spec
    main = read(spark, Catalog(dataset).silver(feats.source))
    when = [feats.split.time_column] if feats.split.time_column else []
    frame = main.select(feats.key, feats.label, *feats.columns, *when)
    for source_name in dict.fromkeys(a.source for a in feats.aggregates):
        aggs = [a for a in feats.aggregates if a.source == source_name]
        grouped = (
            read(spark, Catalog(dataset).silver(source_name))
            .groupBy(feats.key)
            .agg(*[F.expr(a.expr).alias(a.name) for a in aggs])
        )
        frame = frame.join(grouped, on=feats.key, how="left")
        fills: dict[str, bool | float | int | str] = {
            a.name: a.fill for a in aggs if a.fill is not None
        }
        if fills:
            frame = frame.fillna(fills)
    return frame


def params_frame(spark: SparkSession, params: Params, train_rows: int) -> DataFrame:
    assert params.version is not None
    fitted_at = datetime.now(timezone.utc).replace(tzinfo=None)
    if isinstance(params, ImageParams):
        shape: tuple[int, int, int | None] = (params.inputs, params.classes, None)
    else:
        shape = (len(params.inputs), params.width, params.pca.k if params.pca else None)
    row = (params.version, fitted_at, train_rows, *shape, params.to_json())
    return local_frame(
        spark,
        [row],
        "version bigint, fitted_at timestamp, train_rows bigint, inputs int, outputs int, "
        "pca_k int, params string",
    )


def read_params(spark: SparkSession, dataset: Dataset, version: int) -> Params:
    """The fitted parameters stored under `version`."""
    table = Catalog(dataset).feature_params()
    rows = read(spark, table).where(F.col("version") == version).collect()
    if not rows:
        raise LookupError(f"{table} has no parameters of version {version}")
    return load_params(rows[0]["params"], version)


def next_params_version(spark: SparkSession, settings: Settings, dataset: Dataset) -> int:
    """The version the next fitted params of the dataset are stored under."""
    shell, table = Shell(spark, settings), Catalog(dataset).feature_params()
    if not shell.has(table):
        return 1
    last = shell.read(table).agg(F.max("version")).first()
    return 1 if last is None or last[0] is None else int(last[0]) + 1


def _stored(
    spark: SparkSession, settings: Settings, dataset: Dataset, version: int
) -> Params | None:
    """The params stored under `version`, if a run stored them already. Read from the table's
    location: a run killed between its append and the metastore's registration of a new
    table leaves rows there that the metastore does not know of yet."""
    shell, table = Shell(spark, settings), Catalog(dataset).feature_params()
    if not shell.has(table):
        return None
    rows = shell.read(table).where(F.col("version") == version).collect()
    return load_params(rows[0]["params"], version) if rows else None


def build_features(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    version: int | None = None,
    run_id: str | None = None,
) -> tuple[int, Params]:
    """Write gold.<dataset>_features, append the params fitted on train under `version`
    (default: the next); return the features table's Delta version and the params (with their
    version). A run of the pipeline's features stage passes its `run_id`, and a run that
    resumes one killed before it finished passes the killed run's id and version: params
    already stored under `version` are used as they are, not fitted and stored again, and the
    features table is not written again if the killed run's write (which carries the id) was
    committed."""
    version = version or next_params_version(spark, settings, dataset)
    txn = None if run_id is None else (f"lakestory-features:{run_id}", 0)
    if dataset.image_spec is not None:
        return build_image_features(spark, settings, dataset, version, txn)
    feats = dataset.feature_spec
    number = class_index(dataset.label_source, F.col(feats.label))
    frame = (
        feature_frame(spark, dataset)
        .withColumn(feats.label, number)  # from here on the label is its class number
        .where(F.col(feats.label).isNotNull())
        .transform(with_split(feats.key, dataset.seed, feats.split, feats.label))
        .localCheckpoint()  # the split's cuts and the fits read it several times
    )
    _learnable(spark, dataset, frame)
    train = frame.where(F.col(SPLIT_COLUMN) == "train")
    stored = _stored(spark, settings, dataset, version)
    if isinstance(stored, FeatureParams):
        vectors = frame.transform(with_feature_vector(stored))
        return _write(spark, settings, dataset, vectors, None, stored, txn), stored
    params = fit(train, feats).with_version(version)
    vectors = frame.transform(with_feature_vector(params))
    return _write(spark, settings, dataset, vectors, train.count(), params, txn), params


def _learnable(spark: SparkSession, dataset: Dataset, frame: DataFrame) -> None:
    """That the labelled rows hold two classes at least, in train; else a `StageError` saying
    where the rows went, before anything is written."""
    feats = dataset.feature_spec
    counts = {
        r[SPLIT_COLUMN]: r["classes"]
        for r in frame.groupBy(SPLIT_COLUMN)
        .agg(F.count_distinct(feats.label).alias("classes"))
        .collect()
    }
    if counts.get("train", 0) >= 2:
        return
    silver = Catalog(dataset).silver(feats.source)
    rows = read(spark, silver).count()
    quarantined = by_reason(spark, Catalog(dataset)).get(feats.source)
    where = ""
    if quarantined:
        total, reasons = quarantined
        top = ", ".join(f"{r.reason}: {r.rows:,}" for r in reasons[:3])
        where = (
            f"; {total:,} rows were quarantined ({top}); see lakestory quarantine {dataset.name}"
        )
        if reasons and reasons[0].reason == "label_invalid":
            where += f" and the classes of sources.{feats.source}.label"
    if not counts:
        state = "is empty" if rows == 0 else f"holds no labelled row among its {rows:,}"
        raise StageError(f"{silver} {state}{where}")
    raise StageError(
        f"the train split of {silver} holds {counts.get('train', 0)} class(es) of "
        f"{feats.label!r}; a model needs two at least{where}"
    )


def _write(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    frame: DataFrame,
    train_rows: int | None,
    params: Params,
    txn: Txn | None = None,
) -> int:
    """Append `params` (fitted on `train_rows` rows; None: stored already) to the params
    table and replace the features table with `frame`'s key, split, label and vector, each
    row naming the params version, once per `txn`; the features table's Delta version."""
    assert dataset.features is not None
    gold = frame.select(
        dataset.features.key,
        SPLIT_COLUMN,
        F.col(dataset.features.label).cast("int").alias(LABEL_COLUMN),
        FEATURES_COLUMN,
        F.lit(params.version).cast("bigint").alias(PARAMS_VERSION_COLUMN),
    )
    shell, catalog = Shell(spark, settings), Catalog(dataset, settings)
    if train_rows is not None:
        shell.append(params_frame(spark, params, train_rows), catalog.feature_params())
    else:  # stored by a killed run, which may not have registered the table yet
        register(spark, settings, catalog.feature_params())
    return shell.replace(gold, catalog.features(), txn)


def build_image_features(
    spark: SparkSession, settings: Settings, dataset: Dataset, version: int, txn: Txn | None
) -> tuple[int, ImageParams]:
    """The image dataset's features (`lakestory.features.images`): one row per distinct
    labelled content, split by its sha256 (stratified by label if configured), the pixel
    statistics fitted on train."""
    feats = dataset.image_spec
    assert feats is not None
    frame = (
        labelled_images(spark, dataset)
        .transform(with_split(feats.key, dataset.seed, feats.split, feats.label))
        .localCheckpoint()
    )
    train = frame.where(F.col(SPLIT_COLUMN) == "train")
    stored = _stored(spark, settings, dataset, version)
    if isinstance(stored, ImageParams):
        return _write(spark, settings, dataset, frame, None, stored, txn), stored
    params = fit_images(train, feats, dataset.classes).with_version(version)
    return _write(spark, settings, dataset, frame, train.count(), params, txn), params
