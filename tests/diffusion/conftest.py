"""Tiny diffusers parts shared by the diffusion tests (CPU, a few milliseconds per forward)."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel


def tiny_unet(channels: int = 1, size: int = 8, seed: int = 0) -> UNet2DModel:
    """A UNet2DModel small enough for unit tests."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


@pytest.fixture
def unet() -> UNet2DModel:
    return tiny_unet()


@pytest.fixture
def make_unet():
    """The ``tiny_unet`` factory, for tests that need several or other sizes."""
    return tiny_unet
