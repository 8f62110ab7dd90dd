from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score

from lakestory.conversion import (
    ARTIFACTS,
    INT8_DYNAMIC,
    INT8_STATIC,
    ONNX_FP32,
    REPORT_HTML,
    REPORT_JSON,
    TORCH_FP32,
    Figures,
    ParityError,
    check_parity,
    choose_champion,
    convert,
    export_onnx,
    onnx_probabilities,
    torch_probabilities,
)
from lakestory.conversion.report import accuracy, agreement, f1
from lakestory.features import FeatureParams, Input, Projection
from lakestory.training import Preprocess, build_model
from lakestory.training.vision import SmallCNN

NAN = float("nan")


def test_preprocess_imputes_scales_and_encodes() -> None:
    params = FeatureParams(
        (
            Input("a", "numeric", fill=10.0, center=10.0, scale=2.0),
            Input("colour", "onehot", fill=2.0, categories=("blue", "green", "red")),
            Input("size", "ordinal", fill=1.0, categories=("l", "m", "s")),
        )
    )
    layer = Preprocess(params)
    out = layer(torch.tensor([[NAN, 0.0, 2.0], [14.0, NAN, NAN]]))
    expected = [[0.0, 1.0, 0.0, 0.0, 2.0], [2.0, 0.0, 0.0, 1.0, 1.0]]
    assert torch.equal(out, torch.tensor(expected))
    projected = FeatureParams(
        params.inputs, Projection(mean=[1.0] * 5, components=[[1.0, 0, 0, 0, 0]], explained=[1.0])
    )
    assert torch.equal(Preprocess(projected)(torch.tensor([[12.0, 0, 0]])), torch.tensor([[0.0]]))


def _rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw vectors as the gold table holds them: numbers with NaN, a category's index or NaN."""
    x = rng.normal(50, 20, size=(n, 4)).astype(np.float32)
    x[::17, 2] = np.nan
    x[:, 3] = rng.integers(0, 3, size=n)
    x[::13, 3] = np.nan
    return x, (x[:, 0] > 50).astype(np.float32)


def _model(rng: np.random.Generator, x: np.ndarray) -> torch.nn.Module:
    """Imputation, scaling, one-hot and PCA, then one hidden layer: two Linear layers."""
    torch.manual_seed(0)
    means, stds = np.nanmean(x, 0), np.nanstd(x, 0)
    inputs = [
        Input(f"x{i}", "numeric", float(means[i]), float(means[i]), float(stds[i]))
        for i in range(3)
    ]
    inputs.append(Input("c", "onehot", 0.0, categories=("a", "b", "c")))
    basis = np.linalg.qr(rng.normal(size=(6, 6)))[0][:4]
    pca = Projection(mean=[0.1] * 6, components=basis.tolist(), explained=[1 / 6] * 6)
    return build_model(FeatureParams(tuple(inputs), pca), [8], 0.0).eval()


def test_conversion_exports_checks_quantizes_and_reports(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = _rows(rng, 300)
    x_val, y_val = _rows(rng, 200)
    model = _model(rng, x)
    arrays = {"x_test": x, "y_test": y, "x_validation": x_val, "y_validation": y_val}

    names = ("stayed", "churned")
    report = convert(model, "m", "3", arrays, tmp_path, names, max_accuracy_drop=0.02)

    fp32 = Path(report.paths[ONNX_FP32])
    assert [i.name for i in onnx.load(fp32).graph.input] == ["features"]
    # The graph takes raw, unscaled features with NaN (preprocessing lives inside it), at any
    # batch size: the batch dimension is dynamic.
    for size in (1, 7, 1024):
        rows = x[np.arange(size) % len(x)]
        np.testing.assert_allclose(
            onnx_probabilities(fp32, rows), torch_probabilities(model, rows), rtol=1e-3, atol=1e-5
        )
    assert report.parity_batches == (1, 7, 1024) and report.parity_max_abs_diff <= 1e-5
    # Both int8 models quantize the two Linear layers only: the PCA components stay fp32.
    components = np.asarray(model[0].pca_components)
    for artifact in (INT8_DYNAMIC, INT8_STATIC):
        graph = onnx.load(report.paths[artifact])
        onnx.checker.check_model(graph, full_check=True)
        tensors = [numpy_helper.to_array(t) for t in graph.graph.initializer]
        assert sum(t.dtype == np.int8 and t.ndim == 2 for t in tensors) == 2, artifact
        assert any(np.array_equal(t, components.T) for t in tensors), artifact
        p = onnx_probabilities(Path(report.paths[artifact]), x)
        assert p.shape == (300,) and np.isfinite(p).all()
    assert report.calibration_split == "validation" and report.calibration_rows == 200
    assert report.classes == 1 and report.f1_average == "binary"

    figures = {f.artifact: f for f in report.figures}
    assert tuple(figures) == ARTIFACTS
    assert figures[ONNX_FP32].agreement == figures[TORCH_FP32].agreement == 1.0
    assert figures[ONNX_FP32].accuracy == figures[TORCH_FP32].accuracy
    for f in report.figures:
        assert f.bytes > 0 and 0 < f.latency_p50_ms <= f.latency_p95_ms
        assert f.throughput_rows_s > 0 and 0 <= f.f1 <= 1
    # fp32 and static int8 give a row one probability, alone or in a batch; dynamic int8 takes
    # its activation scales from the batch, so its does not
    assert figures[ONNX_FP32].batch_max_abs_diff <= 1e-5
    assert figures[INT8_STATIC].batch_max_abs_diff <= 1e-5
    assert figures[INT8_DYNAMIC].batch_max_abs_diff > 1e-4
    assert report.gate == choose_champion(report.figures, 0.02, require_batch_invariance=True)

    written = json.loads((tmp_path / REPORT_JSON).read_text())
    assert written["gate"]["champion"] == report.gate.champion
    assert [f["artifact"] for f in written["figures"]] == list(ARTIFACTS)
    page = (tmp_path / REPORT_HTML).read_text()
    assert "<img src='data:image/png;base64," in page and "<script" not in page
    assert all(a in page for a in ARTIFACTS)
    assert "<th>F1</th>" in page and "most probable class" not in page
    assert "classes 0 = stayed, 1 = churned;" in page and report.class_names == names


def _digits() -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits as the features table holds them: flat rows of 64 raw pixel
    values (0..16), labels the class ids as floats; shuffled, then 1000 train, 300 validation
    and 497 test rows."""
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    x, y = digits.data[order].astype(np.float32), digits.target[order].astype(np.float32)
    bounds = {"train": (0, 1000), "validation": (1000, 1300), "test": (1300, len(y))}
    arrays = {}
    for split, (start, end) in bounds.items():
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[start:end], y[start:end]
    return arrays


def _trained_cnn(x: np.ndarray, y: np.ndarray, steps: int = 300) -> torch.nn.Module:
    """SmallCNN trained briefly (seeded, one thread) on the train rows: logits, 10 classes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = SmallCNN(8, 8, 10, mean=float(x.mean()), std=float(x.std()))
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        rows, labels = torch.from_numpy(x), torch.from_numpy(y).long()
        batches = torch.Generator().manual_seed(0)
        for _ in range(steps):
            i = torch.randint(0, len(rows), (64,), generator=batches)
            loss = torch.nn.functional.cross_entropy(model(rows[i]), labels[i])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def test_a_digits_cnn_converts_with_its_convolutions_quantized(tmp_path: Path) -> None:
    arrays = _digits()
    model = _trained_cnn(arrays["x_train"], arrays["y_train"])
    x, y = arrays["x_test"], arrays["y_test"]

    report = convert(model, "digits", "1", arrays, tmp_path)

    assert report.classes == 10 and report.f1_average == "macro"
    assert report.parity_max_abs_diff <= 1e-5
    expected = torch_probabilities(model, x)
    assert expected.shape == (len(x), 10)
    for artifact in (ONNX_FP32, INT8_DYNAMIC, INT8_STATIC):
        p = onnx_probabilities(Path(report.paths[artifact]), x)
        assert p.shape == (len(x), 10), artifact
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5, err_msg=artifact)
    figures = {f.artifact: f for f in report.figures}
    fp32 = figures[ONNX_FP32]
    assert fp32.accuracy == figures[TORCH_FP32].accuracy > 0.8
    assert fp32.agreement == figures[TORCH_FP32].agreement == 1.0
    # the macro average over the ten digits, not the positive class of a binary model
    predicted = onnx_probabilities(Path(report.paths[ONNX_FP32]), x).argmax(axis=1)
    assert fp32.f1 == pytest.approx(f1_score(y.astype(int), predicted, average="macro"))
    assert fp32.f1 > 0.8
    for f in report.figures:
        assert 0.8 < f.accuracy <= 1 and 0.8 < f.agreement <= 1, f.artifact
    assert fp32.batch_max_abs_diff <= 1e-5 and figures[INT8_STATIC].batch_max_abs_diff <= 1e-5

    # Both int8 models hold the two Conv kernels (rank 4) and the two Linear matrices (rank 2)
    # as int8; the normalisation (Reshape, Sub, Div with the fitted mean and std) stays fp32
    # and the raw pixels reach no quantizer: the first activation quantized is the Div's.
    for artifact in (INT8_DYNAMIC, INT8_STATIC):
        graph = onnx.load(report.paths[artifact]).graph
        tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        ranks = sorted(t.ndim for t in tensors.values() if t.dtype == np.int8 and t.ndim >= 2)
        assert ranks == [2, 2, 4, 4], artifact
        sub, div = (next(n for n in graph.node if n.op_type == op) for op in ("Sub", "Div"))
        assert [tensors[sub.input[1]].dtype, tensors[div.input[1]].dtype] == [np.float32] * 2
        quantized = {
            n.input[0]
            for n in graph.node
            if n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear")
        }
        assert div.output[0] in quantized and not {"features", sub.output[0]} & quantized
    dynamic = [n.op_type for n in onnx.load(report.paths[INT8_DYNAMIC]).graph.node]
    assert dynamic.count("ConvInteger") == 2 and dynamic.count("MatMulInteger") == 2

    written = json.loads((tmp_path / REPORT_JSON).read_text())
    assert written["classes"] == 10 and written["f1_average"] == "macro"
    assert written["class_names"] == [str(i) for i in range(10)]  # none given: their numbers
    page = (tmp_path / REPORT_HTML).read_text()
    assert "<th>F1 (macro)</th>" in page and "10 classes" in page


def test_multi_class_figures_compare_the_most_probable_class() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
    y = np.array([0.0, 2.0, 2.0, 1.0], dtype=np.float32)
    # predicted 0, 2, 1, 0 (the first of a tie): rows 0 and 1 right
    assert accuracy(p, y) == 0.5
    # F1 per class: 0 -> 2/3 (1 right, 1 wrong prediction), 1 -> 0, 2 -> 2/3
    assert f1(p, y) == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)
    assert agreement(p, p[:, [1, 0, 2]]) == 0.5  # rows 1 and 3 keep their class


def test_parity_fails_when_the_graph_is_not_the_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, _ = _rows(rng, 50)
    model = _model(rng, x)
    export_onnx(model, 4, tmp_path / "m.onnx")
    assert check_parity(model, tmp_path / "m.onnx", x) <= 1e-5
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[-1].bias += 0.01  # a small shift of every logit
    with pytest.raises(ParityError, match="batch of 1:"):
        check_parity(other, tmp_path / "m.onnx", x)


def _figures(**drops_sizes_and_batch_diffs: tuple[float, int, float]) -> list[Figures]:
    base = Figures(ONNX_FP32, "model.onnx", 1000, 0.1, 0.2, 1e5, 0.85, 0.7, 1.0, 0.0, 0.0)
    return [base] + [
        # the drop as the report computes it: a difference of two accuracies
        replace(base, artifact=a, bytes=size, accuracy=0.85 - drop, batch_max_abs_diff=diff)
        for a, (drop, size, diff) in drops_sizes_and_batch_diffs.items()
    ]


@pytest.mark.parametrize(
    ("static", "dynamic", "invariance", "champion"),
    [
        ((0.0, 300, 0.0), (0.0, 400, 0.0), True, INT8_STATIC),  # both pass: the smaller
        ((0.0, 400, 0.0), (0.005, 300, 0.0), True, INT8_DYNAMIC),
        ((0.0, 300, 0.0), (0.0, 300, 0.0), True, INT8_STATIC),  # same size: static
        ((0.02, 300, 0.0), (0.01, 400, 0.0), True, INT8_DYNAMIC),  # exactly the limit passes
        ((0.02, 300, 0.0), (0.011, 400, 0.0), True, ONNX_FP32),  # none passes
        ((-0.01, 300, 0.0), (0.05, 200, 0.0), True, INT8_STATIC),  # better than fp32 passes
        # a row's probability depends on its batch: refused, unless invariance is not asked
        ((0.0, 400, 0.0), (0.0, 300, 0.03), True, INT8_STATIC),
        ((0.0, 400, 0.0), (0.0, 300, 0.03), False, INT8_DYNAMIC),
        ((0.0, 400, 2e-5), (0.0, 300, 0.03), True, ONNX_FP32),
        ((0.0, 1000, 0.0), (0.0, 1200, 0.0), True, ONNX_FP32),  # no smaller than fp32: no gain
    ],
)
def test_gate_takes_the_smallest_int8_within_the_accuracy_drop(
    static: tuple[float, int, float],
    dynamic: tuple[float, int, float],
    invariance: bool,
    champion: str,
) -> None:
    figures = _figures(onnx_int8_static=static, onnx_int8_dynamic=dynamic)
    figures = [replace(f, accuracy_drop=0.85 - f.accuracy) for f in figures]
    gate = choose_champion(figures, max_accuracy_drop=0.01, require_batch_invariance=invariance)
    assert gate.champion == champion, gate.reason
    assert gate.max_accuracy_drop == 0.01 and gate.reason.startswith(champion)
