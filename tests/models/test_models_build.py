"""build_gan dispatch and errors, sample_latent, num_parameters."""

import pytest
import torch
from torch import nn

from xai_train.models import (
    GAN_ARCHITECTURES,
    DCGANDiscriminator,
    DCGANGenerator,
    PaperMLPDiscriminator,
    PaperMLPGenerator,
    build_gan,
    num_parameters,
)


def test_build_dcgan_passes_every_option():
    G, D = build_gan(
        "dcgan", image_size=64, channels=3, latent_dim=12, g_width=8, d_width=4, g_norm="none", d_norm="batch"
    )
    assert isinstance(G, DCGANGenerator) and isinstance(D, DCGANDiscriminator)
    assert G.latent_dim == 12 and G.image_shape == (3, 64, 64) and D.image_shape == (3, 64, 64)
    assert G.upsample[-1].conv.out_channels == 8 and D.features[0].conv.out_channels == 4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    assert D(G(G.sample_latent(2))).shape == (2, 1)


def test_build_paper_mlp():
    G, D = build_gan("paper_mlp", image_size=32, channels=1, latent_dim=64, dropout=0.0)
    assert isinstance(G, PaperMLPGenerator) and isinstance(D, PaperMLPDiscriminator)
    assert G.latent_dim == 64 and G.hidden[0].linear.in_features == 64
    assert [b.dropout.p for b in D.hidden] == [0.0, 0.0, 0.0]
    assert D(G(G.sample_latent(3))).shape == (3, 1)


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown arch 'stylegan'; choose one of: dcgan, paper_mlp"):
        build_gan("stylegan", image_size=32, channels=1)
    assert GAN_ARCHITECTURES == ("dcgan", "paper_mlp")


@pytest.mark.parametrize("image_size, channels", [(64, 1), (32, 3), (28, 1)])
def test_paper_mlp_rejects_other_image_shapes(image_size, channels):
    with pytest.raises(ValueError, match="'paper_mlp' needs image_size=32 and channels=1"):
        build_gan("paper_mlp", image_size=image_size, channels=channels)


def test_dcgan_size_error_comes_through_build_gan():
    with pytest.raises(ValueError, match="supported sizes: 32, 64"):
        build_gan("dcgan", image_size=28, channels=1)


@pytest.mark.parametrize("arch", GAN_ARCHITECTURES)
def test_sample_latent_is_standard_normal_and_reproducible(arch):
    G, _ = build_gan(arch, image_size=32, channels=1, latent_dim=50, g_width=4, d_width=4)
    z = G.sample_latent(2000, generator=torch.Generator().manual_seed(3))
    assert z.shape == (2000, 50) and z.dtype == torch.float32 and z.device.type == "cpu"
    assert z.mean().abs() < 0.01 and (z.std() - 1).abs() < 0.01
    torch.testing.assert_close(z, G.sample_latent(2000, generator=torch.Generator().manual_seed(3)))
    assert G.sample_latent(1, device="meta").device.type == "meta"


def test_num_parameters_counts_trainable_only_on_request():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))  # 3*4+4 + 4+4 params; running stats are buffers
    assert num_parameters(model) == 24
    model[0].requires_grad_(False)
    assert num_parameters(model, trainable_only=True) == 8
    assert num_parameters(model) == 24
