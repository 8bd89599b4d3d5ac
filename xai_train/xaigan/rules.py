"""How a mask rescales the gradient that flows into the generator output (xAI-GAN, DESIGN.md §4).

Every rule multiplies the gradient by a detached mask, so it is positively homogeneous
(``rule(c·g, M) = c·rule(g, M)`` for ``c > 0``), as a GradFn must be.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

RULES: tuple[str, ...] = ("scale", "product")
"""``"scale"``: g ⊙ (1 + α·M) (the paper's rule); ``"product"``: g ⊙ M."""


def scale_grad(grad: Tensor, mask: Tensor, alpha: float) -> Tensor:
    """``grad ⊙ (1 + alpha·mask)``: boosts the gradient where the mask is high (the paper uses α = 0.2).

    Args:
        grad: (B, C, H, W) gradient w.r.t. the fake images.
        mask: broadcastable to ``grad`` ((B, 1, H, W) or (B, C, H, W)), values in [0, 1].
        alpha: boost at mask = 1.

    Returns:
        (B, C, H, W), in ``grad``'s dtype (the product is taken in float32).

    Example:
        >>> scale_grad(torch.ones(1, 1, 1, 2), torch.tensor([[[[0.0, 1.0]]]]), 0.5).flatten().tolist()
        [1.0, 1.5]
    """
    return (grad.float() * (1 + alpha * mask.float())).to(grad.dtype)


def product_grad(grad: Tensor, mask: Tensor) -> Tensor:
    """``grad ⊙ mask``: keeps the gradient only where the mask is high.

    Example:
        >>> product_grad(torch.ones(1, 1, 1, 2), torch.tensor([[[[0.0, 0.5]]]])).flatten().tolist()
        [0.0, 0.5]
    """
    return (grad.float() * mask.float()).to(grad.dtype)


def apply_rule(grad: Tensor, mask: Tensor, rule: str, alpha: float, explained: Tensor | None = None) -> Tensor:
    """Applies ``rule`` to the explained samples; the others keep their gradient unchanged.

    Args:
        grad: (B, C, H, W).
        mask: broadcastable to ``grad``.
        rule: one of :data:`RULES`.
        alpha: the ``scale`` rule's α (ignored by ``product``).
        explained: (B,) bool; default all samples.

    Returns:
        (B, C, H, W) new gradient.

    Example:
        >>> g = torch.ones(2, 1, 1, 1)
        >>> explained = torch.tensor([True, False])
        >>> apply_rule(g, torch.zeros(2, 1, 1, 1), "product", 0.2, explained).flatten().tolist()
        [0.0, 1.0]
    """
    check_rule(rule)
    new = scale_grad(grad, mask, alpha) if rule == "scale" else product_grad(grad, mask)
    if explained is None:
        return new
    return torch.where(rearrange(explained, "b -> b 1 1 1"), new, grad)


def check_rule(rule: str) -> str:
    """Returns ``rule`` if it is one of :data:`RULES`, else raises a ValueError listing them."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of: {', '.join(RULES)}")
    return rule
