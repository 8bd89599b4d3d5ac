"""Deterministic samplers: a plain DDIM loop on diffusers' ``DDIMScheduler`` and its per-pixel analogue.

Per-pixel step (DESIGN.md §5 b), with ``Σ = (1 − ᾱ)·g²`` and the model's scaled-noise estimate ``n̂``:
``ε̂ = n̂ / g_t = (x_t − a_t·x̂0)/(σ_t·g_t)``, ``x_r = a_r·x̂0 + √(Σ_r − s²)·ε̂ + s·z`` with
``s² = η²·(Σ_r/Σ_t)·(Σ_t − (ᾱ_t/ᾱ_r)·Σ_r)``. With ``g = 1`` this is ``DDIMScheduler.step`` exactly.
The importance map is recomputed at every step (``map_source="x0"``: from the current estimate x̂0 through D
at t = 0, as training used the clean x0; ``"x_t"``: from x_t through D at t),
and ``g_t`` and ``g_r`` both come from that one map, so the step variance check of a fixed map applies.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import torch
from diffusers import DDIMScheduler
from torch import Tensor, nn

from xai_train.diffusion.importance import MapSource, check_map_source
from xai_train.diffusion.importance_schedule import NoiseScaleSchedule, clamp_next_scale
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


@torch.no_grad()
def importance_ddim_sample(
    unet: nn.Module,
    scheduler: DDIMScheduler,
    importance_fn: ImportanceFn,
    schedule: NoiseScaleSchedule,
    batch_size: int,
    num_inference_steps: int = 50,
    generator: torch.Generator | None = None,
    map_source: MapSource = "x0",
    eta: float = 0.0,
) -> ImportanceSample:
    """Samples from a model trained with importance-scheduled noise.

    Args:
        unet: ``UNet2DModel`` trained on :func:`~xai_train.diffusion.noise.add_noise` with ``g_t(S)``.
        scheduler: ``DDIMScheduler`` with the training schedule's config.
        importance_fn: ``(images, timesteps) -> (B, 1, H, W)`` map in [0, 1] (e.g. from D); gradients are
            enabled inside the call, so gradient explainers work.
        schedule: the noise-scale schedule used in training.
        batch_size: number of images.
        num_inference_steps: DDIM steps.
        generator: CPU generator for all noise (seedable).
        map_source: "x0" — the map of the current clean estimate x̂0 at t = 0 (matches training on
            ``S(x0)``); "x_t" — the map of the current noisy sample at t.
        eta: DDIM η (0 = deterministic).

    Returns:
        An :class:`ImportanceSample`.
    """
    check_map_source(map_source)
    device = next(unet.parameters()).device
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    shape = (batch_size, unet.config.in_channels, *size)
    # τ(T) ≈ 1 makes the last forward marginal isotropic, so sampling starts from N(0, I).
    sample = torch.randn(shape, generator=generator).to(device)
    clip = _clip_range(scheduler)
    prediction_type = scheduler.config.prediction_type
    scheduler.set_timesteps(num_inference_steps)
    clamped, total = 0, 0
    importance = scale_t = torch.ones(batch_size, 1, *size, device=device)
    for t in scheduler.timesteps:
        alpha_bar_t, alpha_bar_r, prev_t = scheduler_alphas(scheduler, int(t))
        timesteps = torch.full((batch_size,), int(t), device=device, dtype=torch.long)
        output = _model_output(unet, sample, timesteps)
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


class ImportanceSampler:
    """:func:`importance_ddim_sample` with D and the schedule bound, called like :func:`ddim_sample`.

    Args:
        importance_fn: ``(images, timesteps) -> (B, 1, H, W)`` (e.g. ``DiscriminatorImportance(D)``).
        schedule: the noise-scale schedule used in training.
        map_source: "x0" or "x_t" (see :func:`importance_ddim_sample`).
        eta: DDIM η.

    Example:
        >>> from diffusers import UNet2DModel
        >>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
        ...     layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
        ...     up_block_types=("UpBlock2D",) * 2)
        >>> sampler = ImportanceSampler(lambda x, t: x[:, :1].abs().clamp(0, 1), NoiseScaleSchedule(100))
        >>> sampler(unet, DDIMScheduler(num_train_timesteps=100), 2, 3).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        importance_fn: ImportanceFn,
        schedule: NoiseScaleSchedule,
        map_source: MapSource = "x0",
        eta: float = 0.0,
    ):
        check_map_source(map_source)
        self.importance_fn = importance_fn
        self.schedule = schedule
        self.map_source = map_source
        self.eta = eta

    def __call__(
        self,
        unet: nn.Module,
        scheduler: DDIMScheduler,
        batch_size: int,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Returns (B, C, H, W) samples; see :func:`importance_ddim_sample`."""
        return importance_ddim_sample(
            unet,
            scheduler,
            self.importance_fn,
            self.schedule,
            batch_size,
            num_inference_steps,
            generator,
            self.map_source,
            self.eta,
        ).images
