"""DCGAN generator and discriminator (Radford et al. 2016) for 32×32 and 64×64 images.

Layout for width ``w`` (64×64; a 32×32 model drops the widest stage)::

    G: z (B, latent) -> 4×4×8w -> 8×8×4w -> 16×16×2w -> 32×32×w -> 64×64×C, Tanh
    D: x (B, C, 64, 64) -> 32×32×w -> 16×16×2w -> 8×8×4w -> 4×4×8w -> logit (B, 1)

All kernels are 4×4; stride-2 (transposed) convolutions halve or double the side. BatchNorm follows
every hidden layer except D's first one (``norm="batch"``, the DCGAN default); ``norm="none"`` removes
it, which makes every sample's output independent of the rest of the batch (needed for exact
multi-process equivalence and for exact "free saliency", DESIGN.md §4).

Every non-linearity is its own non-inplace ``nn.Module`` instance used once: captum's DeepLift replaces
the gradient of each activation *module* by its rescale multiplier, so a functional or shared
activation silently degrades it.
"""

from __future__ import annotations

from collections import OrderedDict

from einops import rearrange
from torch import Tensor, nn

from xai_train.models.base import ImageDiscriminator, LatentGenerator, check_norm, check_positive
from xai_train.models.init import dcgan_init_

SUPPORTED_IMAGE_SIZES: tuple[int, ...] = (32, 64)
"""Image sides the DCGAN models build for."""

LEAKY_SLOPE = 0.2  # DCGAN paper: LeakyReLU slope 0.2 in the discriminator.
KERNEL = 4  # 4×4 kernels with stride 2 and padding 1 exactly halve/double the side.
BASE_SIDE = 4  # side of G's first and D's last feature map.


def stage_widths(image_size: int, width: int) -> list[int]:
    """Channel widths of the feature maps from the 4×4 map outwards: ``[w·2^(n-1), ..., 2w, w]``.

    Args:
        image_size: the image side, one of :data:`SUPPORTED_IMAGE_SIZES`.
        width: base width ``w`` (the widest map has ``w·image_size/8`` channels).

    Returns:
        One width per stride-2 stage: 3 for 32×32, 4 for 64×64.

    Raises:
        ValueError: if ``image_size`` is not supported.

    Example:
        >>> stage_widths(64, 8)
        [64, 32, 16, 8]
    """
    if image_size not in SUPPORTED_IMAGE_SIZES:
        supported = ", ".join(map(str, SUPPORTED_IMAGE_SIZES))
        raise ValueError(f"DCGAN: unsupported image_size {image_size!r}; supported sizes: {supported}")
    num_stages = (image_size // BASE_SIDE).bit_length() - 1  # 32 -> 3, 64 -> 4
    return [width * 2**i for i in reversed(range(num_stages))]


def _block(conv: nn.Module, out_channels: int, norm: str, activation: nn.Module) -> nn.Sequential:
    """conv -> [BatchNorm2d] -> activation, with named children (``conv``, ``norm``, ``act``)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(conv=conv)
    if norm == "batch":
        layers["norm"] = nn.BatchNorm2d(out_channels)
    layers["act"] = activation
    return nn.Sequential(layers)


class DCGANGenerator(LatentGenerator):
    """DCGAN generator: latent (B, latent_dim) -> images (B, C, H, W) in [-1, 1].

    Convolutions followed by BatchNorm have no bias (BatchNorm's shift replaces it); the others keep
    one. Weights are initialised with :func:`dcgan_init_`.

    Args:
        image_size: output side H = W, one of :data:`SUPPORTED_IMAGE_SIZES`.
        channels: output channels C (1 = grey, 3 = RGB).
        latent_dim: length of the latent vector.
        width: base width ``w``; the last hidden map has ``w`` channels, the first ``w·image_size/8``.
        norm: ``"batch"`` (DCGAN default) or ``"none"``.

    Attributes:
        project: latent (B, latent_dim, 1, 1) -> (B, w·image_size/8, 4, 4).
        upsample: stride-2 blocks up to (B, w, image_size/2, image_size/2).
        to_image: transposed conv + Tanh -> (B, C, image_size, image_size).

    Example:
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8)
        >>> G(G.sample_latent(2)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        latent_dim: int = 100,
        width: int = 64,
        norm: str = "batch",
    ) -> None:
        check_positive("DCGANGenerator", channels=channels, latent_dim=latent_dim, width=width)
        check_norm(norm, where="DCGANGenerator")
        super().__init__(latent_dim, (channels, image_size, image_size))
        widths = stage_widths(image_size, width)
        bias = norm == "none"
        self.project = _block(
            nn.ConvTranspose2d(latent_dim, widths[0], KERNEL, stride=1, padding=0, bias=bias),
            widths[0],
            norm,
            nn.ReLU(),
        )
        self.upsample = nn.Sequential(
            *[
                _block(nn.ConvTranspose2d(c_in, c_out, KERNEL, 2, 1, bias=bias), c_out, norm, nn.ReLU())
                for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
            ]
        )
        self.to_image = nn.Sequential(
            OrderedDict(conv=nn.ConvTranspose2d(widths[-1], channels, KERNEL, 2, 1), act=nn.Tanh())
        )
        dcgan_init_(self)

    def forward(self, z: Tensor) -> Tensor:
        """Generate images.

        Args:
            z: (B, latent_dim) latent noise.

        Returns:
            fake: (B, C, H, W) images in [-1, 1].
        """
        self.check_latent(z)
        h = self.project(rearrange(z, "b z -> b z 1 1"))
        return self.to_image(self.upsample(h))


class DCGANDiscriminator(ImageDiscriminator):
    """DCGAN discriminator: images (B, C, H, W) -> real/fake logits (B, 1) (no sigmoid).

    Each stage is a stride-2 4×4 conv, BatchNorm (except the first stage, and only with
    ``norm="batch"``) and LeakyReLU(0.2); a 4×4 valid conv maps the last 4×4 map to one logit.
    Weights are initialised with :func:`dcgan_init_`.

    Args:
        image_size: input side H = W, one of :data:`SUPPORTED_IMAGE_SIZES`.
        channels: input channels C.
        width: base width ``w``; the first map has ``w`` channels, the last ``w·image_size/8``.
        norm: ``"batch"`` (DCGAN default) or ``"none"`` (no cross-sample coupling).

    Attributes:
        features: stride-2 blocks, (B, C, H, W) -> (B, w·image_size/8, 4, 4).
        head: 4×4 valid conv to the logit.

    Example:
        >>> import torch
        >>> D = DCGANDiscriminator(image_size=32, channels=1, width=8)
        >>> D(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 1])
        >>> D.feature_layer is D.features[-1].act
        True
    """

    def __init__(self, image_size: int = 64, channels: int = 3, width: int = 64, norm: str = "batch") -> None:
        check_positive("DCGANDiscriminator", channels=channels, width=width)
        check_norm(norm, where="DCGANDiscriminator")
        super().__init__((channels, image_size, image_size))
        widths = stage_widths(image_size, width)[::-1]  # narrow -> wide, from the image inwards
        in_widths = [channels, *widths[:-1]]
        self.features = nn.Sequential(
            *[
                _block(
                    nn.Conv2d(c_in, c_out, KERNEL, 2, 1, bias=i == 0 or norm == "none"),
                    c_out,
                    "none" if i == 0 else norm,  # DCGAN: no BatchNorm on the input layer of D
                    nn.LeakyReLU(LEAKY_SLOPE),
                )
                for i, (c_in, c_out) in enumerate(zip(in_widths, widths, strict=True))
            ]
        )
        self.head = nn.Conv2d(widths[-1], 1, BASE_SIDE, stride=1, padding=0)
        dcgan_init_(self)

    @property
    def feature_layer(self) -> nn.Module:
        """The last block's LeakyReLU; its output (B, w·image_size/8, 4, 4) is D's last feature map.

        Hook it for Grad-CAM, e.g. ``captum.attr.LayerGradCam(D, D.feature_layer)``.
        """
        return self.features[-1].act

    def forward(self, x: Tensor) -> Tensor:
        """Score images.

        Args:
            x: (B, C, H, W) images, nominally in [-1, 1].

        Returns:
            logits: (B, 1) real/fake logits (positive = real).
        """
        self.check_image(x)
        return rearrange(self.head(self.features(x)), "b 1 1 1 -> b 1")
