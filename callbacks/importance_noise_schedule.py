"""``ImportanceNoiseSchedule``: (b) of DESIGN.md §5 — D's importance decides how much noise each pixel gets.

``mode="pixel"`` (the plan, literally): ``x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·g_t(S)⊙ε`` with ``g_t`` from
:class:`~xai_train.diffusion.NoiseScaleSchedule` (less noise on important pixels in the low-noise half,
isotropic at high t). The model is then no longer a standard DDPM: sample it with :meth:`sampler`, which
recomputes the map from x̂0 (or x_t) at every step. Caveat: pixels that get little noise become context
for the model rather than targets.

``mode="timesteps"`` (the safe variant): the noise stays isotropic; timesteps are drawn where D's saliency,
scaled to ε units (``σ_t·mean|∇ₓD|``), is large, and each sample's loss carries ``1/(T·p(t))`` so the optimum
is unchanged. The scores are updated in ``on_diffusion_noised`` from the x_t the trainer built. The standard
sampler and ``DDPMPipeline`` apply.

Defaults are those of ``xai_train.config.diffusion.ImportanceNoiseConfig``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from xai_train.callback import Callback, NoisePlan, TrainState
from xai_train.config import check_like_section
from xai_train.config.diffusion import ImportanceNoiseConfig
from xai_train.diffusion import (
    DiscriminatorImportance,
    ImportanceSampler,
    NoiseScaleSchedule,
    TimestepCurriculum,
    add_noise,
    attribution_magnitude,
    attribution_map,
    check_map_source,
    check_step_variance,
    importance_map,
    inference_pairs,
    signal_and_noise_levels,
)
from xai_train.errors import UserError
from xai_train.explain import check_method

MODES: tuple[str, ...] = ("pixel", "timesteps")  # checked by ImportanceNoiseConfig (its Literal)
DEFAULTS = ImportanceNoiseConfig()  # one source of truth: the recipe's config and this callback agree


class ImportanceNoiseSchedule(Callback):
    """Importance-scheduled noise (``mode="pixel"``) or an importance timestep curriculum (``"timesteps"``).

    Args:
        alphas_cumprod: (T,) ᾱ of the training schedule.
        mode: "pixel" or "timesteps".
        sharpness, midpoint, lambda_min, lambda_max: the ``g_t(s)`` schedule (see ``NoiseScaleSchedule``).
        map_source: "pixel" mode: "x0" — ``S(x0, t=0)`` in training, ``S(x̂0, 0)`` in sampling (consistent);
            (the former name "x0_hat" is an error naming "x0");
            "x_t" — ``S`` of an isotropically noised pilot ``x_t`` in training, of the current sample in
            sampling (cheaper to motivate, only approximately consistent).
        method: attribution method ("saliency" built in).
        blur_sigma: Gaussian blur of the map in pixels.
        num_inference_steps: the sampler's step count, also checked by the step-variance test.
        num_buckets, uniform_mix, decay, self_normalise: the curriculum (see ``TimestepCurriculum``).
        update_every: "timesteps" mode: refresh the curriculum scores every N steps (each costs one D
            forward and backward).
        seed: seeds the curriculum's timestep draws (identical on every rank; each rank takes its slice).
        log_every: log maps and scales every N steps (0 = never).
        discriminator_key: name of D in ``state.models``.

    Example:
        >>> from diffusers import DDPMScheduler
        >>> callback = ImportanceNoiseSchedule(DDPMScheduler(num_train_timesteps=100).alphas_cumprod)
        >>> callback.schedule.num_train_timesteps
        100
    """

    state_key = "importance_noise_schedule"

    def __init__(
        self,
        alphas_cumprod: Tensor,
        *,
        mode: Literal["pixel", "timesteps"] = DEFAULTS.mode,
        sharpness: float = DEFAULTS.sharpness,
        midpoint: float = DEFAULTS.midpoint,
        lambda_min: float = DEFAULTS.lambda_min,
        lambda_max: float = DEFAULTS.lambda_max,
        map_source: Literal["x0", "x_t"] = DEFAULTS.map_source,
        method: str = DEFAULTS.method,
        blur_sigma: float = DEFAULTS.blur_sigma,
        num_inference_steps: int = 50,
        num_buckets: int = DEFAULTS.num_buckets,
        uniform_mix: float = DEFAULTS.uniform_mix,
        decay: float = DEFAULTS.decay,
        self_normalise: bool = DEFAULTS.self_normalise,
        update_every: int = DEFAULTS.update_every,
        seed: int = 0,
        log_every: int = 0,
        discriminator_key: str = "discriminator",
    ):
        # the config section's checks on the arguments: the CLI and the API accept and reject the same values
        check_like_section(ImportanceNoiseConfig, "ImportanceNoiseSchedule", locals())
        if not isinstance(alphas_cumprod, Tensor) or alphas_cumprod.dim() != 1 or len(alphas_cumprod) < 2:
            shape = tuple(getattr(alphas_cumprod, "shape", ()))
            raise TypeError(
                "ImportanceNoiseSchedule: alphas_cumprod must be the noise scheduler's 1-D tensor "
                f"(scheduler.alphas_cumprod), got {type(alphas_cumprod).__name__} {shape}"
            )
        if not bool(((alphas_cumprod > 0) & (alphas_cumprod <= 1)).all()):
            raise UserError(
                "ImportanceNoiseSchedule: alphas_cumprod must lie in (0, 1] (finite); pass scheduler.alphas_cumprod"
            )
        check_map_source(map_source)
        check_method(method, {})
        if not (num_inference_steps >= 1 and log_every >= 0):
            raise UserError(
                "ImportanceNoiseSchedule: need num_inference_steps >= 1 and log_every >= 0 (0 = never); "
                f"got {num_inference_steps} and {log_every}"
            )
        self.alphas_cumprod = alphas_cumprod.detach().cpu()
        num_train_timesteps = len(self.alphas_cumprod)
        self.mode = mode
        self.schedule = NoiseScaleSchedule(num_train_timesteps, sharpness, midpoint, lambda_min, lambda_max)
        self.map_source = map_source
        self.method = method
        self.blur_sigma = blur_sigma
        self.num_inference_steps = num_inference_steps
        self.curriculum = TimestepCurriculum(num_train_timesteps, num_buckets, uniform_mix, decay, self_normalise)
        self.update_every = update_every
        self.rng = torch.Generator().manual_seed(seed)
        self.log_every = log_every
        self.discriminator_key = discriminator_key
        self._logged_step = -1
        self._updated_step = -1

    # --- hooks ----------------------------------------------------------------------------------------
    def on_train_start(self, state: TrainState) -> None:
        if self.mode != "pixel":
            return
        pairs = [(t, t - 1) for t in range(1, self.schedule.num_train_timesteps)]
        pairs += inference_pairs(self.schedule.num_train_timesteps, self.num_inference_steps)
        report = check_step_variance(self.schedule, self.alphas_cumprod, pairs)  # warns when not positive
        state.log_scalars({"importance/min_step_variance": report.min_variance})

    def on_diffusion_noise(self, state: TrainState, clean: Tensor, plan: NoisePlan) -> NoisePlan:
        discriminator = self._discriminator(state)  # checked in both modes, before the first step's work
        if self.mode == "pixel":
            return self._pixel_plan(state, discriminator, clean, plan)
        return self._curriculum_plan(state, clean, plan)

    def _pixel_plan(self, state: TrainState, discriminator: nn.Module, clean: Tensor, plan: NoisePlan) -> NoisePlan:
        if self.map_source == "x0":
            images, map_timesteps = clean, torch.zeros_like(plan.timesteps)
        else:
            images, map_timesteps = (
                add_noise(clean, plan.noise, plan.timesteps, self.alphas_cumprod),
                plan.timesteps,
            )
        importance = importance_map(discriminator, images, map_timesteps, self.method, self.blur_sigma)
        scale = self.schedule.scale(importance, plan.timesteps).to(clean.dtype)
        if plan.noise_scale is not None:
            scale = scale * plan.noise_scale
        if self._should_log(state):
            state.log_images({"importance/map": importance[:16], "importance/noise_scale": scale[:16]})
            state.log_scalars({"importance/noise_scale_mean": scale.mean(), "importance/noise_scale_min": scale.min()})
        return plan.replace(noise_scale=scale)

    def _curriculum_plan(self, state: TrainState, clean: Tensor, plan: NoisePlan) -> NoisePlan:
        acc = state.accelerator
        batch = clean.shape[0]
        everyone, weights = self.curriculum.sample(batch * acc.num_processes, self.rng)
        rows = slice(acc.process_index * batch, (acc.process_index + 1) * batch)
        timesteps = everyone[rows].to(plan.timesteps.device, plan.timesteps.dtype)
        weight = weights[rows].to(clean.device)
        if plan.timestep_weight is not None:
            weight = weight * plan.timestep_weight
        if self._should_log(state):
            state.log_scalars(
                {"importance/timestep_mean": timesteps.float().mean(), "importance/weight_max": weight.max()}
            )
        return plan.replace(timesteps=timesteps, timestep_weight=weight)

    def on_diffusion_noised(self, state: TrainState, clean: Tensor, plan: NoisePlan) -> None:
        """In "timesteps" mode, every ``update_every`` steps: scores the levels of this batch from its x_t."""
        if self.mode != "timesteps" or state.step % self.update_every or state.step == self._updated_step:
            return None
        self._updated_step = state.step
        # D models the standard process: reuse the trainer's x_t unless another callback scaled its noise.
        noisy = plan.noisy
        if plan.noise_scale is not None:
            noisy = add_noise(clean, plan.noise, plan.timesteps, self.alphas_cumprod)
        self._update_scores(state, self._discriminator(state), noisy, plan.timesteps)
        return None

    def _update_scores(self, state: TrainState, discriminator: nn.Module, noisy: Tensor, timesteps: Tensor) -> None:
        _, sigma = signal_and_noise_levels(timesteps, self.alphas_cumprod, noisy)
        # σ_t·|∇ₓ logit D| ≈ |ε-prediction error| at D's optimum: comparable across levels, unlike |∇ₓD|.
        scores = sigma.flatten() * attribution_magnitude(attribution_map(discriminator, noisy, timesteps, self.method))
        gathered = state.accelerator.gather(torch.stack([timesteps.float(), scores]).T.contiguous())
        self.curriculum.update(gathered[:, 0].long(), gathered[:, 1])

    # --- sampling ---------------------------------------------------------------------------------------
    def sampler(self, discriminator: nn.Module) -> ImportanceSampler | None:
        """The sampler matching this forward process, or ``None`` for "timesteps" mode (standard DDIM).

        Args:
            discriminator: the unwrapped D that the run trains (its weights are read at call time).
        """
        if self.mode != "pixel":
            return None
        importance_fn = DiscriminatorImportance(discriminator, self.method, self.blur_sigma)
        return ImportanceSampler(importance_fn, self.schedule, self.map_source)

    # --- helpers, state ----------------------------------------------------------------------------------
    def _discriminator(self, state: TrainState) -> nn.Module:
        if self.discriminator_key not in state.models:
            raise KeyError(
                f"ImportanceNoiseSchedule needs state.models['{self.discriminator_key}'] (a D(x_t, t)); "
                f"found: {', '.join(state.models) or 'none'}"
            )
        return state.accelerator.unwrap_model(state.models[self.discriminator_key])

    def _should_log(self, state: TrainState) -> bool:
        if self.log_every <= 0 or state.step % self.log_every or state.step == self._logged_step:
            return False
        self._logged_step = state.step
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"curriculum": self.curriculum.state_dict(), "rng": self.rng.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.curriculum.load_state_dict(state["curriculum"])
        self.rng.set_state(state["rng"])
