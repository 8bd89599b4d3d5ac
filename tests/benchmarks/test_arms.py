"""Benchmark arms differ only in their callbacks: same initial weights, same batches, same recipe."""

from __future__ import annotations

import torch

from callbacks import XAIGradientMask
from xai_train.benchmarks import make_gan_arm, one_step
from xai_train.config.gan import GANTrainConfig

IMAGES = torch.rand(32, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
TRAIN = GANTrainConfig(batch_size=8, betas=(0.5, 0.99), real_label=0.9, fake_label=0.1, clip_grad_norm_g=10.0)
OPTIONS = {"g_width": 8, "d_width": 8}


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_arms_start_equal_and_keep_the_recipe():
    vanilla = make_gan_arm("dcgan", IMAGES, TRAIN, model_options=OPTIONS, cpu=True)
    masked = make_gan_arm(
        "dcgan", IMAGES, TRAIN, callbacks=[XAIGradientMask("saliency")], model_options=OPTIONS, cpu=True
    )
    assert torch.equal(flat(vanilla.generator), flat(masked.generator))
    assert torch.equal(flat(vanilla.discriminator), flat(masked.discriminator))
    for arm in (vanilla, masked):
        c = arm.config
        assert (c.betas, c.real_label, c.fake_label, c.clip_grad_norm_g) == ((0.5, 0.99), 0.9, 0.1, 10.0)
        assert (c.sample_every, c.checkpoint_every) == (0, 0)


def test_after_one_step_only_the_generator_differs():
    """D updates first on the same fakes and batch; the mask only rescales G's gradient."""
    vanilla = make_gan_arm("dcgan", IMAGES, TRAIN, model_options=OPTIONS, cpu=True)
    twin = make_gan_arm("dcgan", IMAGES, TRAIN, model_options=OPTIONS, cpu=True)
    masked = make_gan_arm(
        "dcgan", IMAGES, TRAIN, callbacks=[XAIGradientMask("saliency")], model_options=OPTIONS, cpu=True
    )
    for arm in (vanilla, twin, masked):
        one_step(arm)()
        assert arm.state.step == 1
    assert torch.equal(flat(vanilla.generator), flat(twin.generator))  # deterministic
    assert torch.allclose(flat(vanilla.discriminator), flat(masked.discriminator))
    assert not torch.allclose(flat(vanilla.generator), flat(masked.generator))
