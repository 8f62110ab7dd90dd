"""Batch scoring: ONNX Runtime inside Spark (`mapInPandas`), one prediction per input row.

The predictions table holds the latest scoring only: one row per key, each naming the model
(`model_name`, `model_version`) and the input (`input_version`, the Delta versions of the
silver tables read) that produced it. Earlier scorings stay readable by Delta time travel.
Scoring is idempotent: when the table already holds the scoring of this model version on this
input version, nothing is written, so a rerun commits nothing and changes no row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings
from lakestory.features import (
    FEATURES_COLUMN,
    ImageParams,
    Params,
    feature_frame,
    with_feature_vector,
)
from lakestory.features.images import FILE_COLUMN, bronze_images, image_frame
from lakestory.io import Catalog, Shell, TableRef, exists, read, table_version

if TYPE_CHECKING:
    from pyspark import Broadcast

THRESHOLD = 0.5
PREDICTED_CLASS = "predicted_class"  # the predicted class's name, as the label config gives it
MODEL_NAME, MODEL_VERSION, INPUT_VERSION = "model_name", "model_version", "input_version"


def scored_tables(dataset: Dataset) -> list[TableRef]:
    """The tables a scoring reads: the silver tables of the main source and those aggregated
    into it, or bronze's images."""
    if dataset.image_spec is not None:
        return [bronze_images(dataset)]
    feats = dataset.feature_spec
    names = dict.fromkeys([feats.source, *(a.source for a in feats.aggregates)])
    return [Catalog(dataset).silver(name) for name in names]


class _Worker:
    """This Python worker's ONNX Runtime session. Spark reuses a Python worker for task after
    task (`spark.python.worker.reuse`, on by default), so a session built once serves every
    partition the worker scores; one model at a time is kept."""

    digest: str | None = None
    session: Any = None
    built = 0  # sessions this worker has built: what tests look at


def worker_session(digest: str, model: Broadcast[bytes]) -> Any:
    """The session for the model whose bytes hash to `digest`, built from the broadcast bytes
    the first time this worker meets it."""
    if _Worker.digest != digest:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one Spark task slot, one thread
        options.inter_op_num_threads = 1
        _Worker.session = ort.InferenceSession(
            model.value, sess_options=options, providers=["CPUExecutionProvider"]
        )
        _Worker.digest = digest
        _Worker.built += 1
    return _Worker.session


def sessions_built() -> int:
    """How many sessions this Python worker has built."""
    return _Worker.built


def score_frame(df: DataFrame, key: str, model: bytes, classes: int = 1) -> DataFrame:
    """Add `probability` and `prediction` to each row of `df` (columns `key`, `features`).

    A binary model (`classes` 1, its graph outputs P(label = 1) per row): `probability` is
    P(label = 1), `prediction` 1 where it is above `THRESHOLD`, else 0. A model of `classes` > 1
    classes (its graph outputs one probability per class): `prediction` is the most probable
    class, `probability` its probability, and `probabilities` (array<float>, one per class)
    all of them. A graph whose output has another width fails the scoring.

    The model is broadcast once; each Python worker builds one ONNX Runtime session for it
    (kept between tasks, keyed by the bytes' digest) and scores whole Arrow batches at once.
    The broadcast lives as long as `df`'s lineage may be computed again, so it is not
    unpersisted here.
    """
    if classes < 1:
        raise ValueError(f"classes must be 1 (binary) or the number of classes, not {classes}")
    digest = hashlib.sha256(model).hexdigest()
    shipped = df.sparkSession.sparkContext.broadcast(model)

    def _score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np

        from lakestory.inference.score import worker_session

        session = worker_session(digest, shipped)
        inputs, outputs = session.get_inputs()[0].name, session.get_outputs()[0].name
        columns: dict[str, Any]
        for batch in batches:
            if len(batch) == 0:
                continue
            x = np.stack(batch[FEATURES_COLUMN].to_numpy()).astype(np.float32, copy=False)
            (p,) = session.run([outputs], {inputs: x})
            p = np.asarray(p)
            if p.size != len(batch) * classes:
                raise ValueError(
                    f"the model gave {p.shape} probabilities for {len(batch)} rows; "
                    f"scoring with classes={classes} expects {classes} per row"
                )
            if classes == 1:
                p = p.reshape(-1)
                columns = {"probability": p, "prediction": (p > THRESHOLD).astype("int32")}
            else:
                p = p.reshape(len(batch), classes)
                predicted = np.argmax(p, axis=1)
                columns = {
                    "probability": p[np.arange(len(p)), predicted],
                    "prediction": predicted.astype("int32"),
                    "probabilities": list(p),
                }
            yield pd.DataFrame({key: batch[key], **columns})

    key_type = df.schema[key].dataType.simpleString()  # an int key stays an int
    schema = f"`{key}` {key_type}, probability float, prediction int"
    if classes > 1:
        schema += ", probabilities array<float>"
    return df.select(key, FEATURES_COLUMN).mapInPandas(_score, schema)


@dataclass(frozen=True)
class Scored:
    table_version: int
    written: bool  # False: the table already held this scoring
    input_version: str


def input_version(spark: SparkSession, dataset: Dataset) -> str:
    """The Delta versions of the tables a scoring reads, e.g.
    `silver.customers_accounts@v3,silver.customers_transactions@v2`."""
    return ",".join(f"{t}@v{table_version(spark, t)}" for t in scored_tables(dataset))


def _holds(spark: SparkSession, table: TableRef, model: tuple[str, str], inputs: str) -> bool:
    """Whether every row of `table` is a prediction of `model` on `inputs`."""
    if not exists(spark, table):
        return False
    df = read(spark, table)
    if not {MODEL_NAME, MODEL_VERSION, INPUT_VERSION, PREDICTED_CLASS} <= set(df.columns):
        return False
    found = df.select(MODEL_NAME, MODEL_VERSION, INPUT_VERSION).distinct().limit(2).collect()
    return [tuple(r) for r in found] == [(*model, inputs)]


def score_dataset(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    model: bytes,
    model_name: str,
    model_version: str,
    params: Params,
) -> Scored:
    """Score every silver row of the dataset's main source with `model` (ONNX bytes) and
    replace the predictions table with the result, unless it already holds this very scoring.

    The rows are encoded with the feature params the model was trained on (`params`): their
    categories give a categorical value its index; the model's graph does the rest. The input
    versions are read just before the scan; the pipeline is the tables' one writer.

    Images: every file bronze holds that decodes to the model's size, labelled or not, is
    scored by file name (`file_name`) with the most probable class and every class's
    probability. Every prediction names its class too (`predicted_class`: `yes`, `setosa`),
    as the dataset's label config does.
    """
    target = Catalog(dataset).predictions()
    inputs = input_version(spark, dataset)
    if _holds(spark, target, (model_name, model_version), inputs):
        version = table_version(spark, target)
        assert version is not None
        return Scored(version, False, inputs)
    if isinstance(params, ImageParams):
        key = FILE_COLUMN
        rows = image_frame(spark, dataset).where(F.col(FEATURES_COLUMN).isNotNull())
        scored = score_frame(rows, key, model, classes=params.classes)
    else:
        key = dataset.feature_spec.key
        rows = feature_frame(spark, dataset).transform(with_feature_vector(params))
        scored = score_frame(rows, key, model, classes=dataset.classes)
    names = F.array(*[F.lit(n) for n in dataset.class_names])
    scored = scored.select(
        "*",
        F.element_at(names, F.col("prediction") + 1).alias(PREDICTED_CLASS),
        F.lit(model_name).alias(MODEL_NAME),
        F.lit(model_version).alias(MODEL_VERSION),
        F.lit(inputs).alias(INPUT_VERSION),
        F.lit(datetime.now(timezone.utc).replace(tzinfo=None)).cast("timestamp").alias("scored_at"),
    )
    return Scored(Shell(spark, settings).replace(scored, target), True, inputs)
