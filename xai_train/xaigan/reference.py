"""The xAI-GAN reference code's mask, reproduced exactly — a reproduction aid, not a recommendation.

What the reference (explainable-gan/XAIGAN) does in each generator step (DESIGN.md §4):

1. explain only the fakes with ``sigmoid(D(fake)) < 0.5``, and only if there are at least two of them;
2. start from a tensor of ones shaped like the batch and write the explained samples' attributions
   into it (captum ``Saliency`` gives |gradient|; ``DeepLiftShap`` signed values) — the attributions of
   ``sigmoid(D)``, since its D ends with a Sigmoid;
3. normalise the *whole* tensor with one min-max (``v -= v.min(); v /= v.max()``) and set NaN to 0.

Consequences kept on purpose: the unexplained fakes (those that fooled D) keep the fill value 1, which
usually becomes the batch maximum, so they receive the largest boost; with at most one explained fake
the tensor is all ones and the mask is 0/0 = NaN -> 0 everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor

MIN_EXPLAINED = 2
"""The reference explains nothing unless at least this many fakes are rejected."""


def reference_selection(d_fake: Tensor) -> Tensor:
    """The reference's explained fakes: ``sigmoid(logit) < 0.5``, and none if fewer than two qualify.

    Args:
        d_fake: (B, 1) or (B,) logits.

    Returns:
        (B,) bool.

    Example:
        >>> reference_selection(torch.tensor([-1.0, 2.0, -3.0])).tolist()
        [True, False, True]
        >>> reference_selection(torch.tensor([-1.0, 2.0, 3.0])).tolist()
        [False, False, False]
    """
    explained = torch.sigmoid(d_fake.detach().float().reshape(-1)) < 0.5
    return explained if int(explained.sum()) >= MIN_EXPLAINED else torch.zeros_like(explained)


def reference_mask(attributions: Tensor, explained: Tensor) -> Tensor:
    """The reference mask: fill with 1, insert the explained attributions, one batch-global min-max, NaN -> 0.

    Args:
        attributions: (K, C, H, W) attributions of the K explained samples, in batch order.
        explained: (B,) bool with K true entries; fewer than two means nothing was explained.

    Returns:
        (B, C, H, W) float32 mask in [0, 1].

    Example:
        >>> a = torch.tensor([[[[0.0, 2.0]]], [[[4.0, 0.0]]]])
        >>> reference_mask(a, torch.tensor([True, False, True])).flatten().tolist()
        [0.0, 0.5, 0.25, 0.25, 1.0, 0.0]
    """
    batch = explained.shape[0]
    values = torch.ones((batch, *attributions.shape[1:]), dtype=torch.float32, device=attributions.device)
    if int(explained.sum()) >= MIN_EXPLAINED:
        values[explained] = attributions.detach().float()
    values = values - values.min()
    values = values / values.max()
    values[torch.isnan(values)] = 0
    return values
