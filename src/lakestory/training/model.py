"""The model: the fitted feature transforms + an MLP. Knows nothing of distribution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lakestory.features.transforms import FeatureParams


class Preprocess(nn.Module):
    """The fitted feature transforms (`FeatureParams`) as a layer: the raw input vector (NaN
    where missing) -> imputed -> scaled or one-hot encoded -> projected (PCA, if fitted).

    Its parameters are buffers fitted by the features stage, not learned: they go into the
    state dict and the ONNX graph, so serving applies the same numbers as training.
    """

    fill: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor
    pca_mean: torch.Tensor
    pca_components: torch.Tensor

    def __init__(self, params: FeatureParams) -> None:
        super().__init__()
        inputs = params.inputs

        def buffer(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor(list(values), dtype=torch.float32)

        self.register_buffer("fill", buffer([i.fill for i in inputs]))
        self.register_buffer("center", buffer([i.center for i in inputs]))
        self.register_buffer("scale", buffer([i.scale for i in inputs]))
        # (position, number of categories) of each one-hot input; 0: a single output
        self.layout = [
            (p, len(i.categories) if i.kind == "onehot" else 0) for p, i in enumerate(inputs)
        ]
        for p, n in self.layout:
            if n:
                self.register_buffer(f"codes_{p}", torch.arange(n, dtype=torch.float32))
        self.projected = params.pca is not None
        if params.pca is not None:
            self.register_buffer("pca_mean", buffer(params.pca.mean))
            self.register_buffer(
                "pca_components", torch.tensor(params.pca.components, dtype=torch.float32)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(torch.isnan(x), self.fill, x)
        x = (x - self.center) / self.scale
        if any(n for _, n in self.layout):
            parts = []
            for p, n in self.layout:
                column = x[:, p : p + 1]
                parts.append((column == getattr(self, f"codes_{p}")).float() if n else column)
            x = torch.cat(parts, dim=1)
        if self.projected:
            x = (x - self.pca_mean) @ self.pca_components.T
        return x


def build_model(params: FeatureParams, hidden: Sequence[int], dropout: float) -> nn.Sequential:
    """Preprocess -> [Linear -> ReLU -> Dropout]* -> Linear; outputs one logit per row."""
    layers: list[nn.Module] = [Preprocess(params)]
    width = params.width
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
