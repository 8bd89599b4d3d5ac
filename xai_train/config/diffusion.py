"""Config schema of the diffusion recipe (``recipes/train_diffusion.py``).

Each field has a default and a short reason. The trainer reads ``DiffusionTrainConfig`` and
``DiscriminatorConfig``; the recipe reads the rest and builds the callbacks from the ``importance_*`` sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from xai_train.config.common import (
    DataConfig,
    EvalConfig,
    RunConfig,
    at_least,
    check_betas,
    half_open_unit,
    positive,
    unit_interval,
)
from xai_train.config.core import ConfigError, check_choices, check_fields
from xai_train.config.self_refine import SelfRefineConfig


def check_method_name(config: object, name: str = "method") -> None:
    """The importance map's explainer must be a name of ``xai_train.explain.METHODS``."""
    from xai_train.explain.attribute import METHODS  # captum loads only when a diffusion config is built

    value = getattr(config, name)
    if value not in METHODS:
        raise ConfigError(f"{name}={value!r}: unknown explainer; choose one of: {', '.join(METHODS)}")


def check_map_source_name(config: object, choices: tuple[str, ...]) -> None:
    """``map_source`` must be one of ``choices``; the former name "x0_hat" gets an error naming "x0"."""
    from xai_train.diffusion.importance import check_map_source

    try:
        check_map_source(config.map_source, choices)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_widths(config: object, name: str, groups: int, groups_name: str) -> None:
    """A non-empty tuple of widths >= 1, each divisible by ``groups`` (GroupNorm) when ``groups > 0``."""
    widths = getattr(config, name)
    if not widths or not all(w >= 1 for w in widths):
        raise ConfigError(f"{name}={list(widths)!r}: give one or more widths >= 1, e.g. [32, 64, 64]")
    if groups > 0 and any(w % groups for w in widths):
        raise ConfigError(f"{name}={list(widths)!r}: every width must be divisible by {groups_name}={groups}")


@dataclass(frozen=True)
class DiffusionRunConfig(RunConfig):
    name: str = "ddpm_digits"  # run folder: <output_dir>/<name>


@dataclass(frozen=True)
class UNetConfig:
    """The keyword arguments of ``xai_train.diffusion.models.build_unet`` (recipes pass them as a dict)."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)  # 1.1M parameters: trains on 2 CPU cores at 32x32
    layers_per_block: int = 1
    attention: bool = False  # self-attention at the lowest resolution, as in diffusers' example; slow on CPU
    norm_num_groups: int = 8  # must divide every width
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "must be >= 1", lambda v: v >= 1, "layers_per_block", "norm_num_groups")
        check_widths(self, "block_out_channels", self.norm_num_groups, "norm_num_groups")
        check_fields(self, "must be in [0, 1) (a drop probability)", half_open_unit, "dropout")


@dataclass(frozen=True)
class NoiseSchedulerConfig:
    num_train_timesteps: int = 1000  # DDPM's T
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"  # DDPM's choice
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    clip_sample: bool = True  # clip x̂0 to [-1, 1] while sampling (the data range)

    def __post_init__(self) -> None:
        check_fields(self, "must be >= 2", lambda v: v >= 2, "num_train_timesteps")
        check_choices(self)


@dataclass(frozen=True)
class DiffusionTrainConfig:
    batch_size: int = 32  # per process; the global batch is batch_size x processes
    max_steps: int = 2000  # optimizer steps of the UNet
    lr: float = 1e-4  # diffusers' train_unconditional default
    lr_scheduler: str = "cosine"  # any name of diffusers.optimization.get_scheduler
    lr_warmup_steps: int = 100
    adam_betas: tuple[float, float] = (0.95, 0.999)  # diffusers' example
    adam_weight_decay: float = 1e-6
    adam_epsilon: float = 1e-8
    grad_accum_steps: int = 1  # micro-batches per optimizer step (UNet and D together)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    clip_grad_norm: float = 1.0  # diffusers' example clips at 1; 0 disables
    use_ema: bool = True  # samples and exports use the EMA weights
    ema_max_decay: float = 0.9999
    ema_inv_gamma: float = 1.0  # EMA warm-up: decay = 1 - (1 + step/inv_gamma)^-power
    ema_power: float = 0.75
    random_flip: bool = False  # horizontal flips; off because digits are not mirror-symmetric
    loss_weighting: Literal["none", "snr", "min_snr"] = "none"  # "snr" makes x0-prediction ε-equivalent
    min_snr_gamma: float = 5.0  # Min-SNR-γ (Hang et al. 2023)
    log_every: int = 10  # scalars to TensorBoard
    sample_every: int = 500  # sample grid (EMA UNet, DDIM)
    num_samples: int = 64  # images in the sample grid
    sample_steps: int = 50  # DDIM steps of the sample grid
    checkpoint_every: int = 500
    keep_checkpoints: int = 3  # 0 keeps every checkpoint

    def __post_init__(self) -> None:
        steps = ("batch_size", "max_steps", "grad_accum_steps", "log_every", "num_samples", "sample_steps")
        check_fields(self, "must be >= 1", lambda v: v >= 1, *steps)
        check_fields(self, "must be >= 0 (0 disables)", lambda v: v >= 0, "sample_every", "checkpoint_every")
        check_fields(self, "must be >= 0", lambda v: v >= 0, "lr_warmup_steps", "keep_checkpoints")
        check_fields(self, "must be a finite number > 0", positive, "lr", "adam_epsilon", "ema_inv_gamma")
        check_fields(self, "must be a finite number > 0", positive, "ema_power", "min_snr_gamma")
        check_fields(self, "must be >= 0", at_least(0), "adam_weight_decay", "clip_grad_norm")
        check_fields(self, "must be in [0, 1]", unit_interval, "ema_max_decay")
        check_betas(self, "adam_betas")
        check_choices(self)
        from diffusers.optimization import SchedulerType

        names = [kind.value for kind in SchedulerType]
        if self.lr_scheduler not in names:
            raise ConfigError(f"lr_scheduler={self.lr_scheduler!r}: choose one of: {', '.join(names)}")


@dataclass(frozen=True)
class DiscriminatorConfig:
    enabled: bool = False  # train a time-conditioned D(x_t, t) beside the UNet; the importance sections need it
    channels: tuple[int, ...] = (32, 64, 128)  # one strided block per entry
    time_dim: int = 64
    norm_groups: int = 8  # GroupNorm groups; 0 = none (needed for exact DeepLift maps)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)  # the usual GAN choice
    r1_gamma: float = 0.1  # R1 weight; keeps D smooth so its saliency is informative
    r1_every: int = 16  # lazy R1 (StyleGAN2): penalise every N steps, scaled by N
    fake_source: Literal["samples", "x0_hat"] = "samples"  # "x0_hat" is cheap but biased: D learns to spot blur
    buffer_capacity: int = 128  # replay buffer of model samples; mean age ≈ capacity/refresh_size·R/2 steps
    buffer_refresh_every: int = 100  # R: steps between refills
    buffer_refresh_size: int = 32  # samples drawn per refill (per process)
    sample_steps: int = 25  # DDIM steps for the buffer's samples

    def __post_init__(self) -> None:
        check_fields(self, "must be >= 0 (0 = no GroupNorm)", lambda v: v >= 0, "norm_groups")
        check_widths(self, "channels", self.norm_groups, "norm_groups")
        check_fields(self, "must be an even number >= 2", lambda v: v >= 2 and v % 2 == 0, "time_dim")
        check_fields(self, "must be a finite number > 0", positive, "lr")
        check_fields(self, "must be >= 0 (0 disables R1)", at_least(0), "r1_gamma")
        steps = ("r1_every", "buffer_capacity", "buffer_refresh_every", "buffer_refresh_size", "sample_steps")
        check_fields(self, "must be >= 1", lambda v: v >= 1, *steps)
        check_betas(self)
        check_choices(self)


@dataclass(frozen=True)
class ImportanceWeightConfig:
    enabled: bool = False  # (a): per-pixel loss weight from D's saliency (callbacks.ImportanceWeightedLoss)
    rule: Literal["scale", "mean"] = "mean"  # "scale": 1 + alpha*M; "mean": (1 - beta) + beta*S/mean(S)
    alpha: float = 1.0
    beta: float = 0.5
    map_source: str = "x_t"  # "x_t" or "x0"; "x0" shifts the optimum: an ablation arm only
    method: str = "saliency"
    blur_sigma: float = 1.0  # pixels; smooths single-pixel gradient noise
    start_step: int = 200  # let D learn before its maps steer the UNet

    def __post_init__(self) -> None:
        check_method_name(self)
        check_fields(self, "must be > -1 (else a weight 1 + alpha*M can be <= 0)", lambda v: v > -1, "alpha")
        check_fields(self, "must be finite", at_least(-1), "alpha")
        check_fields(self, "must be in [0, 1)", half_open_unit, "beta")
        check_fields(self, "must be >= 0 (pixels; 0 = no blur)", at_least(0), "blur_sigma")
        check_fields(self, "must be >= 0", lambda v: v >= 0, "start_step")
        check_map_source_name(self, ("x_t", "x0"))
        check_choices(self)


@dataclass(frozen=True)
class ImportanceNoiseConfig:
    enabled: bool = False  # (b): importance-scheduled noise (callbacks.ImportanceNoiseSchedule)
    mode: Literal["pixel", "timesteps"] = "pixel"  # "timesteps" = the safe curriculum variant
    sharpness: float = 20.0  # k of tau(t) = sigmoid(k (t/T - t_phi))
    midpoint: float = 0.5  # t_phi: above it the noise is nearly isotropic
    lambda_min: float = 0.25  # important pixels keep 1/sqrt(1 + 1/lambda_min) of the noise at t = 0
    lambda_max: float = 4.0
    map_source: str = "x0"  # "x0": S(x0) in training, S(x̂0) in sampling; or "x_t"
    method: str = "saliency"
    blur_sigma: float = 1.0
    num_buckets: int = 20  # curriculum: timestep buckets
    uniform_mix: float = 0.5  # curriculum: share of uniform draws (caps the weights at 2)
    decay: float = 0.9  # curriculum: EMA of bucket scores
    self_normalise: bool = False
    update_every: int = 1  # curriculum: steps between score updates

    def __post_init__(self) -> None:
        check_method_name(self)
        check_fields(self, "must be a finite number >= 0", at_least(0), "sharpness")
        check_fields(self, "must be in [0, 1] (a fraction of T)", unit_interval, "midpoint")
        check_fields(self, "must be a finite number > 0", positive, "lambda_min")
        check_fields(
            self,
            f"must be >= lambda_min={self.lambda_min} so that λ(t) increases",
            at_least(self.lambda_min),
            "lambda_max",
        )
        check_fields(self, "must be >= 0 (pixels; 0 = no blur)", at_least(0), "blur_sigma")
        check_fields(self, "must be >= 1", lambda v: v >= 1, "num_buckets", "update_every")
        check_fields(self, "must be in (0, 1] (0 would allow unbounded weights)", lambda v: 0 < v <= 1, "uniform_mix")
        check_fields(self, "must be in [0, 1)", half_open_unit, "decay")
        check_map_source_name(self, ("x0", "x_t"))
        check_choices(self)


@dataclass(frozen=True)
class DiffusionExperiment:
    run: DiffusionRunConfig = field(default_factory=DiffusionRunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    scheduler: NoiseSchedulerConfig = field(default_factory=NoiseSchedulerConfig)
    train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    importance_weight: ImportanceWeightConfig = field(default_factory=ImportanceWeightConfig)
    importance_noise: ImportanceNoiseConfig = field(default_factory=ImportanceNoiseConfig)
    self_refine: SelfRefineConfig = field(default_factory=SelfRefineConfig)  # self-refining diffusion (§9)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log_maps_every: int = 100  # importance maps / weights / noise scales to TensorBoard

    def __post_init__(self) -> None:
        """Rules across sections."""
        check_fields(self, "must be >= 0 (0 disables)", lambda v: v >= 0, "log_maps_every")
        for section in ("importance_weight", "importance_noise"):
            if getattr(self, section).enabled and not self.discriminator.enabled:
                raise ConfigError(f"{section}.enabled=True needs a discriminator: set discriminator.enabled=true")
        levels = len(self.unet.block_out_channels)
        if self.data.image_size % 2 ** (levels - 1):
            raise ConfigError(
                f"data.image_size={self.data.image_size}: the UNet's {levels} levels halve it {levels - 1} times, "
                f"so it must be divisible by {2 ** (levels - 1)}"
            )
        timesteps, buckets = self.scheduler.num_train_timesteps, self.importance_noise.num_buckets
        if self.importance_noise.enabled and timesteps % buckets:  # the callback builds the curriculum in both modes
            divisor = max(d for d in range(1, min(buckets, timesteps) + 1) if timesteps % d == 0)
            raise ConfigError(
                f"importance_noise.num_buckets={buckets}: must divide scheduler.num_train_timesteps={timesteps}, "
                f"e.g. importance_noise.num_buckets={divisor}"
            )
        for name, steps in (
            ("train.sample_steps", self.train.sample_steps),
            ("discriminator.sample_steps", self.discriminator.sample_steps),
        ):
            if steps > timesteps:
                raise ConfigError(f"{name}={steps}: at most scheduler.num_train_timesteps={timesteps} DDIM steps")
