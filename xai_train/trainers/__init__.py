"""Accelerate-based trainers sharing one training loop (``TrainingLoop``)."""

from xai_train.trainers.diffusion import DiffusionTrainer
from xai_train.trainers.gan import GANTrainer
from xai_train.trainers.loop import SUMMARY_FILE, TrainingLoop
from xai_train.trainers.losses import LOSSES, discriminator_loss, generator_loss

__all__ = [
    "LOSSES",
    "SUMMARY_FILE",
    "DiffusionTrainer",
    "GANTrainer",
    "TrainingLoop",
    "discriminator_loss",
    "generator_loss",
]
