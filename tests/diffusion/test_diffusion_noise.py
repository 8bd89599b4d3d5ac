import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.training_utils import compute_snr

from xai_train.diffusion.noise import add_noise, snr_loss_weight, split_prediction, training_target


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_constant_map_equals_diffusers_add_noise(schedule):
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=schedule)
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(6, 3, 8, 8, generator=generator)
    noise = torch.randn(6, 3, 8, 8, generator=generator)
    timesteps = torch.tensor([0, 1, 250, 500, 998, 999])
    expected = scheduler.add_noise(clean, noise, timesteps)
    assert torch.equal(add_noise(clean, noise, timesteps, scheduler.alphas_cumprod), expected)
    ones = torch.ones(6, 1, 8, 8)
    assert torch.equal(add_noise(clean, noise, timesteps, scheduler.alphas_cumprod, ones), expected)


def test_per_pixel_timesteps_gather_alpha_per_pixel():
    alphas = DDPMScheduler(num_train_timesteps=100).alphas_cumprod
    clean, noise = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    per_pixel = torch.randint(0, 100, (2, 1, 4, 4))
    noisy = add_noise(clean, noise, per_pixel, alphas)
    i, j = 1, 3
    t = per_pixel[1, 0, i, j]
    expected = alphas[t].sqrt() * clean[1, 0, i, j] + (1 - alphas[t]).sqrt() * noise[1, 0, i, j]
    assert torch.allclose(noisy[1, 0, i, j], expected)


def test_noise_scale_multiplies_only_the_noise():
    alphas = DDPMScheduler(num_train_timesteps=100).alphas_cumprod
    clean, noise, t = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.tensor([10, 90])
    scale = torch.rand(2, 1, 4, 4)
    a, s = alphas[t].sqrt().view(-1, 1, 1, 1), (1 - alphas[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(add_noise(clean, noise, t, alphas, scale), a * clean + s * scale * noise)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_target_round_trips_through_split_prediction(prediction_type):
    scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type)
    alphas = scheduler.alphas_cumprod
    clean, noise, t = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), torch.tensor([0, 40, 99])
    scale = 0.2 + torch.rand(3, 1, 4, 4)
    noisy = add_noise(clean, noise, t, alphas, scale)
    target = training_target(clean, noise, t, alphas, prediction_type, scale)
    x0_hat, noise_hat = split_prediction(target, noisy, t, alphas, prediction_type)
    assert torch.allclose(x0_hat, clean, atol=1e-4)
    assert torch.allclose(noise_hat, scale * noise, atol=1e-3)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_split_prediction_matches_ddim_pred_original_sample(prediction_type):
    scheduler = DDIMScheduler(num_train_timesteps=100, prediction_type=prediction_type, clip_sample=False)
    scheduler.set_timesteps(10)
    sample, output = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    t = int(scheduler.timesteps[3])
    expected = scheduler.step(output, t, sample).pred_original_sample
    x0_hat, _ = split_prediction(output, sample, torch.tensor([t, t]), scheduler.alphas_cumprod, prediction_type)
    assert torch.allclose(x0_hat, expected, atol=1e-6)


def test_velocity_target_matches_diffusers():
    scheduler = DDPMScheduler(num_train_timesteps=100)
    clean, noise, t = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.tensor([5, 77])
    v = training_target(clean, noise, t, scheduler.alphas_cumprod, "v_prediction")
    assert torch.allclose(v, scheduler.get_velocity(clean, noise, t), atol=1e-6)


def test_unknown_prediction_type_names_the_choices():
    with pytest.raises(ValueError, match="epsilon, v_prediction, sample"):
        training_target(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.tensor([0]), torch.ones(3), "eps")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_snr_weighting_puts_every_prediction_type_in_epsilon_units(prediction_type):
    """weight · (output − target)² = (ε̂ − ε)² per pixel, for any wrong output (the identity "snr" promises)."""
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    generator = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(4, 1, 4, 4, generator=generator), torch.randn(4, 1, 4, 4, generator=generator)
    output = torch.randn(4, 1, 4, 4, generator=generator)
    t = torch.tensor([20, 100, 500, 990])  # (at t < 20 float32 loses digits in (x_t − a·x̂0)/σ)
    alphas = scheduler.alphas_cumprod
    x_t = add_noise(clean, noise, t, alphas)
    target = training_target(clean, noise, t, alphas, prediction_type)
    _, noise_hat = split_prediction(output, x_t, t, alphas, prediction_type)
    weight = snr_loss_weight(compute_snr(scheduler, t), prediction_type, "snr").view(-1, 1, 1, 1)
    torch.testing.assert_close(weight * (output - target) ** 2, (noise_hat - noise) ** 2, rtol=1e-3, atol=1e-5)


def test_min_snr_and_none_weights_by_hand():
    snr = torch.tensor([0.5, 1.0, 10.0])
    gamma = 5.0
    expected = {  # Min-SNR-γ in ε units: min(snr, γ)/snr · (ε-unit factor of the prediction type)
        "epsilon": [1.0, 1.0, 0.5],
        "sample": [0.5, 1.0, 5.0],  # min(snr, γ)
        "v_prediction": [0.5 / 1.5, 1.0 / 2.0, 5.0 / 11.0],  # min(snr, γ)/(snr + 1)
    }
    for prediction_type, values in expected.items():
        got = snr_loss_weight(snr, prediction_type, "min_snr", gamma)
        torch.testing.assert_close(got, torch.tensor(values))
        assert torch.equal(snr_loss_weight(snr, prediction_type, "none"), torch.ones(3))
    with pytest.raises(ValueError, match="unknown loss weighting 'p2'; choose one of: none, snr, min_snr"):
        snr_loss_weight(snr, "epsilon", "p2")
