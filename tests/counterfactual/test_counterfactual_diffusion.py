import torch
from diffusers import DDPMScheduler
from torch import nn

from xai_train.counterfactual import manifold_counterfactuals
from xai_train.counterfactual.diffusion import DiffusionDecoder, ddim_timesteps


class ConstantNoise(nn.Module):
    """ε(x, t) = c: the one case in which DDIM inversion is exact (the noise does not change along the path)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, 0.25)


def test_ddim_inversion_is_exact_for_a_constant_noise_model_and_lands_on_the_ddim_path():
    alphas = DDPMScheduler(num_train_timesteps=100).alphas_cumprod
    decoder = DiffusionDecoder(ConstantNoise(), alphas, steps=7)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    z = decoder.encode(x)
    torch.testing.assert_close(decoder.decode(z), x, atol=1e-5, rtol=0)
    # Closed form: with ε ≡ c the whole path is x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·c.
    last = alphas[ddim_timesteps(100, 7)[-1]]
    torch.testing.assert_close(z, last.sqrt() * x + (1 - last).sqrt() * 0.25, atol=1e-5, rtol=0)


def test_counterfactual_search_through_a_diffusion_unet(make_unet):
    unet = make_unet(size=8, widths=(8, 16), groups=4)
    decoder = DiffusionDecoder(unet, DDPMScheduler(num_train_timesteps=100).alphas_cumprod, steps=3)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 2, bias=False))
    with torch.no_grad():
        classifier[1].weight.copy_(torch.stack([-torch.ones(64), torch.ones(64)]) * 0.3)
    images = -torch.ones(2, 1, 8, 8) * 0.5  # dark: class 0
    result = manifold_counterfactuals(classifier, decoder, images, 1, lr=0.1, max_steps=100)
    assert bool(result.success.all()) and bool((result.steps > 0).all())  # it had to search
    assert result.latents.shape == images.shape
