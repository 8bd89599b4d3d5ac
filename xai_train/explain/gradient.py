"""Plain-gradient explainers: vanilla saliency and input × gradient (cost ≈ one D forward + backward)."""

from __future__ import annotations

from captum.attr import InputXGradient, Saliency
from torch import Tensor, nn


def saliency(model: nn.Module, images: Tensor, *, abs: bool = False) -> Tensor:
    """∂score/∂image (captum ``Saliency``).

    Args:
        model: the score model, images -> (B, 1).
        images: (B, C, H, W).
        abs: return |gradient| (captum's default) instead of the signed gradient.

    Returns:
        (B, C, H, W) gradients.
    """
    return Saliency(model).attribute(images, target=None, abs=abs)


def input_x_gradient(model: nn.Module, images: Tensor) -> Tensor:
    """image ⊙ ∂score/∂image (captum ``InputXGradient``).

    Returns:
        (B, C, H, W) attributions.
    """
    return InputXGradient(model).attribute(images, target=None)
