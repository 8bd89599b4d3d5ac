"""Deterministic samplers: a plain DDIM loop on diffusers' ``DDIMScheduler`` and its per-pixel analogue.

Per-pixel step (DESIGN.md §5 b), with ``Σ = (1 − ᾱ)·g²`` and the model's scaled-noise estimate ``n̂``:
``ε̂ = n̂ / g_t = (x_t − a_t·x̂0)/(σ_t·g_t)``, ``x_r = a_r·x̂0 + √(Σ_r − s²)·ε̂ + s·z`` with
``s² = η²·(Σ_r/Σ_t)·(Σ_t − (ᾱ_t/ᾱ_r)·Σ_r)``. With ``g = 1`` this is ``DDIMScheduler.step`` exactly.
The importance map is recomputed at every step (``map_source="x0"``: from the current estimate x̂0 through D
at t = 0, as training used the clean x0; ``"x_t"``: from x_t through D at t),
and ``g_t`` and ``g_r`` both come from that one map, so the step variance check of a fixed map applies.
A map known before sampling (self-refining diffusion's FAM with ``TimeConstantScale``: ``g = 1 ± w_n·FAM``) is
the same sampler's fixed-map mode: x_T ~ N(0, g²) per pixel and the same map at every step
(``FixedMapSampler`` in :mod:`xai_train.diffusion.samplers`).

The sampler objects built on these functions (:class:`~xai_train.diffusion.samplers.ImportanceSampler`,
:class:`~xai_train.diffusion.samplers.FixedMapSampler`) live in :mod:`xai_train.diffusion.samplers`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import torch
from diffusers import DDIMScheduler
from torch import Tensor, nn

from xai_train.diffusion.importance import MapSource, check_map_source
from xai_train.diffusion.importance_schedule import (
    NoiseScaleSchedule,
    TimeConstantScale,
    check_step_variance,
    clamp_next_scale,
)
from xai_train.diffusion.noise import split_prediction_at

ImportanceFn = Callable[[Tensor, Tensor], Tensor]
"""``(images (B, C, H, W), timesteps (B,)) -> importance (B, 1, H, W)`` in [0, 1]."""


def importance_step(
    model_output: Tensor,
    sample: Tensor,
    alpha_bar_t: Tensor | float,
    alpha_bar_r: Tensor | float,
    scale_t: Tensor | float = 1.0,
    scale_r: Tensor | float = 1.0,
    prediction_type: str = "epsilon",
    eta: float = 0.0,
    variance_noise: Tensor | None = None,
    clip_sample_range: float | None = None,
) -> tuple[Tensor, Tensor]:
    """One per-pixel DDIM step from level t to the cleaner level r.

    Args:
        model_output: (B, C, H, W) denoiser output at (x_t, t).
        sample: (B, C, H, W) the current ``x_t``.
        alpha_bar_t: ᾱ_t.
        alpha_bar_r: ᾱ_r (1.0 at the end of sampling).
        scale_t: noise scale ``g_t`` broadcastable to the sample (1.0 = isotropic).
        scale_r: noise scale ``g_r``; must keep the step variance ≥ 0 (see ``clamp_next_scale``).
        prediction_type: "epsilon", "v_prediction" or "sample".
        eta: 0 = deterministic DDIM; 1 = DDPM-like posterior noise.
        variance_noise: (B, C, H, W) standard noise ``z`` for ``eta > 0`` (required then).
        clip_sample_range: clip x̂0 to ±range like ``DDIMScheduler(clip_sample=True)``; ``None`` = no clip.

    Returns:
        ``(prev_sample, x0_hat)``, each (B, C, H, W).

    Example:
        >>> import torch
        >>> x_t = torch.randn(1, 1, 4, 4)
        >>> prev, x0_hat = importance_step(torch.zeros_like(x_t), x_t, 0.5, 1.0)  # ε̂ = 0 → x0
        >>> torch.allclose(prev, x_t / 0.5**0.5)
        True
    """
    x0_hat, noise_hat = split_prediction_at(model_output, sample, alpha_bar_t, prediction_type)
    if clip_sample_range is not None:
        x0_hat = x0_hat.clamp(-clip_sample_range, clip_sample_range)
    alpha_bar_t = torch.as_tensor(alpha_bar_t, dtype=sample.dtype, device=sample.device)
    alpha_bar_r = torch.as_tensor(alpha_bar_r, dtype=sample.dtype, device=sample.device)
    epsilon_hat = noise_hat / scale_t
    sigma_t2 = (1 - alpha_bar_t) * scale_t**2
    sigma_r2 = (1 - alpha_bar_r) * scale_r**2
    std = 0.0
    if eta > 0:
        if variance_noise is None:
            raise ValueError("importance_step: eta > 0 needs `variance_noise` (a standard Gaussian like the sample)")
        step_var = (sigma_t2 - (alpha_bar_t / alpha_bar_r) * sigma_r2).clamp_min(0)
        std = eta * (sigma_r2 / sigma_t2 * step_var) ** 0.5
    direction = torch.as_tensor(sigma_r2 - std**2).clamp_min(0) ** 0.5 * epsilon_hat
    prev_sample = alpha_bar_r**0.5 * x0_hat + direction
    if eta > 0:
        prev_sample = prev_sample + std * variance_noise
    return prev_sample, x0_hat


def scheduler_alphas(scheduler: DDIMScheduler, timestep: int) -> tuple[Tensor, Tensor, int]:
    """ᾱ_t, ᾱ_r and r for a step of ``scheduler`` (after ``set_timesteps``), as ``DDIMScheduler.step`` does."""
    if scheduler.num_inference_steps is None:
        raise ValueError("call scheduler.set_timesteps(num_inference_steps) before stepping")
    prev_timestep = int(timestep) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alpha_bar_t = scheduler.alphas_cumprod[int(timestep)]
    alpha_bar_r = scheduler.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else scheduler.final_alpha_cumprod
    return alpha_bar_t, alpha_bar_r, prev_timestep


def _clip_range(scheduler: DDIMScheduler) -> float | None:
    if scheduler.config.thresholding:
        raise ValueError("per-pixel sampling does not support DDIMScheduler(thresholding=True)")
    return scheduler.config.clip_sample_range if scheduler.config.clip_sample else None


def _model_output(unet: nn.Module, sample: Tensor, timestep: Tensor) -> Tensor:
    dtype = next(unet.parameters()).dtype
    return unet(sample.to(dtype), timestep).sample.to(sample.dtype)


@torch.no_grad()
def ddim_sample(
    unet: nn.Module,
    scheduler: DDIMScheduler,
    batch_size: int,
    num_inference_steps: int = 50,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
) -> Tensor:
    """Plain DDIM sampling with diffusers' ``DDIMScheduler.step`` (the standard forward process).

    Args:
        unet: a ``UNet2DModel`` (unwrapped; eval mode is the caller's choice).
        scheduler: a ``DDIMScheduler`` with the training schedule's config.
        batch_size: number of images.
        num_inference_steps: DDIM steps.
        generator: CPU generator for the initial noise (seedable, device-independent).
        eta: DDIM η.

    Returns:
        (B, C, H, W) float32 samples in about [-1, 1], on the UNet's device.

    Example:
        >>> from diffusers import UNet2DModel
        >>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
        ...     layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
        ...     up_block_types=("UpBlock2D",) * 2)
        >>> ddim_sample(unet, DDIMScheduler(num_train_timesteps=100), 2, num_inference_steps=3).shape
        torch.Size([2, 1, 8, 8])
    """
    device = next(unet.parameters()).device
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    sample = torch.randn((batch_size, unet.config.in_channels, *size), generator=generator).to(device)
    scheduler.set_timesteps(num_inference_steps)
    for t in scheduler.timesteps:
        output = _model_output(unet, sample, t.to(device))
        sample = scheduler.step(output, t, sample, eta=eta, generator=generator).prev_sample
    return sample


@dataclasses.dataclass
class ImportanceSample:
    """Output of :func:`importance_ddim_sample`.

    Attributes:
        images: (B, C, H, W) samples in about [-1, 1].
        importance: (B, 1, H, W) the map used at the last step.
        noise_scale: (B, 1, H, W) ``g_t`` at the last step.
        clamped_fraction: share of pixel-steps whose ``g_r`` had to be lowered (0 for a valid schedule).
    """

    images: Tensor
    importance: Tensor
    noise_scale: Tensor
    clamped_fraction: float


ScaleSchedule = NoiseScaleSchedule | TimeConstantScale
"""What maps (importance, timesteps) to a per-pixel noise scale ``g_t``."""


def check_fixed_map(importance: Tensor, batch_size: int, image_shape: tuple[int, ...]) -> Tensor:
    """A map fixed before sampling, checked and expanded: (1 or B, 1 or C, H, W) in [0, 1] → (B, 1 or C, H, W).

    Raises a one-line ValueError for a map of the wrong shape, with non-finite values, or outside [0, 1]
    (the schedules keep ``g > 0`` only for maps in [0, 1]; a pixel with ``g ≤ 0`` has no step variance).

    Example:
        >>> check_fixed_map(torch.full((1, 1, 4, 4), 0.5), 3, (1, 4, 4)).shape
        torch.Size([3, 1, 4, 4])
        >>> check_fixed_map(torch.full((1, 1, 4, 4), 1.5), 3, (1, 4, 4))
        Traceback (most recent call last):
        ...
        ValueError: fixed importance map: values must lie in [0, 1] (got min 1.5, max 1.5); min-max normalise it
    """
    channels, *size = image_shape
    if importance.dim() != 4 or importance.shape[0] not in (1, batch_size) or importance.shape[1] not in (1, channels):
        raise ValueError(
            f"fixed importance map: shape {tuple(importance.shape)} does not fit {batch_size} images of shape "
            f"{tuple(image_shape)}; give (1 or {batch_size}, 1 or {channels}, {size[0]}, {size[1]})"
        )
    if tuple(importance.shape[2:]) != tuple(size):
        raise ValueError(
            f"fixed importance map: size {tuple(importance.shape[2:])} differs from the UNet's {tuple(size)}; "
            "resize the map or export it from a run at this resolution"
        )
    if not bool(torch.isfinite(importance).all()):
        raise ValueError("fixed importance map: has NaN or infinite values; recompute it")
    low, high = float(importance.min()), float(importance.max())
    if low < 0 or high > 1:
        raise ValueError(
            f"fixed importance map: values must lie in [0, 1] (got min {low:.3g}, max {high:.3g}); min-max normalise it"
        )
    return importance.expand(batch_size, *importance.shape[1:])


def _check_fixed_map_steps(schedule: ScaleSchedule, scheduler: DDIMScheduler) -> None:
    """The step-variance check of a fixed map over the sampler's (t, r) pairs (warns; the loop then clamps)."""
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    pairs = [(int(t), int(t) - stride) for t in scheduler.timesteps if int(t) - stride >= 0]
    if pairs:
        check_step_variance(schedule, scheduler.alphas_cumprod, pairs)


@torch.no_grad()
def importance_ddim_sample(
    unet: nn.Module,
    scheduler: DDIMScheduler,
    importance_fn: ImportanceFn | Tensor,
    schedule: ScaleSchedule,
    batch_size: int,
    num_inference_steps: int = 50,
    generator: torch.Generator | None = None,
    map_source: MapSource = "x0",
    eta: float = 0.0,
) -> ImportanceSample:
    """Samples from a model trained with a per-pixel noise scale: importance-scheduled noise, or a fixed map.

    Args:
        unet: ``UNet2DModel`` trained on :func:`~xai_train.diffusion.noise.add_noise` with ``g_t(S)``.
        scheduler: ``DDIMScheduler`` with the training schedule's config.
        importance_fn: ``(images, timesteps) -> (B, 1, H, W)`` map in [0, 1] (e.g. from D), recomputed at every
            step; gradients are enabled inside the call, so gradient explainers work. Or a **fixed map**, a
            (1 or B, 1 or C, H, W) tensor in [0, 1] known before sampling (self-refining diffusion's FAM): it is
            not recomputed, x_T is drawn with the per-pixel std ``g_T(map)`` of the forward process, and the step
            variance is checked over the sampler's steps first (:func:`check_fixed_map` refuses a bad map).
        schedule: the noise-scale schedule used in training (:class:`NoiseScaleSchedule`, or
            :class:`TimeConstantScale` for ``g = 1 ± w·map``).
        batch_size: number of images.
        num_inference_steps: DDIM steps.
        generator: CPU generator for all noise (seedable).
        map_source: "x0" — the map of the current clean estimate x̂0 at t = 0 (matches training on
            ``S(x0)``); "x_t" — the map of the current noisy sample at t. Unused for a fixed map.
        eta: DDIM η (0 = deterministic).

    Returns:
        An :class:`ImportanceSample`.

    Example:
        >>> from diffusers import UNet2DModel
        >>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
        ...     layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
        ...     up_block_types=("UpBlock2D",) * 2)
        >>> fam = torch.zeros(1, 1, 8, 8)  # FAM = 0: g = 1 everywhere, plain DDIM
        >>> out = importance_ddim_sample(unet, DDIMScheduler(num_train_timesteps=100), fam, TimeConstantScale(0.01),
        ...     2, 3, torch.Generator().manual_seed(0))
        >>> plain = ddim_sample(unet, DDIMScheduler(num_train_timesteps=100), 2, 3, torch.Generator().manual_seed(0))
        >>> torch.allclose(out.images, plain, atol=1e-5), out.clamped_fraction
        (True, 0.0)
    """
    check_map_source(map_source)
    device = next(unet.parameters()).device
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    shape = (batch_size, unet.config.in_channels, *size)
    fixed = isinstance(importance_fn, Tensor)
    if fixed:
        importance = check_fixed_map(importance_fn.detach(), batch_size, shape[1:]).to(device)
    # τ(T) ≈ 1 makes the last forward marginal of NoiseScaleSchedule isotropic, so sampling starts from N(0, I);
    # a fixed map's process has std g_T(map) at T (time-constant: the same g as at every step).
    sample = torch.randn(shape, generator=generator).to(device)
    clip = _clip_range(scheduler)
    prediction_type = scheduler.config.prediction_type
    scheduler.set_timesteps(num_inference_steps)
    clamped, total = 0, 0
    if fixed:
        _check_fixed_map_steps(schedule, scheduler)
        first = torch.full((batch_size,), int(scheduler.timesteps[0]), device=device, dtype=torch.long)
        scale_t = schedule.scale(importance, first)
        sample = sample * scale_t
    else:
        importance = scale_t = torch.ones(batch_size, 1, *size, device=device)
    for t in scheduler.timesteps:
        alpha_bar_t, alpha_bar_r, prev_t = scheduler_alphas(scheduler, int(t))
        timesteps = torch.full((batch_size,), int(t), device=device, dtype=torch.long)
        output = _model_output(unet, sample, timesteps)
        if not fixed:
            x0_hat, _ = split_prediction_at(output, sample, alpha_bar_t.to(device), prediction_type)
            with torch.enable_grad():
                if map_source == "x0":
                    importance = importance_fn(x0_hat.clamp(-1, 1), torch.zeros_like(timesteps))
                else:
                    importance = importance_fn(sample, timesteps)
            importance = importance.detach()
        scale_t = schedule.scale(importance, timesteps)
        scale_r = schedule.scale(importance, timesteps.clamp_max(max(prev_t, 0)))
        scale_r, was_clamped = clamp_next_scale(scale_t, scale_r, float(alpha_bar_t), float(alpha_bar_r))
        clamped, total = clamped + int(was_clamped.sum()), total + was_clamped.numel()
        noise = torch.randn(shape, generator=generator).to(device) if eta > 0 else None
        sample, _ = importance_step(
            output,
            sample,
            alpha_bar_t.to(device),
            alpha_bar_r.to(device),
            scale_t,
            scale_r,
            prediction_type,
            eta,
            noise,
            clip,
        )
    fraction = clamped / max(total, 1)
    if fraction > 0:
        warnings.warn(
            f"importance_ddim_sample: lowered g_r on {fraction:.2%} of pixel-steps to keep the step variance "
            "positive; check the schedule with check_step_variance",
            stacklevel=2,
        )
    return ImportanceSample(sample, importance, scale_t, fraction)
