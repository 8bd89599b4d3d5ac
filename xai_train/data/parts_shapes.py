"""Parts-shapes: classes that share a body and differ only in one small part, with the part's mask.

A known-answer dataset for class-contrastive explanations (GALORE's counterfactual maps, GANMEX): every
image holds a bright square *body* and, touching one of its four sides, a small *part* whose shape is the
class. Everything else (body size and position, which side holds the part, background level, colour) is
drawn independently of the class, so the only evidence for "class A and not class B" lies inside the part.

Stable API (other modules depend on it):

- ``make_parts_shapes(num_samples, image_size, channels, *, num_classes=2, seed=0, noise=0.0, labels=None)``
  returns an ``ImageDataset`` named ``"parts_shapes"``: images (N, C, S, S) float32 in [-1, 1], labels (N,)
  int64 (0 = dot, 1 = ring, 2 = cross), ``masks`` (N, 1, S, S) float32 in {0, 1} = the *part region*: the
  disk that holds the part, minus the body. Images of two classes with the same geometry (same
  ``num_samples``, ``image_size``, ``seed``) differ only inside this mask; ``labels=`` renders the very
  same geometry with the classes you choose (e.g. ``labels=1 - ds.labels`` gives every image's
  counterfactual twin).
- ``parts_shapes_layout(num_samples, image_size, *, seed=0)`` returns the geometry alone as a
  ``PartsLayout`` (``body`` and ``part_region`` masks, part centres, sides) — use ``body`` for the body mask.
- ``PART_NAMES`` = ``("dot", "ring", "cross")``: the class names (label = index).

Example:
    >>> ds = make_parts_shapes(4, image_size=16, seed=0)
    >>> twin = make_parts_shapes(4, image_size=16, seed=0, labels=1 - ds.labels)
    >>> bool(((ds.images != twin.images) & (ds.masks == 0)).any())  # identical outside the part region
    False
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from xai_train.data.convert import check_image_args
from xai_train.data.dataset import DataError, ImageDataset, derive_seed
from xai_train.data.shapes import paint, uniform

PART_NAMES = ("dot", "ring", "cross")  # label = index
BODY_HALF_RANGE = (0.12, 0.2)  # body half-side as a fraction of the image size
PART_RADIUS = 0.13  # part disk radius as a fraction of the image size (4.2 px at 32 x 32)
RING_HOLE = 0.5  # the ring's hole radius / part radius: the hole is what tells a ring from a dot
CROSS_HALF_WIDTH = 0.35  # the cross's arm half-width / part radius: the corners tell it from a dot
SIDES = ("left", "right", "top", "bottom")  # where the part touches the body (index = ``PartsLayout.side``)
MIN_SIZE = 16  # below this the part is a handful of pixels and the classes are hard to tell apart


@dataclass(frozen=True)
class PartsLayout:
    """The geometry of a parts-shapes dataset, independent of the classes drawn on it.

    Attributes:
        body: (N, 1, S, S) bool, the square body.
        part_region: (N, 1, S, S) bool, the part's disk minus the body: every pixel where classes differ.
        part_centre: (N, 2) float32 (x, y) in pixels.
        part_radius: the part disk's radius in pixels.
        side: (N,) int64 index into ``SIDES``.
    """

    body: Tensor
    part_region: Tensor
    part_centre: Tensor
    part_radius: float
    side: Tensor


def parts_shapes_layout(num_samples: int, image_size: int, *, seed: int = 0) -> PartsLayout:
    """Draws body squares and the part disk attached to one of their sides, deterministic for a seed.

    Args:
        num_samples: N >= 1.
        image_size: S >= 16.
        seed: seed of a private generator (the global RNG is not touched; labels use another stream).

    Returns:
        The ``PartsLayout``; the body and part never leave the image.

    Example:
        >>> layout = parts_shapes_layout(3, 32, seed=0)
        >>> layout.body.shape, bool((layout.body & layout.part_region).any())
        (torch.Size([3, 1, 32, 32]), False)
    """
    check_image_args(image_size, 1, min_size=MIN_SIZE)
    if num_samples < 1:
        raise DataError(f"num_samples must be >= 1 for parts_shapes, got {num_samples}")
    n, size = num_samples, image_size
    generator = torch.Generator().manual_seed(derive_seed(seed, "parts_shapes", "layout"))
    half = uniform(generator, *BODY_HALF_RANGE, n) * size
    radius = PART_RADIUS * size
    side = torch.randint(len(SIDES), (n,), generator=generator)
    # How far the drawing reaches from the body centre to the left, right, top and bottom (the part disk
    # is centred on the body's axis, so across it the drawing reaches max(half, radius)).
    reach = rearrange(half.clamp(min=radius), "n -> n 1").repeat(1, 4)
    reach[torch.arange(n), side] = half + 2 * radius
    low = reach[:, [0, 2]]  # left, top
    high = size - reach[:, [1, 3]]  # right, bottom
    centre = low + torch.rand(n, 2, generator=generator) * (high - low)
    direction = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])[side]
    # Half a pixel of overlap keeps the part attached whatever the grid: the region excludes the body anyway.
    part_centre = centre + direction * rearrange(half + radius - 0.5, "n -> n 1")

    pixel = torch.arange(size, dtype=torch.float32) + 0.5
    x, y = rearrange(pixel, "w -> 1 1 w"), rearrange(pixel, "h -> 1 h 1")
    body = ((x - centre[:, 0, None, None]).abs() <= half[:, None, None]) & (
        (y - centre[:, 1, None, None]).abs() <= half[:, None, None]
    )
    px, py = x - part_centre[:, 0, None, None], y - part_centre[:, 1, None, None]
    region = (px.square() + py.square() <= radius**2) & ~body
    return PartsLayout(
        body=rearrange(body, "n h w -> n 1 h w"),
        part_region=rearrange(region, "n h w -> n 1 h w"),
        part_centre=part_centre,
        part_radius=radius,
        side=side,
    )


def part_pixels(layout: PartsLayout, labels: Tensor) -> Tensor:
    """Which pixels of each image's part region are lit for its class (dot, ring or cross).

    Args:
        layout: from ``parts_shapes_layout``.
        labels: (N,) int64 in [0, len(PART_NAMES)).

    Returns:
        (N, 1, S, S) bool, a subset of ``layout.part_region``.

    Example:
        >>> layout = parts_shapes_layout(2, 32, seed=0)
        >>> dot = part_pixels(layout, torch.zeros(2, dtype=torch.long))
        >>> ring = part_pixels(layout, torch.ones(2, dtype=torch.long))
        >>> bool((ring & ~dot).any()), bool((dot & ~ring).any())  # the ring is the dot minus its hole
        (False, True)
    """
    size = layout.body.shape[-1]
    pixel = torch.arange(size, dtype=torch.float32) + 0.5
    px = rearrange(pixel, "w -> 1 1 1 w") - rearrange(layout.part_centre[:, 0], "n -> n 1 1 1")
    py = rearrange(pixel, "h -> 1 1 h 1") - rearrange(layout.part_centre[:, 1], "n -> n 1 1 1")
    r = layout.part_radius
    hole = px.square() + py.square() <= (RING_HOLE * r) ** 2
    arms = (px.abs() <= CROSS_HALF_WIDTH * r) | (py.abs() <= CROSS_HALF_WIDTH * r)
    lit = torch.stack([torch.ones_like(hole), ~hole, arms])[labels, torch.arange(len(labels))]
    return lit & layout.part_region


def make_parts_shapes(
    num_samples: int = 10_000,
    image_size: int = 32,
    channels: int = 1,
    *,
    num_classes: int = 2,
    seed: int = 0,
    noise: float = 0.0,
    labels: Tensor | None = None,
) -> ImageDataset:
    """A bright square body with a class-specific part (dot, ring, cross) attached to one side.

    Geometry comes from ``parts_shapes_layout(num_samples, image_size, seed=seed)``; background level and
    colour from a second stream and labels (unless given) from a third, so changing the labels changes
    only the pixels inside ``masks``. Body and part share the colour (grey in [0.2, 1]; RGB as ``shapes``).

    Args:
        num_samples: number of images N >= 1.
        image_size: side length S >= 16.
        channels: 1 or 3.
        num_classes: 2 (dot, ring) or 3 (dot, ring, cross).
        seed: seeds geometry, colours and labels (the global RNG is not touched).
        noise: standard deviation of Gaussian pixel noise added before clamping (drawn last).
        labels: (N,) int64 classes to draw instead of random ones (same geometry and colours).

    Returns:
        ``ImageDataset`` named ``"parts_shapes"`` with images (N, C, S, S) float32 in [-1, 1], labels (N,)
        int64, masks (N, 1, S, S) float32 in {0, 1} = the part region (see the module docstring).

    Example:
        >>> ds = make_parts_shapes(6, image_size=16, channels=3, num_classes=3, seed=1)
        >>> ds.images.shape, ds.class_names
        (torch.Size([6, 3, 16, 16]), ('dot', 'ring', 'cross'))
    """
    check_image_args(image_size, channels, min_size=MIN_SIZE)
    if isinstance(num_classes, bool) or num_classes not in (2, 3):
        raise DataError(f"num_classes must be 2 (dot, ring) or 3 (dot, ring, cross), got {num_classes!r}")
    if noise < 0:
        raise DataError(f"noise must be >= 0, got {noise}")
    layout = parts_shapes_layout(num_samples, image_size, seed=seed)
    n = num_samples
    if labels is None:
        label_stream = torch.Generator().manual_seed(derive_seed(seed, "parts_shapes", "labels"))
        labels = torch.randint(num_classes, (n,), generator=label_stream)
    elif labels.shape != (n,) or labels.dtype != torch.int64 or labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"labels must be int64 ({n},) with values in [0, {num_classes}), got {labels.dtype} "
            f"{tuple(labels.shape)} in [{labels.min().item()}, {labels.max().item()}]"
        )
    generator = torch.Generator().manual_seed(derive_seed(seed, "parts_shapes", "colours"))
    images = paint(layout.body | part_pixels(layout, labels), channels, noise, generator)
    return ImageDataset(
        images=images.contiguous(),
        labels=labels,
        masks=layout.part_region.float(),
        name="parts_shapes",
        class_names=PART_NAMES[:num_classes],
    )
