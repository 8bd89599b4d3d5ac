"""Localisation against ground truth: pointing game, mask IoU, energy in the mask (with their chance levels).

Ground truth is a (B, 1, H, W) mask of the evidence: the ``shapes`` dataset's object masks, the
``parts_shapes`` dataset's differing part, a planted artifact, or any user mask. Maps are summed over their
channels first; only their positive part counts as evidence.

* **pointing game** (Zhang et al. 2016/2018, "Top-down neural attention by excitation backprop"): 1 if the
  map's maximum falls inside the mask (dilated by ``tolerance`` pixels), else 0; a constant map points
  nowhere (0). Higher is better; chance = the mask's share of the image.
* **mask IoU**: the map's top-n pixels (n = the mask's area: the explanation gets the same budget as the
  ground truth) against the mask. Higher is better; chance ≈ the mask's share.
* **energy in mask** (Wang et al. 2020, Score-CAM's energy-based pointing game): Σ_mask map⁺ / Σ map⁺.
  Higher is better; chance = the mask's share; 0 for a map with no positive value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

from xai_train.explain.quality.removal import pixel_ranks


def check_maps_and_masks(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 1, H, W) float maps (channel sum) and bool masks, after checking the shapes agree."""
    if maps.dim() != 4 or masks.dim() != 4 or masks.shape[1] != 1 or maps.shape[0] != masks.shape[0]:
        raise ValueError(
            f"need maps (B, K, H, W) and masks (B, 1, H, W), got {tuple(maps.shape)}, {tuple(masks.shape)}"
        )
    if maps.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ in size")
    masks = masks.bool()
    if not masks.flatten(1).any(1).all():
        raise ValueError("every mask needs at least one pixel (an empty ground truth cannot be pointed at)")
    return maps.detach().float().sum(1, keepdim=True), masks


def pointing_game(maps: Tensor, masks: Tensor, *, tolerance: int = 0) -> Tensor:
    """1.0 where the map's maximum lies in the (dilated) mask, else 0.0; (B,).

    Example:
        >>> maps = torch.zeros(2, 1, 3, 3); maps[0, 0, 1, 1] = 1; maps[1, 0, 0, 0] = 1
        >>> masks = torch.zeros(2, 1, 3, 3); masks[:, 0, 1, 1] = 1
        >>> pointing_game(maps, masks).tolist(), pointing_game(maps, masks, tolerance=1).tolist()
        ([1.0, 0.0], [1.0, 1.0])
    """
    maps, masks = check_maps_and_masks(maps, masks)
    if tolerance > 0:
        masks = F.max_pool2d(masks.float(), 2 * tolerance + 1, 1, tolerance).bool()
    flat = rearrange(maps, "b 1 h w -> b (h w)")
    hit = rearrange(masks, "b 1 h w -> b (h w)").gather(1, flat.argmax(1, keepdim=True)).squeeze(1)
    informative = flat.amax(1) > flat.amin(1)
    return (hit & informative).float()


def mask_iou(maps: Tensor, masks: Tensor, *, seed: int = 0) -> Tensor:
    """IoU of the map's top-n pixels (n = mask area, ties broken at random) with the mask; (B,).

    Example:
        >>> maps = torch.tensor([[[[3.0, 2.0], [1.0, 0.0]]]]); masks = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
        >>> round(mask_iou(maps, masks).item(), 4)  # top-2 = {3, 2}; overlap 1, union 3
        0.3333
    """
    maps, masks = check_maps_and_masks(maps, masks)
    area = reduce(masks.float(), "b 1 h w -> b 1 1 1", "sum")
    top = pixel_ranks(maps, seed) < area
    intersection = reduce((top & masks).float(), "b 1 h w -> b", "sum")
    union = reduce((top | masks).float(), "b 1 h w -> b", "sum")
    return intersection / union


def energy_in_mask(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of the map's positive mass inside the mask; (B,) in [0, 1].

    Example:
        >>> energy_in_mask(torch.tensor([[[[3.0, 1.0, -5.0]]]]), torch.tensor([[[[1.0, 0.0, 1.0]]]])).item()
        0.75
    """
    maps, masks = check_maps_and_masks(maps, masks)
    positive = maps.clamp_min(0)
    total = reduce(positive, "b 1 h w -> b", "sum")
    inside = reduce(positive * masks, "b 1 h w -> b", "sum")
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), torch.zeros_like(total))


def chance_level(masks: Tensor) -> Tensor:
    """The mask's share of the image: what a uniformly random pointer scores in each metric; (B,).

    Example:
        >>> chance_level(torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])).item()
        0.25
    """
    return reduce(masks.float(), "b 1 h w -> b", "mean")


def localisation_metrics(maps: Tensor, masks: Tensor, *, tolerance: int = 0) -> dict[str, Tensor]:
    """``{"pointing_game", "mask_iou", "energy_in_mask", "chance"}``, each (B,) (see the module docstring).

    Example:
        >>> sorted(localisation_metrics(torch.rand(2, 1, 4, 4), torch.ones(2, 1, 4, 4)))
        ['chance', 'energy_in_mask', 'mask_iou', 'pointing_game']
    """
    return {
        "chance": chance_level(masks),
        "energy_in_mask": energy_in_mask(maps, masks),
        "mask_iou": mask_iou(maps, masks),
        "pointing_game": pointing_game(maps, masks, tolerance=tolerance),
    }


__all__ = ["chance_level", "energy_in_mask", "localisation_metrics", "mask_iou", "pointing_game"]
