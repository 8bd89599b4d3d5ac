"""Grad-CAM of one D layer (captum ``LayerGradCam``), upsampled to the image size."""

from __future__ import annotations

import torch
from captum.attr import LayerAttribution, LayerGradCam
from einops import repeat
from torch import Tensor, nn


def default_layer(discriminator: nn.Module, images: Tensor) -> nn.Module:
    """The layer Grad-CAM hooks by default.

    ``discriminator.feature_layer`` if D defines one (the xai_train models do); otherwise the last
    ``nn.Conv2d`` whose output map is larger than 1×1 (a DCGAN head maps 4×4 to 1×1, and a 1×1 CAM is
    constant), found with one forward pass on a two-image slice.

    Raises:
        ValueError: if D has neither a ``feature_layer`` nor a Conv2d with a spatial output.
    """
    try:
        return discriminator.feature_layer
    except (AttributeError, NotImplementedError):
        pass
    sides: dict[nn.Module, int] = {}

    def record(module: nn.Module, _inputs: object, output: Tensor) -> None:
        sides[module] = output.shape[-2] * output.shape[-1]

    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_hook(record) for m in convs]
    try:
        with torch.no_grad():
            discriminator(images[:2])
    finally:
        for handle in handles:
            handle.remove()
    spatial = [m for m in convs if sides.get(m, 0) > 1]
    if not spatial:
        raise ValueError(
            "gradcam: D has no `feature_layer` and no nn.Conv2d with an output larger than 1×1; "
            "pass layer=<the module whose output is D's last feature map>"
        )
    return spatial[-1]


def gradcam(
    model: nn.Module,
    images: Tensor,
    *,
    layer: nn.Module | None = None,
    relu_attributions: bool = False,
    interpolate_mode: str = "bilinear",
) -> Tensor:
    """Grad-CAM: the layer's channels weighted by their mean gradient, summed, upsampled to H × W.

    Args:
        model: the score model (its ``discriminator`` attribute is D).
        images: (B, C, H, W).
        layer: a module of D; default :func:`default_layer`.
        relu_attributions: keep only the evidence for "real" (the Grad-CAM paper's ReLU). Off by
            default (as in captum): for a fake D rejects outright the map would be all zero.
        interpolate_mode: ``torch.nn.functional.interpolate`` mode for the upsampling.

    Returns:
        (B, C, H, W): the (B, 1, H, W) map repeated over the channels.
    """
    if layer is None:
        layer = default_layer(model.discriminator, images)
    cam = LayerGradCam(model, layer).attribute(images, target=None, relu_attributions=relu_attributions)
    if cam.dim() != 4:
        raise ValueError(f"gradcam: layer output must be a (B, K, h, w) map, got CAM shape {tuple(cam.shape)}")
    cam = LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode=interpolate_mode)
    return repeat(cam[:, :1], "b 1 h w -> b c h w", c=images.shape[1])
