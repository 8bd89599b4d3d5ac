"""Perturbation faithfulness: deletion and insertion AUC, AOPC over MoRF — always next to a random order.

Pixels are taken in the order of the map (most relevant first, "MoRF"), in ``steps`` equal portions:

* **deletion AUC** (Petsiuk, Das, Saenko 2018, RISE): remove more and more of the most relevant pixels and
  track the model's score; the area under the curve (fraction removed on x, score on y, trapezoids) is
  *lower* for a better map — the score collapses early.
* **insertion AUC** (same paper): start from a fully removed image and put the most relevant pixels back;
  *higher* is better.
* **AOPC-MoRF** (Samek et al. 2017, "Evaluating the visualization of what a deep neural network has
  learned"): the mean over the steps k = 0..K of f(x) − f(x with the first k portions removed); *higher* is
  better.

Every metric is computed twice, for the map's order and for a random order (a seeded permutation per
image); a map is only informative where it beats the random order (``*_random`` in the results). The score is
the probability by default (sigmoid of a single logit, softmax of the target class; Petsiuk's choice, bounded
so AUCs compare across images) or the raw logit. Removal: see ``removal.py`` (constant, blur, ROAD).
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from xai_train.explain.base import explaining
from xai_train.explain.cams.base import target_scores
from xai_train.explain.quality.removal import Removal, build_removal, pixel_ranks

SCORES: tuple[str, ...] = ("probability", "logit")


def explained_score(model: nn.Module, images: Tensor, target: Tensor | None, score: str = "probability") -> Tensor:
    """The score the perturbation metrics track: (B,) from a (B,), (B, 1) or (B, C) model output.

    Args:
        model: images -> outputs (called under ``torch.no_grad``).
        images: (B, C, H, W).
        target: (B,) class indices for C-class models (None: the predicted class of *these* images).
        score: ``"probability"`` (sigmoid of a single logit, softmax for C classes) or ``"logit"``.

    Example:
        >>> explained_score(nn.Flatten(), torch.zeros(2, 1, 1, 1), None).tolist()
        [0.5, 0.5]
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of: {', '.join(SCORES)}")
    with torch.no_grad():
        output = model(images).float()
    if output.dim() == 1 or output.shape[1] == 1:
        logit = output.reshape(-1)
        return logit.sigmoid() if score == "probability" else logit
    values = output.softmax(1) if score == "probability" else output
    return target_scores(values, target)


def curve(
    model: nn.Module,
    images: Tensor,
    ranks: Tensor,
    removal: Removal,
    *,
    insertion: bool,
    target: Tensor,
    steps: int,
    score: str,
    batch_size: int,
) -> Tensor:
    """The score after each of the ``steps + 1`` stages (0, 1/steps, ..., all pixels removed or inserted).

    Returns:
        (B, steps + 1) scores.
    """
    b = images.shape[0]
    pixels = ranks[0].numel()
    counts = torch.round(torch.linspace(0, pixels, steps + 1, device=images.device)).long()
    changed = ranks.unsqueeze(1) < rearrange(counts, "s -> 1 s 1 1 1")  # (B, S, 1, H, W): first k in the order
    removed = ~changed if insertion else changed
    stack = repeat(images, "b c h w -> (b s) c h w", s=steps + 1)
    removed = rearrange(removed, "b s 1 h w -> (b s) 1 h w")
    targets = repeat(target, "b -> (b s)", s=steps + 1)
    scores = []
    for start in range(0, len(stack), batch_size):
        rows = slice(start, start + batch_size)
        scores.append(explained_score(model, removal(stack[rows], removed[rows]), targets[rows], score))
    return rearrange(torch.cat(scores), "(b s) -> b s", b=b)


def area(scores: Tensor) -> Tensor:
    """Trapezoidal area under (B, S) curves sampled at S equally spaced fractions of [0, 1].

    Example:
        >>> area(torch.tensor([[1.0, 0.0, 0.0]])).item()
        0.25
    """
    return torch.trapezoid(scores, dx=1.0 / (scores.shape[1] - 1), dim=1)


def perturbation_metrics(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    *,
    target: int | Tensor | None = None,
    removal: str | Removal = "blur",
    steps: int = 16,
    score: str = "probability",
    seed: int = 0,
    batch_size: int = 512,
) -> dict[str, Tensor]:
    """Deletion AUC, insertion AUC and AOPC-MoRF of ``maps``, and the same for a random pixel order.

    The model is only called, in eval mode (``xai_train.explain.explaining``: BatchNorm uses its running
    statistics, so the perturbed copies do not mix, and every flag and buffer is restored afterwards).

    Args:
        model: images -> (B,), (B, 1) or (B, C) outputs.
        images: (B, C, H, W).
        maps: (B, K, H, W) explanations (summed over K); higher = more relevant.
        target: class index per image for C-class models (None = the predicted class of ``images``).
        removal: ``"constant"``, ``"blur"``, ``"road"``, or a ``Removal`` function.
        steps: portions of pixels (the curves have ``steps + 1`` points).
        score: ``"probability"`` or ``"logit"``.
        seed: seeds the random order and the tie-breaking of equal map values.
        batch_size: perturbed images per forward pass.

    Returns:
        ``{"deletion", "insertion", "aopc", "deletion_random", "insertion_random", "aopc_random"}``, each (B,).
        Better maps: lower deletion, higher insertion and AOPC than their ``_random`` twins.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
        >>> x = torch.randn(2, 1, 4, 4)
        >>> out = perturbation_metrics(model, x, torch.rand(2, 1, 4, 4), steps=4, removal="constant")
        >>> sorted(out)
        ['aopc', 'aopc_random', 'deletion', 'deletion_random', 'insertion', 'insertion_random']
    """
    if maps.dim() != 4 or maps.shape[0] != images.shape[0] or maps.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"maps must be (B, K, H, W) matching images {tuple(images.shape)}, got {tuple(maps.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    remove = build_removal(removal) if isinstance(removal, str) else removal
    images = images.detach()
    with explaining(model):  # eval mode for the call, BatchNorm statistics and flags restored afterwards
        return scored_orders(model, images, maps, remove, target, steps, score, seed, batch_size)


def scored_orders(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    remove: Removal,
    target: int | Tensor | None,
    steps: int,
    score: str,
    seed: int,
    batch_size: int,
) -> dict[str, Tensor]:
    """The body of :func:`perturbation_metrics` (the model already in the state ``explaining`` sets)."""
    index = explained_target(model, images, target)
    generator = torch.Generator().manual_seed(seed + 1)
    random_maps = torch.rand(maps.shape[0], 1, *maps.shape[-2:], generator=generator).to(images.device)
    out: dict[str, Tensor] = {}
    for suffix, order in (("", pixel_ranks(maps.detach(), seed)), ("_random", pixel_ranks(random_maps, seed))):
        options = dict(target=index, steps=steps, score=score, batch_size=batch_size)
        deletion = curve(model, images, order, remove, insertion=False, **options)
        insertion = curve(model, images, order, remove, insertion=True, **options)
        out[f"deletion{suffix}"] = area(deletion)
        out[f"insertion{suffix}"] = area(insertion)
        out[f"aopc{suffix}"] = (deletion[:, :1] - deletion).mean(1)
    return {key: out[key] for key in sorted(out)}


def explained_target(model: nn.Module, images: Tensor, target: int | Tensor | None) -> Tensor:
    """(B,) class indices: ``target`` broadcast, or the model's predicted class (0 for a single logit)."""
    if target is not None:
        return torch.as_tensor(target, device=images.device).long().reshape(-1).expand(images.shape[0])
    with torch.no_grad():
        output = model(images)
    return output.reshape(images.shape[0], -1).argmax(1)
