"""GAN benchmark arms: one ``GANTrainer`` per arm, same seed, data and recipe; only the callbacks differ.

``recipes/benchmark.py --suite gan`` builds the arms (it constructs the ``XAIGradientMask`` callbacks,
which this library never imports) and times them round-robin with
:func:`xai_train.benchmarks.timing.time_interleaved`. A like-for-like comparison keeps everything but
the explainer fixed: the same ``GANTrainConfig`` (the paper MLP's arms use the paper's betas, label
smoothing and clipping), the same initial weights and the same batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from xai_train.callback import Callback
from xai_train.config.gan import GANTrainConfig
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer


def make_gan_arm(
    arch: str,
    images: Tensor,
    train: GANTrainConfig,
    *,
    callbacks: Sequence[Callback] = (),
    model_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    cpu: bool = False,
) -> GANTrainer:
    """One benchmark arm: a trainer whose ``train_step`` is the timed unit (D update + G update).

    Args:
        arch: ``"dcgan"`` or ``"paper_mlp"`` (``xai_train.models.build_gan``).
        images: (N, C, H, W) data in [-1, 1].
        train: the training recipe; steps, sample grids and checkpoints are switched off here.
        callbacks: the arm's callbacks (none = vanilla).
        model_options: extra ``build_gan`` arguments (``g_width``, ``d_width``, ``dropout``, ...).
        seed: initial weights (the same for every arm, so arms differ only in their callbacks).
        cpu: force the CPU.

    Returns:
        The trainer (see :func:`one_step`).

    Example:
        >>> images = torch.rand(32, 1, 32, 32) * 2 - 1
        >>> arm = make_gan_arm("dcgan", images, GANTrainConfig(batch_size=8), model_options={"g_width": 8,
        ...                    "d_width": 8}, cpu=True)
        >>> arm.config.batch_size, arm.config.sample_every, arm.config.checkpoint_every
        (8, 0, 0)
    """
    torch.manual_seed(seed)
    _, channels, size, _ = images.shape
    generator, discriminator = build_gan(arch, image_size=size, channels=channels, **dict(model_options or {}))
    config = dataclasses.replace(train, max_steps=10**9, sample_every=0, checkpoint_every=0)
    return GANTrainer(generator, discriminator, images, config, callbacks=list(callbacks), cpu=cpu)


def one_step(trainer: GANTrainer) -> Callable[[], None]:
    """One training step of ``trainer`` that advances its step counter (schedules see a moving step).

    Args:
        trainer: an arm from :func:`make_gan_arm`.

    Returns:
        A callable running one step.

    Example:
        >>> arm = make_gan_arm("dcgan", torch.rand(32, 1, 32, 32) * 2 - 1, GANTrainConfig(batch_size=8),
        ...                    model_options={"g_width": 8, "d_width": 8}, cpu=True)
        >>> step = one_step(arm)
        >>> step(); step()
        >>> arm.state.step
        2
    """

    def step() -> None:
        trainer.train_step()
        trainer.state.step += 1

    return step
