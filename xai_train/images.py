"""Image grids and PNG files without torchvision."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from einops import rearrange
from PIL import Image
from torch import Tensor

from xai_train.atomic import atomic_path


def to_unit_range(images: Tensor) -> Tensor:
    """Maps images from [-1, 1] to [0, 1] (clamped), as float32 on the CPU."""
    return ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)


def make_grid(images: Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 0.0) -> Tensor:
    """Tiles a batch into one image.

    Args:
        images: (N, C, H, W) floats, any range (not rescaled).
        nrow: images per row; defaults to ceil(sqrt(N)).
        padding: pixels between tiles.
        pad_value: value of the padding pixels.

    Returns:
        (C, rows*(H+p)+p, nrow*(W+p)+p) tensor.

    Example:
        >>> make_grid(torch.zeros(4, 1, 8, 8), nrow=2, padding=1).shape
        torch.Size([1, 19, 19])
    """
    if images.dim() != 4:
        raise ValueError(f"make_grid expects (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    filler = images.new_full((rows * nrow - n, c, h, w), pad_value)
    tiles = torch.cat([images, filler])
    tiles = torch.nn.functional.pad(tiles, (padding, 0, padding, 0), value=pad_value)
    grid = rearrange(tiles, "(r k) c h w -> c (r h) (k w)", r=rows, k=nrow)
    return torch.nn.functional.pad(grid, (0, padding, 0, padding), value=pad_value)


def save_png(image: Tensor, path: str | Path) -> Path:
    """Writes a (C, H, W) float image in [0, 1] as PNG (atomically). 1 channel → grey, 3 → RGB."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    if array.shape[0] == 1:
        pil = Image.fromarray(array[0].numpy())  # uint8 (H, W) -> mode "L"
    elif array.shape[0] == 3:
        pil = Image.fromarray(rearrange(array, "c h w -> h w c").numpy())  # -> "RGB"
    else:
        raise ValueError(f"save_png needs 1 or 3 channels, got {array.shape[0]}")
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")
    return path


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Saves a batch of images in [-1, 1] as one PNG grid.

    Example:
        >>> import tempfile, os
        >>> p = save_grid(torch.zeros(4, 1, 8, 8), os.path.join(tempfile.mkdtemp(), "g.png"))
        >>> p.name
        'g.png'
    """
    return save_png(make_grid(to_unit_range(images), nrow=nrow), path)
