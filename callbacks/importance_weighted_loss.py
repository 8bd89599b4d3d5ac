"""``ImportanceWeightedLoss``: (a) of DESIGN.md §5 — weight the per-pixel denoising loss by D's importance.

Weighting the per-pixel loss by a detached map is exactly masking the gradient w.r.t. the model output.
The map comes from the UNet's own input ``x_t`` (unbiased: the optimum stays ``E[target | x_t]``); a map of
the clean image (``map_source="x0"``) moves the optimum and is offered only as an ablation arm.

Hand-written loop (the two hook calls are all it needs)::

    plan = callbacks.on_diffusion_noise(state, clean, NoisePlan(noise, timesteps))
    noisy = add_noise(clean, plan.noise, plan.timesteps, scheduler.alphas_cumprod, plan.noise_scale)
    loss_map = (unet(noisy, plan.timesteps).sample - target) ** 2
    loss = callbacks.on_loss(state, loss_map, "denoiser").mean()
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from xai_train.callback import Callback, NoisePlan, TrainState
from xai_train.diffusion import add_noise, importance_map, importance_weights

MAP_SOURCES: tuple[str, ...] = ("x_t", "x0")


class ImportanceWeightedLoss(Callback):
    """Per-pixel loss weight ``1 + α·M`` ("scale") or ``(1 − β) + β·S/mean(S)`` ("mean") from D's saliency.

    The map is computed in ``on_diffusion_noise`` (where the clean batch and the noise are visible) and
    applied to the next ``on_loss(..., role="denoiser")`` of the same micro-batch.

    Args:
        alphas_cumprod: (T,) ᾱ of the training schedule (``noise_scheduler.alphas_cumprod``).
        rule: "scale" or "mean".
        alpha: strength of "scale".
        beta: mix of "mean", in [0, 1).
        map_source: "x_t" (default, unbiased) or "x0" (explain the clean image at t = 0; biased ablation).
        method: attribution method; "saliency" is built in, others go through ``xai_train.explain``.
        blur_sigma: Gaussian blur of the map in pixels.
        start_step: no weighting before this step (lets D learn first).
        log_every: log the map and weights to TensorBoard every N steps (0 = never).
        discriminator_key: name of D in ``state.models``.
        explain_options: extra options for the explainer.

    Example:
        >>> from diffusers import DDPMScheduler
        >>> callback = ImportanceWeightedLoss(DDPMScheduler(num_train_timesteps=100).alphas_cumprod, alpha=0.5)
    """

    def __init__(
        self,
        alphas_cumprod: Tensor,
        rule: Literal["scale", "mean"] = "scale",
        alpha: float = 1.0,
        beta: float = 0.5,
        map_source: Literal["x_t", "x0"] = "x_t",
        method: str = "saliency",
        blur_sigma: float = 0.0,
        start_step: int = 0,
        log_every: int = 0,
        discriminator_key: str = "discriminator",
        explain_options: dict[str, Any] | None = None,
    ):
        if map_source not in MAP_SOURCES:
            raise ValueError(f"unknown map_source '{map_source}'; choose one of: {', '.join(MAP_SOURCES)}")
        if rule not in ("scale", "mean"):
            raise ValueError(f"unknown rule '{rule}'; choose one of: scale, mean")
        self.alphas_cumprod = alphas_cumprod.detach().cpu()
        self.rule, self.alpha, self.beta = rule, alpha, beta
        self.map_source = map_source
        self.method = method
        self.blur_sigma = blur_sigma
        self.start_step = start_step
        self.log_every = log_every
        self.discriminator_key = discriminator_key
        self.explain_options = dict(explain_options or {})
        self._weight: Tensor | None = None
        self._logged_step = -1

    def on_diffusion_noise(self, state: TrainState, clean: Tensor, plan: NoisePlan) -> None:
        self._weight = None
        if state.step < self.start_step:
            return None
        if self.discriminator_key not in state.models:
            raise KeyError(
                f"ImportanceWeightedLoss needs state.models['{self.discriminator_key}'] (a D(x_t, t)); "
                f"found: {', '.join(state.models) or 'none'}"
            )
        discriminator = state.accelerator.unwrap_model(state.models[self.discriminator_key])
        if self.map_source == "x_t":
            images = add_noise(clean, plan.noise, plan.timesteps, self.alphas_cumprod, plan.noise_scale)
            timesteps = plan.timesteps
        else:
            images, timesteps = clean, torch.zeros_like(plan.timesteps)
        importance = importance_map(
            discriminator, images, timesteps, self.method, self.blur_sigma, **self.explain_options
        )
        self._weight = importance_weights(importance, self.rule, self.alpha, self.beta)
        self._log(state, importance, self._weight)
        return None

    def on_loss(self, state: TrainState, loss_map: Tensor, role: str) -> Tensor | None:
        if role != "denoiser" or self._weight is None:
            return None
        weight, self._weight = self._weight, None
        if loss_map.dim() != 4:
            raise ValueError(
                f"ImportanceWeightedLoss needs the per-pixel loss map (B, C, H, W); got shape {tuple(loss_map.shape)}"
            )
        return loss_map * weight.to(device=loss_map.device, dtype=loss_map.dtype)

    def _log(self, state: TrainState, importance: Tensor, weight: Tensor) -> None:
        if self.log_every <= 0 or state.step % self.log_every or state.step == self._logged_step:
            return
        self._logged_step = state.step
        state.log_images({"importance/map": importance[:16], "importance/loss_weight": weight[:16] / weight.max()})
        state.log_scalars({"importance/loss_weight_max": weight.max(), "importance/map_mean": importance.mean()})
