"""Scoring inside Spark: ONNX Runtime in `mapInPandas`, one session per Python worker."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper
from pyspark.sql import SparkSession

from lakestory.inference import score_frame

WEIGHTS = np.array([[0.5], [-1.0], [0.25]], dtype=np.float32)
CLASSES = 10
CLASS_WEIGHTS = np.random.default_rng(7).normal(size=(3, CLASSES)).astype(np.float32)


def _graph() -> bytes:
    """probability = sigmoid(features @ WEIGHTS): a graph as the convert stage's, in small."""
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(WEIGHTS, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _multi_class_graph() -> bytes:
    """probabilities = softmax(features @ CLASS_WEIGHTS): a ten-class graph, in small."""
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probability"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classes",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(CLASS_WEIGHTS, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_every_row_gets_onnx_runtimes_probability(spark: SparkSession) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    rows = [(f"k{i}", [float(v) for v in x[i]]) for i in range(len(x))]
    df = spark.createDataFrame(rows, "id string, features array<double>").repartition(8)

    scored = score_frame(df, "id", _graph()).toPandas().set_index("id").loc[[r[0] for r in rows]]

    session = ort.InferenceSession(_graph(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"features": x.astype(np.float32)})[0].reshape(-1)
    assert scored["probability"].to_numpy() == pytest.approx(expected, abs=1e-6)
    assert (scored["prediction"].to_numpy() == (expected > 0.5)).all()


def test_a_multi_class_row_gets_its_most_probable_class(spark: SparkSession) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3)) * 2
    rows = [(f"k{i}", [float(v) for v in x[i]]) for i in range(len(x))]
    df = spark.createDataFrame(rows, "id string, features array<double>").repartition(4)

    scored = score_frame(df, "id", _multi_class_graph(), classes=CLASSES)

    assert scored.columns == ["id", "probability", "prediction", "probabilities"]
    assert scored.schema["probabilities"].dataType.simpleString() == "array<float>"
    got = scored.toPandas().set_index("id").loc[[r[0] for r in rows]]
    session = ort.InferenceSession(_multi_class_graph(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"features": x.astype(np.float32)})[0]
    assert len(set(expected.argmax(axis=1))) > 3  # the rows spread over the classes
    assert (got["prediction"].to_numpy() == expected.argmax(axis=1)).all()
    assert got["probability"].to_numpy() == pytest.approx(expected.max(axis=1), abs=1e-6)
    assert np.stack(got["probabilities"].to_numpy()) == pytest.approx(expected, abs=1e-6)


def test_a_model_of_another_width_than_classes_fails_the_scoring(spark: SparkSession) -> None:
    df = spark.createDataFrame([("k0", [1.0, 2.0, 3.0])], "id string, features array<double>")
    with pytest.raises(Exception, match="scoring with classes=10 expects 10 per row"):
        score_frame(df, "id", _graph(), classes=CLASSES).collect()
    with pytest.raises(Exception, match="scoring with classes=1 expects 1 per row"):
        score_frame(df, "id", _multi_class_graph()).collect()


def test_a_python_worker_builds_one_session_for_all_its_tasks(spark: SparkSession) -> None:
    model = _graph()
    digest = hashlib.sha256(model).hexdigest()
    shipped = spark.sparkContext.broadcast(model)

    def _probe(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from lakestory.inference.score import sessions_built, worker_session

        for _ in batches:
            worker_session(digest, shipped)
            yield pd.DataFrame({"pid": [os.getpid()], "built": [sessions_built()]})

    partitions = 12
    probes = (
        spark.range(partitions, numPartitions=partitions)
        .mapInPandas(_probe, "pid long, built long")
        .toPandas()
    )
    shipped.unpersist()
    assert len(probes) == partitions
    # Spark reused its Python workers (its default): fewer workers than tasks ...
    assert probes["pid"].nunique() < partitions
    # ... and none built a session again for a later task (the count stays what the
    # worker's first task left, whatever earlier tests had it build)
    assert (probes.groupby("pid")["built"].nunique() == 1).all(), probes
