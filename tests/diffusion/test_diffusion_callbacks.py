import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDIMScheduler, DDPMScheduler

from callbacks import ImportanceNoiseSchedule, ImportanceWeightedLoss
from xai_train import CallbackList, NoisePlan, TrainState
from xai_train.diffusion import (
    TimeConditionedDiscriminator,
    add_noise,
    importance_map,
    importance_weights,
    training_target,
)
from xai_train.diffusion.sampler import ImportanceSampler
from xai_train.trainers.losses import discriminator_loss


@pytest.fixture
def setup():
    torch.manual_seed(0)
    scheduler = DDPMScheduler(num_train_timesteps=100)
    discriminator = TimeConditionedDiscriminator(1, channels=(8, 16), time_dim=16, num_train_timesteps=100)
    state = TrainState(Accelerator(cpu=True), models={"discriminator": discriminator})
    clean = torch.rand(4, 1, 8, 8) * 2 - 1
    plan = NoisePlan(noise=torch.randn(4, 1, 8, 8), timesteps=torch.tensor([1, 20, 50, 99]))
    return scheduler, discriminator, state, clean, plan


@pytest.mark.parametrize("map_source", ["x_t", "x0"])
def test_weighted_loss_uses_the_map_of_the_chosen_input(setup, map_source):
    scheduler, discriminator, state, clean, plan = setup
    callback = ImportanceWeightedLoss(scheduler.alphas_cumprod, rule="mean", beta=0.8, map_source=map_source)
    assert callback.on_diffusion_noise(state, clean, plan) is None  # the plan itself is unchanged
    loss_map = torch.rand(4, 1, 8, 8)
    weighted = callback.on_loss(state, loss_map, "denoiser")
    if map_source == "x_t":
        images, t = add_noise(clean, plan.noise, plan.timesteps, scheduler.alphas_cumprod), plan.timesteps
    else:
        images, t = clean, torch.zeros(4, dtype=torch.long)
    expected = loss_map * importance_weights(importance_map(discriminator, images, t), "mean", beta=0.8)
    torch.testing.assert_close(weighted, expected)
    assert callback.on_loss(state, loss_map, "denoiser") is None  # one weight per noised batch


def test_weighted_loss_ignores_other_roles_and_rejects_per_sample_losses(setup):
    scheduler, _, state, clean, plan = setup
    callback = ImportanceWeightedLoss(scheduler.alphas_cumprod, start_step=1)
    callback.on_diffusion_noise(state, clean, plan)
    assert callback.on_loss(state, torch.rand(4, 1, 8, 8), "denoiser") is None  # before start_step
    state.step = 1
    callback.on_diffusion_noise(state, clean, plan)
    assert callback.on_loss(state, torch.rand(4, 1), "discriminator") is None
    with pytest.raises(ValueError, match="per-pixel"):
        callback.on_loss(state, torch.rand(4), "denoiser")
    with pytest.raises(ValueError, match="x_t, x0"):
        ImportanceWeightedLoss(scheduler.alphas_cumprod, map_source="clean")


def test_noise_schedule_pixel_mode_sets_the_noise_scale(setup):
    scheduler, discriminator, state, clean, plan = setup
    callback = ImportanceNoiseSchedule(scheduler.alphas_cumprod, mode="pixel")
    new_plan = callback.on_diffusion_noise(state, clean, plan)
    assert torch.equal(new_plan.noise, plan.noise) and torch.equal(new_plan.timesteps, plan.timesteps)
    importance = importance_map(discriminator, clean, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(new_plan.noise_scale, callback.schedule.scale(importance, plan.timesteps))
    assert float(new_plan.noise_scale.max()) <= 1.0 and float(new_plan.noise_scale[0].min()) < 0.9
    sampler = callback.sampler(discriminator)
    assert isinstance(sampler, ImportanceSampler) and sampler.map_source == "x0_hat"


def test_noise_schedule_warns_on_a_bad_schedule(setup):
    scheduler, _, state, _, _ = setup
    with pytest.warns(UserWarning, match="step variance"):
        ImportanceNoiseSchedule(DDPMScheduler(1000).alphas_cumprod, sharpness=-100.0).on_train_start(state)


def test_curriculum_mode_draws_timesteps_with_importance_weights(setup):
    scheduler, discriminator, state, clean, plan = setup
    callback = ImportanceNoiseSchedule(scheduler.alphas_cumprod, mode="timesteps", num_buckets=4, seed=3)
    for step in range(6):
        state.step = step
        p = callback.curriculum.probabilities()  # the draw uses p before this step's score update
        new_plan = callback.on_diffusion_noise(state, clean, plan)
    assert new_plan.noise_scale is None and torch.equal(new_plan.noise, plan.noise)
    torch.testing.assert_close(new_plan.timestep_weight, (1 / (100 * p[new_plan.timesteps])).float())
    assert bool(callback.curriculum.seen.any())
    assert callback.sampler(discriminator) is None
    # resuming from state_dict reproduces the next draw
    other = ImportanceNoiseSchedule(scheduler.alphas_cumprod, mode="timesteps", num_buckets=4, seed=99)
    other.load_state_dict(callback.state_dict())
    state.step = 7
    a = callback.on_diffusion_noise(state, clean, plan)
    b = other.on_diffusion_noise(state, clean, plan)
    assert torch.equal(a.timesteps, b.timesteps)


def test_missing_discriminator_is_named(setup):
    scheduler, _, _, clean, plan = setup
    state = TrainState(Accelerator(cpu=True), models={"unet": torch.nn.Identity()})
    with pytest.raises(KeyError, match="discriminator"):
        ImportanceNoiseSchedule(scheduler.alphas_cumprod).on_diffusion_noise(state, clean, plan)


@pytest.mark.parametrize("mode", ["pixel", "timesteps"])
def test_hand_written_accelerate_loop(mode, make_unet):
    """A plain diffusers loop plus the marked lines; both callbacks together, then sampling."""
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    scheduler = DDPMScheduler(num_train_timesteps=100)
    unet, discriminator = make_unet(), TimeConditionedDiscriminator(1, channels=(8, 16), num_train_timesteps=100)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    unet, discriminator, opt, opt_d = accelerator.prepare(unet, discriminator, opt, opt_d)
    noise_schedule = ImportanceNoiseSchedule(scheduler.alphas_cumprod, mode=mode, num_buckets=4)
    callbacks = CallbackList(
        [noise_schedule, ImportanceWeightedLoss(scheduler.alphas_cumprod, alpha=0.5)]
    )  # New Code #
    state = TrainState(accelerator, max_steps=3, models={"discriminator": discriminator})  # New Code #
    callbacks.on_train_start(state)  # New Code #
    images = torch.rand(16, 1, 8, 8) * 2 - 1
    for step in range(3):
        clean = images[step * 4 : step * 4 + 4]
        plan = NoisePlan(noise=torch.randn_like(clean), timesteps=torch.randint(0, 100, (4,)))
        plan = callbacks.on_diffusion_noise(state, clean, plan)  # New Code #
        alphas = scheduler.alphas_cumprod
        noisy = add_noise(clean, plan.noise, plan.timesteps, alphas, plan.noise_scale)
        target = training_target(clean, plan.noise, plan.timesteps, alphas, "epsilon", plan.noise_scale)
        loss_map = F.mse_loss(unet(noisy, plan.timesteps).sample, target, reduction="none")
        loss_map = callbacks.on_loss(state, loss_map, "denoiser")  # New Code #
        if plan.timestep_weight is not None:
            loss_map = loss_map * plan.timestep_weight.view(-1, 1, 1, 1)
        accelerator.backward(loss_map.mean())
        opt.step()
        opt.zero_grad()
        fake = add_noise(images[-4:].flip(-1), torch.randn_like(clean), plan.timesteps, alphas)
        real = add_noise(clean, torch.randn_like(clean), plan.timesteps, alphas)
        d_loss = discriminator_loss(discriminator(real, plan.timesteps), discriminator(fake, plan.timesteps)).mean()
        accelerator.backward(d_loss)
        opt_d.step()
        opt_d.zero_grad()
        state.step = step + 1  # New Code #
    assert torch.isfinite(loss_map).all()
    sampler = noise_schedule.sampler(accelerator.unwrap_model(discriminator))
    if sampler is not None:
        samples = sampler(accelerator.unwrap_model(unet), DDIMScheduler(num_train_timesteps=100), 2, 3)
        assert samples.shape == (2, 1, 8, 8) and torch.isfinite(samples).all()
