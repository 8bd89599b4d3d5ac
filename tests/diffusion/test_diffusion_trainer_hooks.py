"""The diffusion trainer's side of the noise hooks: x_t is built once from the final plan and handed to the
callbacks; the plan's loss weight and target choice are what the loss uses."""

import pytest
import torch

import xai_train.trainers.diffusion as diffusion_trainer
from xai_train import Callback
from xai_train.config.diffusion import DiffusionTrainConfig
from xai_train.diffusion.models import build_noise_scheduler, build_unet
from xai_train.trainers.diffusion import DiffusionTrainer


def make_trainer(callbacks, **overrides):
    torch.manual_seed(0)
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    settings = dict(batch_size=4, max_steps=2, lr_warmup_steps=0, sample_every=0, checkpoint_every=0, use_ema=False)
    config = DiffusionTrainConfig(**{**settings, **overrides})
    return DiffusionTrainer(
        build_unet(8, 1, (16, 32)), build_noise_scheduler(100), images, config, callbacks=callbacks, cpu=True
    )


class Spy(Callback):
    """Amplifies the noise (×2) before noising, sets a loss weight after, and records what it saw."""

    def __init__(self, scaled_target: bool = True):
        self.scaled_target = scaled_target
        self.seen = []

    def on_diffusion_noise(self, state, clean, plan):
        assert plan.noisy is None
        return plan.replace(noise_scale=torch.full_like(clean, 2.0), scaled_target=self.scaled_target)

    def on_diffusion_noised(self, state, clean, plan):
        weight = torch.linspace(0, 2, clean[0].numel()).reshape(clean[0].shape).expand_as(clean)
        self.seen.append((clean, plan))
        return plan.replace(loss_weight=weight)


def record_unet(trainer):
    calls = []
    hook = trainer.unet.register_forward_hook(lambda module, args, output: calls.append((args[0], output.sample)))
    return calls, hook


def test_x_t_is_built_once_and_is_the_unets_input(monkeypatch):
    spy = Spy()
    trainer = make_trainer([spy], grad_accum_steps=2)
    built, add_noise = [], diffusion_trainer.add_noise

    def counting_add_noise(*args, **kwargs):
        built.append(1)
        return add_noise(*args, **kwargs)

    monkeypatch.setattr(diffusion_trainer, "add_noise", counting_add_noise)
    calls, _ = record_unet(trainer)
    trainer.train_step()
    assert len(built) == 2 and len(spy.seen) == 2 and len(calls) == 2  # one x_t per micro-batch
    for (clean, plan), (unet_input, _) in zip(spy.seen, calls, strict=True):
        assert plan.noisy is unet_input
        alpha_bar = trainer.noise_scheduler.alphas_cumprod[plan.timesteps].view(-1, 1, 1, 1)
        expected = alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * 2.0 * plan.noise
        torch.testing.assert_close(plan.noisy, expected)


@pytest.mark.parametrize("scaled_target", [True, False])
def test_the_loss_uses_the_plans_weight_and_target(scaled_target):
    """ε-prediction, no SNR weighting: loss = mean(w·(ε̂ − target)²), target 2ε (scaled) or ε (not)."""
    spy = Spy(scaled_target)
    trainer = make_trainer([spy])
    calls, _ = record_unet(trainer)
    stats = trainer.train_step()
    (_, plan), (_, output) = spy.seen[0], calls[0]
    weight = torch.linspace(0, 2, 64).reshape(1, 8, 8)
    target = plan.noise * (2.0 if scaled_target else 1.0)
    expected = (weight * (output.detach() - target) ** 2).mean()
    torch.testing.assert_close(stats["loss"], expected)
