"""DCGAN generator and discriminator: shapes, ranges, layout, initialisation, errors."""

import pytest
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from xai_train.models import (
    SUPPORTED_IMAGE_SIZES,
    DCGANDiscriminator,
    DCGANGenerator,
    dcgan_init_,
    num_parameters,
)
from xai_train.models.dcgan import stage_widths

WIDTH = 8  # tiny models keep the tests fast


@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("image_size", [32, 64])
def test_generator_and_discriminator_shapes_and_ranges(image_size, channels, norm):
    torch.manual_seed(0)
    G = DCGANGenerator(image_size, channels, latent_dim=16, width=WIDTH, norm=norm)
    D = DCGANDiscriminator(image_size, channels, width=WIDTH, norm=norm)
    z = 3.0 * G.sample_latent(5)  # large latents push Tanh towards saturation
    fake = G(z)
    assert fake.shape == (5, channels, image_size, image_size)
    assert fake.abs().max() <= 1.0
    assert fake.std() > 0  # not a constant image
    logits = D(fake)
    assert logits.shape == (5, 1)
    assert torch.isfinite(logits).all()
    # logits, not probabilities: the head's bias passes straight through, outside (0, 1)
    with torch.no_grad():
        D.head.bias.fill_(5.0)
    assert (D(fake) > 4.0).all()


def test_stage_widths_follow_dcgan_doubling():
    assert stage_widths(32, 64) == [256, 128, 64]
    assert stage_widths(64, 64) == [512, 256, 128, 64]


def test_discriminator_layout_matches_dcgan():
    D = DCGANDiscriminator(64, 3, width=WIDTH)
    blocks = list(D.features)
    assert [b.conv.out_channels for b in blocks] == [8, 16, 32, 64]
    assert not hasattr(blocks[0], "norm")  # no BatchNorm on D's input layer
    assert all(isinstance(b.norm, nn.BatchNorm2d) for b in blocks[1:])
    assert all(b.conv.bias is None for b in blocks[1:])  # BatchNorm's shift replaces the bias
    assert all(b.act.negative_slope == 0.2 for b in blocks)
    assert D.feature_layer is blocks[-1].act
    D_plain = DCGANDiscriminator(64, 3, width=WIDTH, norm="none")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D_plain.modules())
    assert all(b.conv.bias is not None for b in D_plain.features)


@pytest.mark.parametrize("image_size, side_channels", [(32, 4 * WIDTH), (64, 8 * WIDTH)])
def test_feature_layer_output_is_last_4x4_map(image_size, side_channels):
    D = DCGANDiscriminator(image_size, 1, width=WIDTH)
    seen = []
    handle = D.feature_layer.register_forward_hook(lambda m, i, o: seen.append(o))
    D(torch.randn(2, 1, image_size, image_size))
    handle.remove()
    assert len(seen) == 1 and seen[0].shape == (2, side_channels, 4, 4)


def test_generator_layout():
    G = DCGANGenerator(64, 3, latent_dim=10, width=WIDTH)
    assert G.project.conv.in_channels == 10 and G.project.conv.out_channels == 64
    assert [b.conv.out_channels for b in G.upsample] == [32, 16, 8]
    assert G.to_image.conv.out_channels == 3 and isinstance(G.to_image.act, nn.Tanh)
    assert G.latent_dim == 10 and G.image_shape == (3, 64, 64)


def test_norm_none_makes_samples_independent_of_the_batch():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 32, 32)
    D_plain = DCGANDiscriminator(32, 1, width=WIDTH, norm="none").train()
    torch.testing.assert_close(D_plain(x)[:1], D_plain(x[:1]))
    D_bn = DCGANDiscriminator(32, 1, width=WIDTH, norm="batch").train()
    assert not torch.allclose(D_bn(x)[:2], D_bn(x[:2]))  # train-mode BatchNorm couples samples


def test_dcgan_init_statistics_on_a_wide_model():
    torch.manual_seed(0)
    for model in (DCGANGenerator(64, 3, width=64), DCGANDiscriminator(64, 3, width=64)):
        conv = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, _ConvNd)])
        assert conv.numel() > 1_000_000
        assert conv.std().item() == pytest.approx(0.02, rel=0.01)
        assert conv.mean().abs().item() < 1e-4
        bn = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
        assert bn.mean().item() == pytest.approx(1.0, abs=0.005)
        assert bn.std().item() == pytest.approx(0.02, rel=0.15)
        biases = [m.bias for m in model.modules() if getattr(m, "bias", None) is not None]
        assert biases and all((b == 0).all() for b in biases)


def test_dcgan_init_is_reproducible_with_a_generator_and_leaves_linear_alone():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(4, 4))
    linear_before = model[1].weight.clone()
    dcgan_init_(model, generator=torch.Generator().manual_seed(1))
    first = model[0].weight.clone()
    returned = dcgan_init_(model, generator=torch.Generator().manual_seed(1))
    assert returned is model
    torch.testing.assert_close(model[0].weight, first)
    torch.testing.assert_close(model[1].weight, linear_before)


@pytest.mark.parametrize("image_size", [16, 28, 48, 128])
def test_unsupported_image_size_lists_supported_ones(image_size):
    for build in (lambda: DCGANGenerator(image_size, 1), lambda: DCGANDiscriminator(image_size, 1)):
        with pytest.raises(ValueError, match="supported sizes: 32, 64") as info:
            build()
        assert str(image_size) in str(info.value)
    assert SUPPORTED_IMAGE_SIZES == (32, 64)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown norm 'layer'; choose one of: batch, none"):
        DCGANDiscriminator(32, 1, norm="layer")
    with pytest.raises(ValueError, match="width must be a positive int"):
        DCGANGenerator(32, 1, width=0)
    with pytest.raises(ValueError, match="channels must be a positive int"):
        DCGANDiscriminator(32, 0)


def test_wrong_input_shapes_raise():
    G = DCGANGenerator(32, 1, latent_dim=16, width=WIDTH)
    D = DCGANDiscriminator(32, 1, width=WIDTH)
    with pytest.raises(ValueError, match=r"expected latent of shape \(B, 16\)"):
        G(torch.randn(2, 16, 1, 1))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 32, 32\)"):
        D(torch.randn(2, 3, 32, 32))


def test_parameter_counts_of_the_classic_32x32_grey_model():
    g_layers = [  # transposed convs behind BatchNorm have no bias; BatchNorm has weight + bias
        100 * 256 * 4 * 4 + 2 * 256,  # project: 410,112
        256 * 128 * 4 * 4 + 2 * 128,  # upsample[0]: 524,544
        128 * 64 * 4 * 4 + 2 * 64,  # upsample[1]: 131,200
        64 * 1 * 4 * 4 + 1,  # to_image (with bias): 1,025
    ]
    d_layers = [
        1 * 64 * 4 * 4 + 64,  # features[0] (bias, no BatchNorm): 1,088
        64 * 128 * 4 * 4 + 2 * 128,  # features[1]: 131,328
        128 * 256 * 4 * 4 + 2 * 256,  # features[2]: 524,800
        256 * 1 * 4 * 4 + 1,  # head: 4,097
    ]
    assert (sum(g_layers), sum(d_layers)) == (1_066_881, 661_313)
    assert num_parameters(DCGANGenerator(32, 1, width=64)) == sum(g_layers)
    assert num_parameters(DCGANDiscriminator(32, 1, width=64)) == sum(d_layers)
