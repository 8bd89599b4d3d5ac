"""Accelerate-based trainers."""

from xai_train.trainers.gan import GANTrainer
from xai_train.trainers.losses import LOSSES, discriminator_loss, generator_loss

__all__ = ["GANTrainer", "LOSSES", "discriminator_loss", "generator_loss"]
