"""``build_gan``: one entry point that builds a (generator, discriminator) pair by architecture name."""

from __future__ import annotations

from torch import nn

from xai_train.errors import UserError
from xai_train.models.dcgan import SUPPORTED_IMAGE_SIZES, DCGANDiscriminator, DCGANGenerator
from xai_train.models.mlp import PAPER_IMAGE_SHAPE, PaperMLPDiscriminator, PaperMLPGenerator

GAN_ARCHITECTURES: tuple[str, ...] = ("dcgan", "paper_mlp")
"""Names accepted by :func:`build_gan`."""


def supported_sizes(arch: str) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """The image sides and channel counts ``arch`` builds for (``None``: any number of channels).

    Lets a config be checked before anything is built.

    Example:
        >>> supported_sizes("dcgan"), supported_sizes("paper_mlp")
        (((32, 64), None), ((32,), (1,)))
    """
    if arch == "dcgan":
        return SUPPORTED_IMAGE_SIZES, None
    if arch == "paper_mlp":
        return (PAPER_IMAGE_SHAPE[1],), (PAPER_IMAGE_SHAPE[0],)
    raise UserError(f"build_gan: unknown arch {arch!r}; choose one of: {', '.join(GAN_ARCHITECTURES)}")


def build_gan(
    arch: str,
    *,
    image_size: int,
    channels: int,
    latent_dim: int = 100,
    g_width: int = 64,
    d_width: int = 64,
    g_norm: str = "batch",
    d_norm: str = "batch",
    dropout: float = 0.3,
) -> tuple[nn.Module, nn.Module]:
    """Build a generator and a discriminator.

    ``"dcgan"`` uses the widths and norms and ignores ``dropout``; ``"paper_mlp"`` is the fixed
    xAI-GAN MNIST architecture, so it ignores widths and norms, uses ``dropout`` in D and needs
    ``image_size=32, channels=1``.

    Args:
        arch: one of :data:`GAN_ARCHITECTURES`.
        image_size: image side H = W (DCGAN: 32 or 64; paper MLP: 32).
        channels: image channels C.
        latent_dim: length of the generator's latent vector.
        g_width: DCGAN generator base width.
        d_width: DCGAN discriminator base width.
        g_norm: DCGAN generator normalisation, ``"batch"`` or ``"none"``.
        d_norm: DCGAN discriminator normalisation, ``"batch"`` or ``"none"``.
        dropout: paper-MLP discriminator dropout probability.

    Returns:
        ``(generator, discriminator)``: G maps (B, latent_dim) to (B, C, H, W) in [-1, 1] and has
        ``latent_dim`` and ``sample_latent``; D maps (B, C, H, W) to logits (B, 1) and has
        ``feature_layer``.

    Raises:
        UserError: (a ValueError) for an unknown ``arch``, or a size the architecture does not support.

    Example:
        >>> G, D = build_gan("dcgan", image_size=32, channels=1, g_width=8, d_width=8)
        >>> D(G(G.sample_latent(3))).shape
        torch.Size([3, 1])
    """
    if arch == "dcgan":
        generator = DCGANGenerator(image_size, channels, latent_dim=latent_dim, width=g_width, norm=g_norm)
        discriminator = DCGANDiscriminator(image_size, channels, width=d_width, norm=d_norm)
        return generator, discriminator
    if arch == "paper_mlp":
        if (channels, image_size, image_size) != PAPER_IMAGE_SHAPE:
            raise UserError(
                f"build_gan: arch 'paper_mlp' needs image_size=32 and channels=1 (the xAI-GAN MNIST setup), "
                f"got image_size={image_size}, channels={channels}; use arch='dcgan' for other images"
            )
        return PaperMLPGenerator(latent_dim=latent_dim), PaperMLPDiscriminator(dropout=dropout)
    raise UserError(f"build_gan: unknown arch {arch!r}; choose one of: {', '.join(GAN_ARCHITECTURES)}")
