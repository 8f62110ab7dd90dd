from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from lakestory.conversion import convert, onnx_probabilities
from lakestory.training import Standardize, build_model


def test_standardize_imputes_the_train_mean() -> None:
    layer = Standardize([10.0, 0.0], [2.0, 1.0])
    out = layer(torch.tensor([[float("nan"), 3.0], [14.0, float("nan")]]))
    assert torch.equal(out, torch.tensor([[0.0, 3.0], [2.0, 0.0]]))


def test_onnx_graph_carries_the_scaler_and_agrees_with_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(50, 20, size=(300, 4)).astype(np.float32)
    x[::17, 2] = np.nan
    y = (x[:, 0] > 50).astype(np.float32)
    model = build_model(np.nanmean(x, 0).tolist(), np.nanstd(x, 0).tolist(), [8], 0.0).eval()

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
