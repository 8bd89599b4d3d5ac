"""GAN losses as unreduced per-sample maps, so callbacks can weight them before the mean.

Each function takes discriminator logits (B, 1) and returns a per-sample loss (B,).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

GANLoss = Literal["bce", "hinge", "lsgan"]
LOSSES: tuple[str, ...] = ("bce", "hinge", "lsgan")


def _check(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown GAN loss '{loss}'; choose one of: {', '.join(LOSSES)}")


def _bce(logits: Tensor, target: float) -> Tensor:
    # BCE-with-logits against a constant target, written with softplus to stay exact for soft labels.
    return target * F.softplus(-logits) + (1.0 - target) * F.softplus(logits)


def discriminator_loss(
    d_real: Tensor, d_fake: Tensor, loss: str = "bce", real_label: float = 1.0, fake_label: float = 0.0
) -> Tensor:
    """Per-sample discriminator loss.

    Args:
        d_real: (B, 1) logits on real images.
        d_fake: (B, 1) logits on generated images.
        loss: "bce" (non-saturating GAN), "hinge" or "lsgan".
        real_label: BCE target for real images (the xAI-GAN paper smooths it to 0.9).
        fake_label: BCE target for fakes (the paper uses 0.1).

    Returns:
        (B,) loss per sample pair.

    Example:
        >>> import torch
        >>> discriminator_loss(torch.zeros(2, 1), torch.zeros(2, 1), "hinge")
        tensor([2., 2.])
    """
    _check(loss)
    d_real, d_fake = rearrange(d_real, "b 1 -> b"), rearrange(d_fake, "b 1 -> b")
    if loss == "bce":
        return _bce(d_real, real_label) + _bce(d_fake, fake_label)
    if loss == "hinge":
        return F.relu(1.0 - d_real) + F.relu(1.0 + d_fake)
    return 0.5 * ((d_real - 1.0) ** 2 + d_fake**2)


def generator_loss(d_fake: Tensor, loss: str = "bce", target: float = 1.0) -> Tensor:
    """Per-sample generator loss (non-saturating for "bce").

    Args:
        d_fake: (B, 1) logits on generated images.
        loss: "bce", "hinge" or "lsgan".
        target: BCE target of the fakes in G's loss; 1 is the non-saturating loss. The xAI-GAN reference
            code trains G against its smoothed real label, 0.9 (so G is pushed towards D(fake) = 0.9, not 1).
            Only "bce" takes a target other than 1.

    Returns:
        (B,) loss per sample.

    Example:
        >>> import torch
        >>> generator_loss(torch.tensor([[1.5]]), "hinge")
        tensor([-1.5000])
        >>> generator_loss(torch.tensor([[0.0]]), "bce", target=0.9)  # log 2 for any target at D = 1/2
        tensor([0.6931])
    """
    _check(loss)
    if loss != "bce" and target != 1.0:
        raise ValueError(f"generator_loss: target={target} needs loss='bce' (the {loss} loss has no target)")
    d_fake = rearrange(d_fake, "b 1 -> b")
    if loss == "bce":
        return _bce(d_fake, target)
    if loss == "hinge":
        return -d_fake
    return 0.5 * (d_fake - 1.0) ** 2
