"""GradientSHAP: expected gradients between random baselines and noisy copies of each image."""

from __future__ import annotations

from captum.attr import GradientShap
from torch import Tensor, nn

from xai_train.explain.base import zero_baseline


def gradient_shap(
    model: nn.Module,
    images: Tensor,
    *,
    baselines: Tensor | None = None,
    n_samples: int = 5,
    stdevs: float = 0.0,
) -> Tensor:
    """captum ``GradientShap``.

    Args:
        model: the score model, images -> (B, 1).
        images: (B, C, H, W).
        baselines: (N, C, H, W) reference images to draw from — real images are the meaningful choice;
            default one zero image (mid-grey in [-1, 1]), which makes this a sampled Integrated Gradients.
        n_samples: random (baseline, path point) draws per image (cost ≈ n_samples × forward + backward).
        stdevs: noise added to each image copy, in image units.

    Returns:
        (B, C, H, W) attributions.
    """
    return GradientShap(model).attribute(
        images,
        baselines=zero_baseline(images) if baselines is None else baselines,
        n_samples=n_samples,
        stdevs=stdevs,
        target=None,
    )
