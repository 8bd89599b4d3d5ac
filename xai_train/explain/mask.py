"""From attributions to a mask in [0, 1]: ``to_mask`` and the statistics logged about masks."""

from __future__ import annotations

import dataclasses
import math

import einops
import torch
import torch.nn.functional as F
from torch import Tensor

from xai_train.checks import check_finite
from xai_train.errors import UserError

REDUCTIONS: tuple[str, ...] = ("max", "mean", "none")
"""Channel reductions: (B, C, H, W) -> (B, 1, H, W) by max or mean, or kept per channel."""

SCOPES: tuple[str, ...] = ("sample", "batch")
"""Min-max normalisation over each sample's map, or over the whole batch."""

NONFINITE: tuple[str, ...] = ("raise", "flag")
"""What ``to_mask`` does with NaN/Inf attributions: raise a UserError, or give the sample a zero mask and
flag it ``degenerate`` (counted, logged as ``fraction_degenerate``)."""


@dataclasses.dataclass(frozen=True)
class MaskResult:
    """A mask and which samples had a degenerate map.

    Attributes:
        mask: (B, 1, H, W), or (B, C, H, W) for ``reduce="none"``; float32 in [0, 1], never NaN.
        degenerate: (B,) bool: the sample's map was constant or not finite, so its mask is all zero.
    """

    mask: Tensor
    degenerate: Tensor

    @property
    def num_degenerate(self) -> int:
        """How many samples had a degenerate map (synchronises with the device)."""
        return int(self.degenerate.sum().item())


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B, K, H, W) maps with edge replication; ``sigma <= 0`` returns them as is.

    Example:
        >>> x = torch.zeros(1, 1, 9, 9); x[..., 4, 4] = 1
        >>> round(gaussian_blur(x, 1.0).sum().item(), 4)
        1.0
    """
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = maps.shape[1]
    out = F.pad(maps, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, einops.repeat(kernel, "k -> c 1 1 k", c=channels), groups=channels)
    return F.conv2d(out, einops.repeat(kernel, "k -> c 1 k 1", c=channels), groups=channels)


def to_mask(
    attributions: Tensor,
    *,
    absolute: bool = True,
    reduce: str = "max",
    blur_sigma: float = 0.0,
    scope: str = "sample",
    nonfinite: str = "raise",
) -> MaskResult:
    """Normalises attributions to a mask in [0, 1] (computed in float32).

    Steps: ``|a|`` (or signed ``a``) -> channel reduction -> optional blur -> min-max normalisation per
    sample (or over the batch). A constant map gives an all-zero mask and is flagged in ``degenerate``.
    NaN/Inf attributions are an error by default (an all-zero mask would look like data); with
    ``nonfinite="flag"`` such a sample gets an all-zero mask and is flagged ``degenerate`` instead — free
    saliency uses that, because a gradient overflowing under fp16 loss scaling is normal (the scaler then
    skips the step). With ``scope="batch"`` flagged samples are left out of the batch range, and a
    constant batch flags every remaining sample.

    The result is invariant to positive rescaling of ``attributions`` (exactly so for powers of two),
    which keeps a gradient function built on it positively homogeneous.

    Args:
        attributions: (B, C, H, W).
        absolute: take ``|a|`` first (evidence either way); ``False`` maps the most negative value to 0.
        reduce: ``"max"``, ``"mean"`` or ``"none"`` over the channels.
        blur_sigma: Gaussian blur sigma in pixels (0 = none), applied before normalising.
        scope: ``"sample"`` or ``"batch"``.
        nonfinite: ``"raise"`` (default) or ``"flag"``, see above.

    Returns:
        A :class:`MaskResult`.

    Raises:
        UserError: bad shape or option, or (``nonfinite="raise"``) NaN/Inf attributions.

    Example:
        >>> a = torch.tensor([[[[1.0, -3.0], [0.0, 2.0]]]])
        >>> [round(v, 3) for v in to_mask(a).mask.flatten().tolist()]
        [0.333, 1.0, 0.0, 0.667]
        >>> to_mask(torch.ones(2, 1, 2, 2)).degenerate.tolist()
        [True, True]
    """
    if not isinstance(attributions, torch.Tensor):
        raise TypeError(f"to_mask expects a (B, C, H, W) tensor of attributions, got {type(attributions).__name__}")
    if attributions.dim() != 4:
        raise UserError(f"to_mask expects (B, C, H, W) attributions, got shape {tuple(attributions.shape)}")
    if reduce not in REDUCTIONS:
        raise UserError(f"unknown reduce {reduce!r}; choose one of: {', '.join(REDUCTIONS)}")
    if scope not in SCOPES:
        raise UserError(f"unknown scope {scope!r}; choose one of: {', '.join(SCOPES)}")
    if nonfinite not in NONFINITE:
        raise UserError(f"unknown nonfinite {nonfinite!r}; choose one of: {', '.join(NONFINITE)}")
    if nonfinite == "raise":
        check_finite(
            attributions,
            "to_mask(): the attributions",
            "an all-zero mask would look like data; fix the input or pass nonfinite='flag' to count them",
        )
    maps = attributions.detach().float()
    if absolute:
        maps = maps.abs()
    if reduce != "none":
        maps = einops.reduce(maps, "b c h w -> b 1 h w", reduce)
    maps = gaussian_blur(maps, blur_sigma)
    finite = torch.isfinite(maps)
    sample_finite = reduce_all(finite, "min")
    maps = torch.where(finite, maps, torch.zeros((), dtype=maps.dtype, device=maps.device))
    if scope == "sample":
        low = einops.reduce(maps, "b c h w -> b 1 1 1", "min")
        high = einops.reduce(maps, "b c h w -> b 1 1 1", "max")
        usable = sample_finite & (reduce_all(high - low, "max") > 0)
    else:
        low, high = _batch_range(maps, sample_finite)
        usable = sample_finite & (high > low)
    span = torch.where(high > low, high - low, torch.ones_like(high))
    mask = torch.where(usable.view(-1, 1, 1, 1), ((maps - low) / span).clamp(0, 1), torch.zeros_like(maps))
    return MaskResult(mask=mask, degenerate=~usable)


def reduce_all(values: Tensor, how: str) -> Tensor:
    """Per-sample reduction over everything but the batch axis: (B, ...) -> (B,)."""
    if values.dtype == torch.bool:
        return einops.reduce(values.to(torch.uint8), "b ... -> b", how).bool()
    return einops.reduce(values, "b ... -> b", how)


def _batch_range(maps: Tensor, sample_finite: Tensor) -> tuple[Tensor, Tensor]:
    """min and max over the samples whose maps are finite (0, 0 if there are none)."""
    if not bool(sample_finite.any()):
        return maps.new_zeros(()), maps.new_zeros(())
    finite_maps = maps[sample_finite]
    return finite_maps.amin(), finite_maps.amax()


def mask_entropy(mask: Tensor) -> Tensor:
    """Per-sample entropy of the mask read as a distribution over pixels, divided by log(#pixels).

    1 = flat mask, 0 = one pixel. An all-zero mask has no distribution: NaN.

    Args:
        mask: (B, K, H, W) non-negative.

    Returns:
        (B,) float32.

    Example:
        >>> mask_entropy(torch.ones(1, 1, 4, 4)).item()
        1.0
    """
    flat = mask.detach().float().flatten(1)
    total = flat.sum(dim=1, keepdim=True)
    p = flat / total
    plogp = torch.where(p > 0, p * p.clamp_min(torch.finfo(p.dtype).tiny).log(), torch.zeros_like(p))
    entropy = -plogp.sum(dim=1) / math.log(flat.shape[1]) if flat.shape[1] > 1 else torch.zeros_like(total[:, 0])
    return torch.where(total[:, 0] > 0, entropy, torch.full_like(entropy, float("nan")))


def mask_statistics(result: MaskResult, explained: Tensor | None = None) -> dict[str, Tensor]:
    """What to log about one batch's mask (0-dim float tensors; no device synchronisation).

    Args:
        result: the batch's mask.
        explained: (B,) bool, the samples that were explained (default all).

    Returns:
        ``mask_mean`` and ``mask_entropy`` over explained, non-degenerate samples (NaN if none),
        ``fraction_explained`` of the batch and ``fraction_degenerate`` of the explained samples.

    Example:
        >>> stats = mask_statistics(to_mask(torch.rand(4, 1, 8, 8)))
        >>> stats["fraction_explained"].item(), stats["fraction_degenerate"].item()
        (1.0, 0.0)
    """
    batch = result.mask.shape[0]
    if explained is None:
        explained = torch.ones(batch, dtype=torch.bool, device=result.mask.device)
    useful = explained & ~result.degenerate
    n_explained = explained.sum().float()
    n_useful = useful.sum().float()
    per_sample_mean = reduce_all(result.mask, "mean")
    entropy = torch.nan_to_num(mask_entropy(result.mask), nan=0.0)
    nan = torch.full((), float("nan"), device=result.mask.device)
    return {
        "mask_mean": torch.where(n_useful > 0, (per_sample_mean * useful).sum() / n_useful.clamp_min(1), nan),
        "mask_entropy": torch.where(n_useful > 0, (entropy * useful).sum() / n_useful.clamp_min(1), nan),
        "fraction_explained": n_explained / batch,
        "fraction_degenerate": (result.degenerate & explained).sum().float() / n_explained.clamp_min(1),
    }


def scatter_mask(result: MaskResult, explained: Tensor) -> MaskResult:
    """Places the mask of the explained samples (K, ...) into a batch of B with zeros elsewhere.

    Args:
        result: mask of the K explained samples, in batch order.
        explained: (B,) bool with K true entries.

    Returns:
        (B, ...) mask; unexplained samples have an all-zero mask and are not flagged degenerate.

    Example:
        >>> sub = to_mask(torch.rand(1, 1, 2, 2))
        >>> scatter_mask(sub, torch.tensor([False, True])).mask.shape
        torch.Size([2, 1, 2, 2])
    """
    batch = explained.shape[0]
    mask = result.mask.new_zeros((batch, *result.mask.shape[1:]))
    mask[explained] = result.mask
    degenerate = torch.zeros(batch, dtype=torch.bool, device=result.degenerate.device)
    degenerate[explained] = result.degenerate
    return MaskResult(mask=mask, degenerate=degenerate)
