"""Procedural shapes (circle, square, triangle) with ground-truth masks, built with tensor ops.

Every image holds one bright shape on a dark background, so the mask says exactly which pixels hold the
object: the reference for pointing-game and mask-IoU scores of discriminator explanations.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor

from xai_train.data.convert import check_image_args
from xai_train.data.dataset import DataError, ImageDataset, derive_seed

SHAPE_NAMES = ("circle", "square", "triangle")  # label = index
SHAPE_SIDES = (0, 4, 3)  # 0 = circle; else the number of sides of a regular polygon
BACKGROUND_RANGE = (-1.0, -0.7)  # per-image dark grey level
GREY_RANGE = (0.2, 1.0)  # 1-channel shape intensity: always >= 0.9 above the background
COLOUR_FLOOR = -0.6  # RGB channels are drawn in [COLOUR_FLOOR, 1], then one channel is set to 1 (bright)


def polygon_mask(dx: Tensor, dy: Tensor, radius: Tensor, angle: Tensor, sides: int) -> Tensor:
    """Which pixels lie inside a regular polygon (``sides`` >= 3) or a circle (``sides`` = 0).

    A point is inside a regular polygon when its projection on every edge normal is at most the apothem
    ``radius * cos(pi / sides)``, so the test is ``sides`` broadcast comparisons, no per-pixel loop.

    Args:
        dx: (N, 1, W) pixel-centre x minus the shape centre, in pixels.
        dy: (N, H, 1) the same for y.
        radius: (N,) circumradius in pixels.
        angle: (N,) rotation in radians.
        sides: 0 for a circle, else >= 3.

    Returns:
        (N, H, W) bool.

    Example:
        >>> d = torch.arange(5.0) - 2  # an axis-aligned square of circumradius 2 covers 3 x 3 pixels
        >>> square = polygon_mask(d.view(1, 1, 5), d.view(1, 5, 1), torch.tensor([2.0]), torch.zeros(1), 4)
        >>> square.sum().item()
        9
    """
    radius = rearrange(radius, "n -> n 1 1")
    if sides == 0:
        return dx.square() + dy.square() <= radius.square()
    if sides < 3:
        raise DataError(f"a polygon needs at least 3 sides, got {sides}")
    apothem = radius * math.cos(math.pi / sides)
    inside = torch.ones(dx.shape[0], dy.shape[1], dx.shape[2], dtype=torch.bool)
    for k in range(sides):
        normal = rearrange(angle + 2 * math.pi * k / sides, "n -> n 1 1")
        inside &= dx * normal.cos() + dy * normal.sin() <= apothem
    return inside


def uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> Tensor:
    """Float32 samples from U(low, high) drawn from ``generator``."""
    return low + (high - low) * torch.rand(*shape, generator=generator)


def paint(masks: Tensor, channels: int, noise: float, generator: torch.Generator) -> Tensor:
    """Images of bright shapes on a dark background: a level and a colour per image, then optional noise.

    Draws, in this order from ``generator``: the (N,) background levels in ``BACKGROUND_RANGE``, the
    colours (grey in ``GREY_RANGE``; RGB channels in [``COLOUR_FLOOR``, 1] with a random one set to 1), and
    the Gaussian noise (only when ``noise > 0``).

    Args:
        masks: (N, 1, S, S) bool, True where the shape is.
        channels: 1 or 3.
        noise: standard deviation of the pixel noise added before clamping to [-1, 1].
        generator: the private random stream.

    Returns:
        (N, C, S, S) float32 in [-1, 1].

    Example:
        >>> masks = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
        >>> masks[:, :, 1:3, 1:3] = True
        >>> images = paint(masks, 3, 0.0, torch.Generator().manual_seed(0))
        >>> bool((images[:, :, 1, 1].amax(1) == 1).all()), bool((images[:, :, 0, 0] <= -0.7).all())
        (True, True)
    """
    n = masks.shape[0]
    background = uniform(generator, *BACKGROUND_RANGE, n)
    if channels == 3:
        colour = uniform(generator, COLOUR_FLOOR, 1.0, n, 3)
        colour[torch.arange(n), torch.randint(3, (n,), generator=generator)] = 1.0
    else:
        colour = uniform(generator, *GREY_RANGE, n, 1)
    images = torch.where(masks, rearrange(colour, "n c -> n c 1 1"), rearrange(background, "n -> n 1 1 1"))
    if noise > 0:
        images = images.add(torch.randn(images.shape, generator=generator), alpha=noise).clamp(-1, 1)
    return images


def make_shapes(
    num_samples: int = 10_000,
    image_size: int = 32,
    channels: int = 1,
    *,
    seed: int = 0,
    noise: float = 0.0,
    radius_range: tuple[float, float] = (0.2, 0.4),
) -> ImageDataset:
    """Random circles, squares and triangles with masks and labels, deterministic for a seed.

    Each image draws a class, a circumradius ``r`` (a fraction of ``image_size`` from ``radius_range``), a
    centre at least ``r`` from every border (so the shape is never cut), a rotation, a dark background
    level in [-1, -0.7] and a bright colour (RGB: channels in [-0.6, 1] with one of them 1; grey: [0.2, 1]).
    Geometry, labels and masks depend only on (num_samples, image_size, seed, radius_range), not on
    ``channels`` or ``noise``; the noise is drawn last, so ``noise > 0`` perturbs the very same images.

    Args:
        num_samples: number of images N.
        image_size: side length S (>= 4).
        channels: 1 or 3.
        seed: seed of a private ``torch.Generator`` (the global RNG is not touched).
        noise: standard deviation of Gaussian pixel noise (in [-1, 1] units) added before clamping.
        radius_range: circumradius range as fractions of S, within (0, 0.5].

    Returns:
        ``ImageDataset`` named ``"shapes"``: images (N, C, S, S) float32 in [-1, 1], labels (N,) int64 with
        0 = circle, 1 = square, 2 = triangle, masks (N, 1, S, S) float32 in {0, 1}.

    Example:
        >>> ds = make_shapes(8, image_size=16, channels=3, seed=1)
        >>> ds.images.shape, ds.masks.shape, ds.class_names
        (torch.Size([8, 3, 16, 16]), torch.Size([8, 1, 16, 16]), ('circle', 'square', 'triangle'))
    """
    check_image_args(image_size, channels, min_size=4)
    low, high = radius_range
    if not 0 < low <= high <= 0.5:
        raise DataError(f"radius_range must satisfy 0 < low <= high <= 0.5, got {radius_range}")
    if num_samples < 1:
        raise DataError(f"num_samples must be >= 1 for shapes, got {num_samples}")
    if noise < 0:
        raise DataError(f"noise must be >= 0, got {noise}")
    n, size = num_samples, image_size
    generator = torch.Generator().manual_seed(derive_seed(seed, "shapes"))
    labels = torch.randint(len(SHAPE_NAMES), (n,), generator=generator)
    radius = uniform(generator, low, high, n) * size
    centre = radius[:, None] + torch.rand(n, 2, generator=generator) * (size - 2 * radius[:, None])
    angle = uniform(generator, 0, 2 * math.pi, n)

    pixel = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    dx = rearrange(pixel, "w -> 1 1 w") - rearrange(centre[:, 0], "n -> n 1 1")
    dy = rearrange(pixel, "h -> 1 h 1") - rearrange(centre[:, 1], "n -> n 1 1")
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for label, sides in enumerate(SHAPE_SIDES):
        rows = (labels == label).nonzero().squeeze(1)
        masks[rows] = polygon_mask(dx[rows], dy[rows], radius[rows], angle[rows], sides)
    # The pixel holding the centre always belongs to the shape; marking it keeps tiny shapes non-empty.
    centre_pixel = centre.long().clamp(0, size - 1)
    masks[torch.arange(n), centre_pixel[:, 1], centre_pixel[:, 0]] = True

    masks = rearrange(masks, "n h w -> n 1 h w")
    images = paint(masks, channels, noise, generator)
    return ImageDataset(
        images=images,
        labels=labels,
        masks=masks.float(),
        name="shapes",
        class_names=SHAPE_NAMES,
    )
