"""GAN models: DCGAN and the xAI-GAN paper's MNIST MLPs, their initialisation, and ``build_gan``.

Every generator maps latent noise (B, latent_dim) to images (B, C, H, W) in [-1, 1] and has
``latent_dim`` and ``sample_latent(n)``; every discriminator maps images to logits (B, 1) and names its
last feature layer in ``feature_layer``. All non-linearities are distinct, non-inplace modules, so
captum's DeepLift and layer methods work on them.

Example:
    >>> from xai_train.models import build_gan, num_parameters
    >>> G, D = build_gan("paper_mlp", image_size=32, channels=1)
    >>> num_parameters(G), num_parameters(D)
    (2150416, 2124049)
"""

from xai_train.models.base import NORMS, ImageDiscriminator, LatentGenerator
from xai_train.models.build import GAN_ARCHITECTURES, build_gan
from xai_train.models.dcgan import SUPPORTED_IMAGE_SIZES, DCGANDiscriminator, DCGANGenerator
from xai_train.models.init import dcgan_init_, num_parameters
from xai_train.models.mlp import PaperMLPDiscriminator, PaperMLPGenerator

__all__ = [
    "GAN_ARCHITECTURES",
    "NORMS",
    "SUPPORTED_IMAGE_SIZES",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "ImageDiscriminator",
    "LatentGenerator",
    "PaperMLPDiscriminator",
    "PaperMLPGenerator",
    "build_gan",
    "dcgan_init_",
    "num_parameters",
]
