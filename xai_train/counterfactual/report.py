"""What ``recipes/counterfactual.py`` needs around the methods: loading the explained classifier, summary rows,
and labelled PNG panels."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from safetensors.torch import load_file
from torch import Tensor, nn

from xai_train.atomic import atomic_path
from xai_train.errors import UserError
from xai_train.images import make_grid, to_unit_range

BUILTIN_CLASSIFIERS: tuple[str, ...] = ("digits", "shapes", "parts_shapes")
"""Dataset names whose project classifier is trained once and cached (``xai_train.metrics.extractor``)."""


def load_classifier(spec: str, image_size: int, channels: int) -> nn.Module:
    """The classifier to explain, in eval mode and frozen.

    Args:
        spec: a name of :data:`BUILTIN_CLASSIFIERS` (the project's classifier of that dataset, trained on a
            cache miss), or the path of a ``.safetensors`` file of a ``FeatureClassifier`` with its ``.json``
            metadata next to it (the cache's format).
        image_size: side of the images it must accept.
        channels: channels of the images it must accept.

    Returns:
        The classifier, images (B, C, H, W) in [-1, 1] -> logits (B, K).

    Raises:
        UserError: an unknown name, or weights that do not load (the message says why).
        FileNotFoundError: a path that does not exist.

    Example:
        >>> load_classifier("imagenet", 32, 1)
        Traceback (most recent call last):
        ...
        xai_train.errors.UserError: classifier 'imagenet': choose digits, shapes, parts_shapes or a .safetensors file
    """
    from xai_train.metrics.classifier import FeatureClassifier
    from xai_train.metrics.extractor import domain_feature_extractor

    if spec in BUILTIN_CLASSIFIERS:
        model = domain_feature_extractor(spec, image_size=image_size, channels=channels).classifier
        return model.eval().requires_grad_(False)
    path = Path(spec)
    if path.suffix != ".safetensors":
        names = ", ".join(BUILTIN_CLASSIFIERS)
        raise UserError(f"classifier {spec!r}: choose {names} or a .safetensors file")
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"classifier '{path}' needs the weights file and its metadata '{meta_path}'")
    try:
        meta = json.loads(meta_path.read_text())
        recipe = meta["recipe"]
        model = FeatureClassifier(meta["channels"], meta["num_classes"], recipe["width"], recipe["num_features"])
        model.load_state_dict(load_file(path))
    except (KeyError, ValueError, RuntimeError, OSError) as err:
        raise UserError(f"classifier '{path}' does not load: {err}") from err
    if (meta["channels"], meta["image_size"]) != (channels, image_size):
        raise UserError(
            f"classifier '{path}' was trained on {meta['channels']}×{meta['image_size']}² images; "
            f"the generator makes {channels}×{image_size}²"
        )
    return model.eval().requires_grad_(False)


def write_rows(rows: Sequence[dict[str, object]], path: str | Path) -> Path:
    """Writes dict rows (the union of their keys as columns) as CSV; floats with 4 significant digits.

    Example:
        >>> import tempfile, os
        >>> p = write_rows([{"a": 1.23456, "b": "x"}], os.path.join(tempfile.mkdtemp(), "r.csv"))
        >>> p.read_text().splitlines()
        ['a,b', '1.235,x']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    return path


def heat(maps: Tensor) -> Tensor:
    """Non-negative maps (B, H, W) -> (B, 1, H, W) in [-1, 1], each scaled by its own maximum (for a grid).

    Example:
        >>> import torch
        >>> heat(torch.tensor([[[0.0, 2.0]]])).tolist()
        [[[[-1.0, 1.0]]]]
    """
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (maps / peak * 2 - 1)[:, None]


def save_panel(rows: Sequence[tuple[str, Tensor]], path: str | Path, captions: Sequence[str] = ()) -> Path:
    """A labelled figure: one row per ``(label, images (B, C, H, W) in [-1, 1])``, one column per image.

    Args:
        rows: the labelled rows (all with the same B).
        path: the PNG to write.
        captions: optional one text per column, printed under the last row.

    Returns:
        ``path``.

    Example:
        >>> import os, tempfile, torch
        >>> path = os.path.join(tempfile.mkdtemp(), "panel.png")
        >>> save_panel([("x", torch.zeros(2, 1, 4, 4)), ("x'", torch.ones(2, 1, 4, 4))], path, ["a", "b"]).name
        'panel.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = rows[0][1].shape[0]
    figure, axes = plt.subplots(len(rows), 1, figsize=(1.1 * count + 1.5, 1.25 * len(rows) + 0.4), squeeze=False)
    for axis, (label, images) in zip(axes[:, 0], rows, strict=True):
        grid = make_grid(to_unit_range(images), nrow=count, padding=2, pad_value=1.0)
        axis.imshow(grid.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if captions:
        width = rows[0][1].shape[-1] + 2
        axes[-1, 0].set_xticks([width * i + width / 2 for i in range(count)])
        axes[-1, 0].set_xticklabels(captions, fontsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or None)
    plt.close(figure)
    return path
