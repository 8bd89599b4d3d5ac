"""Free saliency: the explanation already inside the generator's backward (DESIGN.md §4).

With ``L_G = mean_i f(D(x_i))`` the gradient reaching the fake images is ``g_i = c_i · ∂D_i/∂x_i`` with a
per-sample scalar ``c_i = f'(D_i)/B``. Its per-sample min-max-normalised ``|g_i|`` is therefore vanilla
saliency — exactly captum ``Saliency(D)`` after the same normalisation — when D has no cross-sample
coupling (no train-mode BatchNorm, no minibatch statistics) or when ``f'`` is constant (hinge/WGAN
generator losses, where ``g`` is the saliency of ``sum_j D_j``, i.e. captum with ``bn_mode="freeze_stats"``).
With train-mode BatchNorm and a non-constant ``f'`` (the non-saturating BCE loss) ``g_i`` also contains
other samples' ``c_j ∂D_j/∂x_i`` terms and the equality is approximate (DESIGN.md measured a top-10%
IoU of about 0.83).

Method name: ``"grad"``. Cost: a min-max normalisation inside the hook, no extra pass through D. The
gradient function takes ``g``, builds ``M`` from it in float32 and returns ``rule(g, M)``; ``M`` is
invariant to positive rescaling of ``g`` (exactly for the powers of two AMP loss scales use), so the
function stays positively homogeneous: ``f(c·g) = c·f(g)``. A sample whose gradient holds NaN/Inf (an
fp16 overflow, after which the loss scaler skips the step) gets an all-zero mask and is flagged
``degenerate`` (``to_mask(..., nonfinite="flag")``), which the callbacks count and log.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from xai_train.callback import GradFn
from xai_train.explain.mask import MaskResult, scatter_mask, to_mask

FREE_METHOD = "grad"
"""The explainer name of free saliency."""


def saliency_grad_fn(
    rule: Callable[[Tensor, Tensor], Tensor],
    *,
    explained: Tensor | None = None,
    absolute: bool = True,
    reduce: str = "max",
    blur_sigma: float = 0.0,
    scope: str = "sample",
    on_mask: Callable[[MaskResult], None] | None = None,
) -> GradFn:
    """A gradient function that masks the generator gradient with the saliency it contains.

    Args:
        rule: ``(grad, mask) -> new grad``, e.g. ``lambda g, m: scale_grad(g, m, 0.2)``; ``mask`` has the
            shape :func:`to_mask` gives and zeros for the samples not explained.
        explained: (B,) bool, the samples whose mask is computed (default all); normalisation with
            ``scope="batch"`` runs over these only.
        absolute, reduce, blur_sigma, scope: :func:`to_mask` options.
        on_mask: called with the batch's :class:`MaskResult` inside the backward (e.g. to log it).

    Returns:
        GradFn ``grad (B, C, H, W) -> rule(grad, mask)``.

    Example:
        >>> import torch
        >>> fake = torch.randn(2, 1, 4, 4, requires_grad=True)
        >>> _ = fake.register_hook(saliency_grad_fn(lambda g, m: g * (1 + 0.2 * m)))
        >>> (fake ** 2).sum().backward()
        >>> bool((fake.grad.abs() >= (2 * fake).abs()).all())
        True
    """

    def grad_fn(grad: Tensor) -> Tensor:
        # A gradient that overflowed under fp16 loss scaling is normal (the scaler skips the step): count it.
        options = dict(absolute=absolute, reduce=reduce, blur_sigma=blur_sigma, scope=scope, nonfinite="flag")
        if explained is None:
            result = to_mask(grad, **options)
        else:
            result = scatter_mask(to_mask(grad[explained], **options), explained)
        if on_mask is not None:
            on_mask(result)
        return rule(grad, result.mask)

    return grad_fn
