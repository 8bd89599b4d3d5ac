"""RandomCAM: a negative control for every quality metric.

Two kinds of randomness (``mode``):

* ``"noise"`` (default): a map of U(−1, 1) values at the layer's resolution, upsampled like every CAM. It
  ignores the model and the image entirely, so it scores chance in localisation and the random order's
  value in deletion/insertion; a metric that cannot tell it from the gradient CAMs is not measuring anything.
  The values are drawn from a generator seeded by ``seed`` and the image's bytes, so a batch of one and a
  batch of N agree and the same image always gets the same map.
* ``"channels"``: w_k ~ U(−1, 1), one weight per channel (shared by the batch), map = Σ_k w_k A_k — the
  activations weighted at random (pytorch-grad-cam's RandomCAM). It is *not* a chance-level pointer: the
  activations already carry the object (measured on a D trained to find a planted square: depending on the
  seed the map points at the square in every image or in none), which is why it is not the default.
"""

from __future__ import annotations

import zlib

import torch
from einops import rearrange
from torch import Tensor, nn

from xai_train.explain.cams.base import forward_with_layer, resolve_layer, upsample, weighted_sum

RANDOM_MODES: tuple[str, ...] = ("noise", "channels")


def image_seed(image: Tensor, seed: int) -> int:
    """A seed from ``seed`` and the image's bytes (CRC-32): the same image gets the same random map.

    Example:
        >>> zeros, ones = torch.zeros(1, 2, 2), torch.ones(1, 2, 2)
        >>> image_seed(zeros, 0) == image_seed(zeros.clone(), 0) != image_seed(ones, 0)
        True
    """
    return zlib.crc32(image.detach().float().cpu().numpy().tobytes(), seed & 0xFFFFFFFF)


def randomcam(
    model: nn.Module,
    images: Tensor,
    *,
    layer: nn.Module | None = None,
    seed: int = 0,
    mode: str = "noise",
    relu: bool = False,
) -> Tensor:
    """A random map at the layer's resolution (``mode="noise"``) or randomly weighted activations.

    Args:
        model: images -> outputs (the output is not used).
        images: (B, C, H, W).
        layer: the module whose map size (and, for ``"channels"``, activations) is used.
        seed: seed of the random values (the global RNG is not touched).
        mode: ``"noise"`` or ``"channels"`` (see the module docstring).
        relu: apply a final ReLU (``cam()`` does).

    Returns:
        (B, 1, H, W) maps.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Flatten(), nn.Linear(48, 1))
        >>> x = torch.randn(3, 1, 4, 4)
        >>> torch.equal(randomcam(model, x, layer=model[0])[1:2], randomcam(model, x[1:2], layer=model[0]))
        True
    """
    if mode not in RANDOM_MODES:
        raise ValueError(f"randomcam: unknown mode {mode!r}; choose one of: {', '.join(RANDOM_MODES)}")
    layer = resolve_layer(model, images, layer)
    with torch.no_grad():
        _, activations = forward_with_layer(model, images, layer)
        b, k, h, w = activations.shape
        if mode == "noise":
            draws = [
                torch.rand(h * w, generator=torch.Generator().manual_seed(image_seed(image, seed))) for image in images
            ]
            cam = rearrange(torch.stack(draws) * 2 - 1, "b (h w) -> b 1 h w", h=h, w=w).to(images.device)
        else:
            weights = torch.rand(k, generator=torch.Generator().manual_seed(seed)) * 2 - 1
            cam = weighted_sum(weights.to(images.device).expand(b, -1), activations.float())
    return upsample(cam.relu() if relu else cam, tuple(images.shape[-2:]))
