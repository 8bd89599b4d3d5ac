"""LIME on image patches, batched (see ``surrogate.py``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xai_train.explain.surrogate import (
    cosine_kernel,
    evaluate_coalitions,
    expand_coefficients,
    resolve_feature_mask,
    weighted_linear_fit,
)


def lime(
    model: nn.Module,
    images: Tensor,
    *,
    n_samples: int = 128,
    patch: int | None = None,
    feature_mask: Tensor | None = None,
    baselines: float | Tensor = 0.0,
    kernel_width: float = 1.0,
    perturbations_per_eval: int = 32,
) -> Tensor:
    """LIME with captum's default sampling (each patch kept with probability ½) and kernel.

    One deliberate difference from captum's ``Lime``: the surrogate is a weighted linear regression
    (closed form, solved for the whole batch at once) instead of ``Lasso(alpha=0.01)``.

    Args:
        model: the score model, images -> (B, 1).
        images: (B, C, H, W).
        n_samples: coalitions (cost ≈ n_samples forward passes of the batch).
        patch: side of the square patches; default 1/8 of the shorter side (64 patches).
        feature_mask: (H, W), (1, H, W) or (C, H, W) feature ids shared by the batch, instead of patches.
        baselines: value or image for the removed patches; 0 = mid-grey in [-1, 1].
        kernel_width: width of the exponential kernel on the cosine distance (captum's default 1.0).
        perturbations_per_eval: coalitions per forward pass.

    Returns:
        (B, C, H, W): each pixel carries its patch's coefficient.
    """
    feature_mask = resolve_feature_mask(images, feature_mask, patch)
    num_features = int(feature_mask.max()) + 1
    coalitions = torch.bernoulli(torch.full((n_samples, num_features), 0.5, device=images.device))
    scores, weights = evaluate_coalitions(
        model,
        images,
        feature_mask,
        coalitions,
        baselines,
        perturbations_per_eval,
        cosine_kernel(kernel_width),
    )
    return expand_coefficients(weighted_linear_fit(coalitions, scores, weights), feature_mask)
