"""Counterfactuals on the data manifold (Dombrowski et al., "Diffeomorphic counterfactuals") and the pixel-space
adversarial example they are compared with.

Both minimise the cross-entropy CE(f(clip(x)), target) with Adam and stop an image once p_target ≥ ``p_stop``
(0.99 in the paper): the counterfactual moves the latent z of a generator (x = g(z), starting at z₀ = g⁻¹(x)),
the adversarial example moves the pixels. A whole batch is one optimisation; an image that reached the target
keeps its value (masked update), so each image's result does not depend on its batch. A start image (x, or
g(z₀)) outside [-1, 1] is clipped like every later one, with one warning per call.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import reduce
from torch import Tensor, nn

from xai_train.counterfactual.generators import LatentDecoder
from xai_train.explain import explaining


@dataclasses.dataclass
class CounterfactualResult:
    """Counterfactuals of a batch.

    Attributes:
        originals: (B, C, H, W) the explained images.
        counterfactuals: (B, C, H, W) x′, clipped to [-1, 1].
        targets: (B,) target classes.
        target_probability: (B,) p_target(x′).
        success: (B,) p_target(x′) ≥ p_stop.
        steps: (B,) optimisation steps each image took.
        heatmaps: (B, H, W) |x − x′| summed over channels.
        latents: (B, ...) final latents (None for a pixel-space search).
        trajectory: (T, B, C, H, W) images every ``record_every`` steps (first: the start), or None.

    Example:
        >>> f = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> result = pixel_adversarial(f, torch.zeros(1, 1, 2, 2), 1, max_steps=4, record_every=2)
        >>> result.trajectory.shape[1:], result.heatmaps.shape
        (torch.Size([1, 1, 2, 2]), torch.Size([1, 2, 2]))
    """

    originals: Tensor
    counterfactuals: Tensor
    targets: Tensor
    target_probability: Tensor
    success: Tensor
    steps: Tensor
    heatmaps: Tensor
    latents: Tensor | None = None
    trajectory: Tensor | None = None


def as_targets(target: int | Tensor, batch: int, num_classes: int) -> Tensor:
    """One target class per image: (B,) int64, checked against the classifier's number of classes.

    Example:
        >>> as_targets(3, 2, 10).tolist()
        [3, 3]
    """
    targets = torch.as_tensor(target, dtype=torch.long).flatten()
    targets = targets.expand(batch).clone() if targets.numel() == 1 else targets
    if targets.shape != (batch,) or bool(((targets < 0) | (targets >= num_classes)).any()):
        raise ValueError(f"unknown target class {target!r}: expected one int or {batch} ints in [0, {num_classes - 1}]")
    return targets


def warn_if_outside(start: Tensor, search: str) -> None:
    """One warning when start images (B, C, H, W) leave [-1, 1]: the search clips them before f sees them.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_outside(torch.tensor([[[[0.5, 2.0]]], [[[0.0, 0.1]]]]), "adversarial")
        >>> str(caught[0].message)[:71]
        'adversarial: 1 of 2 start images lie outside [-1, 1] (values in [0, 2])'
    """
    outside = reduce((start.abs() > 1).float(), "b ... -> b", "max").bool()
    if outside.any():
        low, high = start.min().item(), start.max().item()
        warnings.warn(
            f"{search}: {int(outside.sum())} of {len(start)} start images lie outside [-1, 1] "
            f"(values in [{low:.3g}, {high:.3g}]); they are clipped to [-1, 1] before the classifier sees them, so "
            "the search starts from the clipped image: pass images scaled to [-1, 1] (x * 2 - 1 for [0, 1] images)",
            stacklevel=4,
        )


def _ascend(
    params: Tensor,
    render: Callable[[Tensor], Tensor],
    classifier: nn.Module,
    targets: Tensor,
    lr: float,
    max_steps: int,
    p_stop: float,
    record_every: int,
    progress: bool,
    desc: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Adam on ``params`` minimising CE(f(clip(render(params))), targets), with per-image stopping."""
    from tqdm.auto import tqdm

    params = params.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([params], lr=lr)
    active = torch.ones(len(targets), dtype=torch.bool, device=targets.device)
    steps = torch.zeros(len(targets), dtype=torch.long, device=targets.device)
    trajectory = []
    for step in tqdm(range(max_steps + 1), desc=desc, disable=not progress):
        # Only the images still searching go through the models: the batch shrinks as images reach the target.
        rows = active.nonzero()[:, 0]
        images = render(params[rows])
        if step == 0:
            warn_if_outside(images.detach(), desc)
        images = images.clamp(-1, 1)
        logits = classifier(images)
        p_target = logits.softmax(dim=1).gather(1, targets[rows, None])[:, 0].detach()
        if record_every and step % record_every == 0:
            with torch.no_grad():
                trajectory.append(render(params).clamp(-1, 1))
        done = p_target >= p_stop
        active[rows[done]] = False
        if step == max_steps or not active.any():
            break
        loss = F.cross_entropy(logits[~done], targets[rows[~done]], reduction="sum")
        before = params.detach().clone()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            keep = active.reshape(-1, *[1] * (params.ndim - 1))
            params.copy_(torch.where(keep, params, before))
        steps += active.long()
    with torch.no_grad():
        images = render(params).clamp(-1, 1)
        p_target = classifier(images).softmax(dim=1).gather(1, targets[:, None])[:, 0]
    stacked = torch.stack(trajectory) if trajectory else None
    return params.detach(), images.detach(), p_target, steps, stacked


def _result(images: Tensor, out: tuple, targets: Tensor, p_stop: float, latents: bool) -> CounterfactualResult:
    params, counterfactuals, p_target, steps, trajectory = out
    return CounterfactualResult(
        originals=images.detach(),
        counterfactuals=counterfactuals,
        targets=targets,
        target_probability=p_target,
        success=p_target >= p_stop,
        steps=steps,
        heatmaps=reduce((images.detach() - counterfactuals).abs(), "b c h w -> b h w", "sum"),
        latents=params if latents else None,
        trajectory=trajectory,
    )


def manifold_counterfactuals(
    classifier: nn.Module,
    decoder: LatentDecoder,
    images: Tensor,
    target: int | Tensor,
    *,
    latents: Tensor | None = None,
    lr: float = 5e-3,
    max_steps: int = 1000,
    p_stop: float = 0.99,
    record_every: int = 0,
    progress: bool = False,
) -> CounterfactualResult:
    """Counterfactuals x′ = g(z) found by Adam on z from z₀ = g⁻¹(x) (or the given ``latents``).

    Learning rates of the authors' README: 5e-2 × 2000 steps for a RealNVP on MNIST, 5e-3 × 1000 for
    Glow/GAN/VAE.

    Args:
        classifier: f, (B, C, H, W) -> logits (B, K); explained in eval mode (restored afterwards).
        decoder: the generator g (and its inverse).
        images: (B, C, H, W) images x in [-1, 1].
        target: one class for all images, or (B,) classes.
        latents: z₀ (skips ``decoder.encode``), e.g. when the images are the generator's own samples.
        lr: Adam learning rate on z.
        max_steps: step cap.
        p_stop: stop an image once p_target ≥ p_stop.
        record_every: keep the images every this many steps (0: no trajectory).
        progress: show a tqdm bar.

    Returns:
        A :class:`CounterfactualResult` (``latents`` = final z).

    Example:
        >>> from xai_train.counterfactual.flow import RealNVP
        >>> from xai_train.counterfactual.generators import FlowDecoder
        >>> decoder = FlowDecoder(RealNVP(4, num_couplings=2, hidden=4), shape=(1, 2, 2))
        >>> f = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> with torch.no_grad():
        ...     _ = f[1].weight.copy_(torch.tensor([[1.0, 1, 1, 1], [-1, -1, -1, -1]]))
        >>> result = manifold_counterfactuals(f, decoder, torch.full((2, 1, 2, 2), 0.5), 1, lr=0.05)
        >>> result.success.tolist(), result.heatmaps.shape
        ([True, True], torch.Size([2, 2, 2]))
    """
    with explaining(classifier):
        targets = as_targets(target, images.shape[0], classifier(images[:1]).shape[1]).to(images.device)
        z0 = decoder.encode(images).detach() if latents is None else latents
        out = _ascend(
            z0, decoder.decode, classifier, targets, lr, max_steps, p_stop, record_every, progress, "counterfactual"
        )
    return _result(images, out, targets, p_stop, latents=True)


def pixel_adversarial(
    classifier: nn.Module,
    images: Tensor,
    target: int | Tensor,
    *,
    lr: float = 5e-4,
    max_steps: int = 2000,
    p_stop: float = 0.99,
    record_every: int = 0,
    progress: bool = False,
) -> CounterfactualResult:
    """The pixel-space adversarial example at the same target: Adam on x itself (the authors' lr 5e-4).

    Args:
        classifier: f, (B, C, H, W) -> logits (B, K).
        images: (B, C, H, W) images in [-1, 1].
        target: one class for all images, or (B,) classes.
        lr: Adam learning rate on the pixels.
        max_steps: step cap.
        p_stop: stop an image once p_target ≥ p_stop.
        record_every: keep the images every this many steps (0: no trajectory).
        progress: show a tqdm bar.

    Returns:
        A :class:`CounterfactualResult` with ``latents=None``.

    Example:
        >>> f = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> with torch.no_grad():
        ...     _ = f[1].weight.copy_(torch.tensor([[2.0, 2, 2, 2], [-2, -2, -2, -2]]))
        >>> result = pixel_adversarial(f, torch.zeros(3, 1, 2, 2), 0, lr=0.05)
        >>> bool(result.success.all()), bool((result.target_probability >= 0.99).all())
        (True, True)
    """
    with explaining(classifier):
        targets = as_targets(target, images.shape[0], classifier(images[:1]).shape[1]).to(images.device)
        out = _ascend(
            images, lambda x: x, classifier, targets, lr, max_steps, p_stop, record_every, progress, "adversarial"
        )
    return _result(images, out, targets, p_stop, latents=False)
