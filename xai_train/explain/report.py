"""The explanation report: explain a batch with many methods, score every method, write the table and the grid.

``recipes/explain.py`` is a thin command line over these functions; users can call them on their own models.

* :func:`bound_explainer` — one method as ``(model, images) -> (B, 1, H, W)`` maps, pointed at any copy of the
  model (the sanity check re-initialises a copy), the layer found by name.
* :func:`score_method` — every metric of ``xai_train.explain.quality`` for one method, as a flat dict.
* :func:`method_grid` — rows = methods, columns = images (real, then fake), each map overlaid on its image.
* :func:`write_table` — the metric × method table as Markdown and CSV.

Single-logit D (``(B, 1)`` logits): every name of ``xai_train.explain.METHODS`` works, CAMs through
:func:`xai_train.explain.cams.cam` (with the papers' ReLU), the rest through ``attribute`` (|attribution|, max over
channels). C-class classifier: the CAM suite and saliency / input × gradient, explaining each image's predicted
class; a TorchScript model only the latter (its layers call no forward hooks).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

from xai_train.atomic import atomic_path, atomic_write
from xai_train.explain.attribute import METHODS, attribute
from xai_train.explain.base import explaining
from xai_train.explain.cams import CAM_METHODS, cam
from xai_train.explain.cams.base import resolve_layer, target_scores
from xai_train.explain.quality import (
    cascading_randomisation,
    explanation_infidelity,
    explanation_sensitivity,
    localisation_metrics,
    perturbation_metrics,
    randomisable_layers,
)
from xai_train.explain.visualize import overlay
from xai_train.images import make_grid, to_unit_range

REPORT_METHODS: tuple[str, ...] = ("gradcam", *(name for name in CAM_METHODS if name != "gradcam_batched"), "saliency")
"""``--methods all``: the CAM suite (``gradcam`` = the batched Grad-CAM) and vanilla saliency as a reference."""

Explain = Callable[[nn.Module, Tensor], Tensor]

CLASS_GRADIENTS: tuple[str, ...] = ("saliency", "input_x_gradient")
"""Non-CAM methods the report runs on a C-class classifier (the gradient of the predicted class's logit)."""


def is_cam(method: str) -> bool:
    """True for the CAM suite's names (``gradcam`` included)."""
    return method == "gradcam" or method in CAM_METHODS


def check_report_methods(methods: Sequence[str], single_logit: bool, *, hooks: bool = True) -> list[str]:
    """The method names, checked: a single-logit D takes any ``METHODS`` name; a C-class classifier the CAMs
    and the class-logit gradients :data:`CLASS_GRADIENTS`; a model without hooks (TorchScript) only the latter.

    Example:
        >>> check_report_methods(["all"], single_logit=False)[:3]
        ['gradcam', 'gradcampp', 'xgradcam']
    """
    if single_logit:
        allowed = sorted({"gradcam", *METHODS})
    else:
        allowed = (["gradcam", *CAM_METHODS] if hooks else []) + list(CLASS_GRADIENTS)
    methods = [m for m in REPORT_METHODS if m in allowed] if list(methods) == ["all"] else list(methods)
    unknown = [m for m in methods if m not in allowed]
    if unknown or not methods:
        kind = "a single-logit D" if single_logit else "a C-class classifier"
        if not hooks:
            kind += " run as TorchScript (its layers call no forward hooks, so CAMs cannot read activations)"
        raise ValueError(
            f"unknown or unsupported method(s) {unknown or methods} for {kind}; choose from: all, {', '.join(allowed)}"
        )
    return methods


def class_gradient(model: nn.Module, images: Tensor, method: str) -> Tensor:
    """|∂y_c/∂x| (``"saliency"``) or |x ⊙ ∂y_c/∂x| (``"input_x_gradient"``), max over channels, for each
    image's predicted class c: (B, 1, H, W). Works on any model, TorchScript included.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> class_gradient(net, torch.randn(2, 1, 2, 2), "saliency").shape
        torch.Size([2, 1, 2, 2])
    """
    x = images.detach().clone().requires_grad_(True)
    with explaining(model):
        (gradient,) = torch.autograd.grad(target_scores(model(x), None).sum(), x)
    attributions = gradient if method == "saliency" else gradient * x.detach()
    return reduce(attributions.abs(), "b c h w -> b 1 h w", "max")


def layer_name(model: nn.Module, images: Tensor, layer: str | None) -> str:
    """The name (in ``model.named_modules()``) of the explained layer: ``layer``, or the default CAM layer."""
    modules = dict(model.named_modules())
    if layer is not None:
        if layer not in modules:
            raise ValueError(
                f"no module named {layer!r} in the model; choose one of: {', '.join(n for n in modules if n)}"
            )
        return layer
    chosen = resolve_layer(model, images[:2], None)
    return next(name for name, module in modules.items() if module is chosen)


def bound_explainer(method: str, layer: str, options: dict | None = None) -> Explain:
    """``(model, images) -> (B, 1, H, W)`` maps of ``method``, the CAM layer looked up by name in ``model``.

    Example:
        >>> D = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 1))
        >>> bound_explainer("layercam", "1")(D, torch.randn(2, 1, 4, 4)).shape
        torch.Size([2, 1, 4, 4])
    """
    options = dict(options or {})

    def explain(model: nn.Module, images: Tensor) -> Tensor:
        if is_cam(method):
            extra = {} if method == "fullgrad" else {"layer": dict(model.named_modules())[layer]}
            return cam(model, images, method, **extra, **options)
        with torch.no_grad():
            single_logit = model(images[:1]).reshape(1, -1).shape[1] == 1
        if not single_logit:
            return class_gradient(model, images, method)
        attributions = attribute(model, images, method, **options)
        return reduce(attributions.abs(), "b c h w -> b 1 h w", "max")

    return explain


def timed(explain: Explain, model: nn.Module, images: Tensor) -> tuple[Tensor, float]:
    """The maps and the seconds one call took (the device synchronised before and after)."""
    synchronise = torch.cuda.synchronize if images.is_cuda else (lambda: None)
    synchronise()
    start = time.perf_counter()
    maps = explain(model, images)
    synchronise()
    return maps, time.perf_counter() - start


def forward_backward_seconds(model: nn.Module, images: Tensor, repeats: int = 3) -> float:
    """Median seconds of one forward + backward of ``model`` on ``images`` (the unit of the cost column)."""
    times = []
    x = images.detach().clone().requires_grad_(True)
    for _ in range(repeats):
        _, seconds = timed(lambda m, imgs: torch.autograd.grad(m(imgs).sum(), imgs)[0], model, x)
        times.append(seconds)
    return sorted(times)[len(times) // 2]


def score_method(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    explain: Explain,
    *,
    masks: Tensor | None = None,
    removal: str = "blur",
    score: str = "probability",
    steps: int = 16,
    robustness_images: int = 8,
    seed: int = 0,
) -> dict[str, float]:
    """Every quality metric of one method's ``maps`` of ``images`` (means over the images).

    Args:
        model: the explained model (never modified).
        images: (B, C, H, W) the scored images.
        maps: (B, K, H, W) the method's maps of ``images``.
        explain: the method as ``(model, images) -> maps`` (for the sanity and robustness metrics).
        masks: (B, 1, H, W) ground truth, if any.
        removal: ``"constant"``, ``"blur"`` or ``"road"``.
        score: what deletion/insertion track: ``"probability"`` or ``"logit"``.
        steps: deletion/insertion portions.
        robustness_images: images used for infidelity and sensitivity (they call the explainer many times).
        seed: seeds every random choice.

    Returns:
        Keys: deletion, insertion, aopc and their ``_random`` twins; with ``masks`` pointing_game, mask_iou,
        energy_in_mask and chance; cascade_final (mean Spearman after randomising every layer) and
        cascade_pass (1.0 if below 0.5); infidelity and sensitivity on the first ``robustness_images``.
    """
    scores = perturbation_metrics(model, images, maps, removal=removal, score=score, steps=steps, seed=seed)
    if masks is not None:
        scores |= localisation_metrics(maps, masks)
    layers = randomisable_layers(model)  # none in a TorchScript model: no cascade then
    cascade = cascading_randomisation(model, images, explain, layers=layers, seed=seed) if layers else None
    few = images[:robustness_images]

    def channels(x: Tensor) -> Tensor:
        return explain(model, x).expand(-1, x.shape[1], -1, -1)

    out = {name: float(value.float().mean()) for name, value in scores.items()}
    out["cascade_final"] = cascade.final if cascade else float("nan")
    out["cascade_pass"] = float(cascade.passed) if cascade else float("nan")
    out["infidelity"] = float(explanation_infidelity(model, few, channels, seed=seed).mean())
    out["sensitivity"] = float(explanation_sensitivity(few, channels, seed=seed).mean())
    return out


def normalise_maps(maps: Tensor) -> Tensor:
    """Per-image min-max to [0, 1] for display (constant maps -> 0).

    Example:
        >>> normalise_maps(torch.tensor([[[[1.0, 3.0]]]])).flatten().tolist()
        [0.0, 1.0]
    """
    low = reduce(maps, "b k h w -> b 1 1 1", "min")
    span = reduce(maps, "b k h w -> b 1 1 1", "max") - low
    return torch.where(span > 0, (maps - low) / torch.where(span > 0, span, 1.0), torch.zeros_like(maps))


def method_grid(images: Tensor, maps: dict[str, Tensor]) -> Tensor:
    """Rows: the images, then one row per method with its (normalised) map overlaid; (3, H', W') in [0, 1].

    Example:
        >>> method_grid(torch.zeros(3, 1, 8, 8), {"a": torch.rand(3, 1, 8, 8)}).shape
        torch.Size([3, 22, 32])
    """
    rgb = to_unit_range(images.detach().float().cpu())
    rgb = rgb.expand(-1, 3, -1, -1) if rgb.shape[1] == 1 else rgb
    rows = [rgb] + [overlay(images.cpu(), normalise_maps(m.detach().float().cpu()), alpha=0.6) for m in maps.values()]
    return make_grid(rearrange(torch.stack(rows), "r n c h w -> (r n) c h w"), nrow=images.shape[0])


def save_labelled_grid(
    grid: Tensor, path: Path, row_labels: Sequence[str], column_labels: Sequence[str], tile: int
) -> Path:
    """Writes a :func:`method_grid` with the method names on the left and column titles on top (matplotlib).

    Args:
        grid: (3, H', W') from :func:`method_grid` (padding 2).
        path: the PNG to write.
        row_labels: one per grid row ("image", then the methods).
        column_labels: one per column (e.g. "real", "fake").
        tile: the image side H.

    Example:
        >>> import tempfile
        >>> grid = method_grid(torch.zeros(2, 1, 8, 8), {"layercam": torch.rand(2, 1, 8, 8)})
        >>> path = Path(tempfile.mkdtemp()) / "g.png"
        >>> save_labelled_grid(grid, path, ["image", "layercam"], ["real", "fake"], 8).suffix
        '.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = tile + 2
    height, width = grid.shape[1:]
    figure, axes = plt.subplots(figsize=(2 + width / 40, 0.4 + height / 40), dpi=100)
    axes.imshow(rearrange(grid, "c h w -> h w c").numpy(), interpolation="nearest")
    axes.set_yticks([2 + i * step + tile / 2 for i in range(len(row_labels))], list(row_labels), fontsize=8)
    axes.set_xticks([2 + i * step + tile / 2 for i in range(len(column_labels))], list(column_labels), fontsize=6)
    axes.xaxis.tick_top()
    axes.tick_params(length=0)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".") or None)
    plt.close(figure)
    return path


def write_table(rows: dict[str, dict[str, float]], directory: Path, title: str) -> tuple[Path, Path]:
    """Writes ``metrics.md`` (Markdown, with what "better" means) and ``metrics.csv``: one row per method.

    Example:
        >>> import tempfile
        >>> md, _ = write_table({"gradcam": {"deletion": 0.25}}, Path(tempfile.mkdtemp()), "demo")
        >>> "| gradcam | 0.250 |" in md.read_text()
        True
    """
    columns = list(dict.fromkeys(key for row in rows.values() for key in row))
    directory.mkdir(parents=True, exist_ok=True)
    csv_path = directory / "metrics.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", *columns])
        for method, row in rows.items():
            writer.writerow([method, *(f"{row[c]:.6g}" if c in row else "" for c in columns)])
    lines = [
        f"# Explanation quality: {title}",
        "",
        "Better: deletion lower, insertion and aopc higher than their `_random` twins; pointing_game, mask_iou,",
        "energy_in_mask above `chance`; cascade_final low (cascade_pass = 1: decorrelated below 0.5); infidelity,",
        "sensitivity lower. ms = milliseconds per call; x_fwd_bwd = that cost in units of one D forward+backward.",
        "",
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for method, row in rows.items():
        lines.append(f"| {method} | " + " | ".join(f"{row[c]:.3f}" if c in row else "" for c in columns) + " |")
    md_path = directory / "metrics.md"
    atomic_write(md_path, "\n".join(lines) + "\n")
    return md_path, csv_path
