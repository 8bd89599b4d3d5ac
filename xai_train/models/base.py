"""Base classes that give every GAN generator and discriminator the same small interface.

Generators expose ``latent_dim``, ``image_shape`` and ``sample_latent``; discriminators expose
``image_shape`` and ``feature_layer`` (the module whose output Grad-CAM-style explainers hook).
Both check the shape of what they are given and say what they expected.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NORMS: tuple[str, ...] = ("batch", "none")
"""Normalisation choices of the DCGAN models: ``"batch"`` (DCGAN default) or ``"none"``."""


def check_norm(norm: str, *, where: str) -> str:
    """Return ``norm`` if it is one of :data:`NORMS`, else raise a ValueError naming ``where``.

    Args:
        norm: the requested normalisation.
        where: the argument's owner for the message, e.g. ``"DCGANDiscriminator"``.

    Returns:
        ``norm`` unchanged.

    Example:
        >>> check_norm("batch", where="DCGANGenerator")
        'batch'
    """
    if norm not in NORMS:
        raise ValueError(f"{where}: unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    return norm


def check_positive(where: str, **values: int) -> None:
    """Raise a ValueError naming the first argument in ``values`` that is not a positive int.

    Example:
        >>> check_positive("DCGANGenerator", latent_dim=100, width=64)
    """
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")


class LatentGenerator(nn.Module):
    """A generator mapping latent noise (B, latent_dim) to images (B, C, H, W) in [-1, 1].

    Args:
        latent_dim: length of the latent vector.
        image_shape: (C, H, W) of the generated images.

    Attributes:
        latent_dim: length of the latent vector.
        image_shape: (C, H, W) of the generated images.
    """

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)

    def sample_latent(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw ``n`` latent vectors from N(0, I).

        Args:
            n: number of vectors.
            generator: optional ``torch.Generator`` (it must live on ``device``).
            device: where to put the noise; default: the device of the model's parameters.

        Returns:
            noise: (n, latent_dim), float32.

        Example:
            >>> from xai_train.models import PaperMLPGenerator
            >>> PaperMLPGenerator().sample_latent(4).shape
            torch.Size([4, 100])
        """
        if device is None:
            device = next(self.parameters()).device
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def check_latent(self, z: Tensor) -> None:
        """Raise a ValueError unless ``z`` has shape (B, latent_dim)."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            expected = f"(B, {self.latent_dim})"
            raise ValueError(
                f"{type(self).__name__}: expected latent of shape {expected}, got {tuple(z.shape)}"
            )


class ImageDiscriminator(nn.Module):
    """A discriminator mapping images (B, C, H, W) to real/fake logits (B, 1) (no sigmoid).

    Subclasses define :attr:`feature_layer`.

    Args:
        image_shape: (C, H, W) of the accepted images.

    Attributes:
        image_shape: (C, H, W) of the accepted images.
    """

    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)

    @property
    def feature_layer(self) -> nn.Module:
        """The module whose output is the last feature map (what Grad-CAM should hook)."""
        raise NotImplementedError

    def check_image(self, x: Tensor) -> None:
        """Raise a ValueError unless ``x`` has shape (B, *image_shape)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            expected = f"(B, {', '.join(map(str, self.image_shape))})"
            raise ValueError(
                f"{type(self).__name__}: expected images of shape {expected}, got {tuple(x.shape)}"
            )
