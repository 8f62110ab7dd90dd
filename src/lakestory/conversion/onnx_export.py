"""Registered model -> one ONNX graph (preprocessing inside), its parity with torch, int8 copies.

The graph outputs probabilities (`WithProbability`): P(label = 1) as (N, 1) for a binary model,
one column per class, (N, K), for a K-class one. Only the network's layers (`nn.Linear`,
exported as Gemm, and `nn.Conv2d`, exported as Conv) are quantized, by both int8 methods: the
preprocessing part of the graph (NaN imputation, scaling, one-hot and the PCA MatMul of the
tabular model; the image model's Reshape, Sub and Div) stays fp32, so that serving applies the
fitted numbers exactly as training did, and the raw input, NaN included, never meets a
quantizer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from lakestory.training.model import WithProbability

INPUT_NAME = "features"
OUTPUT_NAME = "probability"
# ONNX fp32 against torch, as np.testing.assert_allclose would hold them
PARITY_RTOL, PARITY_ATOL = 1e-3, 1e-5
PARITY_BATCHES = (1, 7, 1024)
CALIBRATION_BATCH = 256
# what nn.Linear and nn.Conv2d export as: the layers both int8 methods quantize
LAYER_OPS = ("Gemm", "Conv")


class ParityError(RuntimeError):
    """The ONNX graph does not compute what the torch model computes."""


def export_onnx(model: torch.nn.Module, n_features: int, path: Path) -> None:
    """Export `model` (logits) as a graph that takes raw features and outputs probabilities.

    The batch dimension is dynamic; NaN imputation and scaling are part of the graph. `model`
    must already be in inference mode (a model loaded from MLflow's pt2 format always is, and
    refuses `.eval()`). The exporter's per-node metadata (stack traces naming this checkout's
    files, module scopes) and its intermediate shape annotations (`value_info`, optional: ONNX
    Runtime infers shapes itself) are dropped: they were most of a small model's file.
    """
    wrapped = WithProbability(model)
    wrapped.training = False  # not .eval(): that would recurse into a pt2 module, which refuses
    example = torch.zeros(2, n_features, dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        wrapped,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch},),
        optimize=True,
        verbose=False,  # its progress lines are not lakestory's
    )
    assert program is not None
    program.save(str(path))
    graph = onnx.load(str(path))
    for node in graph.graph.node:
        del node.metadata_props[:]
    del graph.metadata_props[:]
    del graph.graph.value_info[:]
    onnx.save(graph, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def _without_value_info(fp32: Path, out: Path) -> tuple[Path, onnx.ModelProto]:
    """A copy of `fp32` for the quantizers, and the graph.

    The exporter annotates the weights' shapes in `value_info`; the quantizer transposes Gemm
    weights and then trips over those stale annotations, so it gets a copy without them (they
    are optional: shapes are inferred again). `export_onnx` drops them already; a graph
    exported elsewhere may still carry them.
    """
    model = onnx.load(str(fp32))
    del model.graph.value_info[:]
    plain = out.with_name(f".{out.name}.input.onnx")
    onnx.save(model, str(plain))
    return plain, model


def _layers(model: onnx.ModelProto) -> tuple[list[str], Counter[int]]:
    """The names of the network's layers (`nn.Linear` exports as Gemm, `nn.Conv2d` as Conv, and
    nothing in the preprocessing does), and how many weights of each rank they hold (2: a
    Gemm's matrix, 4: a 2-d Conv's kernels): what an int8 copy must hold as int8."""
    weights = {t.name: len(t.dims) for t in model.graph.initializer}
    layers = [n for n in model.graph.node if n.op_type in LAYER_OPS]
    return [n.name for n in layers], Counter(weights[n.input[1]] for n in layers)


def _check_quantized(path: Path, expected: Counter[int]) -> None:
    """Drop the quantizer's shape annotations (as `export_onnx` drops the exporter's, so that
    sizes compare), run `onnx.checker`, and make sure exactly the layers' weights (`expected`,
    counted by rank: 2 for Gemm, 4 for Conv) became int8 and that every scale is finite (NaN in
    a calibration range would not be). Zero points, int8 too, have rank 0 or 1."""
    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    tensors = [numpy_helper.to_array(t) for t in model.graph.initializer]
    int8 = Counter(t.ndim for t in tensors if t.dtype == np.int8 and t.ndim >= 2)
    if int8 != expected:
        raise RuntimeError(
            f"{path.name}: int8 weights by rank {dict(sorted(int8.items()))}, "
            f"expected {dict(sorted(expected.items()))}"
        )
    if not all(np.isfinite(t).all() for t in tensors if t.dtype == np.float32):
        raise RuntimeError(f"{path.name}: a quantization scale or weight is not finite")


def quantize_int8(fp32: Path, int8: Path) -> None:
    """Dynamic int8 quantization of the layers' weights (activations quantized at run time,
    per batch, to uint8): Gemm becomes MatMulInteger, Conv becomes ConvInteger, both of which
    ONNX Runtime's CPU provider runs with int8 weights.

    ConvInteger is correct but slow on the CPU: on the 8x8 digits CNN (onnxruntime 1.31, one
    thread) the dynamic graph scored about a sixth of fp32's rows per second, while the static
    QDQ graph (fused into QLinearConv) kept over half. The report's throughput column shows
    it; the gate weighs size, accuracy and batch invariance, not speed.

    The dynamic quantizer rewrites each Gemm as MatMul + Add (new names) before it chooses
    what to quantize, so the preprocessing is kept out by excluding every other node.
    """
    plain, model = _without_value_info(fp32, int8)
    layers, weights = _layers(model)
    try:
        quantize_dynamic(
            str(plain),
            str(int8),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Conv"],
            nodes_to_exclude=[n.name for n in model.graph.node if n.name not in layers],
        )
    finally:
        plain.unlink(missing_ok=True)
    _check_quantized(int8, weights)


class _Batches(CalibrationDataReader):
    """Feeds the calibration rows to the quantizer's augmented graph in batches."""

    def __init__(self, x: np.ndarray, size: int = CALIBRATION_BATCH) -> None:
        self._batches: Iterator[np.ndarray] = (
            x[i : i + size].astype(np.float32) for i in range(0, len(x), size)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_int8_static(fp32: Path, int8: Path, calibration: np.ndarray) -> None:
    """Static int8 quantization in QDQ form: weights per output channel, activation ranges
    (min/max) calibrated on `calibration`, raw feature vectors as the graph takes them.

    Only the network's Gemm and Conv nodes are quantized and calibrated
    (`op_types_to_quantize` and `nodes_to_quantize`): their inputs come after the imputation
    (the image normalisation), so the NaN of raw vectors reach no calibration range.
    """
    if len(calibration) == 0:
        raise ValueError("static quantization needs calibration rows; none were given")
    plain, model = _without_value_info(fp32, int8)
    layers, weights = _layers(model)
    try:
        quantize_static(
            str(plain),
            str(int8),
            _Batches(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(LAYER_OPS),
            nodes_to_quantize=layers,
        )
    finally:
        plain.unlink(missing_ok=True)
    _check_quantized(int8, weights)


def inference_session(model: Path | bytes, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session on `threads` intra-op threads (Spark's workers use 1)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def output_classes(model: Path | bytes | onnx.ModelProto) -> int:
    """How many probability columns the graph outputs: 1 for a binary model (P(label = 1)),
    K for a K-class one. What `inference.score_frame` takes as `classes`."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 1:
        return 1
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        raise ValueError(f"output {model.graph.output[0].name!r} is not (batch, classes)")
    return int(dims[1].dim_value)


def _rows(out: np.ndarray) -> np.ndarray:
    """(N, 1) -> (N,): a binary model's P(label = 1) per row; (N, K) stays as it is."""
    return out.reshape(-1) if out.ndim < 2 or out.shape[1] == 1 else out


def onnx_probabilities(model: Path | ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """P(label = 1) for each row of `x`, (N,), or each class's probability, (N, K), computed
    by ONNX Runtime on the CPU."""
    session = model if isinstance(model, ort.InferenceSession) else inference_session(model)
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})
    return _rows(np.asarray(out))


def torch_probabilities(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """P(label = 1) for each row of `x`, (N,), or each class's probability, (N, K), computed
    by the torch model (logits) itself."""
    with torch.no_grad():
        out = WithProbability(model)(torch.from_numpy(x.astype(np.float32)))
    return _rows(out.numpy())


def check_parity(model: torch.nn.Module, onnx_path: Path, x: np.ndarray) -> float:
    """Compare the ONNX graph with torch on batches of `PARITY_BATCHES` rows of `x` (repeated
    when `x` has fewer); raise `ParityError` unless every output is within `PARITY_RTOL` and
    `PARITY_ATOL` of torch's (every class's probability, for a multi-class model). Returns the
    largest absolute difference."""
    if len(x) == 0:
        raise ValueError("parity needs rows to compare on; none were given")
    session = inference_session(onnx_path)
    largest = 0.0
    for size in PARITY_BATCHES:
        rows = x[np.arange(size) % len(x)]
        expected, actual = torch_probabilities(model, rows), onnx_probabilities(session, rows)
        if actual.shape != expected.shape:
            raise ParityError(f"batch of {size}: ONNX gave {actual.shape}, torch {expected.shape}")
        diff = np.abs(actual - expected)
        largest = max(largest, float(np.max(diff)))
        bad = ~np.isclose(actual, expected, rtol=PARITY_RTOL, atol=PARITY_ATOL)
        if bad.any():
            raise ParityError(
                f"batch of {size}: {int(bad.sum())} of {actual.size} ONNX outputs differ from "
                f"torch's beyond rtol {PARITY_RTOL}, atol {PARITY_ATOL} "
                f"(max |diff| {float(diff.max()):.2e})"
            )
    return largest
