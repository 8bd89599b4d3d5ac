"""The diffusers parts of a run, built from plain arguments: the UNet, the training and sampling schedulers,
the optimiser with its LR schedule, and the EMA (swapped in for sampling by ``xai_train.ema.ema_weights``)."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch import nn


def build_unet(
    image_size: int,
    channels: int,
    block_out_channels: tuple[int, ...] = (32, 64, 64),
    layers_per_block: int = 1,
    attention: bool = False,
    norm_num_groups: int = 8,
    dropout: float = 0.0,
) -> UNet2DModel:
    """A ``UNet2DModel`` for (B, channels, image_size, image_size) images.

    Args:
        image_size: H = W; must be divisible by ``2**(len(block_out_channels) - 1)``.
        channels: 1 or 3.
        block_out_channels: width per resolution level.
        layers_per_block: ResNet blocks per level.
        attention: self-attention at the lowest resolution (``AttnDownBlock2D``/``AttnUpBlock2D``), as in
            the diffusers example; off by default because it is the slowest part on a CPU.
        norm_num_groups: GroupNorm groups; must divide every width.
        dropout: dropout in the ResNet blocks.

    Returns:
        The UNet (random init).

    Example:
        >>> build_unet(16, 1, block_out_channels=(16, 32), norm_num_groups=8).config.sample_size
        16
    """
    levels = len(block_out_channels)
    if image_size % 2 ** (levels - 1):
        raise ValueError(f"image_size {image_size} is not divisible by 2**{levels - 1} ({levels} UNet levels)")
    bad = [w for w in block_out_channels if w % norm_num_groups]
    if bad:
        raise ValueError(f"norm_num_groups={norm_num_groups} must divide every width; it does not divide {bad}")
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=norm_num_groups,
        dropout=dropout,
    )


def build_noise_scheduler(
    num_train_timesteps: int = 1000,
    beta_schedule: str = "linear",
    prediction_type: str = "epsilon",
    clip_sample: bool = True,
) -> DDPMScheduler:
    """The training scheduler (``DDPMScheduler``); its config also makes the DDIM sampler (:func:`ddim_for`).

    Example:
        >>> build_noise_scheduler(100, prediction_type="v_prediction").config.prediction_type
        'v_prediction'
    """
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=clip_sample,
    )


def ddim_for(noise_scheduler: DDPMScheduler) -> DDIMScheduler:
    """A ``DDIMScheduler`` with the same ᾱ, prediction type and clipping as the training scheduler.

    Example:
        >>> ddim = ddim_for(build_noise_scheduler(100))
        >>> bool((ddim.alphas_cumprod == build_noise_scheduler(100).alphas_cumprod).all())
        True
    """
    return DDIMScheduler.from_config(noise_scheduler.config)


def build_optimization(
    model: nn.Module,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.95, 0.999),
    weight_decay: float = 1e-6,
    eps: float = 1e-8,
    lr_scheduler: str = "cosine",
    warmup_steps: int = 500,
    max_steps: int = 10_000,
    num_processes: int = 1,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW and a ``diffusers.optimization`` LR schedule, as in diffusers' ``train_unconditional.py``.

    Accelerate steps a prepared LR scheduler ``num_processes`` times per optimizer step, so the warm-up and
    the horizon are scaled by it: the schedule then reads in optimizer steps whatever the process count.

    Example:
        >>> optimizer, schedule = build_optimization(nn.Linear(2, 2), lr=1.0, warmup_steps=2, num_processes=2)
        >>> schedule.get_last_lr(), schedule.lr_lambdas[0](2)  # warm-up over 2 steps x 2 processes
        ([0.0], 0.5)
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay, eps=eps)
    schedule = get_scheduler(
        lr_scheduler,
        optimizer,
        num_warmup_steps=warmup_steps * num_processes,
        num_training_steps=max_steps * num_processes,
    )
    return optimizer, schedule


def build_ema(model: nn.Module, max_decay: float = 0.9999, inv_gamma: float = 1.0, power: float = 0.75) -> EMAModel:
    """diffusers' ``EMAModel`` with warm-up: ``decay = min(max_decay, 1 − (1 + step/inv_gamma)^−power)``.

    Example:
        >>> build_ema(nn.Linear(2, 2)).use_ema_warmup
        True
    """
    config = getattr(model, "config", None)
    return EMAModel(
        model.parameters(),
        decay=max_decay,
        use_ema_warmup=True,
        inv_gamma=inv_gamma,
        power=power,
        model_cls=type(model) if config is not None else None,
        model_config=config,
    )
