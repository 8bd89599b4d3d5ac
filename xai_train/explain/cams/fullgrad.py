"""FullGrad (Srinivas & Fleuret 2019): the input-gradient map plus every spatial bias-gradient map.

FullGrad splits the score into input-gradient and bias-gradient terms (exactly, for piecewise-linear models):
``y = ∇x·x + Σ_layers ∇b·b``. The map is ``ψ(x ⊙ ∇x) + Σ_layers ψ(b ⊙ ∇b)``, where ∇b is the gradient of the
score with respect to a biased module's output, b its bias broadcast over the map, and ψ takes absolute
values, min-max normalises each image's map over all of its channels and locations, sums the channels
and upsamples bilinearly to the image size. Biased modules: Conv2d with a bias, and the normalisation layers
(BatchNorm in eval mode contributes its effective bias β − γ·μ/√(σ² + ε); in train mode, and GroupNorm /
InstanceNorm, contribute β). Layers without a spatial map (Linear heads) are left out, as in the paper's
code. The map is non-negative by construction, so a negative logit only changes which gradients feed it.
"""

from __future__ import annotations

import torch
from einops import rearrange, reduce
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from xai_train.explain.cams.base import target_scores, upsample

NORMS = (_BatchNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)


def effective_bias(module: nn.Module) -> Tensor | None:
    """The per-channel bias a module adds to its output (K,), or None if it adds none.

    Example:
        >>> effective_bias(nn.Conv2d(1, 2, 1, bias=False)) is None
        True
    """
    if isinstance(module, nn.Conv2d):
        return None if module.bias is None else module.bias.detach()
    if isinstance(module, _BatchNorm) and not module.training and module.track_running_stats:
        scale = torch.rsqrt(module.running_var + module.eps)
        gamma = module.weight.detach() if module.affine else torch.ones_like(scale)
        beta = module.bias.detach() if module.affine else torch.zeros_like(scale)
        return beta - gamma * module.running_mean * scale
    if isinstance(module, NORMS) and getattr(module, "bias", None) is not None:
        return module.bias.detach()
    return None


def normalised(maps: Tensor) -> Tensor:
    """ψ: |maps| min-max normalised per image over channels and locations, then summed over channels.

    Example:
        >>> normalised(torch.tensor([[[[-2.0, 1.0]], [[0.0, 0.0]]]])).tolist()
        [[[[1.0, 0.5]]]]
    """
    maps = maps.abs()
    low = reduce(maps, "b k h w -> b 1 1 1", "min")
    span = reduce(maps, "b k h w -> b 1 1 1", "max") - low
    maps = (maps - low) / torch.where(span > 0, span, 1.0)
    return reduce(maps, "b k h w -> b 1 h w", "sum")


def fullgrad(model: nn.Module, images: Tensor, *, target: int | Tensor | None = None) -> Tensor:
    """FullGrad saliency of each image's score.

    Args:
        model: images -> (B,), (B, 1) or (B, C) outputs (in the state ``explaining`` sets).
        images: (B, C, H, W) with ``requires_grad``.
        target: class index per image for (B, C) outputs (None = predicted class).

    Returns:
        (B, 1, H, W) non-negative maps.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 1))
        >>> fullgrad(model, torch.randn(2, 1, 4, 4, requires_grad=True)).shape
        torch.Size([2, 1, 4, 4])
    """
    biased = [(m, b) for m in model.modules() if (b := effective_bias(m)) is not None]
    outputs: dict[nn.Module, Tensor] = {}

    def keep(module: nn.Module, _inputs: object, out: Tensor) -> None:
        if isinstance(out, Tensor) and out.dim() == 4 and out.requires_grad:
            outputs[module] = out

    handles = [m.register_forward_hook(keep) for m, _ in biased]
    try:
        with torch.enable_grad():
            scores = target_scores(model(images), target)
            spatial = [(m, b) for m, b in biased if m in outputs]
            grads = torch.autograd.grad(scores.sum(), [images, *(outputs[m] for m, _ in spatial)])
    finally:
        for handle in handles:
            handle.remove()
    size = tuple(images.shape[-2:])
    cam = normalised(grads[0] * images.detach())
    for (_, bias), grad in zip(spatial, grads[1:], strict=True):
        cam = cam + upsample(normalised(grad * rearrange(bias.to(grad), "k -> 1 k 1 1")), size)
    return cam.detach()
