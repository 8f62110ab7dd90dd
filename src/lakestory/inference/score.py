"""Batch scoring: ONNX Runtime inside Spark (`mapInPandas`), one prediction per input row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings
from lakestory.features import FEATURES_COLUMN, FeatureParams, feature_frame, with_feature_vector
from lakestory.io import TableRef, overwrite

THRESHOLD = 0.5


def predictions_table(dataset: Dataset) -> TableRef:
    return TableRef("gold", f"{dataset.name}_predictions")


def score_frame(df: DataFrame, key: str, model_bytes: bytes) -> DataFrame:
    """Add `probability` and `prediction` to each row of `df` (columns `key`, `features`).

    The model travels as bytes in the closure; each Python worker builds one ONNX Runtime
    session per partition iterator and scores whole Arrow batches at once.
    """

    def _score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np
        import onnxruntime as ort

        from lakestory.conversion import INPUT_NAME, OUTPUT_NAME

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        for batch in batches:
            x = np.array(batch[FEATURES_COLUMN].tolist(), dtype=np.float32)
            if len(x) == 0:
                continue
            (p,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
            p = np.asarray(p).reshape(-1)
            yield pd.DataFrame(
                {key: batch[key], "probability": p, "prediction": (p > THRESHOLD).astype("int32")}
            )

    schema = f"{key} string, probability float, prediction int"
    return df.select(key, FEATURES_COLUMN).mapInPandas(_score, schema)


def score_dataset(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    onnx_path: Path,
    model_version: str,
    params: FeatureParams,
) -> int:
    """Score every silver row of the dataset's main source; replace the predictions table.

    The rows are encoded with the feature params the model was trained on (`params`): their
    categories give a categorical value its index; the model's graph does the rest."""
    key = dataset.feature_spec.key
    inputs = feature_frame(spark, dataset).transform(with_feature_vector(params))
    scored = score_frame(inputs, key, onnx_path.read_bytes()).select(
        "*",
        F.lit(model_version).alias("model_version"),
        F.lit(datetime.now(timezone.utc).replace(tzinfo=None)).cast("timestamp").alias("scored_at"),
    )
    return overwrite(scored, settings, predictions_table(dataset))
