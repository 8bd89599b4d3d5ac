"""Saliency heat-maps over images: colour maps, overlays, grids and PNG files (no torchvision)."""

from __future__ import annotations

from pathlib import Path

import einops
import matplotlib
import torch
from torch import Tensor

from xai_train.images import make_grid, save_png, to_unit_range


def colormap(values: Tensor, cmap: str = "inferno") -> Tensor:
    """Colours (N, 1, H, W) values in [0, 1] with a matplotlib colour map -> (N, 3, H, W) in [0, 1].

    Example:
        >>> colormap(torch.zeros(1, 1, 2, 2)).shape
        torch.Size([1, 3, 2, 2])
    """
    lut = torch.as_tensor(matplotlib.colormaps[cmap].resampled(256)(range(256))[:, :3], dtype=torch.float32)
    index = (values.detach().float().cpu().clamp(0, 1) * 255).round().long()
    return einops.rearrange(lut[index[:, 0]], "n h w rgb -> n rgb h w")


def overlay(images: Tensor, mask: Tensor, *, alpha: float = 0.5, cmap: str = "inferno") -> Tensor:
    """Blends a heat-map of ``mask`` over ``images``.

    Args:
        images: (N, C, H, W) in [-1, 1], C = 1 or 3.
        mask: (N, K, H, W) in [0, 1]; several channels are reduced by max.
        alpha: heat-map opacity.
        cmap: matplotlib colour map name.

    Returns:
        (N, 3, H, W) in [0, 1], on the CPU.

    Example:
        >>> overlay(torch.zeros(2, 1, 4, 4), torch.rand(2, 1, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """
    rgb = to_unit_range(images)
    if rgb.shape[1] == 1:
        rgb = einops.repeat(rgb, "n 1 h w -> n 3 h w")
    heat = colormap(einops.reduce(mask.detach().float().cpu(), "n k h w -> n 1 h w", "max"), cmap)
    return (1 - alpha) * rgb + alpha * heat


def saliency_grid(
    images: Tensor, mask: Tensor, *, max_images: int = 16, alpha: float = 0.5, cmap: str = "inferno"
) -> Tensor:
    """A grid of (image, overlay) pairs, side by side, 4 pairs per row at most.

    Args:
        images: (N, C, H, W) in [-1, 1].
        mask: (N, K, H, W) in [0, 1].
        max_images: how many of the N images to show.

    Returns:
        (3, H', W') in [0, 1].

    Example:
        >>> saliency_grid(torch.zeros(3, 1, 8, 8), torch.rand(3, 1, 8, 8)).shape
        torch.Size([3, 12, 62])
    """
    images, mask = images[:max_images], mask[:max_images]
    rgb = to_unit_range(images)
    if rgb.shape[1] == 1:
        rgb = einops.repeat(rgb, "n 1 h w -> n 3 h w")
    pairs = einops.rearrange(
        torch.stack([rgb, overlay(images, mask, alpha=alpha, cmap=cmap)]), "two n c h w -> (n two) c h w"
    )
    return make_grid(pairs, nrow=2 * min(4, images.shape[0]))


def save_saliency_overlay(images: Tensor, mask: Tensor, path: str | Path, **options: object) -> Path:
    """Writes :func:`saliency_grid` of ``images`` and ``mask`` as a PNG (options as for it).

    Example:
        >>> import tempfile, os
        >>> save_saliency_overlay(torch.zeros(2, 1, 8, 8), torch.rand(2, 1, 8, 8),
        ...                       os.path.join(tempfile.mkdtemp(), "s.png")).suffix
        '.png'
    """
    return save_png(saliency_grid(images, mask, **options), path)
