import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler

from xai_train.diffusion.importance_schedule import NoiseScaleSchedule
from xai_train.diffusion.sampler import ddim_sample, importance_ddim_sample, importance_step, scheduler_alphas


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("clip_sample", [False, True])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_constant_map_step_equals_ddim_step(prediction_type, clip_sample, eta):
    scheduler = DDIMScheduler(num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=clip_sample)
    scheduler.set_timesteps(50)
    generator = torch.Generator().manual_seed(0)
    for t in scheduler.timesteps[[0, 10, 25, 48, 49]]:
        sample = torch.randn(3, 2, 8, 8, generator=generator)
        output = torch.randn(3, 2, 8, 8, generator=generator)
        z = torch.randn(3, 2, 8, 8, generator=generator)
        expected = scheduler.step(output, t, sample, eta=eta, variance_noise=z if eta else None)
        alpha_bar_t, alpha_bar_r, _ = scheduler_alphas(scheduler, int(t))
        ones = torch.ones(3, 1, 8, 8)
        clip = scheduler.config.clip_sample_range if clip_sample else None
        prev, x0_hat = importance_step(
            output, sample, alpha_bar_t, alpha_bar_r, ones, ones, prediction_type, eta, z, clip
        )
        torch.testing.assert_close(prev, expected.prev_sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x0_hat, expected.pred_original_sample, rtol=1e-5, atol=1e-5)


def test_per_pixel_step_is_exact_on_the_per_pixel_forward_process():
    """With a perfect x̂0 the deterministic step lands on a_r·x0 + σ_r·g_r·ε (the same ε)."""
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    scheduler.set_timesteps(20)
    clean, eps = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    g_t, g_r = 0.5 + 0.5 * torch.rand(2, 1, 8, 8), 0.5 + 0.5 * torch.rand(2, 1, 8, 8)
    t = int(scheduler.timesteps[5])
    alpha_bar_t, alpha_bar_r, _ = scheduler_alphas(scheduler, t)
    x_t = alpha_bar_t.sqrt() * clean + (1 - alpha_bar_t).sqrt() * g_t * eps
    prev, _ = importance_step(clean, x_t, alpha_bar_t, alpha_bar_r, g_t, g_r, "sample")
    expected = alpha_bar_r.sqrt() * clean + (1 - alpha_bar_r).sqrt() * g_r * eps
    torch.testing.assert_close(prev, expected, rtol=1e-5, atol=1e-5)


def test_ddim_sample_matches_diffusers_pipeline(unet):
    scheduler = DDIMScheduler(num_train_timesteps=100)
    ours = ddim_sample(unet, scheduler, 2, num_inference_steps=5, generator=torch.Generator().manual_seed(3))
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(2, generator=torch.Generator().manual_seed(3), num_inference_steps=5, output_type="np").images
    torch.testing.assert_close(((ours / 2 + 0.5).clamp(0, 1)).permute(0, 2, 3, 1), torch.from_numpy(theirs))


def test_importance_sampler_with_zero_map_equals_plain_ddim(unet):
    scheduler = DDIMScheduler(num_train_timesteps=100)
    plain = ddim_sample(unet, scheduler, 2, num_inference_steps=4, generator=torch.Generator().manual_seed(1))
    out = importance_ddim_sample(
        unet,
        scheduler,
        lambda x, t: torch.zeros_like(x[:, :1]),
        NoiseScaleSchedule(100),
        2,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(out.images, plain, rtol=1e-5, atol=1e-5)
    assert out.clamped_fraction == 0.0


@pytest.mark.parametrize("map_source", ["x0", "x_t"])
def test_importance_sampler_recomputes_the_map_every_step(unet, map_source):
    calls = []

    def importance_fn(images, timesteps):
        calls.append(int(timesteps[0]))
        assert torch.is_grad_enabled()  # gradient explainers need it inside a no_grad sampler
        return images[:, :1].abs().clamp(0, 1)

    scheduler = DDIMScheduler(num_train_timesteps=100)
    out = importance_ddim_sample(
        unet, scheduler, importance_fn, NoiseScaleSchedule(100), 2, num_inference_steps=4, map_source=map_source
    )
    assert len(calls) == 4
    assert calls == ([0] * 4 if map_source == "x0" else scheduler.timesteps.tolist())
    assert out.images.shape == (2, 1, 8, 8) and torch.isfinite(out.images).all()
    assert float(out.noise_scale.max()) <= 1.0


def test_importance_sampler_with_a_changing_map_equals_a_hand_written_loop(unet):
    """The map of x̂0 changes at every step; each step must use g_t and g_r of the map of that step."""
    steps, size = 4, (2, 1, 8, 8)
    scheduler = DDIMScheduler(num_train_timesteps=100, clip_sample=False)
    maps = []

    def importance_fn(images, timesteps):
        maps.append(torch.sigmoid(3 * images[:, :1]))
        return maps[-1]

    out = importance_ddim_sample(
        unet, scheduler, importance_fn, NoiseScaleSchedule(100), 2, steps, torch.Generator().manual_seed(0)
    )
    assert len(maps) == steps and all(float((a - b).abs().max()) > 1e-3 for a, b in zip(maps, maps[1:], strict=False))
    assert out.clamped_fraction == 0.0  # so the loop below needs no clamping

    def g(s, t):  # DESIGN.md §5 b with the schedule's defaults: k = 20, t_Φ = 0.5, λ from 0.25 to 4
        tau = torch.sigmoid(torch.tensor(20 * (t / 100 - 0.5)))
        lam = 0.25 * 16 ** (t / 100)
        return 1 / ((1 - tau) * torch.sqrt(1 + s / lam) + tau)

    alpha_bar = scheduler.alphas_cumprod
    x = torch.randn(size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in (75, 50, 25, 0):  # DDIM's 4 of 100 steps
            r = t - 25
            a_t, a_r = alpha_bar[t], (alpha_bar[r] if r >= 0 else torch.tensor(1.0))
            eps_hat = unet(x, torch.full((2,), t)).sample
            x0_hat = (x - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()
            s = torch.sigmoid(3 * x0_hat.clamp(-1, 1))
            x = a_r.sqrt() * x0_hat + (1 - a_r).sqrt() * g(s, max(r, 0)) * eps_hat / g(s, t)
    torch.testing.assert_close(out.images, x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.importance, maps[-1])
