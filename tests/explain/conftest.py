"""Tiny discriminators for the explainer tests (16×16 images, batch ≤ 8).

Tests get the classes through the ``tiny`` fixture (``--import-mode=importlib`` makes conftest unimportable).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn


class TinyConvD(nn.Module):
    """conv -> LeakyReLU -> conv -> [BatchNorm] -> LeakyReLU -> linear: (B, C, 16, 16) -> (B, 1) logits."""

    def __init__(self, channels: int = 2, batch_norm: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 4, 2, 1)
        self.act1 = nn.LeakyReLU(0.2)
        self.conv2 = nn.Conv2d(4, 8, 4, 2, 1)
        self.norm = nn.BatchNorm2d(8) if batch_norm else nn.Identity()
        self.act2 = nn.LeakyReLU(0.2)
        self.head = nn.Linear(8 * 4 * 4, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.norm(self.conv2(self.act1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class FeatureLayerD(TinyConvD):
    """Declares its Grad-CAM layer like the xai_train models do."""

    @property
    def feature_layer(self) -> nn.Module:
        return self.act1


class FunctionalD(TinyConvD):
    """The second non-linearity is functional: DeepLift cannot see it."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.norm(self.conv2(self.act1(self.conv1(x)))), 0.2)


class ReusedD(TinyConvD):
    """``act1`` is applied twice."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.norm(self.conv2(self.act1(self.conv1(x)))))


class WhereD(TinyConvD):
    """A leaky ReLU written with ``torch.where``: invisible to both probes, caught by summation-to-delta."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv2(self.act1(self.conv1(x))))
        return torch.where(h > 0, h, 0.2 * h)


class LinearD(nn.Module):
    """score = <w, x> + b: every explainer's answer is known in closed form."""

    def __init__(self, shape: tuple[int, int, int] = (2, 16, 16)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(shape))
        self.bias = nn.Parameter(torch.tensor(0.3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).flatten(1).sum(1, keepdim=True) + self.bias


def warmed_up(d: nn.Module, channels: int = 2) -> nn.Module:
    """Runs a few train-mode batches so BatchNorm running statistics are not the defaults."""
    with torch.no_grad():
        for _ in range(3):
            d(torch.randn(8, channels, 16, 16) * 2 + 0.5)
    return d


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(6, 2, 16, 16, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)


@pytest.fixture
def conv_d() -> TinyConvD:
    torch.manual_seed(0)
    return warmed_up(TinyConvD())


@pytest.fixture
def tiny() -> SimpleNamespace:
    """The discriminator classes of this module and ``warmed_up``."""
    return SimpleNamespace(
        TinyConvD=TinyConvD,
        FeatureLayerD=FeatureLayerD,
        FunctionalD=FunctionalD,
        ReusedD=ReusedD,
        WhereD=WhereD,
        LinearD=LinearD,
        warmed_up=warmed_up,
    )
