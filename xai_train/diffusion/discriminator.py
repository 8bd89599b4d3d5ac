"""A small time-conditioned discriminator ``D(x_t, t) -> (B, 1)`` logits and the R1 penalty.

Its loss is the non-saturating ``xai_train.trainers.losses.discriminator_loss(d_real, d_fake, "bce")``.

Trained to tell noised data from noised model samples at the same level t (DESIGN.md §5). At the optimum
``∇ₓ logit D = ∇log q_t − ∇log p_t``, so its saliency marks where the model is wrong at level t.
Built for explainers: every non-linearity is its own non-inplace module (DeepLift needs that), GroupNorm
instead of BatchNorm (no cross-sample coupling, so per-sample saliency is exact and attribution does not
touch running statistics).
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from einops import rearrange, reduce
from torch import Tensor, nn


class TimeConditionedBlock(nn.Module):
    """Conv (stride 2) → GroupNorm (none for ``groups=0``) → + time bias → LeakyReLU.

    Shapes: (B, C_in, H, W) → (B, C_out, H/2, W/2).
    """

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, groups: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.norm = nn.GroupNorm(min(groups, out_channels), out_channels) if groups > 0 else nn.Identity()
        self.time_bias = nn.Linear(time_dim, out_channels)
        self.act = nn.LeakyReLU(0.2, inplace=False)

    def forward(self, x: Tensor, time_embedding: Tensor) -> Tensor:
        h = self.norm(self.conv(x))
        h = h + rearrange(self.time_bias(time_embedding), "b c -> b c 1 1")
        return self.act(h)


class TimeConditionedDiscriminator(ModelMixin, ConfigMixin):
    """``D(x_t, t)``: sinusoidal timestep embedding, a few strided conv blocks, mean pool, linear head.

    The embedding enters each block through a linear per-channel bias only: a non-linearity on the t path
    would see inputs that do not depend on x, which DeepLift's module hooks cannot handle.

    A diffusers ``ModelMixin``, so it saves and loads with ``save_pretrained``/``from_pretrained`` and can
    be a component of a ``DiffusionPipeline``.

    Args:
        in_channels: image channels (1 or 3).
        channels: output channels of each block; each halves the resolution.
        time_dim: width of the timestep embedding.
        groups: GroupNorm groups (capped at the channel count); 0 = no normalisation, which DeepLift needs
            (it treats GroupNorm's division by the std as linear, so its attributions stop summing up).
        num_train_timesteps: T; timesteps are rescaled to [0, 1000) before embedding so one default
            embedding frequency range fits any T.

    Example:
        >>> d = TimeConditionedDiscriminator(in_channels=1, channels=(16, 32))
        >>> d(torch.randn(4, 1, 16, 16), torch.tensor([0, 10, 500, 999])).shape
        torch.Size([4, 1])
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        channels: tuple[int, ...] = (32, 64, 128),
        time_dim: int = 64,
        groups: int = 8,
        num_train_timesteps: int = 1000,
    ):
        super().__init__()
        self.time_dim = time_dim
        self.num_train_timesteps = num_train_timesteps
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.stem_act = nn.LeakyReLU(0.2, inplace=False)
        widths = (channels[0], *channels)
        self.blocks = nn.ModuleList(
            TimeConditionedBlock(w_in, w_out, time_dim, groups)
            for w_in, w_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.head = nn.Linear(channels[-1], 1)

    def embed_timesteps(self, timesteps: Tensor, batch_size: int, like: Tensor) -> Tensor:
        """(B,) or scalar timesteps → (B, time_dim) embedding."""
        timesteps = torch.as_tensor(timesteps, device=like.device).reshape(-1).expand(batch_size)
        scaled = timesteps.float() * (1000.0 / self.num_train_timesteps)
        embedding = get_timestep_embedding(scaled, self.time_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        return embedding.to(like.dtype)

    def forward(self, x: Tensor, timesteps: Tensor) -> Tensor:
        """Args: x (B, C, H, W) noised images; timesteps (B,) or scalar. Returns (B, 1) logits."""
        time_embedding = self.embed_timesteps(timesteps, x.shape[0], x)
        h = self.stem_act(self.stem(x))
        for block in self.blocks:
            h = block(h, time_embedding)
        return self.head(reduce(h, "b c h w -> b c", "mean"))


def r1_penalty(d_real: Tensor, real: Tensor) -> Tensor:
    """R1: ``E‖∇ₓ D(x)‖²`` on real inputs (Mescheder et al. 2018), differentiable w.r.t. D's weights.

    Args:
        d_real: (B, 1) logits computed from ``real``.
        real: (B, C, H, W) real inputs with ``requires_grad=True``.

    Returns:
        Scalar penalty; the caller multiplies by ``γ/2`` (and by the interval for lazy R1).

    Example:
        >>> x = torch.randn(3, 1, 4, 4, requires_grad=True)
        >>> float(r1_penalty(reduce(2 * x, "b c h w -> b 1", "sum"), x))  # ∇ = 2 everywhere, 16 pixels
        64.0
    """
    (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    return reduce(grad.square(), "b c h w -> b", "sum").mean()
