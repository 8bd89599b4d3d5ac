"""Config schema of the GAN recipe (``recipes/train_gan.py``); shared sections live in ``common.py``.

Each field has a default and a short reason. The trainer reads ``GANTrainConfig``; the recipe reads the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from xai_train.config.common import DataConfig, EvalConfig, RunConfig


@dataclass(frozen=True)
class GANModelConfig:
    arch: Literal["dcgan", "paper_mlp"] = "dcgan"
    latent_dim: int = 100  # DCGAN and the paper's MLPs both use 100
    g_width: int = 64
    d_width: int = 64
    g_norm: Literal["batch", "none"] = "batch"
    d_norm: Literal["batch", "none"] = "batch"  # "none" makes free saliency exact (no cross-sample coupling)
    dropout: float = 0.3  # paper MLP discriminator only


@dataclass(frozen=True)
class GANTrainConfig:
    batch_size: int = 64  # per process; the global batch is batch_size x processes
    max_steps: int = 2000  # generator optimizer steps
    lr_g: float = 2e-4  # DCGAN / xAI-GAN paper value
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)  # beta1 = 0.5 is the DCGAN choice
    loss: Literal["bce", "hinge", "lsgan"] = "bce"
    real_label: float = 1.0  # the paper smooths to 0.9
    fake_label: float = 0.0  # the paper uses 0.1
    d_steps_per_g_step: int = 1
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    ema_decay: float = 0.0  # 0 disables the EMA copy of G; 0.999 is a common value
    clip_grad_norm_g: float = 0.0  # 0 disables; the paper clips G at 10
    clip_grad_norm_d: float = 0.0
    log_every: int = 10  # scalars to TensorBoard
    sample_every: int = 250  # fixed-noise sample grid
    num_samples: int = 64  # images in the sample grid
    checkpoint_every: int = 500
    keep_checkpoints: int = 3  # 0 keeps every checkpoint


@dataclass(frozen=True)
class XAIConfig:
    """xAI-GAN: explanation-guided generator gradients (``callbacks.XAIGradientMask``)."""

    enabled: bool = False
    method: str = "grad"  # "grad" = free saliency from G's own backward (no extra cost); or a captum method
    rule: Literal["scale", "product"] = "scale"  # scale: g*(1+alpha*M) (paper); product: g*M
    alpha: float = 0.2  # the paper's value
    alpha_warmup_steps: int = 0  # linear ramp of alpha from 0 after start_step
    only_rejected: bool = False  # explain only fakes D rejects (D(fake) < 0.5); others keep their gradient
    start_step: int = 0  # the paper switches on at half of training
    every_n_steps: int = 1  # on other steps the gradient is left unchanged
    preset: str = ""  # "reference" reproduces the paper code's semantics exactly (a reproduction aid)
    absolute: bool = True  # |attribution| before normalising
    reduce: Literal["max", "mean", "none"] = "max"  # channel reduction of the map
    blur_sigma: float = 0.0  # Gaussian blur of the map, in pixels
    scope: Literal["sample", "batch"] = "sample"  # min-max normalisation per image (default) or per batch
    explainer_options: dict[str, Any] = field(default_factory=dict)  # passed to the explainer
    reference_baselines: int = 8  # real images used as baselines by deeplift_shap / gradient_shap
    log_every: int = 250  # saliency overlays + mask statistics in TensorBoard; 0 disables


@dataclass(frozen=True)
class GANExperiment:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: GANModelConfig = field(default_factory=GANModelConfig)
    train: GANTrainConfig = field(default_factory=GANTrainConfig)
    xai: XAIConfig = field(default_factory=XAIConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
