"""The ``self_refine:`` section of the diffusion recipe: self-refining diffusion (DESIGN.md §9).

``preset: reference`` fixes every semantic choice to the authors' code (``REFERENCE`` in
``xai_train.diffusion.self_refine.options``) and leaves the step counts free, because 250k base steps do not
fit a 2-core CPU; ``preset: custom`` unlocks the variants. Every value is checked when the config is built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from xai_train.config.core import ConfigError

RECIPE_ONLY: tuple[str, ...] = (
    "enabled",
    "preset",
    "highlighter_checkpoint",
    "highlighter_real_dir",
    "highlighter_fake_dir",
    "sampler",
)
"""Fields the recipe uses itself (the rest are the callback's keyword arguments)."""


@dataclass(frozen=True)
class SelfRefineConfig:
    enabled: bool = False  # callbacks.SelfRefiningDiffusion; needs attention in the UNet (the mid block has one)
    preset: Literal["reference", "custom"] = "reference"  # reference: the authors' semantics, quirks included
    first_process: int = 1000  # plain steps before the first FAM (authors: 250k of 500k; scaled for small data)
    fam_cycle: int = 100  # steps between FAM refreshes (authors: 100)
    noise_weight: float = 0.01  # w_n: noise ⊙ (1 + w_n·FAM) (authors: 0.01)
    attention_weight: float = 0.025  # w_a: k, v ⊙ (1 + w_a·proj(FAM)) (authors: 0.025)
    target: Literal["reference", "consistent"] = "reference"  # ε target: un-amplified ε (quirk) or (1 + w_n·FAM)⊙ε
    fam_reduce: Literal["batch_mean", "per_sample"] = "batch_mean"  # authors: one map, the mean over samples
    fam_source: Literal["highlighter", "discriminator"] = "highlighter"  # discriminator: our D(x_t, t), no FH
    highlighter_training: Literal["offline", "online"] = "offline"  # online: keeps training on a replay buffer
    direction: Literal["amplify", "protect"] = "amplify"  # protect: flawed pixels get less noise (§5's plan)
    method: str = "gradcam"  # any xai_train.explain.METHODS name (authors: Grad-CAM)
    evidence: Literal["real", "generated"] = "real"  # explain FH's output (authors: output 0) or its negation
    num_samples: int = 0  # EMA samples per process for one FAM; 0 = train.batch_size (authors: the batch size)
    sample_steps: int = 25  # DDIM steps of those samples (authors: 250; 25 keeps a refresh cheap on a CPU)
    highlighter_width: int = 16  # first conv width of the FH, a DCGAN-style conv stack (authors: a VGG16 backbone)
    highlighter_checkpoint: str = ""  # safetensors FH weights (xai_train FH); "" = train it at the switch
    highlighter_real_dir: str = ""  # the authors' offline data: a folder of real images ("" = the dataset)
    highlighter_fake_dir: str = ""  # ... and one of generated images ("" = EMA samples drawn at the switch)
    highlighter_samples: int = 256  # EMA samples per process for the FH at the switch
    highlighter_epochs: int = 20  # authors: 20
    highlighter_batch_size: int = 16  # authors: 16
    highlighter_lr: float = 2.0e-3  # authors: 1e-5 on a pretrained VGG16; our small FH learns from scratch
    highlighter_held_out: float = 0.1  # authors: 10% held out, best-accuracy epoch kept
    online_lr: float = 2.0e-4  # online FH's AdamW
    buffer_capacity: int = 256  # online FH's replay buffer of FAM samples
    projection_lr: float = 1.0e-4  # proj nets (authors: trained with the UNet's constant 1e-4)
    projection_bias: bool = True  # authors: default conv biases (so proj(0) != 0)
    log_every: int = 100  # FAM image and scalars to TensorBoard (0 = never)
    # How the model is sampled (grids, FAM samples, eval, export). auto: per_pixel for target=consistent with one
    # FAM (that model predicts (1 ± w_n·FAM)⊙ε: x_T and every DDIM step use that per-pixel scale, and the export
    # carries the last FAM), plain DDIM otherwise (the reference target predicts the un-amplified ε, as theirs).
    sampler: Literal["auto", "plain", "per_pixel"] = "auto"

    def resolved_sampler(self) -> str:
        """ "plain" or "per_pixel" (``auto`` resolved by ``resolve_sampler``)."""
        from xai_train.diffusion.self_refine.options import resolve_sampler

        return resolve_sampler(self.sampler, self.target, self.fam_reduce)

    def callback_kwargs(self, batch_size: int, seed: int) -> dict[str, Any]:
        """Keyword arguments of ``callbacks.SelfRefiningDiffusion`` (``num_samples`` 0 → ``batch_size``)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in RECIPE_ONLY}
        return {**values, "num_samples": self.num_samples or batch_size, "seed": seed}

    def highlighter_kwargs(self, seed: int) -> dict[str, Any]:
        """Keyword arguments of ``xai_train.diffusion.self_refine.offline_highlighter``."""
        return {
            "width": self.highlighter_width,
            "checkpoint": self.highlighter_checkpoint,
            "real_dir": self.highlighter_real_dir,
            "fake_dir": self.highlighter_fake_dir,
            "epochs": self.highlighter_epochs,
            "batch_size": self.highlighter_batch_size,
            "lr": self.highlighter_lr,
            "held_out": self.highlighter_held_out,
            "seed": seed,
        }

    def __post_init__(self) -> None:
        # Local import: the library validator lives with the method; config stays importable on its own.
        from xai_train.diffusion.self_refine.options import check_reference, check_self_refine_options

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in RECIPE_ONLY}
        values["num_samples"] = values["num_samples"] or 1  # 0 = the batch size, resolved by callback_kwargs
        del values["log_every"]
        if self.log_every < 0:
            raise ConfigError(f"log_every={self.log_every!r}: must be >= 0 (0 = never)")
        if bool(self.highlighter_real_dir) != bool(self.highlighter_fake_dir):
            raise ConfigError("highlighter_real_dir and highlighter_fake_dir: give both folders or neither")
        try:
            check_self_refine_options(**values)
            if self.preset == "reference":
                check_reference(**values)
            self.resolved_sampler()
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err)) from None
