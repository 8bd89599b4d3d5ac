"""Built-in datasets (digits, shapes), the ImageDataset container and build_dataset."""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import Tensor

from xai_train.data import (
    DATASET_NAMES,
    DataError,
    ImageDataset,
    build_dataset,
    load_digits_dataset,
    make_shapes,
    random_indices,
)
from xai_train.data.shapes import polygon_mask


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_digits_dataset(image_size=32, channels=1)


# --- digits ---------------------------------------------------------------------------------------------
def test_digits_values_labels_and_range(digits):
    bunch = load_digits()
    assert digits.images.shape == (1797, 1, 32, 32) and digits.images.dtype == torch.float32
    assert digits.images.min().item() == -1.0 and digits.images.max().item() == 1.0
    assert digits.labels.tolist() == bunch.target.tolist()
    assert digits.num_classes == 10 and digits.name == "digits"
    # At the native size nothing is interpolated: 0 -> -1, 16 -> 1 exactly.
    native = load_digits_dataset(image_size=8)
    expected = torch.as_tensor(bunch.images, dtype=torch.float32) / 8 - 1
    torch.testing.assert_close(native.images[:, 0], expected)
    # Upsampling keeps each image's mean brightness (up to border effects).
    assert (digits.images.mean((1, 2, 3)) - native.images.mean((1, 2, 3))).abs().max() < 0.03


def test_digits_three_channels_repeat_the_grey_image(digits):
    rgb = load_digits_dataset(image_size=32, channels=3)
    assert rgb.images.shape == (1797, 3, 32, 32)
    for c in range(3):
        assert torch.equal(rgb.images[:, c], digits.images[:, 0])


# --- shapes ---------------------------------------------------------------------------------------------
def test_polygon_areas_match_geometry():
    size, r = 200, 60.0
    d = torch.arange(size, dtype=torch.float32) + 0.5 - size / 2
    dx, dy = d.view(1, 1, size), d.view(1, size, 1)
    radius, angle = torch.tensor([r]), torch.tensor([0.7])
    areas = {sides: polygon_mask(dx, dy, radius, angle, sides).sum().item() for sides in (0, 3, 4)}
    assert areas[0] == pytest.approx(math.pi * r**2, rel=0.01)
    assert areas[4] == pytest.approx(2 * r**2, rel=0.01)  # square inscribed in the circle
    assert areas[3] == pytest.approx(3 * math.sqrt(3) / 4 * r**2, rel=0.01)  # equilateral triangle
    with pytest.raises(DataError, match="at least 3 sides"):
        polygon_mask(dx, dy, radius, angle, 2)


def test_shapes_are_deterministic_for_a_seed_and_leave_the_global_rng_alone():
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    a = make_shapes(64, image_size=16, channels=3, seed=5)
    assert torch.equal(torch.rand(3), expected_next)
    b = make_shapes(64, image_size=16, channels=3, seed=5)
    c = make_shapes(64, image_size=16, channels=3, seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.masks, c.masks)


def flat_value(images: Tensor, where: Tensor) -> Tensor:
    """The one value each (image, channel) takes on ``where``; asserts it is the same on every such pixel."""
    high = torch.where(where, images, -torch.inf).amax((2, 3))
    low = torch.where(where, images, torch.inf).amin((2, 3))
    assert torch.equal(high, low)
    return high


def test_shape_masks_mark_the_bright_shape_on_a_dark_background():
    ds = make_shapes(300, image_size=24, channels=3, seed=0)
    images, masks = ds.images, ds.masks
    assert images.shape == (300, 3, 24, 24) and masks.shape == (300, 1, 24, 24)
    assert images.dtype == masks.dtype == torch.float32
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert masks.sum((1, 2, 3)).min() > 0 and (1 - masks).sum((1, 2, 3)).min() > 0
    on = masks.bool().expand_as(images)
    colour, background = flat_value(images, on), flat_value(images, ~on)  # (N, 3) each
    assert background.ge(-1).all() and background.le(-0.7).all()
    assert torch.equal(background.amax(1), background.amin(1))  # grey background
    assert colour.amax(1).eq(1).all()  # one saturated channel: bright
    assert (colour.mean(1) - background.mean(1)).min() > 0.5
    assert (colour.amax(1) - colour.amin(1)).gt(0.1).float().mean() > 0.8  # mostly not grey


def test_shape_labels_match_the_geometry():
    ds = make_shapes(300, image_size=48, channels=1, seed=1)
    counts = torch.bincount(ds.labels, minlength=3)
    assert counts.min() > 60 and ds.class_names == ("circle", "square", "triangle")
    masks = ds.masks[:, 0].bool()
    rows, cols = masks.any(2), masks.any(1)
    bbox_area = rows.sum(1) * cols.sum(1)
    fill = masks.sum((1, 2)) / bbox_area  # share of the bounding box the shape covers
    circle, triangle = fill[ds.labels == 0], fill[ds.labels == 2]
    assert circle.min() > 0.68 and circle.max() < 0.9  # pi/4 = 0.785
    assert triangle.max() < 0.62  # a triangle covers at most half of any enclosing rectangle
    # Grey images: one intensity per shape in [0.2, 1] and a background in [-1, -0.7].
    values = ds.images[:, 0][masks]
    assert values.min() >= 0.2 and values.max() <= 1.0


def test_shapes_geometry_ignores_channels_and_noise_is_added_on_top():
    grey = make_shapes(50, image_size=16, channels=1, seed=3)
    rgb = make_shapes(50, image_size=16, channels=3, seed=3)
    noisy = make_shapes(50, image_size=16, channels=1, seed=3, noise=0.05)
    assert torch.equal(grey.masks, rgb.masks) and torch.equal(grey.labels, rgb.labels)
    assert torch.equal(grey.masks, noisy.masks)
    assert noisy.images.min() >= -1 and noisy.images.max() <= 1
    unclamped = (grey.images > -0.5) & (grey.images < 0.8)
    residual = (noisy.images - grey.images)[unclamped]
    assert residual.std().item() == pytest.approx(0.05, rel=0.1)
    assert abs(residual.mean().item()) < 0.01


def test_shapes_tiny_images_and_bad_arguments():
    tiny = make_shapes(20, image_size=4, seed=0)
    assert tiny.masks.sum((1, 2, 3)).min() >= 1
    with pytest.raises(DataError, match="image_size must be an integer >= 4"):
        make_shapes(4, image_size=3)
    with pytest.raises(DataError, match="channels must be 1"):
        make_shapes(4, channels=2)
    with pytest.raises(DataError, match="radius_range"):
        make_shapes(4, radius_range=(0.3, 0.6))
    with pytest.raises(DataError, match="noise"):
        make_shapes(4, noise=-0.1)


# --- ImageDataset and subsets ----------------------------------------------------------------------------
def indexed_dataset(n: int = 20) -> ImageDataset:
    """Image i is filled with a value that identifies it; label i = i; mask i = i % 2."""
    images = torch.linspace(-1, 1, n).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    masks = (torch.arange(n) % 2).float().view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return ImageDataset(images, labels=torch.arange(n), masks=masks, name="toy")


def test_image_dataset_validates_its_fields():
    with pytest.raises(DataError, match="float32"):
        ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        ImageDataset(torch.full((2, 1, 4, 4), 1.5))
    with pytest.raises(DataError, match="C in"):
        ImageDataset(torch.zeros(2, 2, 4, 4))
    with pytest.raises(DataError, match="labels"):
        ImageDataset(torch.zeros(2, 1, 4, 4), labels=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(DataError, match="masks"):
        ImageDataset(torch.zeros(2, 1, 4, 4), masks=torch.zeros(2, 1, 4, 5))


def test_subsets_keep_images_labels_and_masks_together():
    ds = indexed_dataset()
    item = ds[7]
    assert item["label"].item() == 7 and item["mask"].max().item() == 1.0
    part = ds.subset(torch.tensor([5, 2]))
    assert part.labels.tolist() == [5, 2] and torch.equal(part.images, ds.images[[5, 2]])
    assert part.masks[:, 0, 0, 0].tolist() == [1.0, 0.0] and part.name == "toy"


def test_random_subset_sizes_determinism_and_nesting():
    ds = indexed_dataset(200)
    a, b, c = ds.random_subset(0.2, seed=1), ds.random_subset(0.2, seed=1), ds.random_subset(0.2, seed=2)
    assert len(a) == 40 and torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)
    assert torch.equal(a.labels, a.labels.sort().values)  # original order kept
    assert torch.equal(a.images, ds.images[a.labels])  # images follow their labels
    half = ds.random_subset(0.5, seed=1)
    assert set(a.labels.tolist()) <= set(half.labels.tolist())
    assert ds.random_subset(1.0, seed=1) is ds
    assert len(ds.random_subset(0.001, seed=0)) == 1
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(DataError, match="fraction"):
            ds.random_subset(bad, seed=0)
    with pytest.raises(DataError, match="cannot take 300 samples"):
        random_indices(200, 300, seed=0, purpose="x", name="toy")


# --- build_dataset ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("digit", {}, "unknown dataset 'digit'; choose one of: " + ", ".join(DATASET_NAMES)),
        ("digits", {"channels": 4}, "channels must be 1 .* got 4"),
        ("digits", {"image_size": 2}, "image_size must be an integer >= 4, got 2"),
        ("digits", {"image_size": 32.0}, "image_size must be an integer >= 4, got 32.0"),
        ("mnist", {}, "'mnist' reads local files: pass root="),
        ("digits", {"root": "/data"}, "'digits' is built in and takes no root"),
        ("digits", {"fraction": 0}, r"fraction must be in \(0, 1\], got 0"),
        ("digits", {"num_samples": 0}, "num_samples must be >= 1"),
        ("digits", {"num_samples": 5000}, "cannot take 5000 samples from dataset 'digits', which has 1797"),
    ],
)
def test_build_dataset_rejects_unknown_names_and_bad_arguments(name, kwargs, message):
    with pytest.raises(DataError, match=message):
        build_dataset(name, **kwargs)


def test_build_digits_fraction_is_a_seeded_subset_of_the_full_set(digits):
    part = build_dataset("digits", fraction=0.2, seed=3)
    assert len(part) == round(0.2 * 1797) == 359
    keep = random_indices(1797, 359, seed=3, purpose="fraction")
    assert torch.equal(part.images, digits.images[keep]) and torch.equal(part.labels, digits.labels[keep])
    again = build_dataset("digits", fraction=0.2, seed=3)
    other = build_dataset("digits", fraction=0.2, seed=4)
    assert torch.equal(part.labels, again.labels) and not torch.equal(part.images, other.images)
    capped = build_dataset("digits", num_samples=100, fraction=0.5, seed=0)
    assert len(capped) == 50
    assert np.isin(capped.labels.numpy(), np.arange(10)).all()


def test_build_shapes_defaults_and_channels():
    ds = build_dataset("shapes", image_size=8)
    assert len(ds) == 10_000 and ds.images.shape == (10_000, 1, 8, 8) and ds.masks.shape == (10_000, 1, 8, 8)
    rgb = build_dataset("shapes", image_size=16, channels=3, num_samples=40, seed=2, fraction=0.25)
    assert rgb.images.shape == (10, 3, 16, 16) and rgb.masks is not None
    full = make_shapes(40, 16, 3, seed=2)
    keep = random_indices(40, 10, seed=2, purpose="fraction")
    assert torch.equal(rgb.images, full.images[keep]) and torch.equal(rgb.masks, full.masks[keep])
