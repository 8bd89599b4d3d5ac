"""The paper's toy known answer in 2-D: data on a circle, a flow fitted to it, a classifier of the upper half.

A counterfactual searched in the flow's latent space moves along the circle (the flow stretches the tangent
direction and squeezes the normal one); a pixel-space adversarial example follows the classifier's gradient
straight across the circle and leaves it. :func:`circle_distance` measures how far.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sample_circle(num: int, noise: float = 0.03, seed: int = 0) -> Tensor:
    """``num`` points (num, 2) on the unit circle at uniform angles, with Gaussian radial noise of std ``noise``.

    Example:
        >>> points = sample_circle(1000, noise=0.0)
        >>> bool(torch.allclose(points.norm(dim=1), torch.ones(1000)))
        True
    """
    generator = torch.Generator().manual_seed(seed)
    angle = torch.rand(num, generator=generator) * 2 * math.pi
    radius = 1 + noise * torch.randn(num, generator=generator)
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)


def circle_distance(points: Tensor) -> Tensor:
    """Distance (N,) of points (N, 2) from the unit circle: |‖p‖ − 1|.

    Example:
        >>> circle_distance(torch.tensor([[0.5, 0.0], [0.0, 2.0]])).tolist()
        [0.5, 1.0]
    """
    return (points.norm(dim=1) - 1).abs()


class HalfPlaneClassifier(nn.Module):
    """Two logits (−k·y, k·y): class 1 is the upper half plane; its input is a (B, 1, 1, 2) "image" of a point.

    Args:
        sharpness: k, the logit per unit of height.

    Example:
        >>> HalfPlaneClassifier()(torch.tensor([[[[0.0, 1.0]]]])).argmax(dim=1).tolist()
        [1]
    """

    def __init__(self, sharpness: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("direction", torch.tensor([[0.0, -1.0], [0.0, 1.0]]) * sharpness)

    def forward(self, images: Tensor) -> Tensor:
        return images.flatten(1) @ self.direction.T
