"""Shared machinery of the explainers: the explained score, the guard around a call, option checks.

Every method in this package explains the same thing — the discriminator's real/fake score of each image,
``target=None`` on a (B, 1) output — and runs inside :func:`explaining`, which puts D in a safe state for
the call and restores it afterwards:

* ``bn_mode="eval"`` (default): D is put in eval mode. Each sample's attribution then depends on that
  sample only (perturbation methods put many perturbed copies of a sample in one batch; in train mode
  they would shift each other's BatchNorm statistics), and BatchNorm running statistics cannot move.
  Cost of the choice: early in training the running statistics lag behind the batch statistics, so the
  eval-mode D is not exactly the D the generator's loss sees.
* ``bn_mode="freeze_stats"``: D keeps its train mode (batch statistics, as in the generator step) and
  every BatchNorm gets ``momentum=0`` for the call; its buffers (including ``num_batches_tracked``) are
  restored afterwards. Use it to explain exactly the D of the generator step (see ``free.py``).

In both modes D's parameters are set to ``requires_grad=False`` for the call (captum differentiates
with respect to the images only, so nothing is lost, D's ``.grad`` cannot change, and a D frozen by the
trainer for the G step is fine), grad mode is switched on (callers under ``torch.no_grad()`` work), and
the hooks on D's modules are counted before and after: a leaked hook is an error.

Precision: inside :func:`explaining` D runs in full precision even if ``accelerator.prepare`` wrapped its
forward in autocast (``xai_train.explain.precision.full_precision``); the entry points cast the images to
fp32 and move every tensor option to them (``explanation_input``, ``match_options``).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from xai_train.checks import check_discriminator_output
from xai_train.errors import UserError
from xai_train.explain.precision import full_precision

BN_MODES: tuple[str, ...] = ("eval", "freeze_stats")
"""How BatchNorm behaves during an attribution call (see the module docstring)."""

OUTPUTS: tuple[str, ...] = ("logit", "probability")
"""What is explained: D's logit, or ``sigmoid(logit)`` (what the xAI-GAN reference code explains)."""

HOOK_DICTS: tuple[str, ...] = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
)


class ScoreModel(nn.Module):
    """Wraps D so that every explainer sees one score per image: (B, C, H, W) -> (B, 1).

    Args:
        discriminator: D, mapping images to logits of shape (B, 1) (anything else is a UserError).
        output: ``"logit"`` or ``"probability"`` (appends an ``nn.Sigmoid`` module, which DeepLift supports).

    Example:
        >>> D = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
        >>> ScoreModel(D, "probability")(torch.zeros(2, 1, 2, 2)).shape
        torch.Size([2, 1])
    """

    def __init__(self, discriminator: nn.Module, output: str = "logit") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; choose one of: {', '.join(OUTPUTS)}")
        self.discriminator = discriminator
        self.sigmoid = nn.Sigmoid() if output == "probability" else None

    def forward(self, images: Tensor) -> Tensor:
        score = self.discriminator(images)
        check_discriminator_output(score, images.shape[0])
        return score if self.sigmoid is None else self.sigmoid(score)


def hook_counts(module: nn.Module) -> dict[str, int]:
    """Number of hooks of each kind on each submodule, keyed ``"name:kind"`` (``name`` empty for the root).

    Example:
        >>> sum(hook_counts(nn.Linear(2, 1)).values())
        0
    """
    return {
        f"{name}:{kind}": len(getattr(sub, kind))
        for name, sub in module.named_modules()
        for kind in HOOK_DICTS
        if len(getattr(sub, kind))
    }


def batch_norms(module: nn.Module) -> list[_BatchNorm]:
    """All BatchNorm layers (1d/2d/3d, SyncBatchNorm) inside ``module``."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


def has_train_mode_batch_norm(module: nn.Module) -> bool:
    """True if a BatchNorm inside ``module`` normalises with batch statistics (couples the samples)."""
    return any(m.training or not m.track_running_stats for m in batch_norms(module))


def check_grad_allowed(where: str) -> None:
    """Raises a RuntimeError under ``torch.inference_mode()``, where no gradient can be taken."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{where} was called under torch.inference_mode(); explainers need autograd. "
            "Call it outside inference_mode (torch.no_grad() is fine: grad mode is switched on inside)."
        )


@contextlib.contextmanager
def explaining(discriminator: nn.Module, bn_mode: str = "eval") -> Iterator[None]:
    """Puts D in the state an attribution call needs (full precision included) and restores it afterwards.

    Args:
        discriminator: the unwrapped D.
        bn_mode: ``"eval"`` or ``"freeze_stats"`` (see the module docstring).

    Raises:
        ValueError: for an unknown ``bn_mode``.
        RuntimeError: under ``torch.inference_mode()``, or if the call left a hook on D behind.

    Example:
        >>> D = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        >>> with explaining(D):
        ...     D.training
        False
        >>> D.training
        True
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode {bn_mode!r}; choose one of: {', '.join(BN_MODES)}")
    check_grad_allowed("an explainer")
    modules = list(discriminator.modules())
    training = [m.training for m in modules]
    params = list(discriminator.parameters())
    requires_grad = [p.requires_grad for p in params]
    norms = batch_norms(discriminator)
    momenta = [m.momentum for m in norms]
    saved_buffers = [
        {name: buf.clone() for name, buf in m.named_buffers(recurse=False)} if bn_mode == "freeze_stats" else {}
        for m in norms
    ]
    hooks_before = hook_counts(discriminator)
    try:
        if bn_mode == "eval":
            discriminator.eval()
        else:
            for m in norms:
                m.momentum = 0.0
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad(), full_precision(discriminator):
            yield
    finally:
        for m, flag in zip(modules, training, strict=True):
            m.training = flag
        for p, flag in zip(params, requires_grad, strict=True):
            p.requires_grad_(flag)
        with torch.no_grad():
            for m, momentum, buffers in zip(norms, momenta, saved_buffers, strict=True):
                m.momentum = momentum
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)
    hooks_after = hook_counts(discriminator)
    if hooks_after != hooks_before:
        raise RuntimeError(f"an explainer left hooks on D: before {hooks_before}, after {hooks_after}")


def check_options(method: str, fn: Callable[..., Tensor], options: dict[str, object]) -> None:
    """Raises a TypeError naming any option that ``fn`` (the method ``method``) does not take."""
    accepted = [
        name for name, p in inspect.signature(fn).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"explainer {method!r}: unknown option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted) or 'no options'}"
        )
    defaults = {name: p.default for name, p in inspect.signature(fn).parameters.items()}
    for name, value in options.items():
        check_option_value(method, name, value, defaults[name])


COUNT_OPTIONS = frozenset(
    {
        "n_steps",
        "n_samples",
        "nt_samples",
        "n_baselines",
        "perturbations_per_eval",
        "chunk_size",
        "batch_size",
        "internal_batch_size",
        "nt_samples_batch_size",
        "patch",
        "window",
        "stride",
    }
)
"""Options that count something (steps, samples, a batch or patch size): a whole number >= 1."""
CHOICE_OPTIONS = {
    ("integrated_gradients", "method"): (
        "riemann_left",
        "riemann_right",
        "riemann_middle",
        "riemann_trapezoid",
        "gausslegendre",
    )
}
"""Options with a fixed set of values (captum's integration rules), checked before captum asserts mid-run."""
POSITIVE_OPTIONS = frozenset({"eps", "kernel_width"})
NON_NEGATIVE_OPTIONS = frozenset({"stdevs"})


def check_option_value(method: str, name: str, value: object, default: object) -> None:
    """Raises a UserError if an explainer option's value cannot work (checked before the first call).

    Counts must be whole numbers >= 1 (``None`` where that is the default), flags ``True``/``False``,
    ``eps``/``kernel_width`` finite numbers > 0 and ``stdevs`` a finite number >= 0.

    Example:
        >>> check_option_value("integrated_gradients", "n_steps", 0, 16)
        Traceback (most recent call last):
        ...
        xai_train.errors.UserError: explainer 'integrated_gradients': n_steps must be a whole number >= 1; got 0
    """
    if value is None and default is None:
        return
    if name in ("baselines", "feature_mask") and not isinstance(value, torch.Tensor):
        if name == "feature_mask" or default is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
            kind = "a number or a tensor" if isinstance(default, float) else "a tensor"
            raise UserError(f"explainer {method!r}: {name} must be {kind}, got {type(value).__name__} {value!r}")
    elif name == "layer" and not isinstance(value, nn.Module):
        raise UserError(
            f"explainer {method!r}: layer must be a module of D (e.g. D.features[-2]) or None (the last conv "
            f"layer), got {type(value).__name__} {value!r}"
        )
    elif (method, name) in CHOICE_OPTIONS and value not in CHOICE_OPTIONS[method, name]:
        choices = ", ".join(CHOICE_OPTIONS[method, name])
        raise UserError(f"explainer {method!r}: {name}={value!r} is not one of: {choices}")
    elif name in COUNT_OPTIONS:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            allowed = "None (the default) or " if default is None else ""
            raise UserError(f"explainer {method!r}: {name} must be {allowed}a whole number >= 1; got {value!r}")
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"explainer {method!r}: {name}={value!r} must be true or false")
    elif name in POSITIVE_OPTIONS or name in NON_NEGATIVE_OPTIONS:
        low = "> 0" if name in POSITIVE_OPTIONS else ">= 0"
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not (value > 0 if name in POSITIVE_OPTIONS else value >= 0):
            raise UserError(f"explainer {method!r}: {name}={value!r} must be a finite number {low}")


def check_images(images: Tensor) -> None:
    """Raises a UserError (a ValueError) unless ``images`` is a floating (B, C, H, W) tensor with B >= 1."""
    if images.dim() != 4 or images.shape[0] == 0 or not images.is_floating_point():
        raise UserError(
            f"explainers need a non-empty float batch (B, C, H, W); got shape {tuple(images.shape)}, "
            f"dtype {images.dtype}"
        )


def zero_baseline(images: Tensor) -> Tensor:
    """The default reference image: zeros (1, C, H, W) (mid-grey for images in [-1, 1])."""
    return torch.zeros_like(images[:1])


def patch_feature_mask(height: int, width: int, patch: int, device: torch.device | None = None) -> Tensor:
    """Feature ids of square patches, row-major: (height, width) int64 with values in [0, num_patches).

    Example:
        >>> patch_feature_mask(4, 4, 2)
        tensor([[0, 0, 1, 1],
                [0, 0, 1, 1],
                [2, 2, 3, 3],
                [2, 2, 3, 3]])
    """
    if patch < 1:
        raise ValueError(f"patch must be a positive int, got {patch!r}")
    rows = torch.arange(height, device=device) // patch
    cols = torch.arange(width, device=device) // patch
    per_row = -(-width // patch)
    return rows[:, None] * per_row + cols[None, :]


def default_patch(images: Tensor) -> int:
    """Default patch/window side for perturbation methods: 1/8 of the shorter image side (4 for 32×32)."""
    return max(1, min(images.shape[-2:]) // 8)
