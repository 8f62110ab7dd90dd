"""The model: the fitted feature transforms + an MLP. Knows nothing of distribution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def build_network(spec: dict[str, Any]) -> nn.Module:
    """The network a train spec describes (its `params`, JSON, and settings), newly
    initialised from torch's generator: the MLP for tabular features, the small CNN for
    images."""
    from lakestory.features import ImageParams, load_params

    params = load_params(spec["params"])
    if isinstance(params, ImageParams):
        from lakestory.training.vision import SmallCNN

        channels = spec.get("channels") or (16, 32)
        return SmallCNN(
            params.height,
            params.width,
            params.classes,
            params.mean,
            params.std,
            channels=(int(channels[0]), int(channels[1])),
            hidden=tuple(int(h) for h in spec["hidden"]),
            dropout=float(spec["dropout"]),
        )
    classes = int(spec.get("classes") or 1)
    return build_model(params, spec["hidden"], float(spec["dropout"]), classes)


def build_model(
    params: FeatureParams, hidden: Sequence[int], dropout: float, classes: int = 1
) -> nn.Sequential:
    """Preprocess -> [Linear -> ReLU -> Dropout]* -> Linear; outputs one logit per row (a
    binary model) or one per class (`classes` > 1)."""
    layers: list[nn.Module] = [Preprocess(params)]
    width = params.width
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


class WithProbability(nn.Module):
    """Wrap a logit model so that it outputs probabilities, the form that is served.

    One logit column (a binary model): P(label = 1), by sigmoid, shape (N, 1). K > 1 columns
    (one per class): each class's probability, by softmax over the classes, shape (N, K). The
    number of columns is part of the model, not of the batch, so `torch.export` traces one
    branch.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if logits.ndim < 2 or logits.shape[-1] == 1:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)
