"""Registered model -> ONNX (preprocessing inside), checked, compared with torch, int8."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from lakestory.training.model import WithProbability

INPUT_NAME = "features"
OUTPUT_NAME = "probability"
PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ConversionReport:
    model_name: str
    model_version: str
    onnx_path: str
    int8_path: str
    onnx_bytes: int
    int8_bytes: int
    max_abs_diff_vs_torch: float
    accuracy_torch: float
    accuracy_onnx: float
    accuracy_int8: float
    agreement_int8_vs_onnx: float
    test_rows: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def export_onnx(model: torch.nn.Module, n_features: int, path: Path) -> None:
    """Export `model` (logits) as a graph that takes raw features and outputs probabilities.

    The batch dimension is dynamic; NaN imputation and scaling are part of the graph. `model`
    must already be in inference mode (a model loaded from MLflow's pt2 format always is, and
    refuses `.eval()`).
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
    onnx.checker.check_model(str(path), full_check=True)


def quantize_int8(fp32: Path, int8: Path) -> None:
    """Dynamic int8 quantization of the weights (activations quantized at run time).

    The exporter annotates the weights' shapes in `value_info`; the quantizer transposes Gemm
    weights and then trips over those stale annotations, so it gets a copy without them
    (they are optional: shapes are inferred again).
    """
    model = onnx.load(str(fp32))
    del model.graph.value_info[:]
    plain = int8.with_name(f".{int8.name}.input.onnx")
    onnx.save(model, str(plain))
    try:
        quantize_dynamic(str(plain), str(int8), weight_type=QuantType.QInt8)
    finally:
        plain.unlink(missing_ok=True)
    onnx.checker.check_model(str(int8))


def onnx_probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    """P(label = 1) for each row of `x`, computed by ONNX Runtime on the CPU."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})
    return np.asarray(out).reshape(-1)


def convert(
    model: torch.nn.Module,
    model_name: str,
    model_version: str,
    x_test: np.ndarray,
    y_test: np.ndarray,
    out_dir: Path,
) -> ConversionReport:
    """Write model.onnx and model.int8.onnx to `out_dir` and measure them against torch.

    `model` outputs logits and is in inference mode. Raises if ONNX and torch disagree beyond
    `PARITY_TOLERANCE` on the test rows.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out_dir / "model.onnx", out_dir / "model.int8.onnx"
    export_onnx(model, x_test.shape[1], fp32)
    quantize_int8(fp32, int8)

    with torch.no_grad():
        p_torch = WithProbability(model)(torch.from_numpy(x_test.astype(np.float32))).numpy()
    p_torch = p_torch.reshape(-1)
    p_onnx = onnx_probabilities(fp32, x_test)
    p_int8 = onnx_probabilities(int8, x_test)
    diff = float(np.max(np.abs(p_torch - p_onnx))) if len(x_test) else 0.0
    if diff > PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX output differs from torch by {diff:.2e} (> {PARITY_TOLERANCE})")

    def accuracy(p: np.ndarray) -> float:
        return float(np.mean((p > 0.5) == (y_test > 0.5))) if len(y_test) else float("nan")

    report = ConversionReport(
        model_name=model_name,
        model_version=model_version,
        onnx_path=str(fp32),
        int8_path=str(int8),
        onnx_bytes=fp32.stat().st_size,
        int8_bytes=int8.stat().st_size,
        max_abs_diff_vs_torch=diff,
        accuracy_torch=accuracy(p_torch),
        accuracy_onnx=accuracy(p_onnx),
        accuracy_int8=accuracy(p_int8),
        agreement_int8_vs_onnx=float(np.mean((p_int8 > 0.5) == (p_onnx > 0.5))),
        test_rows=int(len(y_test)),
    )
    (out_dir / "conversion_report.json").write_text(report.to_json(), encoding="utf-8")
    return report
