"""Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019) on k-NN feature manifolds.

Each set's manifold is the union of balls around its features, each ball's radius being the distance to
the feature's k-th nearest neighbour within the set. Precision is the share of fake features that fall in
the real manifold (fidelity); recall the share of real features that fall in the fake manifold (coverage).
The paper uses k = 3. Distances are computed in chunks, so memory stays at ``chunk × N``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def knn_radii(features: Tensor, k: int = 3, chunk: int = 1024) -> Tensor:
    """Distance of each feature to its k-th nearest neighbour in the same set (itself excluded).

    Args:
        features: (N, D) features, N > k.
        k: which neighbour.
        chunk: rows per distance block.

    Returns:
        (N,) radii, float64.

    Example:
        >>> knn_radii(torch.tensor([[0.0], [1.0], [3.0]]), k=1).tolist()
        [1.0, 1.0, 2.0]
    """
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"knn_radii: need more than k={k} features, got {n}")
    x = features.double()
    radii = [torch.cdist(block, x).kthvalue(k + 1, dim=1).values for block in x.split(chunk)]
    return torch.cat(radii)


def manifold_coverage(queries: Tensor, support: Tensor, radii: Tensor, chunk: int = 1024) -> float:
    """Share of ``queries`` inside at least one ball ``B(support_i, radii_i)``.

    Args:
        queries: (M, D) features to test.
        support: (N, D) centres of the balls.
        radii: (N,) radii of the balls.
        chunk: query rows per distance block.

    Returns:
        A fraction in [0, 1].

    Example:
        >>> manifold_coverage(torch.tensor([[0.5], [5.0]]), torch.tensor([[0.0]]), torch.tensor([1.0]))
        0.5
    """
    support = support.double()
    inside = [(torch.cdist(block, support) <= radii.double()).any(dim=1) for block in queries.double().split(chunk)]
    return float(torch.cat(inside).double().mean())


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of ``fake`` with respect to ``real``.

    Args:
        real: (N, D) reference features.
        fake: (M, D) generated features.
        k: neighbourhood size of the manifold estimate (the paper's default is 3).

    Returns:
        ``(precision, recall)``, each in [0, 1].

    Example:
        >>> x = torch.randn(300, 4)
        >>> precision_recall(x, x)
        (1.0, 1.0)
    """
    precision = manifold_coverage(fake, real, knn_radii(real, k))
    recall = manifold_coverage(real, fake, knn_radii(fake, k))
    return precision, recall
