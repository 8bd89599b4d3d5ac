"""Heat-map overlays and the PNG they are saved to."""

from __future__ import annotations

import torch
from PIL import Image

from xai_train.explain import colormap, overlay, saliency_grid, save_saliency_overlay


def test_colormap_maps_ends_of_the_range_to_the_colour_map_ends():
    colours = colormap(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1), "gray")
    assert colours.shape == (2, 3, 1, 1)
    assert torch.allclose(colours.flatten(1), torch.tensor([[0.0] * 3, [1.0] * 3]))


def test_overlay_blends_image_and_heat_map():
    images = torch.full((2, 1, 4, 4), -1.0)  # black
    mask = torch.ones(2, 3, 4, 4)
    out = overlay(images, mask, alpha=0.25, cmap="gray")
    assert out.shape == (2, 3, 4, 4)
    assert torch.allclose(out, torch.full_like(out, 0.25))


def test_grid_pairs_each_fake_with_its_overlay_and_saves_a_png(tmp_path):
    images = torch.rand(5, 3, 8, 8) * 2 - 1
    mask = torch.rand(5, 1, 8, 8)
    grid = saliency_grid(images, mask, max_images=3, alpha=0.0)
    assert grid.shape == (3, 2 + 10, 2 + 6 * 10) and 0 <= grid.min() and grid.max() <= 1
    assert torch.allclose(grid[:, 2:10, 2:10], grid[:, 2:10, 12:20], atol=1e-6)  # alpha 0: overlay = image
    path = save_saliency_overlay(images, mask, tmp_path / "overlay.png")
    with Image.open(path) as png:
        assert png.mode == "RGB" and png.size == (2 + 8 * 10, 2 + 2 * 10)
