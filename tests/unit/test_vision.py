"""The image model's parts: normalisation, the CNN, seeded augmentation, the ONNX graph."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from lakestory.training.vision import ImageNormalise, SmallCNN, affine, augment

H, W = 8, 8


def _digits(n: int = 6, seed: int = 0) -> torch.Tensor:
    """Images like scikit-learn's digits: 0..16, mostly background (0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 17, (n, H * W), generator=g).float()
    x[:, ::3] = 0.0
    x.reshape(n, H, W)[:, :, 0] = 0.0
    return x


def test_no_strength_changes_nothing() -> None:
    x = _digits()
    assert torch.equal(augment(x, H, W, torch.Generator().manual_seed(1), 0.0, 0.0), x)


def test_a_one_pixel_shift_moves_every_pixel_one_column() -> None:
    x = _digits()
    moved = affine(x, H, W, torch.zeros(len(x)), torch.tensor([[1.0, 0.0]] * len(x)))
    before, after = x.reshape(-1, H, W), moved.reshape(-1, H, W)
    torch.testing.assert_close(after[:, :, 1:], before[:, :, :-1])
    assert torch.all(after[:, :, 0] == 0)  # moved in from outside: background
    down = affine(x, H, W, torch.zeros(len(x)), torch.tensor([[0.0, 1.0]] * len(x)))
    torch.testing.assert_close(down.reshape(-1, H, W)[:, 1:, :], before[:, :-1, :])


def test_a_quarter_turn_is_a_rotation_of_the_grid() -> None:
    x = _digits()
    turned = affine(x, H, W, torch.full((len(x),), math.pi / 2), torch.zeros(len(x), 2))
    expected = [torch.rot90(img, k, dims=(0, 1)) for img in x.reshape(-1, H, W) for k in (1, -1)]
    got = turned.reshape(-1, H, W)
    # one of the two senses; which one is a convention of the grid, not of the test
    sense = 0 if torch.allclose(got[0], expected[0], atol=1e-4) else 1
    for i in range(len(x)):
        torch.testing.assert_close(got[i], expected[2 * i + sense], atol=1e-4, rtol=0)


def test_one_seed_gives_one_batch_and_the_strength_is_mild() -> None:
    x = _digits(64)
    a = augment(x, H, W, torch.Generator().manual_seed(5), 10.0, 1.0)
    b = augment(x, H, W, torch.Generator().manual_seed(5), 10.0, 1.0)
    c = augment(x, H, W, torch.Generator().manual_seed(6), 10.0, 1.0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # mild: most of each image's ink stays, and no pixel leaves the range of the input
    assert float(a.sum() / x.sum()) > 0.8
    assert float(a.min()) >= 0.0 and float(a.max()) <= float(x.max()) + 1e-4
    assert not torch.equal(a, x)


def test_normalisation_uses_the_given_mean_and_std() -> None:
    x = _digits(200)
    mean, std = float(x.mean()), float(x.std())
    out = ImageNormalise(H, W, mean, std)(x)
    assert out.shape == (200, 1, H, W)
    assert abs(float(out.mean())) < 1e-4 and abs(float(out.std()) - 1) < 1e-3
    with pytest.raises(ValueError, match="standard deviation"):
        ImageNormalise(H, W, mean, 0.0)


def test_the_cnn_exports_to_onnx_with_a_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SmallCNN(H, W, classes=10, mean=4.9, std=6.0).eval()
    path = tmp_path / "cnn.onnx"
    program = torch.onnx.export(
        model,
        (torch.zeros(2, H * W),),
        dynamo=True,
        input_names=["features"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
    )
    assert program is not None
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 7, 33):
        x = _digits(n, seed=n)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(["logits"], {"features": x.numpy()})
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
