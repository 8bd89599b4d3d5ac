"""Which fakes to explain, and when (start step, every n steps, α ramp)."""

from __future__ import annotations

from torch import Tensor


def rejected(d_fake: Tensor) -> Tensor:
    """Fakes D rejects: logit < 0, i.e. sigmoid(D(fake)) < 0.5.

    Args:
        d_fake: (B, 1) or (B,) logits.

    Returns:
        (B,) bool.

    Example:
        >>> import torch
        >>> rejected(torch.tensor([[-1.0], [0.0], [2.0]])).tolist()
        [True, False, False]
    """
    return d_fake.detach().reshape(-1) < 0


def is_active(step: int, *, start_step: int = 0, every_n_steps: int = 1) -> bool:
    """True on ``start_step`` and every ``every_n_steps``-th step after it.

    Example:
        >>> [is_active(s, start_step=2, every_n_steps=3) for s in range(7)]
        [False, False, True, False, False, True, False]
    """
    if every_n_steps < 1:
        raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
    return step >= start_step and (step - start_step) % every_n_steps == 0


def alpha_at(step: int, alpha: float, *, start_step: int = 0, warmup_steps: int = 0) -> float:
    """α ramped linearly from ``alpha / warmup_steps`` at ``start_step`` to ``alpha`` after ``warmup_steps``.

    Example:
        >>> [alpha_at(s, 0.2, start_step=10, warmup_steps=4) for s in (10, 11, 13, 20)]
        [0.05, 0.1, 0.2, 0.2]
    """
    if warmup_steps <= 0:
        return alpha
    return alpha * min(1.0, max(0, step - start_step + 1) / warmup_steps)
