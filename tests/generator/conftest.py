"""Shared fixtures: a tiny DCGAN trained for a few steps on grey shapes, and its planted-blob copy."""

import pytest
import torch
import torch.nn.functional as F

from xai_train.data import make_shapes
from xai_train.generator.planted import plant_blob
from xai_train.models import DCGANDiscriminator, DCGANGenerator

STEPS = 30  # enough to leave the initialisation; seconds on a CPU


@pytest.fixture(scope="session")
def trained_gan() -> tuple[DCGANGenerator, DCGANDiscriminator]:
    """G and D (width 8, 32×32 grey shapes) after a short non-saturating GAN training, in eval mode."""
    torch.manual_seed(0)
    images = make_shapes(512, image_size=32, channels=1, seed=0).images
    G, D = DCGANGenerator(32, 1, width=8), DCGANDiscriminator(32, 1, width=8)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    for _ in range(STEPS):
        real = images[torch.randint(len(images), (32,))]
        fake = G(torch.randn(32, 100))
        d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-D(fake)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    return G.eval(), D.eval()


@pytest.fixture(scope="session")
def planted(trained_gan):
    """The trained G with a blob in the top-left 8×8 corner on 20% of the latents."""
    return plant_blob(trained_gan[0], fraction=0.2, position=(0, 0))


@pytest.fixture(scope="session")
def blob_segmenter(planted):
    """Oracle concept "blob": the blob's pixels in images whose blob region is mostly white."""
    blob = planted.blob

    def segment(images: torch.Tensor) -> torch.Tensor:
        region = images.mean(dim=1, keepdim=True)[..., blob[0, 0]].mean(dim=-1)  # (B, 1)
        shows = (region > 0.5).view(-1, 1, 1, 1)
        return (blob & shows).expand(len(images), 1, *blob.shape[-2:])

    return segment
