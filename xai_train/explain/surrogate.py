"""Batched local surrogate models: the machinery LIME and KernelSHAP share.

captum's ``Lime``/``KernelShap`` fit one surrogate per sample in a Python loop. Here every sample of the
batch is perturbed with the *same* random coalitions (which patches keep their pixels), all
``B × perturbations_per_eval`` perturbed images go through D in one forward pass, and the B weighted
least-squares fits are solved together. Each sample's estimate has the same distribution as captum's
(the coalitions are drawn from captum's distributions); samples merely share their random draws.

Interpretable features are patches given by a feature mask shared by the batch; a coalition
``z ∈ {0, 1}^P`` keeps patch p where ``z_p = 1`` and puts the baseline elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from xai_train.explain.base import default_patch, patch_feature_mask

Similarity = Callable[[Tensor, Tensor], Tensor]
"""(images (B, C, H, W), perturbed (k, B, C, H, W)) -> (k, B) weights of the perturbed samples."""


def resolve_feature_mask(images: Tensor, feature_mask: Tensor | None, patch: int | None) -> Tensor:
    """The (C, H, W) int64 feature ids shared by the batch.

    Args:
        images: (B, C, H, W).
        feature_mask: (H, W), (1, H, W) or (C, H, W) ids in [0, P); ``None`` = square patches.
        patch: patch side when ``feature_mask`` is None; default 1/8 of the shorter side.
    """
    _, channels, height, width = images.shape
    if feature_mask is None:
        feature_mask = patch_feature_mask(height, width, patch or default_patch(images), device=images.device)
    if feature_mask.dim() == 2:
        feature_mask = feature_mask[None]
    if feature_mask.dim() != 3 or tuple(feature_mask.shape[-2:]) != (height, width):
        raise ValueError(
            f"feature_mask must be (H, W), (1, H, W) or (C, H, W) for images {tuple(images.shape)}, "
            f"got {tuple(feature_mask.shape)}"
        )
    feature_mask = feature_mask.to(device=images.device, dtype=torch.long)
    ids = torch.unique(feature_mask)
    if ids.min() != 0 or ids.numel() != int(ids.max()) + 1:
        raise ValueError("feature_mask ids must be 0, 1, ..., P-1 with every id used")
    return feature_mask.expand(channels, height, width)


def evaluate_coalitions(
    model: nn.Module,
    images: Tensor,
    feature_mask: Tensor,
    coalitions: Tensor,
    baselines: float | Tensor,
    perturbations_per_eval: int,
    similarity: Similarity | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Scores of every sample under every coalition.

    Args:
        model: the score model, images -> (B, 1).
        images: (B, C, H, W).
        feature_mask: (C, H, W) feature ids.
        coalitions: (n, P) in {0, 1}.
        baselines: value or image broadcastable to (B, C, H, W) for the removed patches.
        perturbations_per_eval: coalitions per forward pass (the pass sees B × this many images).
        similarity: optional per-(coalition, sample) weight function (LIME's kernel).

    Returns:
        scores (n, B) and weights (n, B) (``None`` without ``similarity``).
    """
    batch = images.shape[0]
    baselines = torch.as_tensor(baselines, dtype=images.dtype, device=images.device)
    scores, weights = [], []
    with torch.no_grad():
        for chunk in coalitions.split(perturbations_per_eval):
            keep = chunk.to(images.dtype)[:, feature_mask][:, None]  # (k, 1, C, H, W)
            perturbed = keep * images + (1 - keep) * baselines  # (k, B, C, H, W)
            out = model(rearrange(perturbed, "k b c h w -> (k b) c h w"))
            scores.append(rearrange(out, "(k b) 1 -> k b", b=batch))
            if similarity is not None:
                weights.append(similarity(images, perturbed))
    return torch.cat(scores), (torch.cat(weights) if similarity is not None else None)


def cosine_kernel(kernel_width: float) -> Similarity:
    """captum's default LIME kernel: exp(−d² / (2·width²)) with d the cosine distance in image space."""

    def similarity(images: Tensor, perturbed: Tensor) -> Tensor:
        flat = rearrange(images, "b c h w -> 1 b (c h w)").float()
        cos = F.cosine_similarity(flat, rearrange(perturbed, "k b c h w -> k b (c h w)").float(), dim=-1)
        return torch.exp(-((1 - cos) ** 2) / (2 * kernel_width**2))

    return similarity


def weighted_linear_fit(coalitions: Tensor, scores: Tensor, weights: Tensor) -> Tensor:
    """Per-sample weighted least squares with intercept, as sklearn's ``LinearRegression`` fits it.

    The data are centred with weighted means and the minimum-norm solution is taken, so an
    under-determined fit (fewer coalitions than patches) gives sklearn's answer. Solved in float64 on the
    CPU (the matrices are small; CUDA's ``lstsq`` has no minimum-norm driver).

    Args:
        coalitions: (n, P) design matrix in {0, 1}.
        scores: (n, B) targets.
        weights: (n,) or (n, B) non-negative sample weights.

    Returns:
        (B, P) coefficients, on the device and in the dtype of ``scores``.
    """
    n, _ = coalitions.shape
    batch = scores.shape[1]
    x = coalitions.detach().cpu().double()
    y = rearrange(scores.detach().cpu().double(), "n b -> b n 1")
    w = weights.detach().cpu().double()
    w = repeat(w, "n -> b n 1", b=batch) if w.dim() == 1 else rearrange(w, "n b -> b n 1")
    w_sum = w.sum(dim=1, keepdim=True)
    x_centred = x - (w * x).sum(dim=1, keepdim=True) / w_sum  # (B, n, P)
    y_centred = y - (w * y).sum(dim=1, keepdim=True) / w_sum  # (B, n, 1)
    root = w.sqrt()
    coef = torch.linalg.lstsq(root * x_centred, root * y_centred, driver="gelsd").solution
    return rearrange(coef, "b p 1 -> b p").to(device=scores.device, dtype=scores.dtype)


def expand_coefficients(coef: Tensor, feature_mask: Tensor) -> Tensor:
    """(B, P) patch coefficients -> (B, C, H, W) attributions (each pixel gets its patch's value)."""
    return coef[:, feature_mask]
