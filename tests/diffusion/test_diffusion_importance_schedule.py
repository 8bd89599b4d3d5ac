import pytest
import torch
from diffusers import DDPMScheduler

from xai_train.diffusion.importance_schedule import (
    NoiseScaleSchedule,
    check_step_variance,
    clamp_next_scale,
    inference_pairs,
    step_variance,
)


def test_scale_formula_and_limits():
    schedule = NoiseScaleSchedule(num_train_timesteps=1000, sharpness=20, midpoint=0.5)
    s = torch.tensor([0.0, 0.5, 1.0])
    t = torch.tensor([0, 0, 0])
    tau, lam = schedule.tau(t), schedule.lam(t)
    expected = 1 / ((1 - tau) * torch.sqrt(1 + s / lam) + tau)
    assert torch.allclose(schedule.scale(s, t), expected)
    assert torch.allclose(schedule.scale(s, torch.zeros(3)), expected)
    # unimportant pixels keep the full noise; at high t every pixel does (sampling starts from N(0, I))
    assert schedule.scale(torch.zeros(1), torch.tensor([100])).item() == pytest.approx(1.0)
    assert schedule.scale(torch.ones(1), torch.tensor([999])).item() == pytest.approx(1.0, abs=1e-3)
    # important pixels get less noise in the low-noise half
    assert schedule.scale(torch.ones(1), torch.tensor([100])).item() < 0.6
    assert float(schedule.tau(torch.tensor([500]))) == pytest.approx(0.5)


def test_scale_is_monotone_in_t_and_importance():
    schedule = NoiseScaleSchedule(num_train_timesteps=1000)
    s = torch.linspace(0, 1, 11).view(1, -1)
    t = torch.arange(1000).view(-1, 1)
    g = schedule.scale(s.expand(1000, -1), t.expand(-1, 11))
    assert bool((g[1:] >= g[:-1] - 1e-7).all())
    assert bool((g[:, 1:] <= g[:, :-1] + 1e-7).all())


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2", "scaled_linear"])
@pytest.mark.parametrize("num_train_timesteps", [100, 1000])
def test_shipped_schedule_keeps_every_step_variance_positive(beta_schedule, num_train_timesteps):
    alphas = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule).alphas_cumprod
    schedule = NoiseScaleSchedule(num_train_timesteps)
    report = check_step_variance(schedule, alphas)
    assert report.ok and report.min_variance > 0
    for steps in (10, 25, 50):
        assert check_step_variance(schedule, alphas, inference_pairs(num_train_timesteps, steps)).ok


def test_decreasing_schedule_is_reported_and_warned():
    alphas = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    bad = NoiseScaleSchedule(1000, sharpness=-100.0)  # τ falls fast with t: g shrinks as noise grows
    with pytest.warns(UserWarning, match="step variance"):
        report = check_step_variance(bad, alphas)
    assert not report.ok


def test_increasing_lambda_is_required():
    with pytest.raises(ValueError, match="lambda_min <= lambda_max"):
        NoiseScaleSchedule(1000, lambda_min=2.0, lambda_max=1.0)


def test_clamp_next_scale_restores_positive_variance():
    alphas = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    g_t = torch.full((4,), 0.4)
    g_r = torch.tensor([0.3, 0.4, 0.9, 1.0])
    a_t, a_r = alphas[500], alphas[480]
    assert bool((step_variance(g_t, g_r, a_t, a_r)[2:] < 0).all())
    new_r, clamped = clamp_next_scale(g_t, g_r, a_t, a_r)
    assert clamped.tolist() == [False, False, True, True]
    assert torch.equal(new_r[:2], g_r[:2])
    assert bool((step_variance(g_t, new_r, a_t, a_r) > 0).all())


def test_inference_pairs_match_ddim_spacing():
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(50)
    pairs = inference_pairs(1000, 50)
    assert [t for t, _ in pairs] == scheduler.timesteps.tolist()[:-1]
