"""The GAN trainer trains G against ``train.generator_label``; the xAI-GAN paper configs set the reference's 0.9."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from xai_train.config import ConfigError, load_config
from xai_train.config.gan import GANExperiment, GANTrainConfig
from xai_train.models import build_gan
from xai_train.trainers import GANTrainer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["xaigan_paper_digits", "xaigan_paper_mnist"])
def test_paper_configs_use_the_reference_codes_labels(name):
    train = load_config(GANExperiment, REPO / "configs" / "gan" / f"{name}.yaml", []).train
    assert (train.real_label, train.fake_label, train.generator_label) == (0.9, 0.1, 0.9)
    assert (train.loss, train.betas, train.clip_grad_norm_g, train.batch_size) == ("bce", (0.5, 0.99), 10.0, 128)


def test_generator_label_reaches_the_generator_loss():
    torch.manual_seed(0)
    generator, discriminator = build_gan("dcgan", image_size=32, channels=1, latent_dim=8, g_width=8, d_width=8)
    images = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    config = GANTrainConfig(batch_size=8, max_steps=1, generator_label=0.9, sample_every=0, checkpoint_every=0)
    trainer = GANTrainer(generator, discriminator, images, config, cpu=True)
    outputs = []
    trainer.discriminator.register_forward_hook(lambda module, args, output: outputs.append(output.detach()))
    stats = trainer.train_step()
    d_fake = outputs[-1]  # the G step's D(fake) (D's parameters are frozen there, not its forward)
    expected = F.binary_cross_entropy_with_logits(d_fake, torch.full_like(d_fake, 0.9))
    torch.testing.assert_close(stats["g_loss"], expected)
    assert abs(float(expected - F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake)))) > 1e-3


def test_generator_label_other_than_one_needs_bce():
    with pytest.raises(ConfigError, match="generator_label=0.9: only loss=bce"):
        GANTrainConfig(loss="hinge", generator_label=0.9)
