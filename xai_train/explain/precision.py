"""Which precision an explanation runs in: fp32, whatever the training loop's mixed precision (docs/precision.md).

``accelerator.prepare(D)`` with ``mixed_precision="bf16"``/``"fp16"`` replaces ``D.forward`` by an autocast
wrapper (keeping the original as ``D._original_forward``), so even the *unwrapped* D computes in bf16/fp16, and
an outer ``torch.autocast(..., enabled=False)`` cannot help: the wrapper re-enables autocast inside. Explanations
(attribution maps, DeepLift's completeness check) and R1's double backward need exact input gradients, so they
all go through :func:`full_precision`, the one place that decides:

* every module of D whose forward accelerate patched runs its original forward for the block;
* autocast is switched off for the block (the CPU and D's own device type);
* the inputs are cast to :func:`explanation_dtype` (fp32; fp64 for an fp64 D), and every tensor option
  (baselines, feature masks, targets) is moved to the images' device — floating ones also to their dtype —
  by :func:`match_options`.

Scaled fp16 gradients are the other half of mixed precision: :func:`unscale_or_skip` is what an optimizer
outside ``accelerator.prepare`` (SRD's projections) uses to step on true gradients and to skip overflows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

LOW_PRECISION: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
"""Floating dtypes that mixed precision computes in; an explanation never should."""


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a model with neither.

    Example:
        >>> model_device(nn.Linear(2, 1)).type
        'cpu'
    """
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def explanation_dtype(model: nn.Module) -> torch.dtype:
    """The dtype explanations of ``model`` compute in: float32, float64 for a float64 model.

    A model whose floating parameters are all in one low-precision dtype (a D cast with ``.half()``) cannot
    take fp32 inputs without being copied; it is explained in that dtype (DeepLift's check then says so).

    Example:
        >>> explanation_dtype(nn.Linear(2, 1)), explanation_dtype(nn.Linear(2, 1).double())
        (torch.float32, torch.float64)
    """
    floating = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(floating) == 1 and floating <= {torch.float64, *LOW_PRECISION}:
        return floating.pop()
    return torch.float32


def is_autocast_patched(module: nn.Module) -> bool:
    """True if ``accelerator.prepare`` replaced ``module.forward`` by its autocast wrapper.

    Example:
        >>> is_autocast_patched(nn.Linear(2, 1))
        False
    """
    return "forward" in vars(module) and "_original_forward" in vars(module)


@contextlib.contextmanager
def full_precision(model: nn.Module) -> Iterator[nn.Module]:
    """Runs ``model`` (and every submodule) without autocast for the block; forwards restored afterwards.

    Works on the unwrapped model and, for a DDP-wrapped one, on the module inside (pass
    ``accelerator.unwrap_model(model)``: calls through the wrapper then run un-patched too). Re-entrant.
    The inputs are the caller's to cast (:func:`explanation_dtype`); parameters are never cast.

    Args:
        model: a module, possibly prepared by Accelerate with mixed precision.

    Returns:
        A context manager yielding ``model``.

    Example:
        >>> from accelerate import Accelerator
        >>> D = Accelerator(cpu=True, mixed_precision="bf16").prepare(nn.Linear(4, 1))
        >>> D(torch.randn(2, 4)).dtype  # autocast computes in bf16, then casts the output to fp32
        torch.float32
        >>> with full_precision(D):
        ...     bool(D(torch.ones(1, 4)) == torch.ones(1, 4) @ D.weight.T + D.bias)
        True
    """
    patched = [(m, vars(m)["forward"]) for m in model.modules() if is_autocast_patched(m)]
    device_types = {"cpu", model_device(model).type}
    try:
        for module, _ in patched:
            module.forward = module._original_forward
        with contextlib.ExitStack() as stack:
            for device_type in sorted(device_types):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
            yield model
    finally:
        for module, forward in patched:
            module.forward = forward


def explanation_input(images: Tensor, model: nn.Module) -> Tensor:
    """A fresh leaf copy of ``images`` in :func:`explanation_dtype`, requiring grad (the caller's is untouched).

    Example:
        >>> x = torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16)
        >>> leaf = explanation_input(x, nn.Linear(4, 1))
        >>> leaf.dtype, leaf.requires_grad, x.requires_grad
        (torch.float32, True, False)
    """
    images = images.detach()
    if images.is_inference():
        images = images.clone()  # an inference tensor cannot enter autograd; a clone outside the mode can
    return images.to(explanation_dtype(model)).detach().requires_grad_(True)


def match_options(options: Mapping[str, object], images: Tensor) -> dict[str, object]:
    """Every tensor option on the images' device; floating ones also in the images' dtype.

    The one place explainer options meet the images: CPU baselines (``dataset.images``) with CUDA images, fp64
    references with fp32 images, a CPU ``target`` index tensor. Other values pass through unchanged.

    Args:
        options: an explainer's keyword options.
        images: (B, C, H, W) the explained images (already in the explanation dtype).

    Returns:
        A new dict with the moved tensors.

    Example:
        >>> out = match_options({"baselines": torch.zeros(2, 1, 2, 2, dtype=torch.float64), "n_steps": 8},
        ...                     torch.zeros(1, 1, 2, 2))
        >>> out["baselines"].dtype, out["n_steps"]
        (torch.float32, 8)
    """
    moved: dict[str, object] = {}
    for name, value in options.items():
        if isinstance(value, Tensor):
            dtype = images.dtype if value.is_floating_point() else value.dtype
            value = value.detach().to(device=images.device, dtype=dtype)
        moved[name] = value
    return moved


def unscale_or_skip(parameters: Iterable[nn.Parameter], scaler: object | None) -> bool:
    """Divides the gradients by a GradScaler's current scale; False (grads dropped) if any is NaN/Inf.

    For an optimizer that ``accelerator.prepare`` does not see but whose parameters sit in a loss that
    ``accelerator.backward`` scaled (fp16): call it after the backward and before ``scaler.update()`` (i.e.
    before the prepared optimizer's step), and step only when it returns True. Without a scaler it only checks.

    Args:
        parameters: the parameters about to be stepped.
        scaler: ``accelerator.scaler`` (a ``torch.amp.GradScaler``) or ``None``.

    Returns:
        True if every gradient is finite (and now unscaled); False if one overflowed (every grad set to None).

    Example:
        >>> p = nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([8.0, 16.0])
        >>> class Scaler:
        ...     def get_scale(self): return 8.0
        >>> unscale_or_skip([p], Scaler()), p.grad.tolist()
        (True, [1.0, 2.0])
        >>> p.grad = torch.tensor([float("inf"), 1.0])
        >>> unscale_or_skip([p], Scaler()), p.grad
        (False, None)
    """
    params = [p for p in parameters if p.grad is not None]
    finite = all(bool(torch.isfinite(p.grad).all()) for p in params)
    if not finite:
        for p in params:
            p.grad = None
        return False
    scale = scaler.get_scale() if scaler is not None and getattr(scaler, "is_enabled", lambda: True)() else 1.0
    if scale != 1.0:
        for p in params:
            p.grad.div_(scale)
    return True
