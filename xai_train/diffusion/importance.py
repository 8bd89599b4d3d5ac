"""Importance maps ``S(x_t, t)`` from a time-conditioned discriminator, and per-pixel loss weights.

``importance_map`` = attribution of ``D(x_t, t)`` w.r.t. ``x_t`` → ``xai_train.explain.to_mask`` (|·|, max over
channels, optional Gaussian blur, per-image min-max to [0, 1]). The default attribution, ``"saliency"``, is
``∂ D(x_t, t)/∂x_t`` computed here with one ``torch.autograd.grad`` (it never touches D's ``.grad``); any
other method name goes to ``xai_train.explain.attribute`` with t bound into the module.

Weights (DESIGN.md §5 a): ``w = 1 + α·M`` ("scale", the xAI-GAN rule) or ``w = (1 − β) + β·S/mean(S)``
("mean", mean 1 per image). Weighting the per-pixel loss by a detached ``w`` equals masking the gradient
w.r.t. the model output; it keeps the optimum only when ``w`` is a function of ``x_t`` (not of ``x0``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from einops import reduce
from torch import Tensor, nn

from xai_train.explain.mask import to_mask

WeightRule = Literal["scale", "mean"]
MapSource = Literal["x0", "x_t"]
MAP_SOURCES: tuple[str, ...] = ("x0", "x_t")
"""What an importance map is computed from: "x0" — the clean image at t = 0 (the data ``x0`` in training,
the model's estimate x̂0 while sampling); "x_t" — the noisy image at its level t."""


def check_map_source(map_source: str, allowed: tuple[str, ...] = MAP_SOURCES) -> None:
    """Raises a ValueError naming the choices if ``map_source`` is not one of ``allowed``.

    The former name "x0_hat" gets an error that names its new name "x0".

    Example:
        >>> check_map_source("x0_hat")
        Traceback (most recent call last):
        ...
        ValueError: map_source='x0_hat' is now called 'x0' (the clean image's map: x0 in training, x̂0 in sampling)
    """
    if map_source == "x0_hat" and "x0" in allowed:
        raise ValueError(
            "map_source='x0_hat' is now called 'x0' (the clean image's map: x0 in training, x̂0 in sampling)"
        )
    if map_source not in allowed:
        raise ValueError(f"map_source={map_source!r}: choose one of: {', '.join(allowed)}")


class TimestepBound(nn.Module):
    """``x -> D(x, t)`` with ``t`` fixed, for explainers that expect a one-argument model.

    A single timestep applies to every row, whatever batch the explainer builds (probes of one image,
    stacked perturbations, baselines). A (B,) vector is tiled over ``k·B`` stacked rows and rejects any
    other batch size, because which row gets which t would be a guess; :func:`attribution_map` therefore
    explains one timestep at a time.

    Example:
        >>> from xai_train.diffusion.discriminator import TimeConditionedDiscriminator
        >>> d = TimeConditionedDiscriminator(1, channels=(8,))
        >>> TimestepBound(d, torch.tensor(3))(torch.randn(5, 1, 8, 8)).shape
        torch.Size([5, 1])
    """

    def __init__(self, discriminator: nn.Module, timesteps: Tensor):
        super().__init__()
        self.discriminator = discriminator
        self.register_buffer("timesteps", torch.as_tensor(timesteps).reshape(-1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.timesteps.numel() == 1:
            return self.discriminator(x, self.timesteps.expand(x.shape[0]))
        repeats, remainder = divmod(x.shape[0], self.timesteps.numel())
        if remainder:
            raise ValueError(
                f"TimestepBound: batch of {x.shape[0]} is not a multiple of {self.timesteps.numel()} timesteps; "
                "bind one timestep per call instead"
            )
        return self.discriminator(x, self.timesteps.repeat(repeats))


def input_saliency(discriminator: nn.Module, images: Tensor, timesteps: Tensor) -> Tensor:
    """``∂ Σ_b D(x_b, t_b) / ∂x``: per-sample gradients (D has no cross-sample coupling), detached.

    Args:
        discriminator: ``D(x, t) -> (B, 1)``; its parameters' ``.grad`` are not touched.
        images: (B, C, H, W).
        timesteps: (B,) or a scalar.

    Returns:
        (B, C, H, W) float32 gradient.

    Example:
        >>> from xai_train.diffusion.discriminator import TimeConditionedDiscriminator
        >>> d = TimeConditionedDiscriminator(1, channels=(8,))
        >>> input_saliency(d, torch.randn(2, 1, 8, 8), torch.tensor([0, 5])).shape
        torch.Size([2, 1, 8, 8])
    """
    x = images.detach().float().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(discriminator(x, timesteps).float().sum(), x)
    return grad.detach()


def attribution_map(
    discriminator: nn.Module, images: Tensor, timesteps: Tensor, method: str = "saliency", **options: Any
) -> Tensor:
    """Raw attribution of ``D(images, timesteps)`` w.r.t. the images: (B, C, H, W), detached, float32.

    Args:
        discriminator: ``D(x, t) -> (B, 1)``, unwrapped (not the DDP module).
        images: (B, C, H, W), e.g. the noised batch ``x_t``.
        timesteps: (B,) the level of each image.
        method: "saliency" (built in) or any method of ``xai_train.explain.attribute``.
        **options: passed to ``xai_train.explain.attribute``.

    Returns:
        (B, C, H, W) attribution (for "saliency": the signed gradient). Methods other than the built-in
        saliency run once per distinct timestep in the batch (exact, but B calls for B distinct levels).
    """
    timesteps = torch.as_tensor(timesteps, device=images.device).reshape(-1).expand(images.shape[0])
    if method == "saliency" and not options:
        attribution = input_saliency(discriminator, images, timesteps)
    else:
        try:
            from xai_train.explain import attribute
        except ImportError as err:
            raise ValueError(
                f"importance method '{method}' needs xai_train.explain, which is not available ({err}); "
                "use method='saliency'"
            ) from err
        images = images.detach().float()
        attribution = torch.empty_like(images)
        with torch.enable_grad():
            for level in timesteps.unique():  # one call per level: the explainer's batches then all share it
                rows = timesteps == level
                bound = TimestepBound(discriminator, level)
                attribution[rows] = attribute(bound, images[rows], method, **options).float()
    return attribution.detach().float()


def attribution_magnitude(attribution: Tensor) -> Tensor:
    """Per-image mean of ``max_c |a|``: (B, C, H, W) → (B,). A scale-carrying score (``to_mask`` drops it)."""
    return reduce(reduce(attribution.abs(), "b c h w -> b h w", "max"), "b h w -> b", "mean")


def importance_map(
    discriminator: nn.Module,
    images: Tensor,
    timesteps: Tensor,
    method: str = "saliency",
    blur_sigma: float = 0.0,
    **options: Any,
) -> Tensor:
    """``S(x_t, t)``: the normalised importance of each pixel for D's real/fake decision.

    Args:
        discriminator: ``D(x, t) -> (B, 1)``, unwrapped.
        images: (B, C, H, W) inputs of D (``x_t``, or ``x0``/``x̂0`` with ``t = 0``).
        timesteps: (B,) levels.
        method: attribution method (see :func:`attribution_map`).
        blur_sigma: Gaussian blur in pixels before normalising (0 = none).
        **options: explainer options.

    Returns:
        (B, 1, H, W) map in [0, 1], min 0 and max 1 per image (all 0 where D is flat).

    Example:
        >>> from xai_train.diffusion.discriminator import TimeConditionedDiscriminator
        >>> d = TimeConditionedDiscriminator(1, channels=(8,))
        >>> s = importance_map(d, torch.randn(2, 1, 8, 8), torch.tensor([10, 900]), blur_sigma=1.0)
        >>> s.shape, [round(float(v), 4) for v in s.amax(dim=(1, 2, 3))]
        (torch.Size([2, 1, 8, 8]), [1.0, 1.0])
    """
    raw = attribution_map(discriminator, images, timesteps, method, **options)
    return to_mask(raw, absolute=True, reduce="max", blur_sigma=blur_sigma).mask


class DiscriminatorImportance:
    """``S(x, t)`` of one discriminator as a callable ``(images, timesteps) -> (B, 1, H, W)`` (an ImportanceFn).

    Args:
        discriminator: ``D(x, t) -> (B, 1)``, unwrapped.
        method: attribution method (see :func:`attribution_map`).
        blur_sigma: Gaussian blur in pixels before normalising.
        **options: explainer options.

    Example:
        >>> from xai_train.diffusion.discriminator import TimeConditionedDiscriminator
        >>> fn = DiscriminatorImportance(TimeConditionedDiscriminator(1, channels=(8,)))
        >>> fn(torch.randn(2, 1, 8, 8), torch.tensor([0, 0])).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, discriminator: nn.Module, method: str = "saliency", blur_sigma: float = 0.0, **options: Any):
        self.discriminator = discriminator
        self.method = method
        self.blur_sigma = blur_sigma
        self.options = options

    def __call__(self, images: Tensor, timesteps: Tensor) -> Tensor:
        return importance_map(self.discriminator, images, timesteps, self.method, self.blur_sigma, **self.options)


def importance_weights(importance: Tensor, rule: WeightRule = "scale", alpha: float = 1.0, beta: float = 0.5) -> Tensor:
    """Per-pixel loss weights from an importance map.

    Args:
        importance: (B, 1 or C, H, W) non-negative map (``M`` in [0, 1] for "scale"; any scale for "mean").
        rule: "scale" → ``1 + α·M``; "mean" → ``(1 − β) + β·S/mean(S)`` (mean 1 per image; an all-zero
            map gives weight 1).
        alpha: strength of the "scale" rule (xAI-GAN uses 0.2).
        beta: mix of the "mean" rule in [0, 1] (1 = pure relative importance).

    Returns:
        Detached weights, same shape as ``importance``, all > 0 for ``alpha > −1`` / ``beta < 1``.

    Example:
        >>> s = torch.tensor([[[[0.0, 1.0], [1.0, 2.0]]]])
        >>> importance_weights(s, "mean", beta=1.0).flatten().tolist()
        [0.0, 1.0, 1.0, 2.0]
    """
    importance = importance.detach().float()
    if rule == "scale":
        return 1 + alpha * importance
    if rule == "mean":
        mean = reduce(importance, "b c h w -> b 1 1 1", "mean")
        relative = torch.where(mean > 0, importance / mean.clamp_min(1e-12), torch.ones_like(importance))
        return (1 - beta) + beta * relative
    raise ValueError(f"unknown weight rule '{rule}'; choose one of: scale, mean")


def saliency_panel(discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """Four rows for a figure: real images, their map, fakes, their map (D's saliency at t = 0).

    Args:
        discriminator: ``D(x, t)``, unwrapped.
        real: (n, C, H, W) in [-1, 1].
        fake: (n, C, H, W) in [-1, 1].

    Returns:
        (4n, C, H, W) in [-1, 1], maps repeated over the channels; tile with ``make_grid(..., nrow=n)``.
    """
    zeros = torch.zeros(len(real), dtype=torch.long, device=real.device)

    def as_image(images: Tensor) -> Tensor:
        return importance_map(discriminator, images, zeros).expand(-1, real.shape[1], -1, -1) * 2 - 1

    return torch.cat([real, as_image(real), fake, as_image(fake)])
