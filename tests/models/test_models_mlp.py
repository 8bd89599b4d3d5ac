"""The xAI-GAN paper's MNIST MLPs: exact sizes, shapes, dropout, errors."""

import pytest
import torch
from torch import nn

from xai_train.models import PaperMLPDiscriminator, PaperMLPGenerator, num_parameters


def test_generator_parameter_count_is_exact():
    per_layer = [  # weights + biases
        100 * 256 + 256,  # input layer: 25,856
        256 * 512 + 512,  # hidden1: 131,584
        512 * 1296 + 1296,  # hidden2: 664,848
        1296 * 1024 + 1024,  # out (1·32·32 = 1024 pixels): 1,328,128
    ]
    expected = sum(per_layer)
    assert expected == 2_150_416
    assert num_parameters(PaperMLPGenerator()) == expected


def test_discriminator_parameter_count_is_exact():
    per_layer = [  # weights + biases
        1024 * 1296 + 1296,  # input layer (1·32·32 = 1024 pixels): 1,328,400
        1296 * 512 + 512,  # hidden1: 664,064
        512 * 256 + 256,  # hidden2: 131,328
        256 * 1 + 1,  # logit: 257
    ]
    expected = sum(per_layer)
    assert expected == 2_124_049
    assert num_parameters(PaperMLPDiscriminator()) == expected
    assert num_parameters(PaperMLPDiscriminator(dropout=0.0)) == expected  # dropout has no parameters


def test_layer_sizes_and_activations_match_the_paper():
    G, D = PaperMLPGenerator(), PaperMLPDiscriminator()
    g_sizes = [(m.in_features, m.out_features) for m in G.modules() if isinstance(m, nn.Linear)]
    assert g_sizes == [(100, 256), (256, 512), (512, 1296), (1296, 1024)]
    assert all(b.act.negative_slope == 0.2 for b in G.hidden)
    assert isinstance(G.to_image.act, nn.Tanh)
    d_sizes = [(m.in_features, m.out_features) for m in D.modules() if isinstance(m, nn.Linear)]
    assert d_sizes == [(1024, 1296), (1296, 512), (512, 256), (256, 1)]
    assert [b.dropout.p for b in D.hidden] == [0.3, 0.3, 0.3]
    assert D.feature_layer is D.hidden[-1].act


def test_shapes_range_and_logits():
    torch.manual_seed(0)
    G, D = PaperMLPGenerator(), PaperMLPDiscriminator()
    fake = G(10.0 * G.sample_latent(6))  # large latents saturate Tanh
    assert fake.shape == (6, 1, 32, 32)
    assert fake.abs().max() <= 1.0 and fake.abs().max() > 0.9
    with torch.no_grad():
        D.head.bias.fill_(-5.0)  # a logit, not a probability: passes through unsquashed
    logits = D(fake)
    assert logits.shape == (6, 1) and (logits < -4.0).all()


def test_discriminator_flattens_in_pixel_order():
    D = PaperMLPDiscriminator(dropout=0.0)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = D.head(D.hidden(x.reshape(2, 1024)))  # row-major, as the reference code's view(B, -1)
    torch.testing.assert_close(D(x), expected)


def test_dropout_is_active_in_train_mode_only_and_can_be_disabled():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 32, 32)
    D = PaperMLPDiscriminator(dropout=0.3)
    assert not torch.allclose(D.train()(x), D(x))
    torch.testing.assert_close(D.eval()(x), D(x))
    D0 = PaperMLPDiscriminator(dropout=0.0).train()
    torch.testing.assert_close(D0(x), D0(x))


def test_errors():
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        PaperMLPDiscriminator(dropout=1.0)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 32, 32\)"):
        PaperMLPDiscriminator()(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"expected latent of shape \(B, 100\)"):
        PaperMLPGenerator()(torch.randn(2, 64))
    with pytest.raises(ValueError, match="at least one hidden layer"):
        PaperMLPGenerator(hidden_dims=())
