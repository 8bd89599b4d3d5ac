"""Pictures and tables of the generator reports: unit grids, before/after rows, PNG + TensorBoard, Markdown."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from einops import reduce, repeat
from torch import Tensor

from xai_train.atomic import atomic_path
from xai_train.explain import overlay
from xai_train.generator.iou import upsample
from xai_train.images import make_grid, save_png, to_unit_range


def unit_grid(images: Tensor, units: Tensor, unit_ids: Sequence[int], per_unit: int = 8) -> Tensor:
    """One row per unit: its ``per_unit`` most activating samples with the upsampled map as a heat map.

    Args:
        images: (N, C, H, W) in [-1, 1].
        units: (N, K, h, w) activations.
        unit_ids: the units to show, one row each.
        per_unit: images per row.

    Returns:
        (3, H', W') in [0, 1].

    Example:
        >>> unit_grid(torch.zeros(10, 1, 8, 8), torch.rand(10, 4, 2, 2), [0, 3], per_unit=3).shape
        torch.Size([3, 22, 32])
    """
    rows = []
    for unit in unit_ids:
        peaks = reduce(units[:, unit], "n h w -> n", "max")
        top = peaks.argsort(descending=True)[:per_unit]
        maps = upsample(units[top, unit : unit + 1], tuple(images.shape[-2:]))
        scale = maps.amax().clamp_min(1e-12)
        rows.append(overlay(images[top], (maps / scale).clamp(0, 1), alpha=0.5))
    return make_grid(torch.cat(rows), nrow=per_unit)


def rows_grid(rows: Sequence[Tensor]) -> Tensor:
    """Rows of images (each (n, C, H, W) in [-1, 1], equal n) stacked into one RGB grid (3, H', W').

    Example:
        >>> rows_grid([torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 8, 8)]).shape
        torch.Size([3, 22, 42])
    """
    rgb = [to_unit_range(r) for r in rows]
    rgb = [repeat(r, "n 1 h w -> n 3 h w") if r.shape[1] == 1 else r for r in rgb]
    return make_grid(torch.cat(rgb), nrow=len(rows[0]))


def write_images(out: str | Path, images: Mapping[str, Tensor], tensorboard: bool = True, tag: str = "") -> None:
    """Saves each (3, H, W) image in [0, 1] as ``out/<name>.png`` and, optionally, in ``out/tensorboard``.

    Example:
        >>> import os, tempfile
        >>> out = tempfile.mkdtemp()
        >>> write_images(out, {"grid": torch.zeros(3, 4, 4)}, tensorboard=False)
        >>> os.listdir(out)
        ['grid.png']
    """
    out = Path(out)
    for name, image in images.items():
        save_png(image, out / f"{name}.png")
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(out / "tensorboard")) as writer:
            for name, image in images.items():
                writer.add_image(f"{tag}{name}", image.clamp(0, 1), 0)


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str], digits: int = 3) -> str:
    """A Markdown table of ``rows`` (floats rounded to ``digits`` significant figures).

    Example:
        >>> print(markdown_table([{"k": 1, "fd": 1.23456}], ["k", "fd"]))
        | k | fd |
        |---|---|
        | 1 | 1.23 |
    """

    def cell(value: object) -> str:
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(rows: Sequence[Mapping[str, object]], path: str | Path) -> Path:
    """Rows (dicts with the same keys) as CSV.

    Example:
        >>> import os, tempfile
        >>> path = write_csv([{"k": 1, "fd": 2.5}], os.path.join(tempfile.mkdtemp(), "t.csv"))
        >>> path.read_text().splitlines()
        ['k,fd', '1,2.5']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def class_agreement(classifier: torch.nn.Module, query: Tensor, samples: Tensor) -> float:
    """Share of ``samples`` (N, C, H, W) the classifier labels like ``query`` (1, C, H, W).

    Example:
        >>> brightness = lambda x: torch.stack([-x.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3))], dim=1)
        >>> class_agreement(brightness, torch.ones(1, 1, 2, 2), torch.tensor([1.0, 1.0, -1.0, 1.0]).view(4, 1, 1, 1))
        0.75
    """
    with torch.no_grad():
        label = classifier(query).argmax(dim=1)
        return (classifier(samples).argmax(dim=1) == label).float().mean().item()
