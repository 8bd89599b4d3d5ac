"""GAN Dissection (Bau et al., ICLR 2019): which units of a generator layer draw which concepts, and causally.

``dissect`` generates N images in chunks, records the layer's units, segments the images into concepts,
thresholds every unit (top quantile, or the paper's IQR option on held-out samples), and measures the
dataset-level IoU of every (unit, concept). ``causal_effects`` ablates (zeroes) or inserts (sets to a
high quantile, at every position) unit sets and measures how the concepts' pixel share changes,
normalised by the unedited share. All of it is batched over samples and units: one forward pass edits a
different unit set in every row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from einops import repeat
from torch import Tensor, nn
from tqdm.auto import tqdm

from xai_train.errors import UserError
from xai_train.generator.iou import iou_from_counts, iqr_thresholds, overlap_counts, unit_quantiles
from xai_train.generator.report import write_csv
from xai_train.generator.units import UnitEdit, generate

Segmenter = Callable[[Tensor], Tensor]
"""images (B, C, H, W) in [-1, 1] -> concept masks (B, K, H, W) bool."""

THRESHOLD_MODES: tuple[str, ...] = ("quantile", "iqr")
MIN_IOU = 0.05  # the paper counts a unit for a concept above this IoU


@torch.no_grad()
def segment(segmenter: Segmenter, images: Tensor, batch_size: int = 256) -> Tensor:
    """Concept masks (N, K, H, W) bool of many images, in chunks.

    Example:
        >>> segment(lambda x: x > 0, torch.randn(5, 2, 4, 4), batch_size=2).shape
        torch.Size([5, 2, 4, 4])
    """
    return torch.cat([segmenter(chunk).bool().cpu() for chunk in images.split(batch_size)])


@dataclasses.dataclass
class Dissection:
    """The result of :func:`dissect`.

    Attributes:
        layer: the dissected layer.
        concepts: concept names (C).
        iou: (K, C) dataset-level IoU.
        thresholds: (K,) or (K, C) activation thresholds.
        insert_values: (K,) the value a unit is set to when inserted (its ``insert_level`` quantile).
        concept_share: (C,) mean pixel share of each concept in the unedited images.
        ablate: (K, C) or None: ``1 − E[s_c(x_ablate)] / E[s_c(x)]`` for each unit alone (1 = removes c).
        insert: (K, C) or None: ``E[s_c(x_insert)] / E[s_c(x)] − 1``.
        ace: (K, C) or None: the paper's δ = (E[s_c(x_insert)] − E[s_c(x_ablate)]) / E[s_c(x)].
        num_samples: samples the IoU was measured on.
    """

    layer: str
    concepts: tuple[str, ...]
    iou: Tensor
    thresholds: Tensor
    insert_values: Tensor
    concept_share: Tensor
    ablate: Tensor | None = None
    insert: Tensor | None = None
    ace: Tensor | None = None
    num_samples: int = 0

    def ranking(self, skip: Sequence[str] = ("background",)) -> list[dict[str, object]]:
        """One row per unit with its best concept (skipping ``skip``), by IoU descending.

        Returns:
            Rows ``{"rank", "unit", "concept", "iou", "threshold", "ablate", "insert", "ace", "counts"}``;
            ``counts`` says whether IoU > 0.05 (the paper's bar). Effects are NaN where not measured.
        """
        keep = [i for i, name in enumerate(self.concepts) if name not in skip] or list(range(len(self.concepts)))
        iou = self.iou[:, keep]
        best_iou, best = iou.max(dim=1)
        rows = []
        for rank, unit in enumerate(best_iou.argsort(descending=True).tolist(), start=1):
            c = keep[best[unit].item()]
            threshold = self.thresholds[unit, c] if self.thresholds.dim() == 2 else self.thresholds[unit]
            effects = (("ablate", self.ablate), ("insert", self.insert), ("ace", self.ace))
            effect = {name: float("nan") if t is None else t[unit, c].item() for name, t in effects}
            value = best_iou[unit].item()
            rows.append(
                {"rank": rank, "unit": unit, "concept": self.concepts[c], "iou": value,
                 "threshold": threshold.item(), **effect, "counts": value > MIN_IOU}
            )  # fmt: skip
        return rows

    def units_for(self, concept: str, top: int) -> list[int]:
        """The ``top`` units with the highest IoU for ``concept``."""
        if concept not in self.concepts:
            raise UserError(f"unknown concept {concept!r}; choose one of: {', '.join(self.concepts)}")
        return self.iou[:, self.concepts.index(concept)].argsort(descending=True)[:top].tolist()

    def write_csv(self, path: str | Path) -> Path:
        """The ranking as CSV."""
        return write_csv(self.ranking(), path)

    def markdown(self, top: int = 20) -> str:
        """The first ``top`` rows of the ranking as a Markdown table."""
        lines = ["| rank | unit | concept | IoU | threshold | ablate | insert | δ (ACE) |", "|---" * 8 + "|"]
        for row in self.ranking()[:top]:
            lines.append(
                f"| {row['rank']} | {row['unit']} | {row['concept']} | {row['iou']:.3f} | {row['threshold']:.3g} | "
                f"{row['ablate']:.2f} | {row['insert']:.2f} | {row['ace']:.2f} |"
            )
        return "\n".join(lines)


def dissect(
    generator: nn.Module,
    layer: str,
    latents: Tensor,
    segmenter: Segmenter,
    concepts: Sequence[str],
    *,
    threshold: str = "quantile",
    level: float = 0.99,
    iqr_holdout: float = 0.25,
    insert_level: float = 0.99,
    mode: str = "bilinear",
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[Dissection, Tensor, Tensor]:
    """Dissects one layer: thresholds, unit–concept IoU (and no causal effects; see :func:`causal_effects`).

    Args:
        generator: the generator (eval mode is used).
        layer: the layer's name (see ``channel_layers``).
        latents: (N, latent_dim).
        segmenter: images -> (B, C, H, W) bool concept masks.
        concepts: the C concept names.
        threshold: ``"quantile"`` (top ``1 − level`` of each unit's activations) or ``"iqr"`` (per
            (unit, concept) on the first ``iqr_holdout`` share of the samples; IoU on the rest).
        level: the quantile level of ``"quantile"`` (the paper: 0.99–0.995).
        iqr_holdout: share of samples that select the IQR thresholds.
        insert_level: quantile level of the insertion value.
        mode: upsampling mode of the unit maps.
        batch_size: latents per forward pass.
        progress: show a progress bar.

    Returns:
        ``(dissection, images (N, C, H, W), units (N, K, h, w))``.

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8)
        >>> bright = lambda x: torch.cat([x < 0, x >= 0], dim=1)  # two "concepts": dark and bright pixels
        >>> result, _, _ = dissect(G, "upsample.0.act", torch.randn(16, 100), bright, ["dark", "bright"])
        >>> result.iou.shape, result.ranking()[0]["rank"]
        (torch.Size([16, 2]), 1)
    """
    if threshold not in THRESHOLD_MODES:
        raise UserError(f"unknown threshold {threshold!r}; choose one of: {', '.join(THRESHOLD_MODES)}")
    chunks = []
    for start in tqdm(range(0, len(latents), batch_size), desc=f"dissect {layer}", disable=not progress):
        images, units = generate(generator, latents[start : start + batch_size], layer, batch_size=batch_size)
        chunks.append((images, units, segment(segmenter, images, batch_size)))
    images, units, masks = (torch.cat(part) for part in zip(*chunks, strict=True))
    if masks.shape[1] != len(concepts):
        raise UserError(f"the segmenter returned {masks.shape[1]} concept masks for {len(concepts)} concept names")
    if threshold == "quantile":
        thresholds = unit_quantiles(units, level)
        scored = slice(None)
    else:
        held = max(1, int(len(latents) * iqr_holdout))
        thresholds = iqr_thresholds(units[:held], masks[:held], mode=mode)
        scored = slice(held, None)
    iou = iou_from_counts(overlap_counts(units[scored], masks[scored], thresholds, mode))
    result = Dissection(
        layer=layer,
        concepts=tuple(concepts),
        iou=iou,
        thresholds=thresholds,
        insert_values=unit_quantiles(units, insert_level),
        concept_share=masks.float().mean(dim=(0, 2, 3)),
        num_samples=len(units[scored]),
    )
    return result, images, units


@torch.no_grad()
def causal_effects(
    generator: nn.Module,
    layer: str,
    latents: Tensor,
    segmenter: Segmenter,
    unit_sets: Sequence[Sequence[int]],
    insert_values: Tensor,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Ablation / insertion effects of unit sets on every concept's pixel share, batched over sets.

    Args:
        generator: the generator.
        layer: the edited layer.
        latents: (N, latent_dim) samples the effect is averaged over.
        segmenter: images -> (B, C, H, W) bool.
        unit_sets: S lists of units edited together.
        insert_values: (K,) values inserted units are set to (every position).
        batch_size: images per forward pass.
        progress: show a progress bar.

    Returns:
        ``{"share": (C,), "ablated": (S, C), "inserted": (S, C), "ablate": (S, C), "insert": (S, C),
        "ace": (S, C)}``: mean pixel shares, and the normalised effects ``1 − ablated/share``,
        ``inserted/share − 1`` and ``(inserted − ablated)/share``.

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8)
        >>> bright = lambda x: torch.cat([x < 0, x >= 0], dim=1)
        >>> out = causal_effects(G, "upsample.0.act", torch.randn(4, 100), bright, [[0], [1, 2]], torch.ones(16))
        >>> out["ace"].shape
        torch.Size([2, 2])
    """
    num_units = insert_values.numel()
    n, s = len(latents), len(unit_sets)
    members = torch.zeros(s, num_units, dtype=torch.bool)
    for row, units in enumerate(unit_sets):
        members[row, torch.as_tensor(list(units), dtype=torch.long)] = True
    images, _ = generate(generator, latents, batch_size=batch_size)
    share = segment(segmenter, images, batch_size).float().mean(dim=(0, 2, 3))
    # rows: (set, sample) pairs, ablated then inserted; each row edits its own unit set
    members_rows = repeat(members, "s k -> (s n) k", n=n)
    latent_rows = repeat(latents, "n d -> (s n) d", s=s)
    totals = {}
    for kind in ("ablated", "inserted"):
        sums = torch.zeros(s, len(share))
        step = max(1, batch_size)
        for start in tqdm(range(0, s * n, step), desc=f"causal ({kind})", disable=not progress):
            rows = slice(start, start + step)
            inside = members_rows[rows]
            if kind == "ablated":
                edit = UnitEdit((~inside).float())
            else:
                edit = UnitEdit(torch.ones(inside.shape), repeat(insert_values, "k -> b k", b=len(inside)), inside)
            out, _ = generate(generator, latent_rows[rows], layer, edit, batch_size=step)
            fractions = segment(segmenter, out, step).float().mean(dim=(2, 3))  # (B, C)
            sums.index_add_(0, torch.arange(start, start + len(inside)) // n, fractions)
        totals[kind] = sums / n
    denominator = share.clamp_min(1e-12)
    return {
        "share": share,
        "ablated": totals["ablated"],
        "inserted": totals["inserted"],
        "ablate": 1 - totals["ablated"] / denominator,
        "insert": totals["inserted"] / denominator - 1,
        "ace": (totals["inserted"] - totals["ablated"]) / denominator,
    }


def add_unit_effects(
    result: Dissection,
    generator: nn.Module,
    latents: Tensor,
    segmenter: Segmenter,
    *,
    units: Sequence[int] | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> Dissection:
    """Fills ``ablate``/``insert``/``ace`` of ``result`` for single units (default: all; others stay NaN).

    Args:
        result: what :func:`dissect` returned (modified in place and returned).
        generator: the generator.
        latents: (N, latent_dim) samples the effects are averaged over.
        segmenter: images -> (B, C, H, W) bool.
        units: the units to measure.
        batch_size: images per forward pass.
        progress: show a progress bar.

    Returns:
        ``result``.

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8)
        >>> bright = lambda x: torch.cat([x < 0, x >= 0], dim=1)
        >>> result, _, _ = dissect(G, "upsample.0.act", torch.randn(8, 100), bright, ["dark", "bright"])
        >>> add_unit_effects(result, G, torch.randn(4, 100), bright, units=[0, 1]).ace[2:].isnan().all().item()
        True
    """
    num_units = result.iou.shape[0]
    units = list(range(num_units)) if units is None else list(units)
    effects = causal_effects(
        generator, result.layer, latents, segmenter, [[u] for u in units], result.insert_values,
        batch_size=batch_size, progress=progress,
    )  # fmt: skip
    for name in ("ablate", "insert", "ace"):
        table = torch.full(result.iou.shape, float("nan"))
        table[units] = effects[name]
        setattr(result, name, table)
    return result
