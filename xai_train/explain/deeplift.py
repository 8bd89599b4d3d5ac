"""DeepLift and DeepLiftShap (captum ``DeepLift``), with a compatibility probe and bounded memory.

DeepLiftShap averages DeepLift attributions over reference images drawn from real data. captum's
``DeepLiftShap`` pairs every image with every baseline in one pass (B × N pairs); here the pairs are
formed the same way but pushed through captum's ``DeepLift`` in chunks of at most ``chunk_size`` pairs,
and the chunk means are combined with their sizes as weights — the same numbers, bounded memory.
"""

from __future__ import annotations

import warnings

import torch
from captum.attr import DeepLift
from einops import rearrange, repeat
from torch import Tensor, nn

from xai_train.explain.base import zero_baseline
from xai_train.explain.deeplift_check import CAPTUM_HOOK_WARNING, check_deeplift


def _deeplift(model: nn.Module, images: Tensor, baselines: Tensor | float, eps: float) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CAPTUM_HOOK_WARNING)
        return DeepLift(model, eps=eps).attribute(images, baselines=baselines, target=None)


def deeplift(
    model: nn.Module,
    images: Tensor,
    *,
    baselines: Tensor | float | None = None,
    eps: float = 1e-10,
    check: bool = True,
) -> Tensor:
    """captum ``DeepLift`` (rescale rule).

    Args:
        model: the score model, images -> (B, 1).
        images: (B, C, H, W).
        baselines: a number, (1, C, H, W) or (B, C, H, W); default zeros (mid-grey in [-1, 1]).
        eps: captum's threshold below which a multiplier falls back to the gradient.
        check: run :func:`check_deeplift` first (one DeepLift on one image); a loop calling this every
            step may check once and pass ``check=False`` afterwards.

    Returns:
        (B, C, H, W) attributions summing to score(image) − score(baseline) per sample.

    Raises:
        ValueError: if DeepLift cannot explain this D (functional or re-used activations, train-mode BN).
    """
    baselines = zero_baseline(images) if baselines is None else baselines
    if check:
        check_deeplift(model, images, baselines)
    return _deeplift(model, images, baselines, eps)


def deeplift_shap(
    model: nn.Module,
    images: Tensor,
    *,
    baselines: Tensor | None = None,
    n_baselines: int | None = None,
    chunk_size: int = 256,
    eps: float = 1e-10,
    check: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DeepLiftShap: DeepLift averaged over every given reference image (or a subset you ask for).

    Every one of the N ``baselines`` is used, as captum's ``DeepLiftShap`` does, unless ``n_baselines``
    asks for a random subset: the cost is N DeepLift calls per image, so pass the reference set you mean
    (e.g. the xAI-GAN reference code's first real batch of 128 images) or ``n_baselines=k`` to trade
    fidelity for time.

    Args:
        model: the score model, images -> (B, 1).
        images: (B, C, H, W).
        baselines: (N, C, H, W) real images (required): the distribution SHAP values are taken against.
        n_baselines: ``None`` (default) uses all N; ``k`` draws k of them without replacement (all of
            them if N <= k).
        chunk_size: most (image, baseline) pairs per DeepLift pass (memory ∝ 2 × chunk_size images);
            at least one baseline per pass, so B pairs when B > chunk_size.
        eps: captum's DeepLift threshold.
        check: run :func:`check_deeplift` first.
        generator: random generator for the draw (only with ``n_baselines``).

    Returns:
        (B, C, H, W) attributions: the mean over the baselines used of DeepLift against each (cost ≈ that
        many DeepLift calls).

    Raises:
        ValueError: ``baselines`` missing or not (N, C, H, W) like ``images``; ``n_baselines`` < 1.

    Example:
        The mean over baselines is DeepLift against each baseline, averaged (all 3 are used):

        >>> D = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
        >>> images, refs = torch.randn(2, 1, 2, 2), torch.randn(3, 1, 2, 2)
        >>> each = torch.stack([deeplift(D, images, baselines=r.expand_as(images)) for r in refs])
        >>> torch.allclose(deeplift_shap(D, images, baselines=refs), each.mean(0), atol=1e-6)
        True
    """
    if baselines is None or baselines.dim() != 4 or tuple(baselines.shape[1:]) != tuple(images.shape[1:]):
        got = None if baselines is None else tuple(baselines.shape)
        raise ValueError(
            f"deeplift_shap needs baselines=(N, {', '.join(map(str, images.shape[1:]))}) real images; got {got}"
        )
    if n_baselines is not None and (
        isinstance(n_baselines, bool) or not isinstance(n_baselines, int) or n_baselines < 1
    ):
        raise ValueError(
            f"deeplift_shap: n_baselines must be None (use all) or a whole number >= 1; got {n_baselines!r}"
        )
    baselines = baselines.detach().to(device=images.device, dtype=images.dtype)
    if n_baselines is not None and baselines.shape[0] > n_baselines:
        pick = torch.randperm(baselines.shape[0], generator=generator)[:n_baselines]
        baselines = baselines[pick.to(baselines.device)]
    if check:
        check_deeplift(model, images, baselines)
    batch, num = images.shape[0], baselines.shape[0]
    per_chunk = max(1, chunk_size // batch)
    total = torch.zeros_like(images)
    for chunk in baselines.split(per_chunk):
        n = chunk.shape[0]
        pairs_in = repeat(images, "b c h w -> (b n) c h w", n=n)
        pairs_ref = repeat(chunk, "n c h w -> (b n) c h w", b=batch)
        attributions = _deeplift(model, pairs_in, pairs_ref, eps)
        total += rearrange(attributions, "(b n) c h w -> b n c h w", n=n).sum(dim=1)
    return total / num
