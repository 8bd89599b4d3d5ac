"""Grad-CAM of one D layer (captum ``LayerGradCam``), upsampled to the image size, and the default-layer rule.

:func:`default_layer` is the one rule every CAM uses to pick its layer (``attribute(D, x, "gradcam")`` here,
and the CAM suite through ``xai_train.explain.cams.base.resolve_layer``); :func:`warn_if_coarse` is the one
"below 4×4" warning.
"""

from __future__ import annotations

import warnings

import torch
from captum.attr import LayerAttribution, LayerGradCam
from einops import repeat
from torch import Tensor, nn

MIN_SIDE = 4  # below 4x4 a CAM is a handful of blobs: legal, but worth a warning


def warn_if_coarse(layer: nn.Module, height: int, width: int, stacklevel: int = 2) -> None:
    """The one "below 4×4" warning every CAM gives (captum's ``gradcam`` and the CAM suite alike).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_coarse(nn.Identity(), 2, 2)
        >>> str(caught[0].message)
        'CAM layer Identity outputs a 2×2 map (< 4×4): the CAM will be very coarse'
    """
    if min(height, width) < MIN_SIDE:
        warnings.warn(
            f"CAM layer {layer.__class__.__name__} outputs a {height}×{width} map (< {MIN_SIDE}×{MIN_SIDE}): "
            "the CAM will be very coarse",
            stacklevel=stacklevel + 1,
        )


def default_layer(discriminator: nn.Module, images: Tensor) -> nn.Module:
    """The layer every CAM hooks by default (captum's ``gradcam`` and the CAM suite use this one rule).

    1. ``discriminator.feature_layer`` if D defines one (the xai_train models do);
    2. else the last ``nn.Conv2d`` whose output map is at least 4×4;
    3. else the last ``nn.Conv2d`` whose output is larger than 1×1 (a coarse map: the CAM warns);
    4. else an error: a 1×1 map makes every upsampled CAM constant (a DCGAN head maps 4×4 to 1×1).

    The output sizes come from one forward pass on a two-image slice.

    Raises:
        ValueError: if D has neither a ``feature_layer`` nor a Conv2d with a spatial output.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 4, 4), nn.Flatten(), nn.Linear(8, 1))
        >>> default_layer(net, torch.zeros(1, 1, 8, 8)) is net[0]  # net[1] maps to 2×2
        True
    """
    try:
        return discriminator.feature_layer
    except (AttributeError, NotImplementedError):
        pass
    sides: dict[nn.Module, tuple[int, int]] = {}

    def record(module: nn.Module, _inputs: object, output: Tensor) -> None:
        sides[module] = tuple(output.shape[-2:])

    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_hook(record) for m in convs]
    try:
        with torch.no_grad():
            discriminator(images[:2])
    finally:
        for handle in handles:
            handle.remove()
    large = [m for m in convs if m in sides and min(sides[m]) >= MIN_SIDE]
    if large:
        return large[-1]
    spatial = [m for m in convs if m in sides and sides[m][0] * sides[m][1] > 1]
    if not spatial:
        raise ValueError(
            "CAM: D has no `feature_layer` and no nn.Conv2d with an output larger than 1×1; "
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
    warn_if_coarse(layer, *cam.shape[-2:])
    cam = LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode=interpolate_mode)
    return repeat(cam[:, :1], "b 1 h w -> b c h w", c=images.shape[1])
