"""The CAM family, batched, for a discriminator's logit or a classifier's class (DESIGN.md §8).

* :func:`cam` — one CAM of any model (single-logit D or C-class classifier), model left as it was.
* :func:`all_cams` — every gradient CAM from ONE forward and ONE gradient pass.
* :data:`CAM_METHODS` — name -> ``(model, images, **options) -> (B, C, H, W)``, the entries
  ``xai_train.explain.METHODS`` registers (so ``attribute(D, x, "gradcampp")`` and ``xai.method=layercam`` work).

``cam`` and ``all_cams`` apply each paper's final ReLU by default (``relu=True``); the ``METHODS`` entries
return the signed map by default (``relu=False``, like captum's ``gradcam`` there), because xAI-GAN masks are
built from ``|map|`` and a fake that D rejects outright often has no positive evidence at all.

Gradient CAMs (``gradient.py``): gradcam, gradcampp, xgradcam, layercam, hirescam, gradcam_elementwise,
eigencam, eigengradcam. Gradient-free (``perturbation.py``): scorecam, ablationcam. ``fullgrad.py``: FullGrad.
``random_cam.py``: randomcam, the negative control. Shared machinery: ``base.py``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> D = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 1))
    >>> maps = all_cams(D, torch.randn(2, 1, 4, 4), layer=D[1])
    >>> len(maps), maps["gradcampp"].shape
    (8, torch.Size([2, 1, 4, 4]))
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import MappingProxyType

from einops import repeat
from torch import Tensor, nn

from xai_train.explain.base import check_grad_allowed, check_images, check_options, explaining
from xai_train.explain.cams.base import LayerCapture, capture, target_scores
from xai_train.explain.cams.fullgrad import fullgrad
from xai_train.explain.cams.gradient import GRADIENT_RULES, gradient_cams, gradient_method
from xai_train.explain.cams.perturbation import ablationcam, scorecam
from xai_train.explain.cams.random_cam import randomcam
from xai_train.explain.precision import explanation_input, match_options


def channels_method(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Wraps a (B, 1, H, W) CAM as an explainer returning (B, C, H, W) (the map repeated per channel)."""

    @functools.wraps(fn)  # keeps the signature, so check_options sees the method's own options
    def method(model: nn.Module, images: Tensor, **options: object) -> Tensor:
        return repeat(fn(model, images, **options), "b 1 h w -> b c h w", c=images.shape[1]).contiguous()

    return method


CAM_METHODS: MappingProxyType[str, Callable[..., Tensor]] = MappingProxyType(
    {
        **{name: gradient_method(name) for name in GRADIENT_RULES if name != "gradcam"},
        "gradcam_batched": gradient_method("gradcam"),
        "scorecam": channels_method(scorecam),
        "ablationcam": channels_method(ablationcam),
        "fullgrad": channels_method(fullgrad),
        "randomcam": channels_method(randomcam),
    }
)
"""CAM name -> explainer (``METHODS`` keeps ``"gradcam"`` for captum's; this Grad-CAM is ``gradcam_batched``)."""

GRADIENT_CAMS: tuple[str, ...] = tuple(GRADIENT_RULES)
"""The CAMs :func:`all_cams` computes from one pass."""


def prepared(images: Tensor, where: str, model: nn.Module) -> Tensor:
    """A fresh fp32 leaf copy of ``images`` that requires grad (the caller's tensor is untouched).

    fp32 (fp64 for an fp64 model) whatever the training precision: see ``xai_train.explain.precision``.
    """
    check_images(images)
    check_grad_allowed(where)
    return explanation_input(images, model)


def cam(
    model: nn.Module,
    images: Tensor,
    method: str,
    *,
    target: int | Tensor | None = None,
    bn_mode: str = "eval",
    **options: object,
) -> Tensor:
    """One CAM of ``model`` (a single-logit D or a C-class classifier), leaving the model as it was.

    Args:
        model: images -> (B,), (B, 1) logits or (B, C) class logits.
        images: (B, C, H, W).
        method: a name in :data:`CAM_METHODS`, or ``"gradcam"`` (this package's batched Grad-CAM).
        target: class index (or (B,) indices) for C-class models; None = each image's predicted class.
        bn_mode: ``"eval"`` or ``"freeze_stats"`` (see ``xai_train.explain.base``).
        **options: the method's options (``layer``, ``relu`` (default True here), ``batch_size``, ...).

    Returns:
        (B, 1, H, W) maps, detached, computed in fp32 even through a model ``accelerator.prepare`` autocasts.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        >>> cam(net, torch.randn(2, 1, 4, 4), "layercam", target=torch.tensor([0, 2]), layer=net[1]).shape
        torch.Size([2, 1, 4, 4])
    """
    name = "gradcam_batched" if method == "gradcam" else method
    if name not in CAM_METHODS:
        raise ValueError(f"unknown CAM {method!r}; choose one of: gradcam, {', '.join(CAM_METHODS)}")
    fn = CAM_METHODS[name]
    check_options(method, fn, {"target": target, **options} if name != "randomcam" else options)
    if name != "randomcam":
        options["target"] = target
    if name != "fullgrad":
        options.setdefault("relu", True)  # the papers' maps; the METHODS entries default to the signed map
    images = prepared(images, "cam()", model)
    options = match_options(options, images)  # a target index tensor on the images' device
    with explaining(model, bn_mode):  # the model in fp32 even when accelerator.prepare autocasts it
        maps = fn(model, images, **options)
    return maps[:, :1].detach()


def all_cams(
    model: nn.Module,
    images: Tensor,
    *,
    layer: nn.Module | None = None,
    target: int | Tensor | None = None,
    relu: bool = True,
    bn_mode: str = "eval",
) -> dict[str, Tensor]:
    """Every gradient CAM (:data:`GRADIENT_CAMS`) from one forward and one gradient pass, model untouched.

    Args:
        model: images -> (B,), (B, 1) or (B, C) outputs.
        images: (B, C, H, W).
        layer: the explained module (default: D's ``feature_layer`` or its last spatial Conv2d).
        target: class index per image for (B, C) outputs (None = predicted class).
        relu: apply the final ReLU.
        bn_mode: ``"eval"`` or ``"freeze_stats"``.

    Returns:
        name -> (B, 1, H, W) maps, detached.
    """
    images = prepared(images, "all_cams()", model)
    if isinstance(target, Tensor):
        target = target.to(images.device)
    with explaining(model, bn_mode):  # the model in fp32 even when accelerator.prepare autocasts it
        return gradient_cams(model, images, layer=layer, target=target, relu=relu)


__all__ = [
    "CAM_METHODS",
    "GRADIENT_CAMS",
    "GRADIENT_RULES",
    "LayerCapture",
    "ablationcam",
    "all_cams",
    "cam",
    "capture",
    "fullgrad",
    "gradient_cams",
    "randomcam",
    "scorecam",
    "target_scores",
]
