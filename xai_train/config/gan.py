"""Config schema of the GAN recipe (``recipes/train_gan.py``); shared sections live in ``common.py``.

Each field has a default and a short reason. The trainer reads ``GANTrainConfig``; the recipe reads the rest.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Literal

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
from xai_train.config.core import ConfigError, as_config_error, check_choices, check_fields
from xai_train.explain.attribute import METHODS
from xai_train.models.build import supported_sizes
from xai_train.xaigan.options import check_xaigan_options


@dataclass(frozen=True)
class GANModelConfig:
    arch: Literal["dcgan", "paper_mlp"] = "dcgan"
    latent_dim: int = 100  # DCGAN and the paper's MLPs both use 100
    g_width: int = 64
    d_width: int = 64
    g_norm: Literal["batch", "none"] = "batch"
    d_norm: Literal["batch", "none"] = "batch"  # "none" makes free saliency exact (no cross-sample coupling)
    dropout: float = 0.3  # paper MLP discriminator only

    def __post_init__(self) -> None:
        check_fields(self, "must be >= 1", lambda v: v >= 1, "latent_dim", "g_width", "d_width")
        check_fields(self, "must be in [0, 1) (a drop probability)", half_open_unit, "dropout")
        check_choices(self)


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
    generator_label: float = 1.0  # G's BCE target; the xAI-GAN code trains G against its real_label, 0.9
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

    def __post_init__(self) -> None:
        steps = ("batch_size", "max_steps", "d_steps_per_g_step", "grad_accum_steps", "log_every", "num_samples")
        check_fields(self, "must be >= 1", lambda v: v >= 1, *steps)
        check_fields(self, "must be >= 0 (0 disables)", lambda v: v >= 0, "sample_every", "checkpoint_every")
        check_fields(self, "must be >= 0 (0 keeps every checkpoint)", lambda v: v >= 0, "keep_checkpoints")
        check_fields(self, "must be a finite number > 0 (the paper uses 2e-4)", positive, "lr_g", "lr_d")
        check_betas(self)
        check_fields(self, "must be in [0, 1] (a BCE target)", unit_interval, "real_label", "fake_label")
        check_fields(self, "must be in [0, 1] (a BCE target)", unit_interval, "generator_label")
        if self.loss != "bce" and self.generator_label != 1.0:
            raise ConfigError(f"generator_label={self.generator_label}: only loss=bce has a target; set it to 1.0")
        check_fields(self, "must be in [0, 1) (0 disables the EMA; 0.999 is common)", half_open_unit, "ema_decay")
        check_fields(self, "must be >= 0 (0 disables)", at_least(0), "clip_grad_norm_g", "clip_grad_norm_d")
        check_choices(self)


@dataclass(frozen=True)
class XAIConfig:
    """xAI-GAN: explanation-guided generator gradients (``callbacks.XAIGradientMask``)."""

    enabled: bool = False
    method: str = "grad"  # "grad" = free saliency from G's own backward (no extra cost); or a captum method
    rule: Literal["scale", "product"] = "scale"  # scale: g*(1+alpha*M) (paper); product: g*M
    alpha: float = 0.2  # the paper's value; >= -1 (below, g*(1+alpha*M) flips the gradient's sign)
    allow_sign_flip: bool = False  # opt-in for alpha < -1 (the generator then climbs its loss where M > 1/|alpha|)
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
    reference_baselines: int = 8  # real images deeplift_shap / gradient_shap use (all); preset=reference: batch_size
    log_every: int = 250  # saliency overlays + mask statistics in TensorBoard; 0 disables

    def __post_init__(self) -> None:
        with as_config_error():  # the same check as callbacks.XAIGradientMask's constructor
            check_xaigan_options(**self.callback_kwargs())
        check_fields(self, "must be >= 1", lambda v: v >= 1, "reference_baselines")
        check_fields(self, "must be >= 0 (0 disables)", lambda v: v >= 0, "log_every")

    def callback_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``callbacks.XAIGradientMask`` (the recipe adds real baselines for SHAP)."""
        return dict(
            method=self.method,
            explainer_options=dict(self.explainer_options),
            rule=self.rule,
            alpha=self.alpha,
            allow_sign_flip=self.allow_sign_flip,
            alpha_warmup_steps=self.alpha_warmup_steps,
            only_rejected=self.only_rejected,
            start_step=self.start_step,
            every_n_steps=self.every_n_steps,
            preset=self.preset or None,
            absolute=self.absolute,
            reduce=self.reduce,
            blur_sigma=self.blur_sigma,
            scope=self.scope,
        )


@dataclass(frozen=True)
class GANExperiment:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: GANModelConfig = field(default_factory=GANModelConfig)
    train: GANTrainConfig = field(default_factory=GANTrainConfig)
    xai: XAIConfig = field(default_factory=XAIConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        """Rules across sections: the architecture must build for the data's image size, and a CAM needs
        convolutional feature maps (the paper MLP has none)."""
        with as_config_error():
            check_gan_size(self.model.arch, self.data.image_size, self.data.channels)
        xai = self.xai
        if xai.enabled and self.model.arch == "paper_mlp" and "layer" not in xai.explainer_options:
            if xai.method in METHODS and "layer" in inspect.signature(METHODS[xai.method]).parameters:
                raise ConfigError(
                    f"xai.method={xai.method!r}: a CAM needs (B, K, h, w) feature maps and model.arch='paper_mlp' has "
                    "none; choose a pixel-space method (grad, saliency, deeplift_shap, ...) or model.arch=dcgan"
                )


def check_gan_size(arch: str, image_size: int, channels: int) -> None:
    """Raises a ConfigError naming ``data.image_size``/``data.channels`` if ``arch`` cannot build for them.

    Example:
        >>> check_gan_size("dcgan", 48, 1)
        Traceback (most recent call last):
        ...
        xai_train.config.core.ConfigError: data.image_size=48: model.arch 'dcgan' builds 32 or 64 pixel images
    """
    sizes, channel_options = supported_sizes(arch)
    if image_size not in sizes:
        raise ConfigError(
            f"data.image_size={image_size}: model.arch {arch!r} builds {' or '.join(map(str, sizes))} pixel images"
            + ("; use model.arch=dcgan for other sizes" if arch != "dcgan" else "")
        )
    if channel_options is not None and channels not in channel_options:
        raise ConfigError(
            f"data.channels={channels}: model.arch {arch!r} builds {' or '.join(map(str, channel_options))}-channel "
            "images; use model.arch=dcgan for other images"
        )
