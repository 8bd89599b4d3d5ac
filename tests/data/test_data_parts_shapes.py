"""Parts-shapes: classes share a body and differ only inside the part mask."""

import pytest
import torch

from xai_train.data import DATASET_NAMES, DataError, build_dataset, make_parts_shapes, parts_shapes_layout
from xai_train.data.parts_shapes import PART_NAMES, part_pixels


def test_classes_differ_only_inside_the_part_mask():
    ds = make_parts_shapes(64, image_size=32, channels=3, num_classes=3, seed=3)
    for other in range(3):
        twin = make_parts_shapes(64, 32, 3, num_classes=3, seed=3, labels=torch.full((64,), other))
        outside = ds.masks.expand_as(ds.images) == 0
        assert torch.equal(ds.images[outside], twin.images[outside])
        same_class = ds.labels == other
        assert torch.equal(ds.images[same_class], twin.images[same_class])
        # Different classes really differ inside the part region, in every image.
        changed = (ds.images != twin.images).flatten(1).any(1)
        assert torch.equal(changed, ~same_class)


def test_part_pixels_follow_the_class_definitions():
    layout = parts_shapes_layout(32, 32, seed=0)
    dot, ring, cross = (part_pixels(layout, torch.full((32,), k)) for k in range(3))
    assert torch.equal(dot, layout.part_region)  # the dot fills its region
    assert not (ring & ~dot).any() and not (cross & ~dot).any()
    hole, corners = (dot & ~ring).sum((1, 2, 3)), (dot & ~cross).sum((1, 2, 3))
    # Hole radius 0.5 r, r = 0.13 * 32 = 4.16 px: pi * 2.08^2 = 13.6 px; allow the pixel grid's play.
    assert hole.min() >= 9 and hole.max() <= 21
    assert corners.min() >= 8
    # The part region is a disk of radius 4.16 tangent to the body: pi r^2 = 54.4 px, give or take the grid.
    area = layout.part_region.sum((1, 2, 3))
    assert area.min() >= 48 and area.max() <= 60


def test_layout_stays_inside_the_image_and_touches_the_body():
    layout = parts_shapes_layout(500, 32, seed=1)
    r = layout.part_radius
    assert (layout.part_centre >= r - 1e-4).all() and (layout.part_centre <= 32 - r + 1e-4).all()
    assert layout.body.flatten(1).any(1).all() and layout.part_region.flatten(1).any(1).all()
    assert not (layout.body & layout.part_region).any()
    # The part is attached: dilating the body by one pixel reaches the part region in every image.
    grown = torch.nn.functional.max_pool2d(layout.body.float(), 3, 1, 1).bool()
    assert (grown & layout.part_region).flatten(1).any(1).all()
    assert set(layout.side.tolist()) == {0, 1, 2, 3}


def test_deterministic_value_range_and_balance():
    a, b = make_parts_shapes(400, seed=5), make_parts_shapes(400, seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, make_parts_shapes(400, seed=6).images)
    assert a.images.min() >= -1 and a.images.max() <= 1 and a.class_names == PART_NAMES[:2]
    assert 150 < (a.labels == 1).sum() < 250
    noisy = make_parts_shapes(400, seed=5, noise=0.1)
    assert torch.equal(noisy.labels, a.labels) and 0.05 < (noisy.images - a.images).std() < 0.12


def test_build_dataset_and_errors():
    assert "parts_shapes" in DATASET_NAMES
    ds = build_dataset("parts_shapes", image_size=16, num_samples=10, channels=1)
    assert ds.name == "parts_shapes" and torch.equal(ds.images, make_parts_shapes(10, 16, seed=0).images)
    with pytest.raises(DataError, match="num_classes"):
        make_parts_shapes(4, num_classes=4)
    with pytest.raises(DataError, match="labels must be int64"):
        make_parts_shapes(4, labels=torch.tensor([0, 1, 2, 0]))
    with pytest.raises(DataError, match="image_size"):
        make_parts_shapes(4, image_size=8)
