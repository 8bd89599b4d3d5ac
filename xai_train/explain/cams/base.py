"""Shared machinery of the CAM family: the explained score, the hooked layer, one captured pass, upsampling.

Every CAM explains one score per image: D's logit (a (B, 1) or (B,) output), or for a C-class classifier
(a (B, C) output) the logit of ``target`` — a class index, one per sample, or None for the predicted class.
The score is the raw logit, never a softmax, as in the Grad-CAM paper (a softmax mixes in the other classes).

The activations A (B, K, h, w) of the chosen layer are taken with ONE forward hook (removed before the
function returns) and their gradient G = dy/dA with ``torch.autograd.grad`` on the same graph: no backward
hook, no ``.grad`` written anywhere. D must be in the state :func:`xai_train.explain.explaining` sets
(``attribute`` and :func:`xai_train.explain.cams.cam` do that); in eval mode the samples are independent, so
the gradient of the summed score is each sample's own gradient.

A 1×1 layer is an error (every upsampled map would be constant: the trap of targeting a DCGAN head's
4×4 → 1×1 conv); a layer smaller than 4×4 warns (a coarse map).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from xai_train.explain.base import ScoreModel
from xai_train.explain.gradcam import default_layer, warn_if_coarse


@dataclass(frozen=True)
class LayerCapture:
    """What one forward and one gradient pass give every gradient CAM.

    Attributes:
        activations: (B, K, h, w) A, detached.
        gradients: (B, K, h, w) G = d score / d A, detached.
        scores: (B,) the explained score y of each image, detached.
    """

    activations: Tensor
    gradients: Tensor
    scores: Tensor


def target_scores(output: Tensor, target: int | Tensor | None = None) -> Tensor:
    """The explained score of each image: (B,) from a (B,), (B, 1) or (B, C) model output.

    Args:
        output: the model's output for a batch of B images.
        target: for (B, C) outputs, a class index or (B,) int64 indices; None = each image's predicted
            class. Must be None or 0 for a single-logit output.

    Returns:
        (B,) scores, still attached to the graph.

    Example:
        >>> target_scores(torch.tensor([[1.0, 5.0], [7.0, 2.0]])).tolist()  # predicted classes 1 and 0
        [5.0, 7.0]
        >>> target_scores(torch.tensor([[1.0, 5.0], [7.0, 2.0]]), torch.tensor([0, 1])).tolist()
        [1.0, 2.0]
    """
    batch = output.shape[0]
    if output.dim() == 1:
        output = rearrange(output, "b -> b 1")
    if output.dim() != 2:
        raise ValueError(f"CAMs need (B,), (B, 1) or (B, C) model outputs, got shape {tuple(output.shape)}")
    classes = output.shape[1]
    if target is None:
        index = output.detach().argmax(1)
    else:
        index = torch.as_tensor(target, device=output.device).long().reshape(-1).expand(batch)
        if index.min() < 0 or index.max() >= classes:
            raise ValueError(
                f"target must be a class index in [0, {classes}) (one per image or one for all), "
                f"got values in [{index.min().item()}, {index.max().item()}]"
            )
    return output.gather(1, rearrange(index, "b -> b 1")).squeeze(1)


def check_layer_map(activations: object, layer: nn.Module) -> Tensor:
    """Checks that ``layer`` output a (B, K, h, w) map larger than 1×1; warns below 4×4.

    Example:
        >>> check_layer_map(torch.zeros(2, 3, 4, 4), nn.Identity()).shape
        torch.Size([2, 3, 4, 4])
    """
    if not isinstance(activations, Tensor) or activations.dim() != 4:
        shape = tuple(activations.shape) if isinstance(activations, Tensor) else type(activations).__name__
        raise ValueError(f"CAM layer {layer.__class__.__name__} must output a (B, K, h, w) map, got {shape}")
    h, w = activations.shape[-2:]
    if h * w == 1:
        raise ValueError(
            f"CAM layer {layer.__class__.__name__} outputs a 1×1 map: every upsampled CAM would be constant "
            "(the trap of targeting a DCGAN head); choose a layer with a spatial map, e.g. D.feature_layer"
        )
    warn_if_coarse(layer, h, w, stacklevel=3)
    return activations


def resolve_layer(model: nn.Module, images: Tensor, layer: nn.Module | None) -> nn.Module:
    """``layer``, or the default one by the rule every CAM shares: :func:`xai_train.explain.gradcam.default_layer`
    (D's ``feature_layer``, else its last Conv2d whose map is at least 4×4, else the last one larger than 1×1,
    which then warns as coarse).

    ``model`` may be the ``ScoreModel`` wrapper ``attribute`` passes (its ``discriminator`` is searched).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 4, 4), nn.Flatten(), nn.Linear(8, 1))
        >>> resolve_layer(net, torch.zeros(1, 1, 8, 8), None) is net[0]  # net[1] maps to 2×2
        True
    """
    if layer is not None:
        return layer
    return default_layer(model.discriminator if isinstance(model, ScoreModel) else model, images)


def forward_with_layer(model: nn.Module, images: Tensor, layer: nn.Module) -> tuple[Tensor, Tensor]:
    """One forward pass returning (model output, the layer's output A, still on the graph).

    Raises:
        ValueError: if the layer did not run exactly once, or its output is not a usable map.
    """
    outputs: list[Tensor] = []
    handle = layer.register_forward_hook(lambda _module, _inputs, out: outputs.append(out))
    try:
        output = model(images)
    finally:
        handle.remove()
    if len(outputs) != 1:
        raise ValueError(
            f"CAM layer {layer.__class__.__name__} ran {len(outputs)} times in one forward pass; "
            "it must run exactly once (pick a module that is part of the model and not reused)"
        )
    return output, check_layer_map(outputs[0], layer)


def capture(model: nn.Module, images: Tensor, layer: nn.Module, target: int | Tensor | None = None) -> LayerCapture:
    """Activations, their gradient and the explained score from one forward and one gradient pass.

    Args:
        model: images -> (B,), (B, 1) or (B, C) outputs; in the state ``explaining`` sets.
        images: (B, C, H, W) with ``requires_grad`` (or a model whose layer output needs grad).
        layer: the module whose output A is explained.
        target: see :func:`target_scores`.

    Returns:
        The :class:`LayerCapture`.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 1))
        >>> got = capture(model, torch.randn(3, 1, 4, 4, requires_grad=True), model[0])
        >>> got.activations.shape, got.gradients.shape, got.scores.shape
        (torch.Size([3, 2, 4, 4]), torch.Size([3, 2, 4, 4]), torch.Size([3]))
    """
    with torch.enable_grad():
        output, activations = forward_with_layer(model, images, layer)
        scores = target_scores(output, target)
        if not activations.requires_grad:
            raise ValueError(
                f"CAM layer {layer.__class__.__name__}: its output does not depend on anything that needs a "
                "gradient; pass images with requires_grad=True (attribute() and cam() do)"
            )
        (gradients,) = torch.autograd.grad(scores.sum(), activations)
    return LayerCapture(activations.detach(), gradients.detach(), scores.detach())


def upsample(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of (B, 1, h, w) maps to ``size`` (``align_corners=False``, as captum's).

    Example:
        >>> upsample(torch.ones(1, 1, 2, 2), (4, 4)).shape
        torch.Size([1, 1, 4, 4])
    """
    if tuple(cam.shape[-2:]) == tuple(size):
        return cam
    return F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """``Σ_k w_k A_k``: (B, K) weights and (B, K, h, w) activations -> (B, 1, h, w).

    Example:
        >>> weighted_sum(torch.tensor([[1.0, -1.0]]), torch.ones(1, 2, 2, 2)).flatten().tolist()
        [0.0, 0.0, 0.0, 0.0]
    """
    return torch.einsum("bk,bkhw->bhw", weights, activations).unsqueeze(1)
