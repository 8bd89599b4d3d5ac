"""A diffusion model as a decoder: deterministic DDIM (η = 0) from x_T, and DDIM inversion x₀ → x_T.

``encode`` runs the DDIM update backwards (Song et al.; as in "null-text" and DDIM-inversion work): from the
image at t = 0 up to the last timestep, using the noise predicted at the current (lower) timestep — an
approximation that is exact only when the prediction does not change between neighbouring timesteps (tested
with a model whose prediction is constant). ``decode`` is DDIM sampling from x_T with gradients through every
UNet call, so a counterfactual search costs ``steps`` UNet forward and backward passes per optimisation step:
use few DDIM steps (10) and expect it to be slow on a CPU. Only ``prediction_type="epsilon"`` is supported.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from xai_train.counterfactual.generators import LatentDecoder


def ddim_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps spaced evenly from 0 up to ``num_train_timesteps − 1`` (increasing).

    Example:
        >>> ddim_timesteps(1000, 4)
        [0, 333, 666, 999]
    """
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"DDIM steps must be in [1, {num_train_timesteps}], got {steps}")
    return torch.linspace(0, num_train_timesteps - 1, steps).round().long().tolist()


def _ddim_move(x: Tensor, eps: Tensor, alpha_from: Tensor, alpha_to: Tensor) -> Tensor:
    """x at ᾱ_from -> x at ᾱ_to along the deterministic DDIM path defined by the noise ``eps``."""
    x0 = (x - (1 - alpha_from).sqrt() * eps) / alpha_from.sqrt()
    return alpha_to.sqrt() * x0 + (1 - alpha_to).sqrt() * eps


class DiffusionDecoder(LatentDecoder):
    """Deterministic DDIM as g(z): z = x_T (B, C, H, W) -> x₀; ``encode`` = DDIM inversion.

    Args:
        unet: ε-model, ``unet(x_t, t)`` returning a tensor or an object with ``.sample`` (diffusers' UNet2DModel).
        alphas_cumprod: (T,) ᾱ of the training scheduler (``scheduler.alphas_cumprod``).
        steps: DDIM steps.

    Example:
        >>> class Constant(nn.Module):
        ...     def forward(self, x, t):
        ...         return torch.full_like(x, 0.3)
        >>> decoder = DiffusionDecoder(Constant(), torch.linspace(0.99, 0.01, 100), steps=5)
        >>> x = torch.rand(2, 1, 4, 4) * 2 - 1
        >>> torch.allclose(decoder.decode(decoder.encode(x)), x, atol=1e-5)
        True
    """

    def __init__(self, unet: nn.Module, alphas_cumprod: Tensor, steps: int = 10) -> None:
        super().__init__()
        self.unet = unet.eval().requires_grad_(False)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone())
        self.timesteps = ddim_timesteps(len(alphas_cumprod), steps)

    def _eps(self, x: Tensor, t: int) -> Tensor:
        out = self.unet(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
        return out.sample if hasattr(out, "sample") else out

    def decode(self, z: Tensor) -> Tensor:
        """x_T (B, C, H, W) -> x₀ by DDIM (η = 0), differentiable."""
        x, alpha = z, self.alphas_cumprod
        one = alpha.new_ones(())
        for i in reversed(range(len(self.timesteps))):
            t = self.timesteps[i]
            alpha_to = alpha[self.timesteps[i - 1]] if i > 0 else one
            x = _ddim_move(x, self._eps(x, t), alpha[t], alpha_to)
        return x

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """x₀ (B, C, H, W) -> x_T by DDIM inversion (the noise at the lower timestep drives each step up)."""
        x, alpha = images, self.alphas_cumprod
        one = alpha.new_ones(())
        for i, t in enumerate(self.timesteps):
            alpha_from = alpha[self.timesteps[i - 1]] if i > 0 else one
            t_from = self.timesteps[i - 1] if i > 0 else t
            x = _ddim_move(x, self._eps(x, t_from), alpha_from, alpha[t])
        return x
