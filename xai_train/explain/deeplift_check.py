"""Can captum's DeepLift explain this D? A probe that fails loudly instead of degrading silently.

captum's DeepLift replaces the gradient of each *supported activation module* by its rescale multiplier
(it hooks the module and stores its last input and output on it). Three things break that silently:

1. a non-linearity called functionally (``F.leaky_relu(x)``, ``x.relu()``, ``torch.tanh``) or inside an
   unsupported module (``nn.GELU``): DeepLift back-propagates the plain gradient through it;
2. an activation module used more than once per forward: the second call overwrites what the first
   stored, and the multipliers are computed from the wrong tensors;
3. train-mode BatchNorm: DeepLift runs images and baselines in one batch, so they share statistics.

The probe runs D once on a single image with (a) a forward hook on every supported activation module
counting its calls, and (b) a ``TorchFunctionMode`` that records every non-linear torch function called
while no supported activation module is running; both name the offending module. A model built from
pieces neither check knows (e.g. ``torch.where(x > 0, x, 0.2 * x)``) is caught by (c): DeepLift's
summation-to-delta property, sum(attributions) = score(image) − score(baseline), checked on that one
image. The probe costs about one DeepLift call on a single image.

Precision: the probe runs D in full precision (``xai_train.explain.precision.full_precision``: a forward that
``accelerator.prepare`` wrapped in autocast is bypassed) on an fp32 copy of the image. If a module still
computes in bf16/fp16 (autocast inside D's own forward, or a D cast with ``.half()``), the sum can miss by
bf16's rounding alone; the error then names precision as the cause, not D's architecture.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import DeepLift
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from xai_train.explain.base import has_train_mode_batch_norm
from xai_train.explain.precision import LOW_PRECISION, explanation_input, full_precision

CAPTUM_HOOK_WARNING = "Setting forward, backward hooks and attributes on non-linear"

DEEPLIFT_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.Softmax,
)
"""The module types whose gradient captum's DeepLift replaces by its multipliers (captum 0.8-0.9).

captum keeps this list in a private module, so the project owns a copy instead of importing it (a private
path can move in any release); ``tests/explain/test_explain_deeplift_check.py`` checks it against the
installed captum, both the private list and DeepLift's behaviour on each activation."""

_FUNCTIONAL_NAMES = (
    "relu relu_ relu6 leaky_relu leaky_relu_ elu elu_ selu celu gelu silu mish softplus softsign hardtanh "
    "hardtanh_ hardswish hardsigmoid logsigmoid tanhshrink softshrink hardshrink glu prelu rrelu threshold "
    "sigmoid tanh softmax log_softmax max_pool1d max_pool2d max_pool3d _max_pool1d _max_pool2d _max_pool3d "
    "adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d"
).split()
_TORCH_NAMES = "relu relu_ sigmoid tanh clamp clip maximum minimum abs".split()
_TENSOR_NAMES = "relu relu_ sigmoid sigmoid_ tanh tanh_ clamp clamp_ clip abs abs_".split()

SUMMATION_RTOL, SUMMATION_ATOL = 1e-3, 1e-5
"""Allowed |sum(attributions) − Δscore|: RTOL·max(|Δscore|, |score|) + ATOL (DCGAN D in fp32: ~1e-7)."""


def _nonlinear_functions() -> dict[Any, str]:
    functions: dict[Any, str] = {}
    for namespace, prefix, names in ((F, "F", _FUNCTIONAL_NAMES), (torch, "torch", _TORCH_NAMES)):
        for name in names:
            if hasattr(namespace, name):
                functions[getattr(namespace, name)] = f"{prefix}.{name}"
    for name in _TENSOR_NAMES:
        functions[getattr(torch.Tensor, name)] = f"Tensor.{name}"
    return functions


class _FunctionalProbe(TorchFunctionMode):
    """Records non-linear torch functions called while no supported activation module is running."""

    def __init__(self, functions: dict[Any, str], stack: list[str], inside: list[int]) -> None:
        super().__init__()
        self.functions, self.stack, self.inside = functions, stack, inside
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = self.functions.get(func)
        if name is not None and self.inside[0] == 0:
            self.found.append(f"{name} in {self.stack[-1] if self.stack else '<root>'}")
        return func(*args, **(kwargs or {}))


def _describe(name: str, module: nn.Module) -> str:
    return f"'{name}' ({type(module).__name__})"


def check_deeplift(model: nn.Module, images: Tensor, baselines: Tensor | float = 0.0) -> None:
    """Raises a ValueError if captum's DeepLift cannot explain ``model`` exactly (see the module docstring).

    Args:
        model: the score model, images -> (B, 1), with D in the mode the attribution will use.
        images: (B, C, H, W); only the first image is used.
        baselines: the baseline(s) the attribution will use; only the first is used.

    Example:
        >>> D = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1)).eval()
        >>> check_deeplift(D, torch.randn(2, 1, 2, 2))
    """
    if has_train_mode_batch_norm(model):
        raise ValueError(
            "deeplift: D has BatchNorm using batch statistics, which mixes images and baselines; "
            "use bn_mode='eval' (the default)"
        )
    with full_precision(model):
        _check(model, explanation_input(images[:1], model), baselines)


def _check(model: nn.Module, image: Tensor, baselines: Tensor | float) -> None:
    if isinstance(baselines, Tensor):
        baselines = baselines.detach().to(device=image.device, dtype=image.dtype)
    supported = {m for m in model.modules() if type(m) in DEEPLIFT_MODULES}
    root = getattr(model, "discriminator", model)  # name modules as "D.<path>", not via the ScoreModel
    names = {m: f"D.{name}" if name else "D" for name, m in root.named_modules()}
    for name, m in model.named_modules():
        names.setdefault(m, name)
    calls: Counter[nn.Module] = Counter()
    stack: list[str] = []
    inside = [0]
    low_precision: list[str] = []  # modules whose output is bf16/fp16 although D runs in full precision

    def pre(module: nn.Module, _inputs: object) -> None:
        stack.append(_describe(names[module], module))
        if module in supported:
            calls[module] += 1
            inside[0] += 1

    def post(module: nn.Module, _inputs: object, output: object) -> None:
        stack.pop()
        if isinstance(output, Tensor) and output.dtype in LOW_PRECISION:
            low_precision.append(f"{_describe(names[module], module)} outputs {output.dtype}")
        if module in supported:
            inside[0] -= 1

    handles = [m.register_forward_pre_hook(pre) for m in names] + [m.register_forward_hook(post) for m in names]
    probe = _FunctionalProbe(_nonlinear_functions(), stack, inside)
    try:
        with torch.no_grad(), probe:
            model(image)
    finally:
        for handle in handles:
            handle.remove()
    reused = [f"{_describe(names[m], m)} runs {n} times" for m, n in calls.items() if n > 1]
    if reused:
        raise ValueError(
            f"deeplift: activation modules are re-used within one forward: {'; '.join(reused)}. "
            "captum's DeepLift needs each non-linearity to be its own module instance"
        )
    if probe.found:
        found = "; ".join(dict.fromkeys(probe.found))
        supported_names = ", ".join(sorted(t.__name__ for t in DEEPLIFT_MODULES))
        raise ValueError(
            f"deeplift: D applies non-linearities outside captum-supported activation modules: {found}. "
            f"DeepLift would treat them as linear; use one nn.Module instance per non-linearity, of a "
            f"supported type ({supported_names})"
        )
    _check_summation(model, image, baselines, low_precision)


def _check_summation(model: nn.Module, image: Tensor, baselines: Tensor | float, low_precision: list[str]) -> None:
    baseline = baselines[:1] if isinstance(baselines, Tensor) and baselines.dim() == 4 else baselines
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CAPTUM_HOOK_WARNING)
        _, delta = DeepLift(model).attribute(image, baselines=baseline, target=None, return_convergence_delta=True)
    with torch.no_grad():
        score = model(image)
        change = (score - model(torch.zeros_like(image) + baseline)).abs().max().item()
        score = score.abs().max().item()
    if not abs(delta.item()) <= SUMMATION_RTOL * max(change, score) + SUMMATION_ATOL:
        if low_precision:
            raise ValueError(
                f"deeplift: attributions do not sum to score(image) - score(baseline) (off by {delta.item():.3g} "
                f"for a change of {change:.3g}) because D computes in reduced precision: "
                f"{'; '.join(dict.fromkeys(low_precision[:3]))}. The check needs fp32: remove the autocast or "
                "the .half()/.bfloat16() cast inside D (attribute() already bypasses accelerate's autocast)"
            )
        raise ValueError(
            f"deeplift: attributions do not sum to score(image) - score(baseline) (off by {delta.item():.3g} "
            f"for a change of {change:.3g}); D has a non-linearity captum's DeepLift cannot see "
            "(built from elementary ops, or an unsupported module)"
        )
