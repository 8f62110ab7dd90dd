"""A model of the demo's shape, trained in-process on synthetic rows, for the two model benches.

The demo's customers model takes 11 raw inputs (numbers with NaN where missing, a category's
index), prepares 13 (scaled numbers, one-hot categories), projects them on 11 principal
components and runs a [64, 32] MLP. Running the demo pipeline to get one would take minutes of
Spark and TorchDistributor; this builds the same `build_model` on `FeatureParams` fitted here,
with numpy, on rows whose label depends on the inputs non-linearly.
"""

from __future__ import annotations

import numpy as np
import torch

from lakestory.features import FeatureParams, Input, Projection
from lakestory.training import Preprocess, build_model

NUMERIC = 9  # numbers, 5% missing
CATEGORIES = 4  # one categorical input (a category's index), 3% missing
ORDINAL = 3  # one ordinal input (an index, scaled like a number)
PCA_K = 11


def synthetic(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw input vectors as the gold table holds them, and 0/1 labels (about 30% ones)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, NUMERIC))
    category = rng.integers(0, CATEGORIES, rows)
    ordinal = rng.integers(0, ORDINAL, rows)
    score = (
        1.2 * z[:, 0]
        - 0.8 * z[:, 1] * z[:, 2]
        + np.sin(2 * z[:, 3])
        + 0.6 * np.abs(z[:, 4])
        + 0.9 * (category == 2)
        - 0.5 * ordinal
        + 0.5 * rng.normal(size=rows)
    )
    y = (score > np.quantile(score, 0.7)).astype(np.float32)
    x = np.empty((rows, NUMERIC + 2), dtype=np.float32)
    x[:, :NUMERIC] = 40 + 15 * z * np.arange(1, NUMERIC + 1)  # unscaled, each its own spread
    x[:, :NUMERIC][rng.random((rows, NUMERIC)) < 0.05] = np.nan
    x[:, NUMERIC] = np.where(rng.random(rows) < 0.03, np.nan, category)
    x[:, NUMERIC + 1] = ordinal
    return x, y


def fitted_params(x_train: np.ndarray) -> FeatureParams:
    """Means, standard deviations, categories and a PCA fitted on `x_train` (as the features
    stage fits them with Spark)."""
    inputs = []
    for i in range(NUMERIC):
        mean, std = float(np.nanmean(x_train[:, i])), float(np.nanstd(x_train[:, i]))
        inputs.append(Input(f"n{i}", "numeric", fill=mean, center=mean, scale=std))
    names = tuple(f"c{k}" for k in range(CATEGORIES))
    inputs.append(Input("category", "onehot", fill=0.0, categories=names))
    ordinal = x_train[:, NUMERIC + 1]
    inputs.append(
        Input(
            "ordinal", "ordinal", 1.0, float(ordinal.mean()), float(ordinal.std()), ("a", "b", "c")
        )
    )
    plain = FeatureParams(tuple(inputs))
    with torch.no_grad():
        prepared = Preprocess(plain)(torch.from_numpy(x_train)).numpy().astype(np.float64)
    mean = prepared.mean(axis=0)
    _, s, vt = np.linalg.svd(prepared - mean, full_matrices=False)
    explained = (s**2 / np.sum(s**2)).tolist()
    pca = Projection(mean.tolist(), vt[:PCA_K].tolist(), explained)
    return FeatureParams(tuple(inputs), pca)


def trained_model(
    x: np.ndarray, y: np.ndarray, hidden: list[int], epochs: int, seed: int
) -> torch.nn.Module:
    """`build_model` trained with Adam on (x, y) by plain minibatches; in inference mode."""
    torch.manual_seed(seed)
    model = build_model(fitted_params(x), hidden, 0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    loss = torch.nn.BCEWithLogitsLoss()
    xs, ys = torch.from_numpy(x), torch.from_numpy(y).reshape(-1, 1)
    for _ in range(epochs):
        for batch in torch.randperm(len(xs)).split(256):
            optimizer.zero_grad()
            loss(model(xs[batch]), ys[batch]).backward()
            optimizer.step()
    return model.eval()
