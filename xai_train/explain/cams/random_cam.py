"""RandomCAM: the layer's activations weighted by random numbers — a negative control for every metric.

w_k ~ U(−1, 1), one weight per channel drawn from a private generator seeded by ``seed`` (the same weights
for every image, so a batch of one and a batch of N agree), map = ReLU(Σ_k w_k A_k) upsampled to the image
size. It reads the model's activations but ignores what the score does with them: a quality metric that
cannot tell it from the gradient CAMs is not measuring faithfulness.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xai_train.explain.cams.base import forward_with_layer, resolve_layer, upsample, weighted_sum


def randomcam(
    model: nn.Module,
    images: Tensor,
    *,
    layer: nn.Module | None = None,
    seed: int = 0,
    relu: bool = False,
) -> Tensor:
    """Random channel weights on the layer's activations.

    Args:
        model: images -> outputs (the output is not used).
        images: (B, C, H, W).
        layer: the module whose activations are weighted (default: D's ``feature_layer``).
        seed: seed of the weights (the global RNG is not touched).
        relu: apply the final ReLU (``cam()`` and the report do; off here, as for ``attribute``).

    Returns:
        (B, 1, H, W) maps.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Flatten(), nn.Linear(48, 1))
        >>> x = torch.randn(3, 1, 4, 4)
        >>> torch.equal(randomcam(model, x, layer=model[0])[1:2], randomcam(model, x[1:2], layer=model[0]))
        True
    """
    layer = resolve_layer(model, images, layer)
    with torch.no_grad():
        _, activations = forward_with_layer(model, images, layer)
        generator = torch.Generator().manual_seed(seed)
        weights = torch.rand(activations.shape[1], generator=generator) * 2 - 1
        weights = weights.to(activations.device).expand(activations.shape[0], -1)
        cam = weighted_sum(weights, activations.float())
    return upsample(cam.relu() if relu else cam, tuple(images.shape[-2:]))
