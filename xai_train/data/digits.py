"""scikit-learn's handwritten digits (1,797 8x8 images, shipped with scikit-learn: nothing to download)."""

from __future__ import annotations

import torch
from einops import rearrange

from xai_train.data.convert import check_image_args, to_target
from xai_train.data.dataset import ImageDataset

DIGITS_MAX_VALUE = 16  # load_digits() pixels are counts 0..16 of a 4x4 block of the original 32x32 scan


def load_digits_dataset(image_size: int = 32, channels: int = 1) -> ImageDataset:
    """The digits as (1797, C, image_size, image_size) float32 images in [-1, 1] with labels 0-9.

    Pixels are mapped 0 -> -1 and 16 -> 1, then resized with antialiased bilinear interpolation (8x8 to
    32x32 is a smooth upsampling; the originals are blocky at that size).

    Args:
        image_size: side length of the output images.
        channels: 1 (grey) or 3 (the grey image repeated).

    Returns:
        An ``ImageDataset`` named ``"digits"`` with ``labels`` (1797,) and ``class_names`` "0".."9".

    Example:
        >>> ds = load_digits_dataset(image_size=16)
        >>> ds.images.shape, ds.labels[:5].tolist()
        (torch.Size([1797, 1, 16, 16]), [0, 1, 2, 3, 4])
    """
    # Imported here: scikit-learn adds ~0.5 s to ``import xai_train.data`` for users who never load digits.
    from sklearn.datasets import load_digits

    check_image_args(image_size, channels)
    bunch = load_digits()
    pixels = torch.as_tensor(bunch.images, dtype=torch.float32)  # (N, 8, 8), 0..16
    images = rearrange(pixels, "n h w -> n 1 h w") * (2 / DIGITS_MAX_VALUE) - 1
    return ImageDataset(
        images=to_target(images, image_size, channels),
        labels=torch.as_tensor(bunch.target, dtype=torch.int64),
        name="digits",
        class_names=tuple(str(d) for d in range(10)),
    )
