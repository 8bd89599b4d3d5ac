"""``attribute``: one entry point for every explainer of D's real/fake logit."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from torch import Tensor, nn

from xai_train.checks import check_finite
from xai_train.errors import UserError
from xai_train.explain.base import (
    BN_MODES,
    OUTPUTS,
    ScoreModel,
    check_grad_allowed,
    check_images,
    check_options,
    explaining,
)
from xai_train.explain.cams import CAM_METHODS
from xai_train.explain.deeplift import deeplift, deeplift_shap
from xai_train.explain.gradcam import gradcam
from xai_train.explain.gradient import input_x_gradient, saliency
from xai_train.explain.gradient_shap import gradient_shap
from xai_train.explain.integrated_gradients import integrated_gradients
from xai_train.explain.kernel_shap import kernel_shap
from xai_train.explain.lime import lime
from xai_train.explain.occlusion import occlusion
from xai_train.explain.precision import explanation_input, match_options
from xai_train.explain.smoothgrad import smoothgrad

METHODS: MappingProxyType[str, Callable[..., Tensor]] = MappingProxyType(
    {
        "saliency": saliency,
        "input_x_gradient": input_x_gradient,
        "integrated_gradients": integrated_gradients,
        "deeplift": deeplift,
        "deeplift_shap": deeplift_shap,
        "gradient_shap": gradient_shap,
        "smoothgrad": smoothgrad,
        "gradcam": gradcam,
        "occlusion": occlusion,
        "lime": lime,
        "kernel_shap": kernel_shap,
        **CAM_METHODS,  # gradcampp, layercam, scorecam, ... (xai_train.explain.cams)
    }
)
"""Explainer name -> function ``(score_model, images, **options) -> (B, C, H, W)``; read-only."""


def check_method(method: str, options: Mapping[str, object] | None = None) -> Callable[..., Tensor]:
    """The explainer called ``method``, after checking the name and (if given) ``attribute``'s options.

    Lets a caller that explains later (a callback switching on at half of training) fail at once.

    Args:
        method: an explainer name.
        options: keyword options as ``attribute`` would receive them (``bn_mode``, ``output`` and the
            method's own).

    Returns:
        The method's function.

    Raises:
        ValueError: unknown method, ``bn_mode`` or ``output``.
        TypeError: an option the method does not take.

    Example:
        >>> check_method("integrated_gradients", {"n_steps": 8, "bn_mode": "eval"}).__name__
        'integrated_gradients'
    """
    try:
        fn = METHODS[method]
    except KeyError:
        raise UserError(f"unknown explainer {method!r}; choose one of: {', '.join(METHODS)}") from None
    if options is not None:
        own = dict(options)
        bn_mode, output = own.pop("bn_mode", BN_MODES[0]), own.pop("output", OUTPUTS[0])
        if bn_mode not in BN_MODES:
            raise UserError(f"unknown bn_mode {bn_mode!r}; choose one of: {', '.join(BN_MODES)}")
        if output not in OUTPUTS:
            raise UserError(f"unknown output {output!r}; choose one of: {', '.join(OUTPUTS)}")
        check_options(method, fn, own)
    return fn


def attribute(
    discriminator: nn.Module,
    images: Tensor,
    method: str,
    /,
    *,
    bn_mode: str = "eval",
    output: str = "logit",
    **options: object,
) -> Tensor:
    """Explains D's score of each image with one of :data:`METHODS`, batched, leaving D as it was.

    Pass the unwrapped D (``accelerator.unwrap_model(D)``) and ``fake.detach()``. The explanation runs in fp32
    (fp64 for an fp64 D) whatever the training precision: a forward that ``accelerator.prepare`` wrapped in
    autocast is bypassed for the call, the images are cast and every tensor option (``baselines``,
    ``feature_mask``, ...) is moved to their device and dtype (``xai_train.explain.precision``). D is put in eval mode
    (or keeps train mode with BatchNorm momentum 0, ``bn_mode="freeze_stats"``) for the call; its modes,
    BatchNorm statistics, ``requires_grad`` flags, ``.grad`` and hooks are as before afterwards (see
    ``xai_train.explain.base``). Works under ``torch.no_grad()``; ``torch.inference_mode()`` is an error.

    Args:
        discriminator: D, images (B, C, H, W) -> logits (B, 1).
        images: (B, C, H, W) batch to explain (not modified; its autograd history is ignored).
        method: one of :data:`METHODS`.
        bn_mode: ``"eval"`` (default) or ``"freeze_stats"``.
        output: explain the ``"logit"`` (default) or the ``"probability"`` sigmoid(logit).
        **options: the method's own options (see each method's function); unknown ones are an error.

    Returns:
        (B, C, H, W) attributions, detached, on the images' device, in fp32 (fp64 for an fp64 D).

    Raises:
        UserError: (a ValueError) unknown method, images that are not a float (B, C, H, W) batch or hold
            NaN/Inf, a D whose output is not (B, 1) logits, or a D the method cannot explain.
        TypeError: an option the method does not take.
        RuntimeError: under ``torch.inference_mode()``.

    Example:
        >>> import torch
        >>> D = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(), nn.Flatten(), nn.Linear(64, 1))
        >>> attribute(D, torch.randn(2, 1, 4, 4), "saliency").shape
        torch.Size([2, 1, 4, 4])
    """
    if not isinstance(discriminator, nn.Module):
        raise TypeError(f"attribute(): discriminator must be an nn.Module, got {type(discriminator).__name__}")
    if not isinstance(images, Tensor):
        raise TypeError(f"attribute(): images must be a (B, C, H, W) tensor, got {type(images).__name__}")
    if not isinstance(method, str):
        raise TypeError(
            f"attribute(): method must be an explainer name, got {method!r}; choose one of: {', '.join(METHODS)}"
        )
    fn = check_method(method, {"bn_mode": bn_mode, "output": output, **options})
    check_images(images)
    check_finite(images, "attribute(): the images", "explanations of them would be meaningless; check the generator")
    check_grad_allowed("attribute()")
    images = explanation_input(images, discriminator)  # a fresh fp32 leaf: the caller's tensor is untouched
    options = match_options(options, images)  # baselines etc. on the images' device, in their dtype
    model = ScoreModel(discriminator, output)
    with explaining(discriminator, bn_mode):  # D in fp32 even when accelerator.prepare autocasts it
        attributions = fn(model, images, **options)
    if tuple(attributions.shape) != tuple(images.shape):
        raise RuntimeError(
            f"explainer {method!r} returned shape {tuple(attributions.shape)} for images {tuple(images.shape)}"
        )
    return attributions.detach()
