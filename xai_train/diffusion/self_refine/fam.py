"""Flaw activation maps (FAM) and the amplified forward process of self-refining diffusion (DESIGN.md §9).

* :func:`flaw_maps`: one map per image in [0, 1] — Grad-CAM of the flaw highlighter's single output at its
  last conv layer, ReLU, bilinear upsampling, per-image min-max (what pytorch-grad-cam's ``GradCAM`` with
  ``ClassifierOutputTarget(0)`` computes), or any other method of ``xai_train.explain.METHODS``.
* :func:`batch_mean_fam`: the authors' FAM, the mean of those maps over the batch: one (1, 1, H, W) map.
* :func:`fam_noise_scale` / :func:`amplified_noise`: ``x_t = √ᾱ·x0 + √(1−ᾱ)·(1 + w_n·FAM)⊙ε``.
* :func:`fam_target`: the ε target — the authors' un-amplified ``ε`` (their code rebinds ``noise`` inside
  ``q_sample`` only) or the consistent ``(1 + w_n·FAM)⊙ε``.
"""

from __future__ import annotations

from typing import Any, Literal

from einops import reduce
from torch import Tensor, nn

from xai_train.diffusion.importance_schedule import SCALE_DIRECTIONS, TimeConstantScale
from xai_train.explain import attribute, to_mask

DIRECTIONS: tuple[str, ...] = SCALE_DIRECTIONS
"""``amplify``: flawed pixels get more noise (the paper); ``protect``: they get less (our earlier plan, §5)."""

EVIDENCE: tuple[str, ...] = ("real", "generated")
"""What a flaw map explains: the highlighter's output as trained (real = 1) or its negation."""


def cam_layer(highlighter: nn.Module) -> nn.Module | None:
    """The authors' Grad-CAM layer: the last ``nn.Conv2d`` of ``highlighter.features``; for a model without a
    ``features`` stack (e.g. a time-conditioned D bound to its timesteps), its last ``nn.Conv2d``; ``None`` if
    it has none (Grad-CAM then looks for one itself).

    Example:
        >>> from xai_train.diffusion.self_refine.highlighter import FlawHighlighter
        >>> fh = FlawHighlighter(32, 1, width=8)
        >>> cam_layer(fh) is fh.features[-2]
        True
    """
    features = getattr(highlighter, "features", None)
    stack = features if isinstance(features, nn.Module) else highlighter
    convs = [m for m in stack.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


class Negated(nn.Module):
    """``-model(x)``: explains the evidence for "generated" of a highlighter whose logit says "real"."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return -self.model(x)


def flaw_maps(
    highlighter: nn.Module,
    images: Tensor,
    method: str = "gradcam",
    *,
    layer: nn.Module | None = None,
    evidence: Literal["real", "generated"] = "real",
    **options: Any,
) -> Tensor:
    """Per-image flaw maps of a highlighter, each min-max normalised to [0, 1].

    Args:
        highlighter: FH, images (B, C, H, W) → (B, 1) logits (for a time-conditioned D, bind t first with
            ``xai_train.diffusion.TimestepBound``).
        images: (B, C, H, W) in the highlighter's input range.
        method: any name of ``xai_train.explain.METHODS``; "gradcam" keeps only the positive evidence (the
            Grad-CAM ReLU) and hooks ``layer``.
        layer: Grad-CAM layer; default :func:`cam_layer` (or Grad-CAM's own default).
        evidence: explain the highlighter's output as is ("real": its single output, the authors'
            ``ClassifierOutputTarget(0)`` on a real=1 sigmoid) or negated ("generated": evidence for a sample).
        **options: the method's own options.

    Returns:
        (B, 1, H, W) float32 maps in [0, 1] (all zero for a constant map).

    Example:
        >>> import torch
        >>> from xai_train.models.dcgan import DCGANDiscriminator
        >>> maps = flaw_maps(DCGANDiscriminator(32, 1, width=8, norm="none"), torch.randn(3, 1, 32, 32))
        >>> maps.shape, float(maps.amin(dim=(1, 2, 3)).max()), float(maps.amax(dim=(1, 2, 3)).min())
        (torch.Size([3, 1, 32, 32]), 0.0, 1.0)
    """
    if evidence not in EVIDENCE:
        raise ValueError(f"unknown evidence '{evidence}'; choose one of: {', '.join(EVIDENCE)}")
    if method == "gradcam":
        options = {"relu_attributions": True, "layer": layer or cam_layer(highlighter), **options}
        if options["layer"] is None:
            del options["layer"]
    model = highlighter if evidence == "real" else Negated(highlighter)
    attributions = attribute(model, images, method, **options)
    return to_mask(attributions, absolute=True, reduce="max").mask


def batch_mean_fam(maps: Tensor) -> Tensor:
    """The authors' FAM: the mean of the per-image maps, (B, 1, H, W) → (1, 1, H, W).

    Example:
        >>> import torch
        >>> batch_mean_fam(torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])).flatten().tolist()
        [0.5, 0.5, 0.5, 0.5]
    """
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise ValueError(f"batch_mean_fam expects (B, 1, H, W) maps, got shape {tuple(maps.shape)}")
    return reduce(maps, "b 1 h w -> 1 1 h w", "mean")


def fam_noise_scale(fam: Tensor, noise_weight: float, direction: Literal["amplify", "protect"] = "amplify") -> Tensor:
    """The per-pixel noise factor ``g = 1 + w_n·FAM`` ("amplify") or ``1 − w_n·FAM`` ("protect").

    The training side of ``xai_train.diffusion.TimeConstantScale``, which the per-pixel sampler uses with the same
    map (``FixedMapSampler``): one formula for both.

    Args:
        fam: (1, 1, H, W) or (B, 1, H, W) in [0, 1].
        noise_weight: ``w_n`` (0.01 in the authors' code), >= 0; "protect" needs ``w_n < 1`` so that ``g > 0``.
        direction: see :data:`DIRECTIONS`.

    Returns:
        ``g``, broadcastable to (B, C, H, W).

    Example:
        >>> import torch
        >>> fam_noise_scale(torch.tensor([[[[0.0, 1.0]]]]), 0.5, "protect").flatten().tolist()
        [1.0, 0.5]
    """
    return TimeConstantScale(noise_weight, direction).scale(fam)


def amplified_noise(noise: Tensor, fam: Tensor, noise_weight: float) -> Tensor:
    """The authors' ``noise * (1 + fam_noise_w * fam)`` in ``q_sample``: (B, C, H, W) → (B, C, H, W).

    Example:
        >>> import torch
        >>> amplified_noise(torch.ones(1, 1, 1, 2), torch.tensor([[[[0.0, 1.0]]]]), 0.01).flatten().tolist()
        [1.0, 1.0099999904632568]
    """
    return noise * fam_noise_scale(fam, noise_weight)


def fam_target(noise: Tensor, noise_scale: Tensor, target: Literal["reference", "consistent"] = "reference") -> Tensor:
    """The ε target of an amplified step: ``ε`` ("reference", the authors' quirk) or ``g⊙ε`` ("consistent").

    Example:
        >>> import torch
        >>> g = torch.full((1, 1, 1, 1), 2.0)
        >>> fam_target(torch.ones(1, 1, 1, 1), g).item(), fam_target(torch.ones(1, 1, 1, 1), g, "consistent").item()
        (1.0, 2.0)
    """
    if target == "reference":
        return noise
    if target == "consistent":
        return noise * noise_scale
    raise ValueError(f"unknown target '{target}'; choose one of: reference, consistent")
