"""Small conversions shared by the loaders: value range, size and channel count."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor

from xai_train.data.dataset import DataError

# ITU-R BT.601 luma weights, the ones PIL's convert("L") uses, so grey CIFAR matches grey folder images.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def check_image_args(image_size: int, channels: int, *, min_size: int = 1) -> None:
    """Raises a DataError unless ``channels`` is 1 or 3 and ``image_size`` is an int >= ``min_size``.

    Example:
        >>> check_image_args(32, 3)
    """
    if isinstance(channels, bool) or channels not in (1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < min_size:
        raise DataError(f"image_size must be an integer >= {min_size}, got {image_size!r}")


def uint8_to_signed(pixels: np.ndarray | Tensor) -> Tensor:
    """Maps uint8 pixels 0..255 to float32 in [-1, 1] (0 -> -1, 255 -> 1).

    Example:
        >>> uint8_to_signed(np.array([0, 255], dtype=np.uint8)).tolist()
        [-1.0, 1.0]
    """
    pixels = torch.as_tensor(pixels)
    if pixels.dtype != torch.uint8:
        raise DataError(f"expected uint8 pixels, got {pixels.dtype}")
    return pixels.to(torch.float32) / 127.5 - 1


def resize(images: Tensor, image_size: int) -> Tensor:
    """Resizes to ``image_size`` x ``image_size`` with antialiased bilinear interpolation.

    Antialiasing matters when shrinking (it averages instead of skipping pixels); the weights are a convex
    combination, so values stay in the input's range.

    Args:
        images: (N, C, H, W) float.
        image_size: target side length.

    Returns:
        (N, C, image_size, image_size) float; the input itself when it already has that size.

    Example:
        >>> resize(torch.ones(2, 1, 8, 8), 32).shape
        torch.Size([2, 1, 32, 32])
    """
    if images.shape[-2:] == (image_size, image_size):
        return images
    return F.interpolate(
        images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
    )


def set_channels(images: Tensor, channels: int) -> Tensor:
    """Converts grey to RGB (repeat) or RGB to grey (BT.601 luma); other counts are a DataError.

    Args:
        images: (N, C, H, W) float with C in {1, 3}.
        channels: 1 or 3.

    Returns:
        (N, channels, H, W) float.

    Example:
        >>> set_channels(torch.zeros(2, 1, 4, 4), 3).shape
        torch.Size([2, 3, 4, 4])
    """
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return repeat(images, "n 1 h w -> n c h w", c=3)
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device)
        return rearrange(torch.einsum("nchw,c->nhw", images, weights), "n h w -> n 1 h w")
    raise DataError(f"cannot convert images with {have} channels to {channels}; supported: 1 <-> 3")


def to_target(images: Tensor, image_size: int, channels: int) -> Tensor:
    """Resizes, converts channels and clamps to [-1, 1]: what every loader does last.

    Args:
        images: (N, C, H, W) float32 in [-1, 1], C in {1, 3}.
        image_size: target side length.
        channels: 1 or 3.

    Returns:
        (N, channels, image_size, image_size) float32 in [-1, 1], contiguous.

    Example:
        >>> to_target(torch.zeros(1, 3, 8, 8), 16, 1).shape
        torch.Size([1, 1, 16, 16])
    """
    if channels < images.shape[1]:  # fewer channels first: less to resize
        images = resize(set_channels(images, channels), image_size)
    else:
        images = set_channels(resize(images, image_size), channels)
    return images.clamp(-1, 1).contiguous()
