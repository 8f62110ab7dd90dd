"""The conversion report: each artifact's size, speed and accuracy, the gate that picks the
champion, and the same as one self-contained HTML page (the plot embedded as a PNG).

Probabilities come as the conversion computes them: P(label = 1) per row, shape (N,), for a
binary model, whose prediction is 1 above `THRESHOLD`; each class's probability, (N, K), for a
K-class model, whose prediction is the most probable class, scored against labels that are
class ids (3.0 for class 3). F1 is the positive class's for a binary model and the unweighted
mean of every class's (macro) for a multi-class one.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

TORCH_FP32 = "torch_fp32"
ONNX_FP32 = "onnx_fp32"
INT8_DYNAMIC = "onnx_int8_dynamic"
INT8_STATIC = "onnx_int8_static"
ARTIFACTS = (TORCH_FP32, ONNX_FP32, INT8_DYNAMIC, INT8_STATIC)
# The gate's order among int8 artifacts of the same size: static first (its activation ranges
# were calibrated on data, not guessed per batch at run time).
INT8 = (INT8_STATIC, INT8_DYNAMIC)
THRESHOLD = 0.5
# how F1 is averaged, named as scikit-learn's f1_score names it
F1_BINARY, F1_MACRO = "binary", "macro"
# a row's probability alone and within a batch may differ by float rounding, no more
BATCH_ATOL = 1e-5


@dataclass(frozen=True)
class Figures:
    """One artifact measured on the test split. Timings use one CPU thread; `agreement` and
    `accuracy_drop` are against ONNX fp32, the reference the gate uses."""

    artifact: str
    file: str  # torch_fp32: its state dict as torch.save writes it (weights + fitted buffers)
    bytes: int
    latency_p50_ms: float  # one row at a time
    latency_p95_ms: float
    throughput_rows_s: float  # batches of 1024 rows
    accuracy: float
    f1: float  # averaged as the report's `f1_average` says
    agreement: float  # share of test rows with the same prediction (0/1, or class) as ONNX fp32
    accuracy_drop: float  # ONNX fp32's test accuracy minus this one's
    # largest |P(row scored alone) - P(the row scored within the whole test split)|, over every
    # class's probability for a multi-class model
    batch_max_abs_diff: float


@dataclass(frozen=True)
class Gate:
    max_accuracy_drop: float
    require_batch_invariance: bool
    champion: str
    reason: str


@dataclass(frozen=True)
class ConversionReport:
    model_name: str
    source_version: str  # the registered (torch) version converted
    test_rows: int
    # the model's probability columns: 1 for a binary model (P(label = 1)), K for K classes
    classes: int
    f1_average: str  # F1_BINARY (the positive class's) or F1_MACRO (mean over the classes)
    class_names: tuple[str, ...]  # each class's name, in the order of its number (the label's)
    calibration_split: str
    calibration_rows: int
    parity_max_abs_diff: float
    parity_batches: tuple[int, ...]
    parity_rtol: float
    parity_atol: float
    latency_runs: int
    throughput_runs: int
    figures: tuple[Figures, ...]
    gate: Gate
    paths: dict[str, str]  # ONNX artifact -> its file

    def figure(self, artifact: str) -> Figures:
        return next(f for f in self.figures if f.artifact == artifact)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def f1_average(classes: int) -> str:
    """How F1 is averaged for a model with `classes` probability columns (1: binary)."""
    return F1_BINARY if classes == 1 else F1_MACRO


def _classes(p: np.ndarray) -> np.ndarray:
    """Each row's most probable class, from (N, K) probabilities."""
    return np.argmax(p, axis=1)


def _class_ids(y: np.ndarray) -> np.ndarray:
    """Labels stored as floats (3.0) -> class ids (3)."""
    return np.rint(y).astype(np.int64)


def accuracy(p: np.ndarray, y: np.ndarray) -> float:
    if not len(y):
        return float("nan")
    if p.ndim == 2:
        return float(np.mean(_classes(p) == _class_ids(y)))
    return float(np.mean((p > THRESHOLD) == (y > THRESHOLD)))


def f1(p: np.ndarray, y: np.ndarray) -> float:
    """Binary (1-D `p`): F1 of the positive class (label 1); 0 when there is no positive to
    find or found. Multi-class (2-D `p`): the macro F1, the unweighted mean of each class's F1
    over the classes among the labels or the predictions (scikit-learn's `average="macro"`); a
    class predicted but never present, or present but never predicted, counts 0."""
    if p.ndim == 2:
        from sklearn.metrics import f1_score

        if not len(y):
            return float("nan")
        return float(f1_score(_class_ids(y), _classes(p), average=F1_MACRO, zero_division=0))
    predicted, actual = p > THRESHOLD, y > THRESHOLD
    tp = float(np.sum(predicted & actual))
    wrong = float(np.sum(predicted != actual))
    return 0.0 if tp == 0 else tp / (tp + wrong / 2)


def agreement(p: np.ndarray, reference: np.ndarray) -> float:
    if not len(p):
        return float("nan")
    if p.ndim == 2:
        return float(np.mean(_classes(p) == _classes(reference)))
    return float(np.mean((p > THRESHOLD) == (reference > THRESHOLD)))


def choose_champion(
    figures: Sequence[Figures], max_accuracy_drop: float, require_batch_invariance: bool = True
) -> Gate:
    """Among the int8 artifacts smaller than ONNX fp32 whose test accuracy is at most
    `max_accuracy_drop` below its (and, with `require_batch_invariance`, which give a row the
    same probability alone as within a batch), the smallest file, static first at equal size;
    none: ONNX fp32."""
    by_name = {f.artifact: f for f in figures}
    int8 = [by_name[a] for a in INT8 if a in by_name]
    limit = f"{100 * max_accuracy_drop:.2f} points"

    fp32 = by_name[ONNX_FP32]

    def refusal(f: Figures) -> str | None:
        # a drop of exactly the limit passes: 1e-9 absorbs the float error of a difference of
        # shares (0.8333 - 0.8250 is not exactly 0.0083)
        if f.accuracy_drop > max_accuracy_drop + 1e-9:
            return f"{f.artifact} loses {100 * f.accuracy_drop:.2f} points"
        if f.bytes >= fp32.bytes:
            return f"{f.artifact} is no smaller, {f.bytes:,} B"
        if require_batch_invariance and f.batch_max_abs_diff > BATCH_ATOL:
            return (
                f"{f.artifact} gives a row another probability within a batch than alone "
                f"(up to {f.batch_max_abs_diff:.2g})"
            )
        return None

    refused = {f.artifact: why for f in int8 if (why := refusal(f)) is not None}
    invariant = " and batch-invariant" if require_batch_invariance else ""
    passing = [f for f in int8 if f.artifact not in refused]
    if not passing:
        return Gate(
            max_accuracy_drop,
            require_batch_invariance,
            ONNX_FP32,
            f"{ONNX_FP32}: no smaller int8 model within {limit} of its test accuracy"
            f"{invariant} ({'; '.join(refused.values())})",
        )
    best = min(passing, key=lambda f: (f.bytes, INT8.index(f.artifact)))
    others = f"; {'; '.join(refused.values())}" if refused else ""
    return Gate(
        max_accuracy_drop,
        require_batch_invariance,
        best.artifact,
        f"{best.artifact}: the smallest int8 model within {limit} of ONNX fp32's test accuracy"
        f"{invariant} ({best.bytes:,} B against {fp32.bytes:,} B, accuracy {best.accuracy:.4f} "
        f"against {fp32.accuracy:.4f}){others}",
    )


COLOURS = {
    TORCH_FP32: "#8c8c8c",
    ONNX_FP32: "#4c72b0",
    INT8_DYNAMIC: "#dd8452",
    INT8_STATIC: "#55a868",
}


def size_accuracy_png(report: ConversionReport) -> bytes:
    """File size (kB, log scale) against test accuracy, the gate's bar drawn across, the
    champion ringed; artifacts named in the legend, since their points often coincide.
    matplotlib's object API: no pyplot, no global state."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter

    fig = Figure(figsize=(6.4, 3.6), dpi=96)
    ax = fig.add_subplot()
    markers = dict(zip(ARTIFACTS, "sodD", strict=True))
    for f in report.figures:
        ax.scatter(
            f.bytes / 1000,
            100 * f.accuracy,
            s=50,
            marker=markers.get(f.artifact, "o"),
            color=COLOURS.get(f.artifact, "black"),
            label=f.artifact,
            zorder=3,
        )
    champion = report.figure(report.gate.champion)
    ax.scatter(
        champion.bytes / 1000,
        100 * champion.accuracy,
        s=260,
        facecolors="none",
        edgecolors="black",
        linewidths=1.2,
        label=f"champion ({champion.artifact})",
    )
    bar = 100 * (report.figure(ONNX_FP32).accuracy - report.gate.max_accuracy_drop)
    ax.axhline(bar, color="#b00020", linestyle="--", linewidth=1, label="gate: lowest accuracy")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("file size (kB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render_html(report: ConversionReport) -> str:
    """One self-contained page: styles inline, the plot as a data URI, nothing fetched."""
    from lakestory.profiling.plots import data_uri
    from lakestory.profiling.report import STYLE

    headers = (
        "artifact",
        "file",
        "bytes",
        "latency p50 (ms)",
        "latency p95 (ms)",
        "throughput (rows/s)",
        "accuracy",
        "F1" if report.f1_average == F1_BINARY else f"F1 ({report.f1_average})",
        "agreement with ONNX fp32",
        "accuracy drop",
        "max |alone - in batch|",
    )
    rows = "".join(
        "<tr>"
        + f"<td class='l'>{'<b>' if f.artifact == report.gate.champion else ''}"
        + f"{_e(f.artifact)}{'</b>' if f.artifact == report.gate.champion else ''}</td>"
        + f"<td class='l'>{_e(f.file)}</td>"
        + "".join(
            f"<td>{v}</td>"
            for v in (
                f"{f.bytes:,}",
                f"{f.latency_p50_ms:.4f}",
                f"{f.latency_p95_ms:.4f}",
                f"{f.throughput_rows_s:,.0f}",
                f"{f.accuracy:.4f}",
                f"{f.f1:.4f}",
                f"{f.agreement:.4f}",
                f"{100 * f.accuracy_drop:+.2f} pt",
                f"{f.batch_max_abs_diff:.2g}",
            )
        )
        + "</tr>"
        for f in report.figures
    )
    head = "".join(
        f"<th class='l'>{_e(h)}</th>" if i < 2 else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    title = f"Conversion of {report.model_name} v{report.source_version}"
    plot = data_uri(size_accuracy_png(report))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>"
        f"<p class='meta'>{report.test_rows} test rows; classes "
        + ", ".join(f"{i} = {_e(name)}" for i, name in enumerate(report.class_names))
        + "; "
        + (
            ""
            if report.classes == 1
            else f"{report.classes} classes, each row predicted as its most probable class, F1 "
            f"the {_e(report.f1_average)} average over the classes; "
        )
        + "static int8 calibrated on "
        f"{report.calibration_rows} {_e(report.calibration_split)} rows; timings on one CPU "
        f"thread: latency over {report.latency_runs} single-row runs after a warm-up, throughput "
        f"the median of {report.throughput_runs} batches of 1024 rows.</p>"
        f"<h2>Champion: {_e(report.gate.champion)}</h2><p>{_e(report.gate.reason)}</p>"
        f"<p class='meta'>Gate: an int8 model may be champion if it is smaller than ONNX fp32, "
        f"its test accuracy at most {100 * report.gate.max_accuracy_drop:.2f} points below "
        f"ONNX fp32's"
        + (
            f" and it gives every test row the same probability alone as within the whole "
            f"test split (to {BATCH_ATOL:g})"
            if report.gate.require_batch_invariance
            else ""
        )
        + "; the smallest such file wins (static before dynamic at equal size), else ONNX "
        "fp32.</p>"
        f"<h2>Artifacts</h2><table><tr>{head}</tr>{rows}</table>"
        f"<img src='{plot}' alt='file size against test accuracy'>"
        f"<h2>Parity</h2><p>ONNX fp32 against torch at batch sizes "
        f"{', '.join(map(str, report.parity_batches))}: every output within rtol "
        f"{report.parity_rtol:g}, atol {report.parity_atol:g}; largest |difference| "
        f"{report.parity_max_abs_diff:.2e}.</p></body></html>"
    )
