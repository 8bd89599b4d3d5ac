import math

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDIMScheduler, DDPMScheduler

from callbacks import ImportanceNoiseSchedule, ImportanceWeightedLoss
from xai_train import Callback, CallbackList, NoisePlan, TrainState
from xai_train.config.diffusion import ImportanceNoiseConfig, ImportanceWeightConfig
from xai_train.diffusion import (
    NoiseScaleSchedule,
    TimeConditionedDiscriminator,
    add_noise,
    training_target,
)
from xai_train.diffusion.samplers import ImportanceSampler
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


class QuadraticD(torch.nn.Module):
    """``D(x, t) = c(t)·Σ w⊙x²/2``: its input gradient ``c(t)·w⊙x`` is known in closed form (``c(t) > 0``)."""

    def __init__(self, shape=(1, 8, 8)):
        super().__init__()
        self.w = torch.nn.Parameter(torch.rand(shape, generator=torch.Generator().manual_seed(5)) + 0.1)

    def forward(self, x, t):
        c = 1.0 + t.float().view(-1, 1, 1, 1) / 10
        return (c * self.w * x**2 / 2).flatten(1).sum(1, keepdim=True)


def minmax(a):
    low = a.amin(dim=(1, 2, 3), keepdim=True)
    return (a - low) / (a.amax(dim=(1, 2, 3), keepdim=True) - low)


def hand_noised(clean, noise, t, alphas, scale=1.0):
    a = alphas[t].view(-1, 1, 1, 1)
    return a.sqrt() * clean + (1 - a).sqrt() * scale * noise


def hand_scale(s, t, num_train_timesteps=100, k=20.0, mid=0.5, lam_min=0.25, lam_max=4.0):
    """DESIGN.md §5 b: g_t(s) = 1/((1 − τ)√(1 + s/λ) + τ), τ = sigmoid(k(t/T − t_Φ)), λ geometric."""
    fraction = t.float().view(-1, 1, 1, 1) / num_train_timesteps
    tau = torch.sigmoid(k * (fraction - mid))
    lam = lam_min * (lam_max / lam_min) ** fraction
    return 1 / ((1 - tau) * torch.sqrt(1 + s / lam) + tau)


@pytest.fixture
def quadratic(setup):
    scheduler, _, _, clean, plan = setup
    discriminator = QuadraticD()
    state = TrainState(Accelerator(cpu=True), models={"discriminator": discriminator})
    return scheduler, discriminator, state, clean, plan


def noised(plan, clean, scheduler):
    return plan.replace(noisy=add_noise(clean, plan.noise, plan.timesteps, scheduler.alphas_cumprod, plan.noise_scale))


@pytest.mark.parametrize("map_source", ["x_t", "x0"])
def test_weighted_loss_weight_is_the_mean_rule_of_the_known_saliency(quadratic, map_source):
    scheduler, discriminator, state, clean, plan = quadratic
    callback = ImportanceWeightedLoss(rule="mean", beta=0.8, map_source=map_source, blur_sigma=0.0, start_step=0)
    assert callback.on_diffusion_noise(state, clean, plan) is None  # nothing decided before x_t exists
    new_plan = callback.on_diffusion_noised(state, clean, noised(plan, clean, scheduler))
    images = hand_noised(clean, plan.noise, plan.timesteps, scheduler.alphas_cumprod) if map_source == "x_t" else clean
    saliency = minmax((discriminator.w * images).abs().detach())  # |∂D/∂x| = c(t)·w⊙|x|, c(t) cancels
    expected = 0.2 + 0.8 * saliency / saliency.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(new_plan.loss_weight, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new_plan.loss_weight.mean(dim=(1, 2, 3)), torch.ones(4))  # mean 1 per image
    assert new_plan.noise is plan.noise and new_plan.timesteps is plan.timesteps


def test_weighted_loss_scale_rule_and_start_step(quadratic):
    scheduler, discriminator, state, clean, plan = quadratic
    callback = ImportanceWeightedLoss(rule="scale", alpha=0.5, blur_sigma=0.0, start_step=1)
    plan = noised(plan, clean, scheduler)
    assert callback.on_diffusion_noised(state, clean, plan) is None  # before start_step
    state.step = 1
    weight = callback.on_diffusion_noised(state, clean, plan).loss_weight
    torch.testing.assert_close(weight, 1 + 0.5 * minmax((discriminator.w * plan.noisy).abs().detach()))
    assert callback.on_loss(state, torch.rand(4, 1, 8, 8), "denoiser") is None  # no hidden weight to apply


def test_weights_do_not_depend_on_the_callbacks_order(quadratic):
    """Loss weights multiply; the map of x_t is taken from the x_t built after every noise decision."""
    scheduler, discriminator, state, clean, plan = quadratic

    class Halve(Callback):
        def on_diffusion_noise(self, state, clean, plan):
            return plan.replace(loss_weight=torch.full_like(clean, 0.5))

    def final_plan(callbacks):
        callbacks = CallbackList(callbacks)
        return callbacks.on_diffusion_noised(
            state, clean, noised(callbacks.on_diffusion_noise(state, clean, plan), clean, scheduler)
        )

    noise = ImportanceNoiseSchedule(scheduler.alphas_cumprod, blur_sigma=0.0)
    weight = ImportanceWeightedLoss(rule="scale", alpha=1.0, blur_sigma=0.0, start_step=0)
    a, b = final_plan([noise, weight, Halve()]), final_plan([Halve(), weight, noise])
    torch.testing.assert_close(a.loss_weight, b.loss_weight)
    torch.testing.assert_close(a.noise_scale, b.noise_scale)
    x_t = hand_noised(clean, plan.noise, plan.timesteps, scheduler.alphas_cumprod, a.noise_scale)
    torch.testing.assert_close(a.noisy, x_t)
    torch.testing.assert_close(a.loss_weight, 0.5 * (1 + minmax((discriminator.w * x_t).abs().detach())))


def test_post_noise_hook_may_not_change_the_noising(quadratic):
    scheduler, _, state, clean, plan = quadratic

    class Rescale(Callback):
        def on_diffusion_noised(self, state, clean, plan):
            return plan.replace(noise_scale=torch.ones_like(clean))

    class SetNoisy(Callback):
        def on_diffusion_noise(self, state, clean, plan):
            return plan.replace(noisy=clean)

    with pytest.raises(ValueError, match="Rescale.on_diffusion_noised changed noise_scale"):
        CallbackList([Rescale()]).on_diffusion_noised(state, clean, noised(plan, clean, scheduler))
    with pytest.raises(ValueError, match="needs plan.noisy"):
        CallbackList([]).on_diffusion_noised(state, clean, plan)
    with pytest.raises(ValueError, match="SetNoisy.on_diffusion_noise set `noisy`"):
        CallbackList([SetNoisy()]).on_diffusion_noise(state, clean, plan)


def test_callback_arguments_are_checked_and_defaults_are_the_configs():
    alphas = DDPMScheduler(num_train_timesteps=100).alphas_cumprod
    with pytest.raises(ValueError, match="x_t, x0"):
        ImportanceWeightedLoss(map_source="clean")
    for make in (
        lambda: ImportanceWeightedLoss(map_source="x0_hat"),
        lambda: ImportanceNoiseSchedule(alphas, map_source="x0_hat"),
    ):
        with pytest.raises(ValueError, match="'x0_hat' is now called 'x0'"):
            make()
    with pytest.raises(ValueError, match="ImportanceWeightedLoss: method='foo': unknown explainer"):
        ImportanceWeightedLoss(method="foo")
    with pytest.raises(ValueError, match="ImportanceNoiseSchedule: method='foo': unknown explainer"):
        ImportanceNoiseSchedule(alphas, method="foo")
    with pytest.raises(ValueError, match=r"alpha=-2.0: must be > -1"):
        ImportanceWeightedLoss(rule="scale", alpha=-2.0)
    # the same ranges as the config sections (one source of truth), NaN included
    for make, pattern in (
        (lambda: ImportanceWeightedLoss(alpha=math.nan), "alpha=nan"),
        (lambda: ImportanceNoiseSchedule(alphas, sharpness=math.nan), "sharpness=nan: must be a finite number"),
        (lambda: ImportanceNoiseSchedule(alphas, midpoint=5.0), r"midpoint=5.0: must be in \[0, 1\]"),
        (
            lambda: ImportanceNoiseSchedule(alphas, lambda_min=2.0, lambda_max=1.0),
            "lambda_max=1.0: must be >= lambda_min",
        ),
        (lambda: ImportanceNoiseSchedule(alphas * 2), r"alphas_cumprod must lie in \(0, 1\]"),
    ):
        with pytest.raises(ValueError, match=pattern):
            make()
    with pytest.raises(TypeError, match="alphas_cumprod must be the noise scheduler's 1-D tensor"):
        ImportanceNoiseSchedule(0.3)  # a value meant for another option
    with pytest.raises(TypeError):
        ImportanceWeightedLoss(alphas)  # every option is keyword-only
    weight, noise = ImportanceWeightedLoss(), ImportanceNoiseSchedule(alphas)
    config_weight, config_noise = ImportanceWeightConfig(), ImportanceNoiseConfig()
    for name in ("rule", "alpha", "beta", "map_source", "method", "blur_sigma", "start_step"):
        assert getattr(weight, name) == getattr(config_weight, name), name
    for name in ("mode", "map_source", "method", "blur_sigma", "update_every"):
        assert getattr(noise, name) == getattr(config_noise, name), name
    schedule = noise.schedule
    assert (schedule.sharpness, schedule.midpoint, schedule.lambda_min, schedule.lambda_max) == (
        config_noise.sharpness,
        config_noise.midpoint,
        config_noise.lambda_min,
        config_noise.lambda_max,
    )


def test_noise_schedule_pixel_mode_sets_the_design_noise_scale(quadratic):
    scheduler, discriminator, state, clean, plan = quadratic
    callback = ImportanceNoiseSchedule(scheduler.alphas_cumprod, mode="pixel", blur_sigma=0.0)
    new_plan = callback.on_diffusion_noise(state, clean, plan)
    assert torch.equal(new_plan.noise, plan.noise) and torch.equal(new_plan.timesteps, plan.timesteps)
    importance = minmax((discriminator.w * clean).abs().detach())  # S(x0) at t = 0
    torch.testing.assert_close(new_plan.noise_scale, hand_scale(importance, plan.timesteps))
    assert float(new_plan.noise_scale.max()) <= 1.0 and float(new_plan.noise_scale[0].min()) < 0.9
    sampler = callback.sampler(discriminator)
    assert isinstance(sampler, ImportanceSampler) and sampler.map_source == "x0"


def test_noise_schedule_warns_on_a_bad_schedule(setup):
    scheduler, _, state, _, _ = setup
    callback = ImportanceNoiseSchedule(DDPMScheduler(1000).alphas_cumprod)
    callback.schedule = NoiseScaleSchedule(1000, -100.0, 0.5, 0.25, 4.0)  # a decreasing schedule (no option builds it)
    with pytest.warns(UserWarning, match="step variance"):
        callback.on_train_start(state)


def test_curriculum_mode_draws_timesteps_with_importance_weights(setup):
    scheduler, discriminator, state, clean, plan = setup
    callback = ImportanceNoiseSchedule(scheduler.alphas_cumprod, mode="timesteps", num_buckets=4, seed=3)
    for step in range(6):
        state.step = step
        p = callback.curriculum.probabilities()  # the draw uses p before this step's score update
        new_plan = callback.on_diffusion_noise(state, clean, plan)
        assert callback.on_diffusion_noised(state, clean, noised(new_plan, clean, scheduler)) is None  # scores
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
    weighted_loss = ImportanceWeightedLoss(rule="scale", alpha=0.5, start_step=0)
    callbacks = CallbackList([noise_schedule, weighted_loss])  # New Code #
    state = TrainState(accelerator, max_steps=3, models={"discriminator": discriminator})  # New Code #
    callbacks.on_train_start(state)  # New Code #
    images = torch.rand(16, 1, 8, 8) * 2 - 1
    for step in range(3):
        clean = images[step * 4 : step * 4 + 4]
        plan = NoisePlan(noise=torch.randn_like(clean), timesteps=torch.randint(0, 100, (4,)))
        plan = callbacks.on_diffusion_noise(state, clean, plan)  # New Code #
        alphas = scheduler.alphas_cumprod
        noisy = add_noise(clean, plan.noise, plan.timesteps, alphas, plan.noise_scale)
        plan = callbacks.on_diffusion_noised(state, clean, plan.replace(noisy=noisy))  # New Code #
        target = training_target(clean, plan.noise, plan.timesteps, alphas, "epsilon", plan.noise_scale)
        raw = F.mse_loss(unet(noisy, plan.timesteps).sample, target, reduction="none")
        loss_map = callbacks.on_loss(state, plan.weigh(raw), "denoiser")  # New Code #
        # the weight is 1 + 0.5·M with M in [0, 1] (max 1 per image), times the curriculum's correction
        ratio = (loss_map / raw).detach() / (
            1 if plan.timestep_weight is None else plan.timestep_weight.view(-1, 1, 1, 1)
        )
        torch.testing.assert_close(ratio.amax(dim=(1, 2, 3)), torch.full((4,), 1.5))
        assert float(ratio.min()) >= 1.0 - 1e-6
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


@pytest.mark.parametrize("section", ["importance_noise", "importance_weight"])
def test_config_names_the_new_map_source(section):
    from xai_train.config import ConfigError, load_config
    from xai_train.config.diffusion import DiffusionExperiment

    with pytest.raises(ConfigError, match=rf"^{section}\.map_source='x0_hat' is now called 'x0'"):
        load_config(DiffusionExperiment, None, [f"{section}.map_source=x0_hat"])
    with pytest.raises(ConfigError, match=rf"^{section}\.map_source='clean': choose one of"):
        load_config(DiffusionExperiment, None, [f"{section}.map_source=clean"])
