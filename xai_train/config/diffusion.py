"""Config schema of the diffusion recipe (``recipes/train_diffusion.py``).

Each field has a default and a short reason. The trainer reads ``DiffusionTrainConfig`` and
``DiscriminatorConfig``; the recipe reads the rest and builds the callbacks from the ``importance_*`` sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from xai_train.config.common import DataConfig, EvalConfig, RunConfig
from xai_train.config.self_refine import SelfRefineConfig


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


@dataclass(frozen=True)
class NoiseSchedulerConfig:
    num_train_timesteps: int = 1000  # DDPM's T
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"  # DDPM's choice
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    clip_sample: bool = True  # clip x̂0 to [-1, 1] while sampling (the data range)


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


@dataclass(frozen=True)
class ImportanceWeightConfig:
    enabled: bool = False  # (a): per-pixel loss weight from D's saliency (callbacks.ImportanceWeightedLoss)
    rule: Literal["scale", "mean"] = "mean"  # "scale": 1 + alpha*M; "mean": (1 - beta) + beta*S/mean(S)
    alpha: float = 1.0
    beta: float = 0.5
    map_source: Literal["x_t", "x0"] = "x_t"  # "x0" shifts the optimum: an ablation arm only
    method: str = "saliency"
    blur_sigma: float = 1.0  # pixels; smooths single-pixel gradient noise
    start_step: int = 200  # let D learn before its maps steer the UNet


@dataclass(frozen=True)
class ImportanceNoiseConfig:
    enabled: bool = False  # (b): importance-scheduled noise (callbacks.ImportanceNoiseSchedule)
    mode: Literal["pixel", "timesteps"] = "pixel"  # "timesteps" = the safe curriculum variant
    sharpness: float = 20.0  # k of tau(t) = sigmoid(k (t/T - t_phi))
    midpoint: float = 0.5  # t_phi: above it the noise is nearly isotropic
    lambda_min: float = 0.25  # important pixels keep 1/sqrt(1 + 1/lambda_min) of the noise at t = 0
    lambda_max: float = 4.0
    map_source: Literal["x0", "x_t"] = "x0"  # "x0": S(x0) in training, S(x0_hat) in sampling
    method: str = "saliency"
    blur_sigma: float = 1.0
    num_buckets: int = 20  # curriculum: timestep buckets
    uniform_mix: float = 0.5  # curriculum: share of uniform draws (caps the weights at 2)
    decay: float = 0.9  # curriculum: EMA of bucket scores
    self_normalise: bool = False
    update_every: int = 1  # curriculum: steps between score updates


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
