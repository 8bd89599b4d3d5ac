"""Unit thresholds and dataset-level unit–concept IoU, vectorised over samples, units and concepts.

GAN Dissection (Bau et al., ICLR 2019; DESIGN.md §10): a unit's map ``r`` (h × w) is upsampled to the
image size and thresholded, ``r↑ > t``; its IoU with concept ``c`` over the whole dataset is
``Σ|r↑ > t ∧ s_c| / Σ|r↑ > t ∨ s_c|`` (sums over samples and pixels, not a mean of per-image IoUs).
The threshold is a top quantile of the unit's activations, or — the paper's IQR option — the candidate
that maximises ``I(r↑ > t; s_c) / H(r↑ > t, s_c)`` for each (unit, concept) on held-out samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from xai_train.errors import UserError

IQR_LEVELS: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995)
"""Quantile levels whose values are the IQR threshold candidates (the paper's levels are not published)."""

_CHUNK_ELEMENTS = 2**23  # ~32 MB of float32 per matmul operand: fast on a CPU, small on a GPU


def upsample(units: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Unit maps (B, K, h, w) resized to the image size (B, K, H, W) (bilinear, as in the paper).

    Example:
        >>> upsample(torch.ones(1, 2, 4, 4), (8, 8)).shape
        torch.Size([1, 2, 8, 8])
    """
    if tuple(units.shape[-2:]) == tuple(size):
        return units
    align = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(units, size=size, mode=mode, align_corners=align)


def unit_quantiles(units: Tensor, level: float | Tensor) -> Tensor:
    """Per-unit quantile(s) of the activations over samples and positions.

    ``r > quantile`` holds for a ``1 − level`` share of the values (without ties), the paper's top-quantile
    threshold (level 0.99–0.995).

    Args:
        units: (N, K, h, w) activations.
        level: a level in (0, 1), or (L,) levels.

    Returns:
        (K,) for one level, (L, K) for several.

    Example:
        >>> units = rearrange(torch.arange(100.0), "(n k h w) -> n k h w", k=1, h=1, w=1)
        >>> unit_quantiles(units, 0.9).tolist()
        [89.0]
    """
    flat = rearrange(units, "n k h w -> k (n h w)")
    levels = torch.as_tensor(level, dtype=torch.float64).flatten()
    if ((levels <= 0) | (levels >= 1)).any():
        raise UserError(f"quantile levels must lie in (0, 1), got {levels.tolist()}")
    count = flat.shape[1]
    ordered = flat.sort(dim=1).values
    # the value below which a `level` share lies: exactly count - ceil((1 - level)·count) values are <= it
    index = [max(0, count - max(1, math.ceil((1 - float(q)) * count)) - 1) for q in levels]
    out = ordered[:, index].T  # (L, K)
    return out[0] if torch.as_tensor(level).dim() == 0 else out


def _chunk_rows(per_row: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, per_row))


def overlap_counts(units: Tensor, masks: Tensor, thresholds: Tensor, mode: str = "bilinear") -> dict[str, Tensor]:
    """Summed intersection, unit area and concept area of ``r↑ > t`` and the concept masks.

    Args:
        units: (N, K, h, w) activations.
        masks: (N, C, H, W) bool concept masks.
        thresholds: (K,) one threshold per unit, or (K, C) one per (unit, concept).
        mode: upsampling mode of the unit maps.

    Returns:
        ``{"intersection": (K, C), "unit_area": (K, C), "concept_area": (C,), "pixels": int tensor}``.

    Example:
        >>> units = torch.zeros(1, 1, 2, 2); units[0, 0, 0, 0] = 1
        >>> masks = torch.zeros(1, 1, 2, 2, dtype=torch.bool); masks[0, 0, 0] = True  # top row
        >>> counts = overlap_counts(units, masks, torch.tensor([0.5]))
        >>> counts["intersection"].item(), counts["unit_area"].item(), counts["concept_area"].item()
        (1.0, 1.0, 2.0)
    """
    n, k = units.shape[:2]
    c, size = masks.shape[1], tuple(masks.shape[-2:])
    per_concept = thresholds.dim() == 2
    if tuple(thresholds.shape) not in ((k,), (k, c)):
        raise UserError(f"thresholds must be ({k},) or ({k}, {c}), got {tuple(thresholds.shape)}")
    inter = torch.zeros(k, c, dtype=torch.float64)
    unit_area = torch.zeros(k, c, dtype=torch.float64)
    concept_area = torch.zeros(c, dtype=torch.float64)
    step = _chunk_rows(k * size[0] * size[1] * (c if per_concept else 1))
    for start in range(0, n, step):
        up = upsample(units[start : start + step].float(), size, mode)
        concept = masks[start : start + step].float()
        concept_area += concept.sum(dim=(0, 2, 3)).double()
        s = rearrange(concept, "b c h w -> (b h w) c")
        if per_concept:
            fired = up.unsqueeze(2) > rearrange(thresholds.to(up), "k c -> 1 k c 1 1")  # (B, K, C, H, W)
            fired_f = fired.float()
            inter += torch.einsum("bkchw,bchw->kc", fired_f, concept).double()
            unit_area += fired_f.sum(dim=(0, 3, 4)).double()
        else:
            fired = rearrange((up > rearrange(thresholds.to(up), "k -> 1 k 1 1")).float(), "b k h w -> k (b h w)")
            inter += (fired @ s).double()
            unit_area += fired.sum(dim=1, keepdim=True).double()
    return {
        "intersection": inter,
        "unit_area": unit_area,
        "concept_area": concept_area,
        "pixels": torch.tensor(n * size[0] * size[1]),
    }


def iou_from_counts(counts: dict[str, Tensor]) -> Tensor:
    """Dataset-level IoU (K, C) from :func:`overlap_counts` (0 where both areas are empty).

    Example:
        >>> counts = {"intersection": torch.tensor([[1.0]]), "unit_area": torch.tensor([[1.0]]),
        ...           "concept_area": torch.tensor([2.0])}
        >>> iou_from_counts(counts).item()
        0.5
    """
    union = counts["unit_area"] + counts["concept_area"] - counts["intersection"]
    return (counts["intersection"] / union.clamp_min(1e-12)).float()


def candidate_counts(units: Tensor, masks: Tensor, candidates: Tensor, mode: str = "bilinear") -> dict[str, Tensor]:
    """:func:`overlap_counts` for T candidate thresholds per unit at once.

    Args:
        units: (N, K, h, w).
        masks: (N, C, H, W) bool.
        candidates: (T, K) thresholds.

    Returns:
        ``{"intersection": (T, K, C), "unit_area": (T, K, 1), "concept_area": (C,), "pixels": ...}``.

    Example:
        >>> units, masks = torch.rand(2, 3, 4, 4), torch.rand(2, 1, 4, 4) > 0.5
        >>> candidate_counts(units, masks, torch.rand(5, 3))["intersection"].shape
        torch.Size([5, 3, 1])
    """
    t, k = candidates.shape
    flat = rearrange(candidates, "t k -> (t k)")
    units_t = rearrange(units.unsqueeze(1).expand(-1, t, -1, -1, -1), "n t k h w -> n (t k) h w")
    counts = overlap_counts(units_t, masks, flat, mode)
    counts["intersection"] = rearrange(counts["intersection"], "(t k) c -> t k c", t=t)
    counts["unit_area"] = rearrange(counts["unit_area"], "(t k) c -> t k c", t=t)
    return counts


def information_quality_ratio(counts: dict[str, Tensor]) -> Tensor:
    """``I(A; S) / H(A, S)`` of the binary unit mask A and concept mask S from pixel counts (any shape).

    Example:
        >>> counts = {"intersection": torch.tensor([5.0]), "unit_area": torch.tensor([5.0]),
        ...           "concept_area": torch.tensor([5.0]), "pixels": torch.tensor(20)}
        >>> information_quality_ratio(counts).item()  # A == S: all information shared
        1.0
    """
    total = counts["pixels"].double()
    p11 = counts["intersection"] / total
    p1_ = counts["unit_area"] / total
    p_1 = counts["concept_area"] / total
    cells = [p11, p1_ - p11, p_1 - p11, 1 - p1_ - p_1 + p11]
    margins = [(p1_, p_1), (p1_, 1 - p_1), (1 - p1_, p_1), (1 - p1_, 1 - p_1)]
    joint_entropy = -sum(torch.special.xlogy(p, p) for p in cells)
    pairs = zip(cells, margins, strict=True)
    mutual = sum(torch.special.xlogy(p, p) - torch.special.xlogy(p, a * b) for p, (a, b) in pairs)
    return (mutual / joint_entropy.clamp_min(1e-12)).float()


def iqr_thresholds(
    units: Tensor, masks: Tensor, levels: tuple[float, ...] = IQR_LEVELS, mode: str = "bilinear"
) -> Tensor:
    """Per-(unit, concept) thresholds maximising the information quality ratio over quantile candidates.

    Pass held-out samples (the paper selects thresholds on data it does not score).

    Args:
        units: (N, K, h, w) activations.
        masks: (N, C, H, W) bool concept masks.
        levels: quantile levels whose per-unit values are the candidates.
        mode: upsampling mode.

    Returns:
        (K, C) thresholds.

    Example:
        >>> units = torch.rand(8, 1, 4, 4)
        >>> masks = units > 0.6  # the concept is exactly "activation above 0.6"
        >>> t = iqr_thresholds(units, masks, levels=(0.2, 0.4, 0.6, 0.8))
        >>> bool(((units > t[0, 0]) == masks).float().mean() > 0.9)
        True
    """
    candidates = unit_quantiles(units, torch.tensor(levels))  # (T, K)
    ratio = information_quality_ratio(candidate_counts(units, masks, candidates, mode))  # (T, K, C)
    best = ratio.argmax(dim=0)  # (K, C)
    return _pick(candidates, best)


def _pick(candidates: Tensor, best: Tensor) -> Tensor:
    """candidates (T, K), best (K, C) indices into T -> (K, C) values."""
    k = candidates.shape[1]
    return candidates[best, torch.arange(k).unsqueeze(1).expand_as(best)]
