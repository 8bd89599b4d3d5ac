"""The MLP generator and discriminator of the xAI-GAN paper's MNIST / Fashion-MNIST experiments.

Same layer sizes as the reference code (explainable-gan/XAIGAN, ``GeneratorNet`` / ``DiscriminatorNet``)::

    G: z (B, 100) -> 256 -> 512 -> 1296 -> 1024, Tanh -> (B, 1, 32, 32)
    D: x (B, 1, 32, 32) -> 1024 -> 1296 -> 512 -> 256 -> logit (B, 1)

LeakyReLU(0.2) after every hidden layer; D also has Dropout(0.3) after each. Two deliberate
differences: D returns a logit instead of a sigmoid probability (use ``BCEWithLogitsLoss``; it is
numerically safer and the explainers expect logits), and images are reshaped with einops.
PyTorch's default initialisation is kept, as in the reference code for MNIST.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from einops import rearrange
from torch import Tensor, nn

from xai_train.models.base import ImageDiscriminator, LatentGenerator, check_positive

PAPER_IMAGE_SHAPE: tuple[int, int, int] = (1, 32, 32)  # MNIST padded to 32×32 in the reference code.
PAPER_G_HIDDEN: tuple[int, ...] = (256, 512, 1296)
PAPER_D_HIDDEN: tuple[int, ...] = (1296, 512, 256)
LEAKY_SLOPE = 0.2


def _hidden_block(d_in: int, d_out: int, dropout: float | None) -> nn.Sequential:
    """Linear -> LeakyReLU(0.2) [-> Dropout], children named ``linear``, ``act``, ``dropout``."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        linear=nn.Linear(d_in, d_out), act=nn.LeakyReLU(LEAKY_SLOPE)
    )
    if dropout is not None:
        layers["dropout"] = nn.Dropout(dropout)
    return nn.Sequential(layers)


def _check_hidden(where: str, hidden_dims: Sequence[int]) -> tuple[int, ...]:
    hidden_dims = tuple(hidden_dims)
    if not hidden_dims:
        raise ValueError(f"{where}: hidden_dims must name at least one hidden layer")
    check_positive(where, **{f"hidden_dims[{i}]": d for i, d in enumerate(hidden_dims)})
    return hidden_dims


class PaperMLPGenerator(LatentGenerator):
    """xAI-GAN MNIST generator: latent (B, latent_dim) -> images (B, 1, 32, 32) in [-1, 1].

    Args:
        latent_dim: length of the latent vector (paper: 100).
        hidden_dims: widths of the hidden layers (paper: 256, 512, 1296).
        image_shape: (C, H, W) of the output (paper: 1, 32, 32).

    Attributes:
        hidden: Linear + LeakyReLU blocks.
        to_image: Linear + Tanh to C·H·W values.

    Example:
        >>> G = PaperMLPGenerator()
        >>> G(G.sample_latent(2)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        latent_dim: int = 100,
        hidden_dims: Sequence[int] = PAPER_G_HIDDEN,
        image_shape: tuple[int, int, int] = PAPER_IMAGE_SHAPE,
    ) -> None:
        check_positive("PaperMLPGenerator", latent_dim=latent_dim)
        hidden_dims = _check_hidden("PaperMLPGenerator", hidden_dims)
        super().__init__(latent_dim, image_shape)
        dims = [latent_dim, *hidden_dims]
        self.hidden = nn.Sequential(
            *[_hidden_block(d_in, d_out, None) for d_in, d_out in zip(dims[:-1], dims[1:], strict=True)]
        )
        channels, height, width = self.image_shape
        self.to_image = nn.Sequential(
            OrderedDict(linear=nn.Linear(dims[-1], channels * height * width), act=nn.Tanh())
        )

    def forward(self, z: Tensor) -> Tensor:
        """Generate images.

        Args:
            z: (B, latent_dim) latent noise.

        Returns:
            fake: (B, C, H, W) images in [-1, 1].
        """
        self.check_latent(z)
        channels, height, width = self.image_shape
        flat = self.to_image(self.hidden(z))
        return rearrange(flat, "b (c h w) -> b c h w", c=channels, h=height, w=width)


class PaperMLPDiscriminator(ImageDiscriminator):
    """xAI-GAN MNIST discriminator: images (B, 1, 32, 32) -> real/fake logits (B, 1) (no sigmoid).

    Args:
        dropout: dropout probability after each hidden layer (paper: 0.3; 0 disables it).
        hidden_dims: widths of the hidden layers (paper: 1296, 512, 256).
        image_shape: (C, H, W) of the input (paper: 1, 32, 32).

    Attributes:
        hidden: Linear + LeakyReLU + Dropout blocks.
        head: Linear to the logit.

    Example:
        >>> import torch
        >>> D = PaperMLPDiscriminator(dropout=0.0)
        >>> D(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 1])
    """

    def __init__(
        self,
        dropout: float = 0.3,
        hidden_dims: Sequence[int] = PAPER_D_HIDDEN,
        image_shape: tuple[int, int, int] = PAPER_IMAGE_SHAPE,
    ) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"PaperMLPDiscriminator: dropout must be in [0, 1), got {dropout!r}")
        hidden_dims = _check_hidden("PaperMLPDiscriminator", hidden_dims)
        super().__init__(image_shape)
        channels, height, width = self.image_shape
        dims = [channels * height * width, *hidden_dims]
        self.hidden = nn.Sequential(
            *[_hidden_block(d_in, d_out, dropout) for d_in, d_out in zip(dims[:-1], dims[1:], strict=True)]
        )
        self.head = nn.Linear(dims[-1], 1)

    @property
    def feature_layer(self) -> nn.Module:
        """The last hidden LeakyReLU; its output is (B, 256) with no spatial axes.

        Layer attributions on it (e.g. Grad-CAM) give one score per hidden unit, not a pixel map.
        """
        return self.hidden[-1].act

    def forward(self, x: Tensor) -> Tensor:
        """Score images.

        Args:
            x: (B, C, H, W) images, nominally in [-1, 1].

        Returns:
            logits: (B, 1) real/fake logits (positive = real).
        """
        self.check_image(x)
        return self.head(self.hidden(rearrange(x, "b c h w -> b (c h w)")))
