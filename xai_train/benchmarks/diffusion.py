"""Diffusion benchmark arms: one trainer per arm, refills of the replay buffer timed apart.

``recipes/benchmark.py --suite diffusion`` builds the arms (it passes the callbacks, which this library
never imports).

An arm is a ``DiffusionTrainer`` whose ``train_step`` is one timed step; every arm shares the UNet
architecture, batch and data, so the ratios to the plain arm isolate D's update, the saliency and the
importance machinery. The replay buffer is refilled every R steps, so its cost is reported apart,
per step (refill time / R), instead of landing in one unlucky round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from xai_train.callback import Callback
from xai_train.config.diffusion import DiffusionTrainConfig, DiscriminatorConfig
from xai_train.diffusion.discriminator import TimeConditionedDiscriminator
from xai_train.diffusion.models import build_noise_scheduler, build_unet
from xai_train.distributed import synchronize
from xai_train.trainers.diffusion import DiffusionTrainer, Sampler


def make_diffusion_arm(
    images: Tensor,
    *,
    batch_size: int = 32,
    block_out_channels: tuple[int, ...] = (32, 64, 64),
    discriminator: DiscriminatorConfig | None = None,
    callbacks: Callable[[torch.Tensor, torch.nn.Module | None], Sequence[Callback]] | None = None,
    sampler: Callable[[Sequence[Callback], torch.nn.Module | None], Sampler | None] | None = None,
    mixed_precision: str = "no",
    cpu: bool = False,
) -> DiffusionTrainer:
    """One benchmark arm.

    Args:
        images: (N, C, H, W) data in [-1, 1].
        batch_size: per step.
        block_out_channels: UNet widths (the same for every arm).
        discriminator: D settings, or ``None`` for the plain arm.
        callbacks: ``(alphas_cumprod, D) -> callbacks`` (built by the recipe, which may import ``callbacks``).
        sampler: ``(callbacks, D) -> sampler`` (e.g. the importance sampler of an ImportanceNoiseSchedule).
        mixed_precision: "no", "fp16" or "bf16".
        cpu: force the CPU.

    Returns:
        A trainer; time ``trainer.train_step`` (see :func:`step_fn`).

    Example:
        >>> images = torch.rand(16, 1, 8, 8) * 2 - 1
        >>> plain = make_diffusion_arm(images, batch_size=4, block_out_channels=(16, 32), cpu=True)
        >>> plain.adversary is None, plain.config.batch_size
        (True, 4)
    """
    torch.manual_seed(0)
    _, channels, size, _ = images.shape
    scheduler = build_noise_scheduler(1000)
    d_module = None
    if discriminator is not None:
        d_module = TimeConditionedDiscriminator(
            channels, discriminator.channels, discriminator.time_dim, discriminator.norm_groups
        )
    cbs = list(callbacks(scheduler.alphas_cumprod, d_module)) if callbacks else []
    config = DiffusionTrainConfig(
        batch_size=batch_size, max_steps=10**9, sample_every=0, checkpoint_every=0, mixed_precision=mixed_precision
    )
    return DiffusionTrainer(
        build_unet(size, channels, block_out_channels),
        scheduler,
        images,
        config,
        discriminator=d_module,
        discriminator_config=discriminator,
        callbacks=cbs,
        sampler=sampler(cbs, d_module) if sampler else None,
        cpu=cpu,
    )


def step_fn(trainer: DiffusionTrainer) -> Callable[[], None]:
    """One training step of ``trainer`` that never triggers a buffer refill (timed apart).

    Args:
        trainer: an arm from :func:`make_diffusion_arm`; its buffer (if any) is filled once here.

    Returns:
        A callable running one step and advancing ``trainer.state.step``.

    Example:
        >>> arm = make_diffusion_arm(torch.rand(16, 1, 8, 8) * 2 - 1, batch_size=4, block_out_channels=(16, 32),
        ...                          cpu=True)
        >>> step = step_fn(arm)
        >>> step(); step()
        >>> arm.state.step
        2
    """
    if trainer.adversary is not None and trainer.adversary.buffer is not None:
        trainer.refresh_replay_buffer()  # fill once; the refill cost is measured by refill_seconds_per_step
        trainer.adversary.buffer.refresh_every = 10**9

    def step() -> None:
        trainer.train_step()
        trainer.state.step += 1

    return step


def refill_seconds_per_step(trainer: DiffusionTrainer, refresh_every: int, repeats: int = 1) -> float:
    """Seconds one replay-buffer refill costs, divided by the refill interval R (0 without a buffer).

    Args:
        trainer: the arm.
        refresh_every: R, the steps between refills in a real run.
        repeats: refills timed (their mean is used).

    Returns:
        Refill seconds per training step.

    Example:
        >>> plain = make_diffusion_arm(torch.rand(16, 1, 8, 8) * 2 - 1, batch_size=4, block_out_channels=(16, 32),
        ...                            cpu=True)
        >>> refill_seconds_per_step(plain, 100)  # no discriminator, no buffer
        0.0
    """
    if trainer.adversary is None or trainer.adversary.buffer is None:
        return 0.0
    device = trainer.accelerator.device
    synchronize(device)  # on CUDA the timer must see the refill's kernels finish, not only their launch
    start = time.perf_counter()
    for _ in range(repeats):
        trainer.refresh_replay_buffer()
    synchronize(device)
    return (time.perf_counter() - start) / repeats / refresh_every


def sampling_seconds_per_image(trainer: DiffusionTrainer, num_images: int = 8, num_inference_steps: int = 50) -> float:
    """Wall time per image of the arm's sampler (plain or importance DDIM) with ``num_inference_steps``.

    Args:
        trainer: the arm.
        num_images: images sampled in one call (after a 1-image warm-up).
        num_inference_steps: DDIM steps.

    Returns:
        Seconds per image.

    Example:
        >>> plain = make_diffusion_arm(torch.rand(16, 1, 8, 8) * 2 - 1, batch_size=4, block_out_channels=(16, 32),
        ...                            cpu=True)
        >>> sampling_seconds_per_image(plain, num_images=2, num_inference_steps=2) > 0
        True
    """
    generator = torch.Generator().manual_seed(0)
    trainer.sample(1, 2, generator)  # warm-up
    synchronize(trainer.accelerator.device)
    start = time.perf_counter()
    trainer.sample(num_images, num_inference_steps, generator)
    synchronize(trainer.accelerator.device)
    return (time.perf_counter() - start) / num_images
