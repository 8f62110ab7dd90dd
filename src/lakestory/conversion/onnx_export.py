"""Registered model -> one ONNX graph (preprocessing inside), its parity with torch, int8 copies.

Only the MLP's layers (`nn.Linear`, exported as Gemm) are quantized, by both int8 methods: the
preprocessing part of the graph (NaN imputation, scaling, one-hot, the PCA MatMul) stays fp32,
so that serving applies the fitted numbers exactly as training did, and the raw input, NaN
included, never meets a quantizer.
"""

from __future__ import annotations

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


def _without_value_info(fp32: Path, out: Path) -> tuple[Path, list[onnx.NodeProto]]:
    """A copy of `fp32` for the quantizers, and its nodes.

    The exporter annotates the weights' shapes in `value_info`; the quantizer transposes Gemm
    weights and then trips over those stale annotations, so it gets a copy without them (they
    are optional: shapes are inferred again). `export_onnx` drops them already; a graph
    exported elsewhere may still carry them.
    """
    model = onnx.load(str(fp32))
    del model.graph.value_info[:]
    plain = out.with_name(f".{out.name}.input.onnx")
    onnx.save(model, str(plain))
    return plain, list(model.graph.node)


def _linear_layers(nodes: list[onnx.NodeProto]) -> list[str]:
    """The names of the MLP's layers: `nn.Linear` exports as Gemm, and nothing else does."""
    return [n.name for n in nodes if n.op_type == "Gemm"]


def _check_quantized(path: Path, layers: int) -> None:
    """Drop the quantizer's shape annotations (as `export_onnx` drops the exporter's, so that
    sizes compare), run `onnx.checker`, and make sure exactly the MLP's `layers` weight
    matrices became int8 and that every scale is finite (NaN in a calibration range would not
    be)."""
    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    tensors = [numpy_helper.to_array(t) for t in model.graph.initializer]
    int8 = [t for t in tensors if t.dtype == np.int8 and t.ndim == 2]
    if len(int8) != layers:
        raise RuntimeError(f"{path.name}: {len(int8)} int8 weight matrices, expected {layers}")
    if not all(np.isfinite(t).all() for t in tensors if t.dtype == np.float32):
        raise RuntimeError(f"{path.name}: a quantization scale or weight is not finite")


def quantize_int8(fp32: Path, int8: Path) -> None:
    """Dynamic int8 quantization of the MLP's weights (activations quantized at run time).

    The dynamic quantizer rewrites each Gemm as MatMul + Add (new names) before it chooses
    what to quantize, so the preprocessing is kept out by excluding every other node.
    """
    plain, nodes = _without_value_info(fp32, int8)
    layers = _linear_layers(nodes)
    try:
        quantize_dynamic(
            str(plain),
            str(int8),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=[n.name for n in nodes if n.name not in layers],
        )
    finally:
        plain.unlink(missing_ok=True)
    _check_quantized(int8, len(layers))


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

    Only the MLP's Gemm nodes are quantized and calibrated (`op_types_to_quantize` and
    `nodes_to_quantize`): their inputs come after the imputation, so the NaN of raw vectors
    reach no calibration range.
    """
    if len(calibration) == 0:
        raise ValueError("static quantization needs calibration rows; none were given")
    plain, nodes = _without_value_info(fp32, int8)
    layers = _linear_layers(nodes)
    try:
        quantize_static(
            str(plain),
            str(int8),
            _Batches(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Gemm"],
            nodes_to_quantize=layers,
        )
    finally:
        plain.unlink(missing_ok=True)
    _check_quantized(int8, len(layers))


def inference_session(model: Path | bytes, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session on `threads` intra-op threads (Spark's workers use 1)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def onnx_probabilities(model: Path | ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """P(label = 1) for each row of `x`, computed by ONNX Runtime on the CPU."""
    session = model if isinstance(model, ort.InferenceSession) else inference_session(model)
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})
    return np.asarray(out).reshape(-1)


def torch_probabilities(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """P(label = 1) for each row of `x`, computed by the torch model (logits) itself."""
    with torch.no_grad():
        out = WithProbability(model)(torch.from_numpy(x.astype(np.float32)))
    return out.numpy().reshape(-1)


def check_parity(model: torch.nn.Module, onnx_path: Path, x: np.ndarray) -> float:
    """Compare the ONNX graph with torch on batches of `PARITY_BATCHES` rows of `x` (repeated
    when `x` has fewer); raise `ParityError` unless every output is within `PARITY_RTOL` and
    `PARITY_ATOL` of torch's. Returns the largest absolute difference."""
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
                f"batch of {size}: {int(bad.sum())} of {size} ONNX outputs differ from torch's "
                f"beyond rtol {PARITY_RTOL}, atol {PARITY_ATOL} "
                f"(max |diff| {float(diff.max()):.2e})"
            )
    return largest
