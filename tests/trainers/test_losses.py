import pytest
import torch
import torch.nn.functional as F

from xai_train.trainers.losses import discriminator_loss, generator_loss


def test_bce_matches_torch_with_label_smoothing():
    d_real, d_fake = torch.randn(6, 1), torch.randn(6, 1)
    expected = F.binary_cross_entropy_with_logits(
        d_real, torch.full_like(d_real, 0.9), reduction="none"
    ) + F.binary_cross_entropy_with_logits(d_fake, torch.full_like(d_fake, 0.1), reduction="none")
    got = discriminator_loss(d_real, d_fake, "bce", real_label=0.9, fake_label=0.1)
    torch.testing.assert_close(got, expected.squeeze(1))


def test_non_saturating_generator_loss():
    d_fake = torch.randn(5, 1)
    expected = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake), reduction="none")
    torch.testing.assert_close(generator_loss(d_fake, "bce"), expected.squeeze(1))


def test_hinge_and_lsgan_values():
    d_real, d_fake = torch.tensor([[2.0], [0.5]]), torch.tensor([[-2.0], [0.5]])
    assert torch.equal(discriminator_loss(d_real, d_fake, "hinge"), torch.tensor([0.0, 2.0]))
    assert torch.equal(generator_loss(d_fake, "hinge"), torch.tensor([2.0, -0.5]))
    torch.testing.assert_close(discriminator_loss(d_real, d_fake, "lsgan"), torch.tensor([2.5, 0.25]))
    torch.testing.assert_close(generator_loss(d_fake, "lsgan"), torch.tensor([4.5, 0.125]))


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown GAN loss 'wgan'; choose one of: bce, hinge, lsgan"):
        generator_loss(torch.zeros(1, 1), "wgan")


def test_generator_target_is_the_reference_codes_bce_against_its_real_label():
    """The xAI-GAN code: ``BCELoss()(sigmoid(D(fake)), full(0.9))`` for G (its ``real_label``)."""
    d_fake = torch.randn(7, 1, generator=torch.Generator().manual_seed(0)) * 3
    reference = torch.nn.BCELoss(reduction="none")(torch.sigmoid(d_fake), torch.full_like(d_fake, 0.9))
    torch.testing.assert_close(generator_loss(d_fake, "bce", target=0.9), reference.squeeze(1), atol=1e-5, rtol=1e-5)
    # the gradient vanishes at D(fake) = 0.9, not at 1: G is no longer pushed past the smoothed label
    at_target = torch.logit(torch.tensor([[0.9]])).requires_grad_(True)
    generator_loss(at_target, "bce", target=0.9).sum().backward()
    assert abs(float(at_target.grad)) < 1e-6
    with pytest.raises(ValueError, match="target=0.9 needs loss='bce'"):
        generator_loss(d_fake, "hinge", target=0.9)
