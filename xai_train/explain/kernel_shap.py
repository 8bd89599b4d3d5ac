"""KernelSHAP on image patches, batched (see ``surrogate.py``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xai_train.explain.surrogate import (
    evaluate_coalitions,
    expand_coefficients,
    resolve_feature_mask,
    weighted_linear_fit,
)

ENDPOINT_WEIGHT = 1e6
"""captum's weight on the all-kept and all-removed coalitions (stands in for the Shapley kernel's ∞)."""


def shapley_coalitions(num_features: int, n_samples: int, device: torch.device | None = None) -> Tensor:
    """captum's KernelSHAP coalitions: all-kept, all-removed, then ``n_samples − 2`` draws whose size k
    follows p(k) ∝ (P − 1) / (k (P − k)) with the k kept patches uniform (= sampling the Shapley kernel).

    Returns:
        (n_samples, P) float coalitions in {0, 1}.

    Example:
        >>> shapley_coalitions(4, 3)[:2]
        tensor([[1., 1., 1., 1.],
                [0., 0., 0., 0.]])
    """
    ends = torch.stack([torch.ones(num_features, device=device), torch.zeros(num_features, device=device)])
    draws = max(0, n_samples - 2)
    if num_features < 2 or draws == 0:
        return ends[:n_samples]
    sizes = torch.arange(1, num_features, device=device, dtype=torch.float64)
    size_probs = (num_features - 1) / (sizes * (num_features - sizes))
    kept = torch.multinomial(size_probs, draws, replacement=True) + 1  # (draws,) sizes in [1, P-1]
    ranks = torch.rand(draws, num_features, device=device).argsort(dim=1).argsort(dim=1)
    sampled = (ranks >= num_features - kept[:, None]).float()  # exactly k ones, uniformly placed
    return torch.cat([ends, sampled])


def kernel_shap(
    model: nn.Module,
    images: Tensor,
    *,
    n_samples: int = 128,
    patch: int | None = None,
    feature_mask: Tensor | None = None,
    baselines: float | Tensor = 0.0,
    perturbations_per_eval: int = 32,
) -> Tensor:
    """KernelSHAP as captum's ``KernelShap`` computes it (same coalitions, weights and regression).

    Args:
        model: the score model, images -> (B, 1).
        images: (B, C, H, W).
        n_samples: coalitions including the two endpoints (cost ≈ n_samples forward passes of the batch).
        patch: side of the square patches; default 1/8 of the shorter side (64 patches).
        feature_mask: (H, W), (1, H, W) or (C, H, W) feature ids shared by the batch, instead of patches.
        baselines: value or image for the removed patches; 0 = mid-grey in [-1, 1].
        perturbations_per_eval: coalitions per forward pass.

    Returns:
        (B, C, H, W): each pixel carries its patch's Shapley value estimate; per sample they sum to
        ≈ score(image) − score(baseline).
    """
    feature_mask = resolve_feature_mask(images, feature_mask, patch)
    num_features = int(feature_mask.max()) + 1
    coalitions = shapley_coalitions(num_features, max(n_samples, 2), device=images.device)
    scores, _ = evaluate_coalitions(model, images, feature_mask, coalitions, baselines, perturbations_per_eval)
    weights = torch.ones(coalitions.shape[0], dtype=torch.float64)
    weights[:2] = ENDPOINT_WEIGHT
    return expand_coefficients(weighted_linear_fit(coalitions, scores, weights), feature_mask)
