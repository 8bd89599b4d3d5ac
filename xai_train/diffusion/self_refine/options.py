"""The options of self-refining diffusion, their checks, and the authors' values (the ``reference`` preset).

One validator serves the callback (``callbacks.SelfRefiningDiffusion``) and the ``self_refine:`` config
section, so a bad value fails at once with the same one-line message either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xai_train.explain import check_method

CHOICES: dict[str, tuple[str, ...]] = {
    "target": ("reference", "consistent"),
    "fam_reduce": ("batch_mean", "per_sample"),
    "fam_source": ("highlighter", "discriminator"),
    "highlighter_training": ("offline", "online"),
    "direction": ("amplify", "protect"),
    "evidence": ("real", "generated"),
}
"""The variants and their allowed values (the first is the authors')."""

REFERENCE: dict[str, Any] = {
    "noise_weight": 0.01,  # fam_noise_w
    "attention_weight": 0.025,  # fam_attn_w
    "target": "reference",  # training_losses keeps the un-amplified noise as the ε target
    "fam_reduce": "batch_mean",  # th.mean(th.stack(flaw_maps), dim=0)
    "fam_source": "highlighter",  # a separate classifier trained offline
    "highlighter_training": "offline",
    "direction": "amplify",  # noise * (1 + w_n * fam)
    "method": "gradcam",  # pytorch-grad-cam GradCAM, ClassifierOutputTarget(0)
    "evidence": "real",  # target 0 of a single sigmoid output trained with real = 1 (see DESIGN.md §9)
    "projection_bias": True,  # nn.Conv2d defaults
}
"""What the authors' code does; the ``reference`` preset fixes these and leaves the step counts free."""

_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "first_process": (lambda v: v >= 0, "must be >= 0 (steps of plain training before the first FAM)"),
    "fam_cycle": (lambda v: v >= 1, "must be >= 1 (steps between FAM refreshes)"),
    "noise_weight": (lambda v: v >= 0, "must be >= 0 (w_n; the authors use 0.01)"),
    "attention_weight": (lambda v: v >= 0, "must be >= 0 (w_a; the authors use 0.025)"),
    "num_samples": (lambda v: v >= 1, "must be >= 1 (EMA samples per process for one FAM)"),
    "sample_steps": (lambda v: v >= 1, "must be >= 1 (DDIM steps of the FAM samples)"),
    "highlighter_width": (lambda v: v >= 1, "must be >= 1"),
    "highlighter_samples": (lambda v: v >= 2, "must be >= 2 (generated images to train the FH on)"),
    "highlighter_epochs": (lambda v: v >= 1, "must be >= 1"),
    "highlighter_batch_size": (lambda v: v >= 1, "must be >= 1"),
    "highlighter_lr": (lambda v: v > 0, "must be > 0"),
    "highlighter_held_out": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "online_lr": (lambda v: v > 0, "must be > 0"),
    "buffer_capacity": (lambda v: v >= 1, "must be >= 1"),
    "projection_lr": (lambda v: v >= 0, "must be >= 0 (0 freezes the projections)"),
}


def check_self_refine_options(**options: Any) -> None:
    """Raises a one-line ValueError for the first bad option (names as in ``SelfRefiningDiffusion``).

    Example:
        >>> check_self_refine_options(target="consistent", fam_cycle=100)
        >>> check_self_refine_options(fam_cycle=0)
        Traceback (most recent call last):
        ...
        ValueError: fam_cycle=0: must be >= 1 (steps between FAM refreshes)
    """
    for name, value in options.items():
        if name in CHOICES and value not in CHOICES[name]:
            raise ValueError(f"{name}={value!r}: choose one of {', '.join(CHOICES[name])}")
        if name in _RULES and not _RULES[name][0](value):
            raise ValueError(f"{name}={value!r}: {_RULES[name][1]}")
    if options.get("direction") == "protect" and not options.get("noise_weight", 0.0) < 1:
        raise ValueError(
            f"noise_weight={options['noise_weight']!r}: direction 'protect' needs w_n < 1 (g = 1 - w_n·FAM > 0)"
        )
    if "method" in options:
        check_method(options["method"])


SAMPLERS: tuple[str, ...] = ("auto", "plain", "per_pixel")
"""How a self-refining model is sampled: plain DDIM, or the per-pixel sampler with ``g = 1 ± w_n·FAM``."""


def resolve_sampler(sampler: str, target: str = "reference", fam_reduce: str = "batch_mean") -> str:
    """The sampler of a run: "plain" or "per_pixel" ("auto": per-pixel exactly when the model learned ``g⊙ε``).

    A model trained with the consistent target predicts the amplified noise ``(1 ± w_n·FAM)⊙ε``, so its own
    sampler starts from and steps with that per-pixel scale; the reference target predicts the un-amplified ε
    (the authors' quirk), so plain DDIM is its sampler, as theirs. Per-sample maps leave no single FAM to
    sample with.

    Example:
        >>> resolve_sampler("auto", "consistent"), resolve_sampler("auto", "reference")
        ('per_pixel', 'plain')
        >>> resolve_sampler("per_pixel", "reference")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: sampler='per_pixel' with target='reference': that model predicts the un-amplified ε, ...
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if sampler == "auto":
        return "per_pixel" if target == "consistent" and fam_reduce == "batch_mean" else "plain"
    if sampler == "per_pixel" and target != "consistent":
        raise ValueError(
            f"sampler='per_pixel' with target={target!r}: that model predicts the un-amplified ε, so plain DDIM "
            "samples it; set sampler=plain (or auto), or target=consistent"
        )
    if sampler == "per_pixel" and fam_reduce != "batch_mean":
        raise ValueError(
            f"sampler='per_pixel' with fam_reduce={fam_reduce!r}: each training image had its own map, so there is "
            "no single FAM to sample with; set sampler=plain (or auto), or fam_reduce=batch_mean"
        )
    return sampler


def check_reference(**options: Any) -> None:
    """Raises a one-line ValueError if an option differs from the authors' value (:data:`REFERENCE`).

    Example:
        >>> check_reference(target="consistent")
        Traceback (most recent call last):
        ...
        ValueError: target='consistent': preset 'reference' fixes it to 'reference'; set preset=custom for a variant
    """
    for name, value in options.items():
        if name in REFERENCE and value != REFERENCE[name]:
            raise ValueError(
                f"{name}={value!r}: preset 'reference' fixes it to {REFERENCE[name]!r}; set preset=custom for a variant"
            )
