"""The model: fitted preprocessing + an MLP. Knows nothing of distribution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Standardize(nn.Module):
    """Impute missing values (NaN) with the train mean, then scale to unit variance.

    The parameters are buffers fitted by the features stage, not learned: they go into the
    state dict and the ONNX graph, so serving applies the same numbers as training.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, means: Sequence[float], stds: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(means), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(stds), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(torch.isnan(x), self.mean, x)
        return (x - self.mean) / self.std


def build_model(
    means: Sequence[float], stds: Sequence[float], hidden: Sequence[int], dropout: float
) -> nn.Sequential:
    """Standardize -> [Linear -> ReLU -> Dropout]* -> Linear; outputs one logit per row."""
    layers: list[nn.Module] = [Standardize(means, stds)]
    width = len(means)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class WithProbability(nn.Module):
    """Wrap a logit model so that it outputs P(label = 1), the form that is served."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))
