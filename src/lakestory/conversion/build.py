"""A torch model -> ONNX fp32, int8 dynamic and int8 static files, measured side by side, and
the gate's choice among them (`convert`)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lakestory.conversion.onnx_export import (
    PARITY_ATOL,
    PARITY_BATCHES,
    PARITY_RTOL,
    check_parity,
    export_onnx,
    inference_session,
    onnx_probabilities,
    output_classes,
    quantize_int8,
    quantize_int8_static,
    torch_probabilities,
)
from lakestory.conversion.report import (
    INT8_DYNAMIC,
    INT8_STATIC,
    ONNX_FP32,
    TORCH_FP32,
    ConversionReport,
    Figures,
    accuracy,
    agreement,
    choose_champion,
    f1,
    f1_average,
    render_html,
)

FILES = {
    ONNX_FP32: "model.onnx",
    INT8_DYNAMIC: "model.int8.dynamic.onnx",
    INT8_STATIC: "model.int8.static.onnx",
}
REPORT_JSON, REPORT_HTML = "conversion_report.json", "conversion_report.html"
LATENCY_RUNS, LATENCY_WARMUP = 300, 30
THROUGHPUT_RUNS, THROUGHPUT_BATCH = 20, 1024

Predict = Callable[[np.ndarray], np.ndarray]


def latency_ms(predict: Predict, row: np.ndarray, runs: int = LATENCY_RUNS) -> tuple[float, float]:
    """p50 and p95 of `runs` single-row calls, after a warm-up, in milliseconds."""
    for _ in range(LATENCY_WARMUP):
        predict(row)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        predict(row)
        times[i] = time.perf_counter() - start
    p50, p95 = np.percentile(times, [50, 95]) * 1000
    return float(p50), float(p95)


def throughput(predict: Predict, batch: np.ndarray, runs: int = THROUGHPUT_RUNS) -> float:
    """Rows per second over the median of `runs` calls on `batch` (after one warm-up call)."""
    predict(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - start)
    return float(len(batch) / np.median(times))


def state_dict_bytes(model: torch.nn.Module) -> int:
    """The torch model's size: its state dict as `torch.save` writes it."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _torch_predict(model: torch.nn.Module) -> Predict:
    return lambda x: torch_probabilities(model, x)


def _onnx_predict(path: Path) -> Predict:
    session = inference_session(path, threads=1)
    return lambda x: onnx_probabilities(session, x)


def _export_and_quantize(
    model: torch.nn.Module, x_test: np.ndarray, calibration: np.ndarray, paths: dict[str, Path]
) -> tuple[int, float]:
    """Write the three ONNX files to `paths`; return the graph's output classes and its parity
    with torch (the largest difference on `x_test`).

    Parity is checked before quantizing so that a graph that disagrees with torch (a
    `ParityError`) stops the conversion before anything is derived from it.
    """
    export_onnx(model, x_test.shape[1], paths[ONNX_FP32])
    classes = output_classes(paths[ONNX_FP32])
    parity = check_parity(model, paths[ONNX_FP32], x_test)
    quantize_int8(paths[ONNX_FP32], paths[INT8_DYNAMIC])
    quantize_int8_static(paths[ONNX_FP32], paths[INT8_STATIC], calibration)
    return classes, parity


def _predictors(model: torch.nn.Module, paths: dict[str, Path]) -> dict[str, Predict]:
    """The four artifacts as predict functions, torch first, then the ONNX files in `FILES`
    order (the order of the report's figures)."""
    predictors: dict[str, Predict] = {TORCH_FP32: _torch_predict(model)}
    predictors.update({artifact: _onnx_predict(paths[artifact]) for artifact in FILES})
    return predictors


def _row_by_row(predict: Predict, x: np.ndarray) -> np.ndarray:
    """`predict` on each row of `x` alone: compared with one call on all of `x`, it shows
    whether an artifact's output depends on the batch a row comes in."""
    return np.concatenate([predict(x[i : i + 1]) for i in range(len(x))])


def _size_bytes(artifact: str, model: torch.nn.Module, paths: dict[str, Path]) -> int:
    """An artifact's size: the torch model's state dict, or the ONNX file."""
    return state_dict_bytes(model) if artifact == TORCH_FP32 else paths[artifact].stat().st_size


def _measure(
    model: torch.nn.Module,
    predictors: dict[str, Predict],
    paths: dict[str, Path],
    x_test: np.ndarray,
    y_test: np.ndarray,
) -> list[Figures]:
    """Each artifact's size, speed and quality on the test split, in `predictors` order.

    Accuracy drop and agreement are measured against the fp32 ONNX graph, the reference the
    int8 files are quantized from.
    """
    probabilities = {a: predict(x_test) for a, predict in predictors.items()}
    alone = {a: _row_by_row(predict, x_test) for a, predict in predictors.items()}
    reference = probabilities[ONNX_FP32]
    batch = x_test[np.arange(THROUGHPUT_BATCH) % len(x_test)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ONNX sessions run on one thread too
    try:
        figures = []
        for artifact, predict in predictors.items():
            p50, p95 = latency_ms(predict, x_test[:1])
            p = probabilities[artifact]
            figures.append(
                Figures(
                    artifact=artifact,
                    file=FILES.get(artifact, "state dict (torch.save)"),
                    bytes=_size_bytes(artifact, model, paths),
                    latency_p50_ms=p50,
                    latency_p95_ms=p95,
                    throughput_rows_s=throughput(predict, batch),
                    accuracy=accuracy(p, y_test),
                    f1=f1(p, y_test),
                    agreement=agreement(p, reference),
                    accuracy_drop=accuracy(reference, y_test) - accuracy(p, y_test),
                    batch_max_abs_diff=float(np.max(np.abs(alone[artifact] - p))),
                )
            )
    finally:
        torch.set_num_threads(threads)
    return figures


def convert(
    model: torch.nn.Module,
    model_name: str,
    source_version: str,
    arrays: dict[str, np.ndarray],
    out_dir: Path,
    class_names: tuple[str, ...] = (),
    max_accuracy_drop: float = 0.01,
    calibration_rows: int = 1024,
    require_batch_invariance: bool = True,
) -> ConversionReport:
    """Export `model` (logits, inference mode) to ONNX, check parity with torch, quantize it to
    int8 twice, measure the four side by side on the test split and let the gate choose
    (`report.choose_champion`).

    `model` is binary (one logit per row, labels 0/1) or multi-class (one logit per class,
    labels the class ids as floats), as its output says. `arrays` holds x_/y_ arrays per split
    (`training.train.load_arrays`): test rows measure, validation rows (train rows if there are
    none) calibrate the static quantization. Writes the three ONNX files and
    `conversion_report.json`/`.html` to `out_dir`, naming the classes by `class_names` (the
    label config's; by default their numbers); raises `ParityError` if ONNX and torch disagree.
    """
    x_test, y_test = arrays["x_test"], arrays["y_test"]
    split = "validation" if len(arrays["x_validation"]) else "train"
    calibration = arrays[f"x_{split}"][:calibration_rows]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {artifact: out_dir / name for artifact, name in FILES.items()}
    classes, parity = _export_and_quantize(model, x_test, calibration, paths)
    figures = _measure(model, _predictors(model, paths), paths, x_test, y_test)

    report = ConversionReport(
        model_name=model_name,
        source_version=source_version,
        test_rows=len(y_test),
        classes=classes,
        f1_average=f1_average(classes),
        class_names=class_names or tuple(str(i) for i in range(max(classes, 2))),
        calibration_split=split,
        calibration_rows=len(calibration),
        parity_max_abs_diff=parity,
        parity_batches=PARITY_BATCHES,
        parity_rtol=PARITY_RTOL,
        parity_atol=PARITY_ATOL,
        latency_runs=LATENCY_RUNS,
        throughput_runs=THROUGHPUT_RUNS,
        figures=tuple(figures),
        gate=choose_champion(figures, max_accuracy_drop, require_batch_invariance),
        paths={a: str(p) for a, p in paths.items()},
    )
    (out_dir / REPORT_JSON).write_text(report.to_json(), encoding="utf-8")
    (out_dir / REPORT_HTML).write_text(render_html(report), encoding="utf-8")
    return report
