"""SmoothGrad: the saliency averaged over noisy copies of each image (captum ``NoiseTunnel``)."""

from __future__ import annotations

from captum.attr import NoiseTunnel, Saliency
from torch import Tensor, nn


def smoothgrad(
    model: nn.Module,
    images: Tensor,
    *,
    nt_samples: int = 8,
    stdevs: float = 0.15,
    nt_samples_batch_size: int | None = None,
    abs: bool = False,
) -> Tensor:
    """Mean gradient over ``nt_samples`` copies of each image with N(0, stdevs²) noise.

    Args:
        model: the score model, images -> (B, 1).
        images: (B, C, H, W).
        nt_samples: noisy copies per image (cost ≈ nt_samples × one forward + backward).
        stdevs: noise standard deviation, in image units (images in [-1, 1]: 0.15 is 7.5% of the range).
        nt_samples_batch_size: copies per forward pass, to bound memory; ``None`` = all at once.
        abs: average |gradient| instead of the signed gradient.

    Returns:
        (B, C, H, W) attributions.
    """
    return NoiseTunnel(Saliency(model)).attribute(
        images,
        nt_type="smoothgrad",
        nt_samples=nt_samples,
        nt_samples_batch_size=nt_samples_batch_size,
        stdevs=stdevs,
        target=None,
        abs=abs,
    )
