"""``ImportanceWeightedLoss``: (a) of DESIGN.md §5 — weight the per-pixel denoising loss by D's importance.

Weighting the per-pixel loss by a detached map is exactly masking the gradient w.r.t. the model output.
The map comes from the UNet's own input ``x_t`` (unbiased: the optimum stays ``E[target | x_t]``); a map of
the clean image (``map_source="x0"``) moves the optimum and is offered only as an ablation arm.

The weight travels in ``NoisePlan.loss_weight`` (set in ``on_diffusion_noised``, where the trainer hands over
the x_t it built); the trainer multiplies the loss by it. Nothing is kept between hooks, so the callback's
place in the list does not matter. Hand-written loop::

    plan = callbacks.on_diffusion_noise(state, clean, NoisePlan(noise, timesteps))
    noisy = add_noise(clean, plan.noise, plan.timesteps, scheduler.alphas_cumprod, plan.noise_scale)
    plan = callbacks.on_diffusion_noised(state, clean, plan.replace(noisy=noisy))
    loss_map = plan.weigh((unet(noisy, plan.timesteps).sample - target) ** 2)
    loss = callbacks.on_loss(state, loss_map, "denoiser").mean()
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from xai_train.callback import Callback, NoisePlan, TrainState
from xai_train.config import check_like_section
from xai_train.config.diffusion import ImportanceWeightConfig
from xai_train.diffusion import check_map_source, importance_map, importance_weights
from xai_train.errors import UserError
from xai_train.explain import check_method

DEFAULTS = ImportanceWeightConfig()  # one source of truth: the recipe's config and this callback agree


class ImportanceWeightedLoss(Callback):
    """Per-pixel loss weight ``1 + α·M`` ("scale") or ``(1 − β) + β·S/mean(S)`` ("mean") from D's saliency.

    The map is computed in ``on_diffusion_noised`` from the x_t the trainer built (``plan.noisy``) and
    returned as ``plan.loss_weight`` (multiplied with any weight already there). Defaults are those of
    ``xai_train.config.diffusion.ImportanceWeightConfig``.

    Args:
        rule: "scale" or "mean".
        alpha: strength of "scale".
        beta: mix of "mean", in [0, 1).
        map_source: "x_t" (default, unbiased) or "x0" (explain the clean image at t = 0; biased ablation).
            The old name "x0_hat" is an error naming "x0".
        method: attribution method; "saliency" is built in, others go through ``xai_train.explain``.
        blur_sigma: Gaussian blur of the map in pixels.
        start_step: no weighting before this step (lets D learn first).
        log_every: log the map and weights to TensorBoard every N steps (0 = never).
        discriminator_key: name of D in ``state.models``.
        explain_options: extra options for the explainer.

    Example:
        >>> callback = ImportanceWeightedLoss(alpha=0.5)
        >>> callback.rule, callback.blur_sigma  # the config's defaults
        ('mean', 1.0)
    """

    def __init__(
        self,
        *,
        rule: Literal["scale", "mean"] = DEFAULTS.rule,
        alpha: float = DEFAULTS.alpha,
        beta: float = DEFAULTS.beta,
        map_source: Literal["x_t", "x0"] = DEFAULTS.map_source,
        method: str = DEFAULTS.method,
        blur_sigma: float = DEFAULTS.blur_sigma,
        start_step: int = DEFAULTS.start_step,
        log_every: int = 0,
        discriminator_key: str = "discriminator",
        explain_options: dict[str, Any] | None = None,
    ):
        # the config section's checks on the arguments: the CLI and the API accept and reject the same values
        check_like_section(ImportanceWeightConfig, "ImportanceWeightedLoss", locals())
        check_map_source(map_source, ("x_t", "x0"))
        check_method(method, explain_options or {})
        if not log_every >= 0:
            raise UserError(f"ImportanceWeightedLoss: log_every={log_every}: must be >= 0 (0 = never)")
        self.rule, self.alpha, self.beta = rule, alpha, beta
        self.map_source = map_source
        self.method = method
        self.blur_sigma = blur_sigma
        self.start_step = start_step
        self.log_every = log_every
        self.discriminator_key = discriminator_key
        self.explain_options = dict(explain_options or {})
        self._logged_step = -1

    def on_diffusion_noised(self, state: TrainState, clean: Tensor, plan: NoisePlan) -> NoisePlan | None:
        if state.step < self.start_step:
            return None
        if self.discriminator_key not in state.models:
            raise KeyError(
                f"ImportanceWeightedLoss needs state.models['{self.discriminator_key}'] (a D(x_t, t)); "
                f"found: {', '.join(state.models) or 'none'}"
            )
        discriminator = state.accelerator.unwrap_model(state.models[self.discriminator_key])
        if self.map_source == "x_t":
            images, timesteps = plan.noisy, plan.timesteps
        else:
            images, timesteps = clean, torch.zeros_like(plan.timesteps)
        importance = importance_map(
            discriminator, images, timesteps, self.method, self.blur_sigma, **self.explain_options
        )
        weight = importance_weights(importance, self.rule, self.alpha, self.beta).to(clean.dtype)
        self._log(state, importance, weight)
        return plan.replace(loss_weight=weight if plan.loss_weight is None else weight * plan.loss_weight)

    def _log(self, state: TrainState, importance: Tensor, weight: Tensor) -> None:
        if self.log_every <= 0 or state.step % self.log_every or state.step == self._logged_step:
            return
        self._logged_step = state.step
        state.log_images({"importance/map": importance[:16], "importance/loss_weight": weight[:16] / weight.max()})
        state.log_scalars({"importance/loss_weight_max": weight.max(), "importance/map_mean": importance.mean()})
