import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from diffusers import DDPMScheduler

from xai_train.diffusion.discriminator import TimeConditionedDiscriminator
from xai_train.diffusion.importance import (
    TimestepBound,
    attribution_magnitude,
    attribution_map,
    importance_map,
    importance_weights,
    input_saliency,
)
from xai_train.diffusion.noise import add_noise, training_target


@pytest.fixture
def discriminator():
    torch.manual_seed(0)
    return TimeConditionedDiscriminator(in_channels=3, channels=(8, 16), time_dim=16)


def test_saliency_equals_captum_saliency_per_sample(discriminator):
    x, t = torch.randn(4, 3, 8, 8, requires_grad=True), torch.tensor([0, 10, 500, 999])
    ours = input_saliency(discriminator, x, t).abs()
    theirs = Saliency(TimestepBound(discriminator, t)).attribute(x, abs=True)
    torch.testing.assert_close(ours, theirs)
    # per-sample: one image's saliency does not depend on the rest of the batch (no BatchNorm)
    alone = input_saliency(discriminator, x[1:2], t[1:2]).abs()
    torch.testing.assert_close(ours[1:2], alone, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in discriminator.parameters())


def test_timestep_bound_tiles_t_for_path_methods(discriminator):
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 700])
    ig = IntegratedGradients(TimestepBound(discriminator, t)).attribute(x, n_steps=32)
    # IG stacks 32 copies of the batch; each row must still see its own t
    alone = IntegratedGradients(TimestepBound(discriminator, t[1:])).attribute(x[1:], n_steps=32)
    torch.testing.assert_close(ig[1:], alone, rtol=1e-4, atol=1e-6)
    other_t = IntegratedGradients(TimestepBound(discriminator, t[:1])).attribute(x[1:], n_steps=32)
    assert not torch.allclose(ig[1:], other_t, rtol=1e-3)


def test_importance_map_is_reduced_blurred_and_normalised(discriminator):
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([1, 2, 3])
    s = importance_map(discriminator, x, t)
    raw = input_saliency(discriminator, x, t).abs().amax(dim=1, keepdim=True)
    low, high = raw.amin(dim=(1, 2, 3), keepdim=True), raw.amax(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(s, (raw - low) / (high - low))
    torch.testing.assert_close(attribution_magnitude(input_saliency(discriminator, x, t)), raw.mean(dim=(1, 2, 3)))
    blurred = importance_map(discriminator, x, t, blur_sigma=1.0)
    assert blurred.shape == (3, 1, 8, 8)
    assert torch.allclose(blurred.amax(dim=(1, 2, 3)), torch.ones(3))

    def roughness(m):
        return float((m[..., 1:, :] - m[..., :-1, :]).abs().mean() + (m[..., 1:] - m[..., :-1]).abs().mean())

    assert roughness(blurred) < 0.7 * roughness(s)


def test_weight_rules():
    s = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(importance_weights(s, "scale", alpha=0.2), 1 + 0.2 * s)
    w = importance_weights(s * 7, "mean", beta=0.7)
    torch.testing.assert_close(w.mean(dim=(1, 2, 3)), torch.ones(4))
    assert bool((w > 0).all())
    assert torch.equal(importance_weights(torch.zeros(1, 1, 2, 2), "mean"), torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="scale, mean"):
        importance_weights(s, "sclae")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_weighted_loss_gradient_equals_masked_output_gradient(unet, prediction_type):
    scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type)
    clean, noise = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    t = torch.tensor([10, 80])
    x_t = add_noise(clean, noise, t, scheduler.alphas_cumprod)
    target = training_target(clean, noise, t, scheduler.alphas_cumprod, prediction_type)
    weight = importance_weights(torch.rand(2, 1, 8, 8), "scale", alpha=0.5)

    def grads(weighted: bool):
        unet.zero_grad()
        pred = unet(x_t, t).sample
        if not weighted:
            pred.register_hook(lambda g: g * weight)
        loss_map = (pred - target) ** 2
        (loss_map * weight if weighted else loss_map).mean().backward()
        return [p.grad.clone() for p in unet.parameters()]

    for by_loss, by_hook in zip(grads(True), grads(False), strict=True):
        torch.testing.assert_close(by_loss, by_hook, rtol=1e-5, atol=1e-7)


def _weighted_linear_fit(x_t: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per output pixel, the weighted least-squares affine denoiser ``ε̂_i = C_i·x_t + b_i``: (P, P + 1)."""
    features = torch.cat([x_t, torch.ones_like(x_t[:, :1])], dim=1)
    rows = []
    for i in range(target.shape[1]):
        root = weight[:, i : i + 1].sqrt()
        rows.append(torch.linalg.lstsq(features * root, target[:, i : i + 1] * root).solution.squeeze(1))
    return torch.stack(rows)


def test_mask_from_x_t_keeps_the_optimum_and_mask_from_x0_moves_it():
    """Two-pixel Gaussian data, linear denoiser (well specified: E[ε | x_t] is affine in x_t)."""
    generator = torch.Generator().manual_seed(0)
    n, alpha_bar = 400_000, 0.5
    a, sigma = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
    mean = torch.tensor([0.5, -0.2], dtype=torch.float64)
    cov = torch.tensor([[0.25, 0.1], [0.1, 0.36]], dtype=torch.float64)
    x0 = mean + torch.randn(n, 2, generator=generator, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    x_t = a * x0 + sigma * eps
    gain = sigma * torch.linalg.inv(a**2 * cov + sigma**2 * torch.eye(2, dtype=torch.float64))
    optimum = torch.cat([gain, -(gain @ (a * mean)).unsqueeze(1)], dim=1)

    def mask(images):  # a per-pixel map that looks at both pixels, like a saliency map would
        m = torch.sigmoid(4 * images + images.flip(1))
        return m.view(n, 1, 1, 2)

    from_x_t = importance_weights(mask(x_t), "scale", alpha=4.0).view(n, 2)
    from_x0 = importance_weights(mask(x0), "scale", alpha=4.0).view(n, 2)
    assert (_weighted_linear_fit(x_t, eps, torch.ones_like(eps)) - optimum).abs().max() < 0.01
    assert (_weighted_linear_fit(x_t, eps, from_x_t) - optimum).abs().max() < 0.01
    assert (_weighted_linear_fit(x_t, eps, from_x0) - optimum).abs().max() > 0.05


@pytest.mark.parametrize("method", ["deeplift", "gradcam", "occlusion"])
def test_explain_methods_run_per_timestep_and_match_single_images(method):
    torch.manual_seed(0)
    d = TimeConditionedDiscriminator(1, channels=(8, 16), time_dim=16, groups=0)  # no GroupNorm: exact DeepLift
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([7, 400, 7])
    batch = attribution_map(d, x, t, method)
    for i in range(3):
        torch.testing.assert_close(batch[i : i + 1], attribution_map(d, x[i : i + 1], t[i : i + 1], method))
    s = importance_map(d, x, t, method)
    assert s.shape == (3, 1, 16, 16) and torch.allclose(s.amax(dim=(1, 2, 3)), torch.ones(3))


def test_timestep_bound_rejects_ambiguous_batches(discriminator):
    with pytest.raises(ValueError, match="not a multiple"):
        TimestepBound(discriminator, torch.tensor([1, 2]))(torch.randn(3, 3, 8, 8))
