"""Integrated Gradients: the gradient integrated along the straight path from a baseline to the image."""

from __future__ import annotations

from captum.attr import IntegratedGradients
from torch import Tensor, nn

from xai_train.explain.base import zero_baseline


def integrated_gradients(
    model: nn.Module,
    images: Tensor,
    *,
    baselines: Tensor | float | None = None,
    n_steps: int = 16,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
) -> Tensor:
    """captum ``IntegratedGradients``.

    Args:
        model: the score model, images -> (B, 1).
        images: (B, C, H, W).
        baselines: a number, (1, C, H, W) or (B, C, H, W); default zeros (mid-grey in [-1, 1]).
        n_steps: points on the path (cost ≈ n_steps × one forward + backward).
        method: captum's quadrature rule.
        internal_batch_size: path points per forward pass, to bound memory; ``None`` = all at once.

    Returns:
        (B, C, H, W) attributions (they sum to score(image) − score(baseline), up to the quadrature error).
    """
    return IntegratedGradients(model).attribute(
        images,
        baselines=zero_baseline(images) if baselines is None else baselines,
        target=None,
        n_steps=n_steps,
        method=method,
        internal_batch_size=internal_batch_size,
    )
