"""The default tiny UNet of the diffusion tests (the factory, ``make_unet``, lives in tests/conftest.py)."""

from __future__ import annotations

import pytest
from diffusers import UNet2DModel


@pytest.fixture
def unet(make_unet) -> UNet2DModel:
    return make_unet()
