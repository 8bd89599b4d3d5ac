"""Gradient-free CAMs: ScoreCAM and AblationCAM, batched over channels (no per-image, per-channel loop).

* **ScoreCAM** (Wang et al. 2020): w_k = softmax_k y(x ⊙ M_k), M_k = min-max(upsample(A_k)) per image.
  The B·K masked images run through the model in chunks of ``batch_size``. The softmax is shift-invariant,
  so a negative logit changes nothing; the weights of a saturated D are close to one-hot.
* **AblationCAM** (Desai & Ramaswamy 2020): w_k = (y − y_{A_k=0}) / |y|: how much the score falls when
  channel k is zeroed. The ablated activations are fed to *the layers after* the hooked one only: a
  forward hook swaps the layer's (B, K, h, w) output for the (B·m, K, h, w) stack of its ablated copies, so
  the part of the model before the layer runs once per chunk on B images. Models that tie the batch size
  to the input after the layer (a time embedding computed for B images) cannot take the swap;
  ``expand="auto"`` then falls back to repeating the images (``expand="input"``): the same numbers, more
  compute. The reference implementation divides by y, not |y|: for a negative logit (D says "fake") that
  flips every weight, so the map would show the channels that make the image *less* real.

Both maps are upsampled bilinearly to the image size; ``relu=True`` (the default of ``cam()``) applies the
final ReLU of the papers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange, reduce, repeat
from torch import Tensor, nn

from xai_train.explain.base import ScoreModel
from xai_train.explain.cams.base import forward_with_layer, resolve_layer, target_scores, upsample, weighted_sum

EXPANSIONS: tuple[str, ...] = ("auto", "layer", "input")
"""How AblationCAM feeds its ablated copies: after the layer, from the images, or whichever works."""


def predicted_index(output: Tensor, target: int | Tensor | None) -> Tensor:
    """(B,) class indices: ``target`` broadcast to the batch, or the predicted class (0 for one logit)."""
    batch = output.shape[0]
    if target is None:
        return output.reshape(batch, -1).argmax(1)
    return torch.as_tensor(target, device=output.device).long().reshape(-1).expand(batch)


def layer_forward(
    name: str, model: nn.Module, images: Tensor, layer: nn.Module | None, target: int | Tensor | None, batch_size: int
) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """What both CAMs start from: checks ``batch_size``, resolves the layer, runs the model once (no grad).

    Args:
        name: the calling method, for the error message.
        model: images -> (B,), (B, 1) or (B, C) outputs.
        images: (B, C, H, W).
        layer: the explained module, or None for the default.
        target: class index per image for (B, C) outputs (None = predicted class).
        batch_size: the caller's chunk size (must be >= 1).

    Returns:
        The layer, the model's output, the layer's (B, K, h, w) activations and the (B,) explained classes.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
        >>> layer, output, activations, index = layer_forward("demo", model, torch.ones(2, 1, 4, 4), model[1], 1, 8)
        >>> tuple(activations.shape), index.tolist(), layer is model[1]
        ((2, 3, 4, 4), [1, 1], True)
    """
    if batch_size < 1:
        raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}")
    layer = resolve_layer(model, images, layer)
    with torch.no_grad():
        output, activations = forward_with_layer(model, images, layer)
    return layer, output, activations, predicted_index(output, target)


def minmax_masks(activations: Tensor, size: tuple[int, int]) -> Tensor:
    """ScoreCAM's masks: each upsampled channel min-max normalised to [0, 1] (constant channels -> 0).

    Example:
        >>> a = torch.tensor([[[[0.0, 2.0], [4.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]]])
        >>> minmax_masks(a, (2, 2))[0, :, 0].tolist()
        [[0.0, 0.5], [0.0, 0.0]]
    """
    masks = upsample(rearrange(activations, "b k h w -> (b k) 1 h w"), size)
    low = reduce(masks, "n 1 h w -> n 1 1 1", "min")
    span = reduce(masks, "n 1 h w -> n 1 1 1", "max") - low
    masks = torch.where(span > 0, (masks - low) / torch.where(span > 0, span, 1.0), torch.zeros_like(masks))
    return rearrange(masks, "(b k) 1 h w -> b k h w", b=activations.shape[0])


def scorecam(
    model: nn.Module,
    images: Tensor,
    *,
    layer: nn.Module | None = None,
    target: int | Tensor | None = None,
    relu: bool = False,
    batch_size: int = 512,
) -> Tensor:
    """ScoreCAM, batched over channels and images.

    Args:
        model: images -> (B,), (B, 1) or (B, C) outputs.
        images: (B, C, H, W).
        layer: the explained module (default: D's ``feature_layer`` or last spatial Conv2d).
        target: class index per image for (B, C) outputs (None = predicted class).
        relu: apply the final ReLU (``cam()`` and the report do; off here, as for ``attribute``).
        batch_size: masked images per forward pass (memory vs. speed).

    Returns:
        (B, 1, H, W) maps.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 1))
        >>> scorecam(model, torch.randn(2, 1, 4, 4), layer=model[1]).shape
        torch.Size([2, 1, 4, 4])
    """
    layer, output, activations, index = layer_forward("scorecam", model, images, layer, target, batch_size)
    size = tuple(images.shape[-2:])
    with torch.no_grad():
        masks = minmax_masks(activations.float(), size)
        channels = masks.shape[1]
        masked = rearrange(images.unsqueeze(1) * masks.unsqueeze(2), "b k c h w -> (b k) c h w")
        rows = repeat(index, "b -> (b k)", k=channels)
        scores = torch.cat(
            [
                target_scores(model(masked[i : i + batch_size]), rows[i : i + batch_size])
                for i in range(0, len(masked), batch_size)
            ]
        )
        weights = rearrange(scores.float(), "(b k) -> b k", k=channels).softmax(1)
        cam = weighted_sum(weights, activations.float())
    return upsample(cam.relu() if relu else cam, size)


def run_swapped(model: nn.Module, images: Tensor, layer: nn.Module, swap: Callable[[Tensor], Tensor]) -> Tensor:
    """The model's output when ``layer``'s output ``A`` is replaced by ``swap(A)`` (one forward pass).

    ``attribute``'s ``ScoreModel`` wrapper is looked through (its check that D returns one row per input
    image is exactly what the swap breaks on purpose); its sigmoid, if any, is applied.
    """
    inner = model.discriminator if isinstance(model, ScoreModel) else model
    handle = layer.register_forward_hook(lambda _module, _inputs, out: swap(out))
    try:
        output = inner(images)
    finally:
        handle.remove()
    if isinstance(model, ScoreModel) and model.sigmoid is not None:
        output = model.sigmoid(output)
    return output


def ablated_stack(activations: Tensor, channels: Tensor) -> Tensor:
    """(B, K, h, w) -> (B·m, K, h, w): for each image, m copies with channel ``channels[j]`` zeroed in copy j.

    Example:
        >>> ablated_stack(torch.ones(1, 2, 1, 1), torch.tensor([0, 1])).flatten().tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    k = activations.shape[1]
    keep = 1.0 - torch.nn.functional.one_hot(channels, k).to(activations)  # (m, K)
    stack = activations.unsqueeze(1) * rearrange(keep, "m k -> 1 m k 1 1")
    return rearrange(stack, "b m k h w -> (b m) k h w")


def ablationcam(
    model: nn.Module,
    images: Tensor,
    *,
    layer: nn.Module | None = None,
    target: int | Tensor | None = None,
    relu: bool = False,
    batch_size: int = 2048,
    expand: str = "auto",
) -> Tensor:
    """AblationCAM, batched: all (image, channel) ablations of a chunk in one pass of the layers after ``layer``.

    Args:
        model: images -> (B,), (B, 1) or (B, C) outputs.
        images: (B, C, H, W).
        layer: the explained module (default: D's ``feature_layer`` or last spatial Conv2d).
        target: class index per image for (B, C) outputs (None = predicted class).
        relu: apply the final ReLU (``cam()`` and the report do; off here, as for ``attribute``).
        batch_size: ablated copies per pass (memory vs. speed); at least one copy per image.
        expand: ``"layer"`` (swap the layer's output for the ablated stack), ``"input"`` (repeat the images,
            then swap), or ``"auto"`` (``"layer"``, falling back to ``"input"`` when the model rejects the swap).

    Returns:
        (B, 1, H, W) maps.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 1))
        >>> ablationcam(model, torch.randn(2, 1, 4, 4), layer=model[1]).shape
        torch.Size([2, 1, 4, 4])
    """
    if expand not in EXPANSIONS:
        raise ValueError(f"ablationcam: unknown expand {expand!r}; choose one of: {', '.join(EXPANSIONS)}")
    layer, output, activations, index = layer_forward("ablationcam", model, images, layer, target, batch_size)
    batch = images.shape[0]
    with torch.no_grad():
        base = target_scores(output, index).float()
        channels = activations.shape[1]
        per_pass = max(1, batch_size // batch)
        drops = []
        for start in range(0, channels, per_pass):
            chunk = torch.arange(start, min(channels, start + per_pass), device=images.device)
            m = len(chunk)
            rows = repeat(index, "b -> (b m)", m=m)
            stack = ablated_stack(activations, chunk)
            ablated = None
            if expand in ("auto", "layer"):
                ablated = swapped_scores(model, images, layer, stack, rows, strict=expand == "layer")
                if ablated is None:
                    expand = "input"  # this model ties the batch size after the layer: repeat the images
            if ablated is None:
                repeated = repeat(images, "b c h w -> (b m) c h w", m=m)
                ablated = target_scores(run_swapped(model, repeated, layer, lambda _a, s=stack: s), rows)
            drops.append(rearrange(base, "b -> b 1") - rearrange(ablated.float(), "(b m) -> b m", m=m))
        weights = torch.cat(drops, 1) / rearrange(base.abs().clamp_min(1e-7), "b -> b 1")
        cam = weighted_sum(weights, activations.float())
    return upsample(cam.relu() if relu else cam, tuple(images.shape[-2:]))


def swapped_scores(
    model: nn.Module, images: Tensor, layer: nn.Module, stack: Tensor, rows: Tensor, *, strict: bool
) -> Tensor | None:
    """Scores of the ablated stack fed after ``layer``; None if the model cannot take a larger batch there.

    With ``strict`` the failure is raised (``expand="layer"``); otherwise None asks for the input fallback.
    """
    try:
        output = run_swapped(model, images, layer, lambda _a: stack)
    except (RuntimeError, ValueError) as err:  # a batch-size clash after the layer (a time embedding)
        if strict:
            raise ValueError(
                f"ablationcam: the model cannot take a larger batch after {layer.__class__.__name__} ({err}); "
                "use expand='input'"
            ) from err
        return None
    if output.shape[0] != stack.shape[0]:
        if strict:
            raise ValueError(
                f"ablationcam: the model returned {output.shape[0]} rows for {stack.shape[0]} ablated copies; "
                "use expand='input'"
            )
        return None
    return target_scores(output, rows)
