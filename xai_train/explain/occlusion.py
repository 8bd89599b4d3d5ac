"""Occlusion: the score drop when a square window of the image is replaced by a baseline value."""

from __future__ import annotations

from captum.attr import Occlusion
from torch import Tensor, nn

from xai_train.explain.base import default_patch


def occlusion(
    model: nn.Module,
    images: Tensor,
    *,
    window: int | None = None,
    stride: int | None = None,
    baselines: float | Tensor = 0.0,
    perturbations_per_eval: int = 16,
) -> Tensor:
    """captum ``Occlusion`` with a window covering all channels.

    Args:
        model: the score model, images -> (B, 1).
        images: (B, C, H, W).
        window: window side; default 1/8 of the shorter image side (4 for 32×32).
        stride: window step; default ``window`` (non-overlapping; (H/stride)·(W/stride) evaluations).
        baselines: value (or (1, C, H, W) image) put in the occluded window; 0 = mid-grey in [-1, 1].
        perturbations_per_eval: occluded copies of the batch per forward pass (memory vs. speed).

    Returns:
        (B, C, H, W) attributions: score(image) − score(occluded), averaged over the windows covering a pixel.
    """
    channels = images.shape[1]
    window = window or default_patch(images)
    stride = stride or window
    return Occlusion(model).attribute(
        images,
        sliding_window_shapes=(channels, window, window),
        strides=(channels, stride, stride),
        baselines=baselines,
        target=None,
        perturbations_per_eval=perturbations_per_eval,
    )
