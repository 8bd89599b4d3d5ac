"""Importance-scheduled noise: the per-pixel noise scale ``g_t(s)`` and its step-variance check.

``g_t(s) = 1 / ((1 − τ(t))·√(1 + s/λ(t)) + τ(t))`` with ``τ(t) = sigmoid(k·(t/T − t_Φ))`` and an increasing
``λ(t)`` (geometric from ``λ_min`` to ``λ_max``). For an importance ``s ∈ [0, 1]``: ``g ≤ 1``; important pixels
get less noise in the low-noise half; ``τ → 1`` makes the process isotropic at high t, so sampling still
starts from N(0, I) (DESIGN.md §5 b).

The per-pixel forward process has variance ``Σ_t = (1 − ᾱ_t)·g_t²``. A Markov step ``r < t`` exists only if
``Σ_t − (ᾱ_t/ᾱ_r)·Σ_r > 0`` per pixel; :func:`check_step_variance` verifies it over a schedule and
:func:`clamp_next_scale` enforces it inside the sampler, where the map changes between steps.

:class:`TimeConstantScale` is the other schedule the per-pixel sampler takes: ``g = 1 ± w·s`` at every t,
self-refining diffusion's amplified (or protected) noise with its flaw activation map as ``s``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class NoiseScaleSchedule:
    """The map from (importance, timestep) to a per-pixel noise scale.

    Attributes:
        num_train_timesteps: T of the diffusion schedule (t runs over 0..T−1).
        sharpness: k; how abruptly the process turns isotropic around ``t_Φ``.
        midpoint: t_Φ as a fraction of T; above it the noise is nearly isotropic.
        lambda_min: λ(0); smaller means a stronger reduction for important pixels at low t
            (``g_0(1) = 1/√(1 + 1/λ_min)``).
        lambda_max: λ(T); > ``lambda_min`` so that λ increases.

    Example:
        >>> import torch
        >>> schedule = NoiseScaleSchedule(num_train_timesteps=1000)
        >>> g = schedule.scale(torch.tensor([0.0, 1.0]), torch.tensor([0, 0]))
        >>> [round(v, 3) for v in g.tolist()]
        [1.0, 0.447]
    """

    num_train_timesteps: int
    sharpness: float = 20.0
    midpoint: float = 0.5
    lambda_min: float = 0.25
    lambda_max: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.lambda_min <= self.lambda_max:
            raise ValueError(
                f"NoiseScaleSchedule: need 0 < lambda_min <= lambda_max so that λ(t) increases; "
                f"got lambda_min={self.lambda_min}, lambda_max={self.lambda_max}"
            )

    def tau(self, timesteps: Tensor) -> Tensor:
        """τ(t) = sigmoid(k·(t/T − t_Φ)), same shape as ``timesteps``."""
        fraction = timesteps.float() / self.num_train_timesteps
        return torch.sigmoid(self.sharpness * (fraction - self.midpoint))

    def lam(self, timesteps: Tensor) -> Tensor:
        """λ(t), geometric from ``lambda_min`` at t = 0 to ``lambda_max`` at t = T."""
        fraction = timesteps.float() / self.num_train_timesteps
        return self.lambda_min * (self.lambda_max / self.lambda_min) ** fraction

    def scale(self, importance: Tensor, timesteps: Tensor) -> Tensor:
        """g_t(s).

        Args:
            importance: (B, 1 or C, H, W) normalised importance ``s`` in [0, 1], or any shape matching
                ``timesteps`` after broadcasting.
            timesteps: (B,) integer timesteps (reshaped to (B, 1, 1, 1) for 4-D importance) or the same
                shape as ``importance``.

        Returns:
            Noise scale of ``importance``'s shape, in (0, 1].
        """
        if timesteps.dim() == 1 and importance.dim() == 4:
            timesteps = timesteps.view(-1, 1, 1, 1)
        timesteps = timesteps.to(importance.device)
        tau, lam = self.tau(timesteps), self.lam(timesteps)
        s = importance.float().clamp_min(0)
        return (1.0 / ((1 - tau) * torch.sqrt(1 + s / lam) + tau)).to(importance.dtype)


SCALE_DIRECTIONS: tuple[str, ...] = ("amplify", "protect")
"""Directions of :class:`TimeConstantScale`."""


@dataclasses.dataclass(frozen=True)
class TimeConstantScale:
    """A noise scale linear in a map and the same at every t: ``g = 1 + w·s`` ("amplify") or ``1 − w·s``.

    Self-refining diffusion's forward process (DESIGN.md §9) with a fixed map ``s`` (the FAM): its per-pixel
    variance is ``Σ_t = (1 − ᾱ_t)·g²``, so every step's variance ``g²·(1 − ᾱ_t/ᾱ_r)`` is > 0 exactly when
    ``g > 0``; a map in [0, 1] keeps ``g ≥ 1 − w > 0`` for "protect", which is why ``weight < 1`` is required
    there. Same ``scale(importance, timesteps)`` interface as :class:`NoiseScaleSchedule`, so
    :func:`check_step_variance` and the per-pixel sampler take either.

    Attributes:
        weight: ``w`` (the authors' ``fam_noise_w`` = 0.01), >= 0.
        direction: "amplify" (mapped pixels get more noise) or "protect" (less).

    Example:
        >>> import torch
        >>> TimeConstantScale(0.5, "protect").scale(torch.tensor([0.0, 1.0])).tolist()
        [1.0, 0.5]
    """

    weight: float
    direction: str = "amplify"

    def __post_init__(self) -> None:
        if self.direction not in SCALE_DIRECTIONS:
            raise ValueError(f"unknown direction '{self.direction}'; choose one of: {', '.join(SCALE_DIRECTIONS)}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"noise weight must be a finite number >= 0 (w in g = 1 ± w·map); got {self.weight}")
        if self.direction == "protect" and not self.weight < 1:
            raise ValueError(
                f"direction 'protect' needs 0 <= noise_weight < 1 (g = 1 - w_n·FAM > 0); got {self.weight}"
            )

    def scale(self, importance: Tensor, timesteps: Tensor | None = None) -> Tensor:
        """``1 ± w·importance``, of ``importance``'s shape; ``timesteps`` is accepted and ignored."""
        sign = 1.0 if self.direction == "amplify" else -1.0
        return 1.0 + (sign * self.weight) * importance


def step_variance(scale_t: Tensor, scale_r: Tensor, alpha_bar_t: Tensor | float, alpha_bar_r: Tensor | float) -> Tensor:
    """Per-pixel variance of the forward step r → t: ``Σ_t − (ᾱ_t/ᾱ_r)·Σ_r`` with ``Σ = (1 − ᾱ)·g²``.

    Args:
        scale_t: noise scale at the noisier level t, any shape.
        scale_r: noise scale at the cleaner level r < t, broadcastable to ``scale_t``.
        alpha_bar_t: ᾱ_t (scalar or broadcastable tensor).
        alpha_bar_r: ᾱ_r.

    Returns:
        The variance, broadcast shape; > 0 where the step is a valid Gaussian.

    Example:
        >>> import torch
        >>> float(step_variance(torch.ones(()), torch.ones(()), 0.5, 0.8))  # isotropic: 1 − ᾱ_t/ᾱ_r
        0.375
    """
    sigma_t2 = (1 - alpha_bar_t) * scale_t**2
    sigma_r2 = (1 - alpha_bar_r) * scale_r**2
    return sigma_t2 - (alpha_bar_t / alpha_bar_r) * sigma_r2


def clamp_next_scale(
    scale_t: Tensor,
    scale_r: Tensor,
    alpha_bar_t: Tensor | float,
    alpha_bar_r: Tensor | float,
    min_fraction: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Lowers ``scale_r`` where the step variance would fall below ``min_fraction·Σ_t``.

    Args:
        scale_t: (B, C, H, W) noise scale at level t.
        scale_r: (B, C, H, W) proposed noise scale at the next (cleaner) level r.
        alpha_bar_t: ᾱ_t.
        alpha_bar_r: ᾱ_r (1.0 for the final step, where Σ_r = 0 and nothing is clamped).
        min_fraction: the variance kept at least, relative to Σ_t.

    Returns:
        ``(scale_r_clamped, clamped)``: the new scale and a bool mask of the pixels that were lowered.

    Example:
        >>> import torch
        >>> g_r, clamped = clamp_next_scale(torch.tensor([0.5]), torch.tensor([1.0]), 0.5, 0.51)
        >>> bool(clamped), bool(step_variance(torch.tensor([0.5]), g_r, 0.5, 0.51) > 0)
        (True, True)
    """
    alpha_bar_t = torch.as_tensor(alpha_bar_t, dtype=torch.float64)
    alpha_bar_r = torch.as_tensor(alpha_bar_r, dtype=torch.float64)
    if float(alpha_bar_r) >= 1.0:
        return scale_r, torch.zeros_like(scale_r, dtype=torch.bool)
    ratio = ((1 - min_fraction) * (1 - alpha_bar_t) * alpha_bar_r / ((1 - alpha_bar_r) * alpha_bar_t)).sqrt()
    bound = scale_t * float(ratio)
    clamped = scale_r > bound
    return torch.minimum(scale_r, bound), clamped


@dataclasses.dataclass(frozen=True)
class StepVarianceReport:
    """Result of :func:`check_step_variance`: the smallest variance found and where."""

    min_variance: float
    timestep: int
    prev_timestep: int
    importance: float

    @property
    def ok(self) -> bool:
        return self.min_variance > 0


def check_step_variance(
    schedule: NoiseScaleSchedule,
    alphas_cumprod: Tensor,
    timestep_pairs: Sequence[tuple[int, int]] | None = None,
    importance_levels: int = 21,
    warn: bool = True,
) -> StepVarianceReport:
    """Checks ``Σ_t − (ᾱ_t/ᾱ_r)·Σ_r > 0`` for a fixed importance over every step of a schedule.

    Args:
        schedule: the noise-scale schedule.
        alphas_cumprod: (T,) ᾱ of the diffusion schedule.
        timestep_pairs: (t, r) pairs with r < t to check; default: every training step (t, t − 1).
            Pass a sampler's (t, t − T/N) pairs to check an inference schedule too.
        importance_levels: number of importance values in [0, 1] checked.
        warn: emit a ``UserWarning`` naming the worst step when the check fails (the sampler then clamps).

    Returns:
        A :class:`StepVarianceReport`.

    Example:
        >>> from diffusers import DDPMScheduler
        >>> alphas = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
        >>> check_step_variance(NoiseScaleSchedule(1000), alphas).ok
        True
    """
    alphas = alphas_cumprod.double()
    if timestep_pairs is None:
        timestep_pairs = [(t, t - 1) for t in range(1, len(alphas))]
    pairs = torch.tensor([p for p in timestep_pairs if p[1] >= 0], dtype=torch.long)
    if pairs.numel() == 0:
        raise ValueError("check_step_variance: no (t, r) pair with r >= 0 to check")
    t, r = pairs[:, 0], pairs[:, 1]
    if bool((r >= t).any()):
        raise ValueError("check_step_variance: every pair must be (t, r) with r < t")
    s = torch.linspace(0, 1, importance_levels, dtype=torch.float64)
    grid_s = s.view(1, -1).expand(len(t), -1)
    scale_t = schedule.scale(grid_s, t.view(-1, 1).expand_as(grid_s)).double()
    scale_r = schedule.scale(grid_s, r.view(-1, 1).expand_as(grid_s)).double()
    variance = step_variance(scale_t, scale_r, alphas[t].view(-1, 1), alphas[r].view(-1, 1))
    flat = int(variance.argmin())
    row, col = divmod(flat, variance.shape[1])
    report = StepVarianceReport(float(variance.min()), int(t[row]), int(r[row]), float(s[col]))
    if warn and not report.ok:
        warnings.warn(
            f"importance noise schedule: step variance {report.min_variance:.3g} <= 0 at t={report.timestep}, "
            f"r={report.prev_timestep}, importance={report.importance:.2f}; the sampler will clamp g_r there. "
            "Use an increasing λ(t) (lambda_min <= lambda_max) and a non-negative sharpness.",
            stacklevel=2,
        )
    return report


def inference_pairs(num_train_timesteps: int, num_inference_steps: int) -> list[tuple[int, int]]:
    """The (t, r) pairs of a DDIM "leading" schedule (diffusers' default spacing), final step excluded.

    Example:
        >>> inference_pairs(1000, 4)
        [(750, 500), (500, 250), (250, 0)]
    """
    stride = num_train_timesteps // num_inference_steps
    steps = [i * stride for i in range(num_inference_steps)][::-1]
    return [(t, t - stride) for t in steps if t - stride >= 0]
