from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from lakestory.conversion import convert, onnx_probabilities
from lakestory.features import FeatureParams, Input, Projection
from lakestory.training import Preprocess, build_model

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


def test_onnx_graph_carries_the_transforms_and_agrees_with_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(50, 20, size=(300, 4)).astype(np.float32)
    x[::17, 2] = np.nan
    x[:, 3] = rng.integers(0, 3, size=300)  # a category's index
    x[::13, 3] = np.nan
    y = (x[:, 0] > 50).astype(np.float32)
    means, stds = np.nanmean(x, 0), np.nanstd(x, 0)
    inputs = [
        Input(f"x{i}", "numeric", float(means[i]), float(means[i]), float(stds[i]))
        for i in range(3)
    ]
    inputs.append(Input("c", "onehot", 0.0, categories=("a", "b", "c")))
    basis = np.linalg.qr(rng.normal(size=(6, 6)))[0][:4]
    pca = Projection(mean=[0.1] * 6, components=basis.tolist(), explained=[1 / 6] * 6)
    model = build_model(FeatureParams(tuple(inputs), pca), [8], 0.0).eval()

    report = convert(model, "m", "1", x, y, tmp_path)

    graph = onnx.load(report.onnx_path).graph
    assert [i.name for i in graph.input] == ["features"]
    assert report.max_abs_diff_vs_torch <= 1e-5
    # The graph takes raw, unscaled features with NaN: preprocessing lives inside it.
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(x))).numpy().reshape(-1)
    np.testing.assert_allclose(onnx_probabilities(Path(report.onnx_path), x), expected, atol=1e-5)
    # A batch size other than the export example's works: the batch dimension is dynamic.
    assert onnx_probabilities(Path(report.int8_path), x[:7]).shape == (7,)
    assert report.test_rows == 300 and 0.0 <= report.accuracy_int8 <= 1.0
    assert (tmp_path / "conversion_report.json").is_file()
