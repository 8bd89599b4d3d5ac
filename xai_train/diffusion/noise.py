"""Per-pixel forward process: ``x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·(g ⊙ ε)`` and the matching training targets.

With a noise scale ``g`` the "noise" the model sees is the *scaled* noise ``n = g ⊙ ε``. Writing every
formula in terms of ``n`` keeps the usual ε-, v- and x0-prediction conversions exact (``x0 = a·x_t − σ·v``
still holds because ``a² + σ² = 1`` is a property of the scalar schedule, not of ``g``), so a constant
map ``g = 1`` reproduces ``DDPMScheduler.add_noise`` bit for bit.

``DDPMScheduler.add_noise`` only takes one timestep per sample; these functions also take a per-pixel
timestep map (any shape broadcastable to the images), gathering ᾱ element-wise (DESIGN.md §5).
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from torch import Tensor

PredictionType = Literal["epsilon", "v_prediction", "sample"]
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type '{prediction_type}'; choose one of: {', '.join(PREDICTION_TYPES)}")


def signal_and_noise_levels(timesteps: Tensor, alphas_cumprod: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """Gathers ``a_t = √ᾱ_t`` and ``σ_t = √(1−ᾱ_t)`` so they broadcast against ``like``.

    Args:
        timesteps: (B,) integer timesteps, or a per-pixel map broadcastable to ``like`` (e.g. (B, 1, H, W)).
        alphas_cumprod: (T,) cumulative products ᾱ of the training schedule.
        like: (B, C, H, W) tensor whose device and dtype the result takes.

    Returns:
        ``(a_t, σ_t)``, each (B, 1, 1, 1) for per-sample timesteps, else the map's shape.

    Example:
        >>> import torch
        >>> a, s = signal_and_noise_levels(torch.tensor([0, 9]), torch.linspace(0.99, 0.1, 10), torch.zeros(2, 1, 4, 4))
        >>> a.shape, bool(torch.allclose(a**2 + s**2, torch.ones(())))
        (torch.Size([2, 1, 1, 1]), True)
    """
    alphas = alphas_cumprod.to(device=like.device, dtype=like.dtype)
    alpha_bar = alphas[timesteps.to(like.device).long()]
    if alpha_bar.dim() == 1:
        alpha_bar = rearrange(alpha_bar, "b -> b 1 1 1")
    return alpha_bar**0.5, (1 - alpha_bar) ** 0.5


def scaled_noise(noise: Tensor, noise_scale: Tensor | None) -> Tensor:
    """``g ⊙ ε`` (``ε`` itself when ``noise_scale`` is ``None``). Shapes: (B, C, H, W) and broadcastable."""
    return noise if noise_scale is None else noise * noise_scale


def add_noise(
    clean: Tensor,
    noise: Tensor,
    timesteps: Tensor,
    alphas_cumprod: Tensor,
    noise_scale: Tensor | None = None,
) -> Tensor:
    """Noises a clean batch, optionally with a per-pixel noise scale and per-pixel timesteps.

    Args:
        clean: (B, C, H, W) images ``x0``.
        noise: (B, C, H, W) standard Gaussian noise ``ε``.
        timesteps: (B,) integer timesteps, or a per-pixel map broadcastable to ``clean``.
        alphas_cumprod: (T,) ᾱ of the schedule (``noise_scheduler.alphas_cumprod``).
        noise_scale: per-pixel factor ``g`` broadcastable to (B, C, H, W); ``None`` = isotropic.

    Returns:
        (B, C, H, W) ``x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·g⊙ε``.

    Example:
        >>> import torch
        >>> from diffusers import DDPMScheduler
        >>> scheduler = DDPMScheduler(num_train_timesteps=100)
        >>> x0, eps, t = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.tensor([3, 70])
        >>> torch.equal(add_noise(x0, eps, t, scheduler.alphas_cumprod), scheduler.add_noise(x0, eps, t))
        True
    """
    a_t, sigma_t = signal_and_noise_levels(timesteps, alphas_cumprod, clean)
    return a_t * clean + sigma_t * scaled_noise(noise, noise_scale)


def training_target(
    clean: Tensor,
    noise: Tensor,
    timesteps: Tensor,
    alphas_cumprod: Tensor,
    prediction_type: PredictionType = "epsilon",
    noise_scale: Tensor | None = None,
) -> Tensor:
    """What the denoiser should output for a noised batch made by :func:`add_noise`.

    Args:
        clean: (B, C, H, W) images ``x0``.
        noise: (B, C, H, W) standard Gaussian noise ``ε``.
        timesteps: (B,) or a per-pixel map, as for :func:`add_noise`.
        alphas_cumprod: (T,) ᾱ of the schedule.
        prediction_type: "epsilon" (the scaled noise ``n = g⊙ε``), "v_prediction" (``a·n − σ·x0``) or
            "sample" (``x0``); the same names as diffusers' schedulers.
        noise_scale: the ``g`` used for noising, or ``None``.

    Returns:
        (B, C, H, W) target.

    Example:
        >>> import torch
        >>> from diffusers import DDPMScheduler
        >>> scheduler = DDPMScheduler(num_train_timesteps=100)
        >>> x0, eps, t = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.tensor([3, 70])
        >>> v = training_target(x0, eps, t, scheduler.alphas_cumprod, "v_prediction")
        >>> torch.allclose(v, scheduler.get_velocity(x0, eps, t))
        True
    """
    _check_prediction_type(prediction_type)
    n = scaled_noise(noise, noise_scale)
    if prediction_type == "epsilon":
        return n
    if prediction_type == "sample":
        return clean
    a_t, sigma_t = signal_and_noise_levels(timesteps, alphas_cumprod, clean)
    return a_t * n - sigma_t * clean


def split_prediction(
    model_output: Tensor,
    sample: Tensor,
    timesteps: Tensor,
    alphas_cumprod: Tensor,
    prediction_type: PredictionType = "epsilon",
) -> tuple[Tensor, Tensor]:
    """Turns a model output into the predicted clean image ``x̂0`` and the predicted scaled noise ``n̂``.

    Args:
        model_output: (B, C, H, W) denoiser output.
        sample: (B, C, H, W) the noised input ``x_t``.
        timesteps: (B,) or a per-pixel map.
        alphas_cumprod: (T,) ᾱ of the schedule.
        prediction_type: as in :func:`training_target`.

    Returns:
        ``(x0_hat, noise_hat)``, each (B, C, H, W); ``noise_hat`` estimates ``g⊙ε``.

    Example:
        >>> import torch
        >>> alphas = torch.linspace(0.99, 0.1, 10)
        >>> x0, eps, t = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.tensor([1, 8])
        >>> x_t = add_noise(x0, eps, t, alphas)
        >>> x0_hat, _ = split_prediction(eps, x_t, t, alphas, "epsilon")
        >>> torch.allclose(x0_hat, x0, atol=1e-5)
        True
    """
    a_t, _ = signal_and_noise_levels(timesteps, alphas_cumprod, sample)
    return split_prediction_at(model_output, sample, a_t**2, prediction_type)


def split_prediction_at(
    model_output: Tensor, sample: Tensor, alpha_bar: Tensor | float, prediction_type: PredictionType = "epsilon"
) -> tuple[Tensor, Tensor]:
    """:func:`split_prediction` for a given ᾱ (a float or a tensor broadcastable to ``sample``).

    Example:
        >>> import torch
        >>> x0_hat, noise_hat = split_prediction_at(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), 0.25, "sample")
        >>> noise_hat.flatten().tolist()  # (x_t − 0.5·0) / √0.75
        [1.154700517654419, 1.154700517654419, 1.154700517654419, 1.154700517654419]
    """
    _check_prediction_type(prediction_type)
    alpha_bar = torch.as_tensor(alpha_bar, dtype=sample.dtype, device=sample.device)
    a_t, sigma_t = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
    if prediction_type == "epsilon":
        return (sample - sigma_t * model_output) / a_t, model_output
    if prediction_type == "sample":
        return model_output, (sample - a_t * model_output) / sigma_t
    return a_t * sample - sigma_t * model_output, sigma_t * sample + a_t * model_output


LOSS_WEIGHTINGS: tuple[str, ...] = ("none", "snr", "min_snr")


def snr_loss_weight(
    snr: Tensor, prediction_type: PredictionType, weighting: str = "none", gamma: float = 5.0
) -> Tensor:
    """Per-sample weight on the MSE of a prediction, from the signal-to-noise ratio ``snr = ᾱ/(1 − ᾱ)``.

    "snr" expresses every prediction type's loss in ε units (x0: ``snr``, v: ``snr/(snr + 1)``, ε: 1), as the
    diffusers example does for x0-prediction; "min_snr" is Min-SNR-γ (Hang et al. 2023) in the same units.

    Args:
        snr: (B,) from ``diffusers.training_utils.compute_snr``.
        prediction_type: "epsilon", "v_prediction" or "sample".
        weighting: "none", "snr" or "min_snr".
        gamma: the Min-SNR clamp.

    Returns:
        (B,) float32 weights (all ones for "none").

    Example:
        >>> snr_loss_weight(torch.tensor([1.0, 10.0]), "epsilon", "min_snr", gamma=5.0).tolist()
        [1.0, 0.5]
    """
    _check_prediction_type(prediction_type)
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"unknown loss weighting '{weighting}'; choose one of: {', '.join(LOSS_WEIGHTINGS)}")
    snr = snr.float()
    if weighting == "none":
        return torch.ones_like(snr)
    in_eps_units = {"epsilon": torch.ones_like(snr), "sample": snr, "v_prediction": snr / (snr + 1)}[prediction_type]
    if weighting == "snr":
        return in_eps_units
    return in_eps_units * torch.clamp(snr, max=gamma) / snr
