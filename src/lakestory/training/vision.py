"""The image model's parts: normalisation with the train split's mean and standard deviation, a
small CNN, and seeded augmentation (small rotations and shifts) for the train split.

The network takes images as flat rows of `height * width` raw pixel values (what the features
table holds), so that the ONNX graph, like the tabular one, takes the stored vectors as they are
and carries the normalisation inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class ImageNormalise(nn.Module):
    """Flat rows of raw pixels -> (N, 1, height, width) images, standardised with the train
    split's pixel mean and standard deviation (one of each for all pixels)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, height: int, width: int, mean: float, std: float) -> None:
        super().__init__()
        if std <= 0:
            raise ValueError(f"the pixels' standard deviation must be positive, not {std}")
        self.height, self.width = height, width
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.reshape(-1, 1, self.height, self.width)
        return (images - self.mean) / self.std


class SmallCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 max pool, dense layers of `hidden` units and one logit per
    class: enough for 8x8 digits. The input is a flat row of raw pixels (see
    `ImageNormalise`)."""

    def __init__(
        self,
        height: int,
        width: int,
        classes: int,
        mean: float,
        std: float,
        channels: tuple[int, int] = (16, 32),
        hidden: Sequence[int] = (64,),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if height % 2 or width % 2:
            raise ValueError(f"the 2x2 pool needs an even height and width, not {height}x{width}")
        first, second = channels
        self.normalise = ImageNormalise(height, width, mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(1, first, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(first, second, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        layers: list[nn.Module] = [nn.Flatten()]
        size = second * (height // 2) * (width // 2)
        for units in hidden:
            layers += [nn.Linear(size, units), nn.ReLU(), nn.Dropout(dropout)]
            size = units
        self.head = nn.Sequential(*layers, nn.Linear(size, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalise(x)))


def augment(
    x: torch.Tensor,
    height: int,
    width: int,
    generator: torch.Generator,
    max_degrees: float,
    max_shift: float,
) -> torch.Tensor:
    """Rotate each image by a uniform angle in ±`max_degrees` about its centre and shift it by a
    uniform ±`max_shift` pixels along each axis; pixels moved in from outside are 0 (the
    background of raw pixel values, which is why this runs before normalisation).

    `x` is a batch of flat rows of raw pixels; the result has the same shape. Every random
    number comes from `generator`, so a seeded generator gives the same batch twice. With both
    strengths 0 the images come back unchanged.
    """
    n = x.shape[0]
    if n == 0 or (max_degrees == 0 and max_shift == 0):
        return x
    angles = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    shifts = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift
    return affine(x, height, width, angles, shifts)


def affine(
    x: torch.Tensor, height: int, width: int, angles: torch.Tensor, shifts: torch.Tensor
) -> torch.Tensor:
    """Rotate image i of `x` (flat rows of pixels) by `angles[i]` radians about its centre and
    shift it by `shifts[i]` = (right, down) pixels; pixels from outside the image are 0."""
    n = x.shape[0]
    images = x.reshape(n, 1, height, width)
    cos, sin = torch.cos(angles), torch.sin(angles)
    # affine_grid works in coordinates from -1 to 1 across the image: a shift of one pixel is
    # 2 / size, and the grid maps each output pixel to where it is sampled from
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
    theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
    theta[:, 0, 2] = -shifts[:, 0] * 2 / width
    theta[:, 1, 2] = -shifts[:, 1] * 2 / height
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return moved.reshape(n, height * width)
