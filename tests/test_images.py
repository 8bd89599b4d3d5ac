"""make_grid places every tile where a hand-computed layout says; save_png writes the exact 8-bit values."""

import numpy as np
import pytest
import torch
from PIL import Image

from xai_train.images import make_grid, save_grid, save_png


def test_make_grid_layout_by_hand():
    n, c, h, w, nrow, pad, fill = 5, 2, 3, 4, 3, 1, -1.0
    images = torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)
    grid = make_grid(images, nrow=nrow, padding=pad, pad_value=fill)
    rows = 2  # ceil(5 / 3)
    expected = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), fill)
    for i in range(n):
        top, left = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        expected[:, top : top + h, left : left + w] = images[i]
    assert torch.equal(grid, expected)  # the empty 6th slot and every gap hold pad_value


def test_make_grid_default_row_count_and_bad_shape():
    assert make_grid(torch.zeros(10, 1, 2, 2), padding=0).shape == (1, 6, 8)  # ceil(sqrt(10)) = 4 per row, 3 rows
    with pytest.raises(ValueError, match=r"expects \(N, C, H, W\), got shape \(3, 2, 2\)"):
        make_grid(torch.zeros(3, 2, 2))


def test_save_png_writes_exact_grey_and_rgb_values(tmp_path):
    grey = torch.tensor([[[0.0, 0.5, 1.0], [-1.0, 2.0, 0.25]]])  # out-of-range values are clamped
    path = save_png(grey, tmp_path / "sub" / "grey.png")
    with Image.open(path) as image:
        assert image.mode == "L"
        assert np.array_equal(np.asarray(image), np.array([[0, 128, 255], [0, 255, 64]], dtype=np.uint8))
    rgb = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 0.0), torch.full((2, 2), 0.2)])
    with Image.open(save_png(rgb, tmp_path / "rgb.png")) as image:
        assert image.mode == "RGB" and np.asarray(image)[1, 1].tolist() == [255, 0, 51]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["grey.png", "rgb.png", "sub"]  # no temporary left
    with pytest.raises(ValueError, match="1 or 3 channels, got 2"):
        save_png(torch.zeros(2, 2, 2), tmp_path / "two.png")


def test_save_grid_maps_minus_one_to_one_onto_0_to_255(tmp_path):
    images = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1)
    with Image.open(save_grid(images, tmp_path / "g.png", nrow=3)) as image:
        row = np.asarray(image)[2]  # padding 2: the tiles sit on row 2, columns 2, 5, 8
    assert row[[2, 5, 8]].tolist() == [0, 128, 255] and row[[0, 1, 3, 4]].tolist() == [0, 0, 0, 0]
