"""Fréchet distance between two feature sets, written in float64 torch.

The Fréchet distance (FD) between Gaussians ``N(mu1, S1)`` and ``N(mu2, S2)`` is

    FD = ||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½)

With Inception-v3 pool features this is the FID; with any other extractor it is an FD *of that extractor*:
numbers from different extractors are not comparable, so callers always report the extractor's name.

Why the project computes it itself:

* Dependencies. pytorch-fid and torch-fidelity pull torchvision, which cannot sit next to the CPU torch
  here; torchmetrics' ``FrechetInceptionDistance`` builds its default Inception through torch-fidelity, and
  torchmetrics is only a test dependency (``tests/metrics/test_evaluate.py`` checks that both agree).
* One streaming pass for every metric. The state (sums and sums of outer products) lives in
  :mod:`xai_train.metrics.accumulator`, is reduced across ranks with Accelerate, and feeds FD, KID and
  precision/recall of any named extractor from the same features.
* Numerics. ``tr((S1 S2)^½)`` only needs the eigenvalues of ``S1 S2``. pytorch-fid takes
  ``scipy.linalg.sqrtm(S1 S2)``, which returns complex noise when a covariance is singular (fewer samples
  than features, dead ReLU features) and is patched with an ``eps`` offset; torchmetrics takes
  ``torch.linalg.eigvals(S1 S2)`` of the non-symmetric product (a general complex eigensolver) and keeps the
  real parts of their square roots. Here the same spectrum comes from the symmetric PSD matrix
  ``S1^½ S2 S1^½``: two ``eigh`` calls, real, in float64, clamped at 0.

Bias: the plug-in FD is biased upward, roughly by ``tr(S)/n`` terms; on fewer than ~5k samples it is
noticeably inflated and depends on ``n``. Compare FDs only at equal sample counts and report KID
(unbiased) next to it.
"""

from __future__ import annotations

import torch
from einops import einsum, reduce
from torch import Tensor


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of a feature set, in float64.

    Args:
        features: (N, D) features, N >= 2.

    Returns:
        mean: (D,) float64.
        covariance: (D, D) float64, normalised by N - 1.

    Example:
        >>> mean, cov = gaussian_stats(torch.randn(100, 3))
        >>> mean.shape, cov.shape
        (torch.Size([3]), torch.Size([3, 3]))
    """
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"gaussian_stats expects features of shape (N >= 2, D), got {tuple(features.shape)}")
    x = features.double()
    mean = reduce(x, "n d -> d", "mean")
    centred = x - mean
    covariance = einsum(centred, centred, "n i, n j -> i j") / (x.shape[0] - 1)
    return mean, covariance


def stats_from_sums(total: Tensor, outer: Tensor, count: int | Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance from streaming sums (what the accumulator keeps and reduces).

    Args:
        total: (D,) sum of the features.
        outer: (D, D) sum of the outer products ``x xᵀ``.
        count: number of features N (>= 2).

    Returns:
        mean: (D,) float64; covariance: (D, D) float64, normalised by N - 1.

    Example:
        >>> x = torch.randn(50, 4, dtype=torch.float64)
        >>> mean, cov = stats_from_sums(x.sum(0), x.T @ x, 50)
        >>> torch.allclose(cov, torch.cov(x.T))
        True
    """
    n = int(count)
    if n < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {n}")
    total, outer = total.double(), outer.double()
    mean = total / n
    covariance = (outer - n * torch.outer(mean, mean)) / (n - 1)
    return mean, covariance


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues clamped to 0)."""
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    root = eigenvalues.clamp(min=0).sqrt()
    return einsum(eigenvectors * root, eigenvectors, "i k, j k -> i j")


def trace_sqrt_product(sigma1: Tensor, sigma2: Tensor) -> Tensor:
    """``tr((S1 S2)^½)`` for symmetric PSD ``S1, S2`` via the eigenvalues of ``S1^½ S2 S1^½``.

    Args:
        sigma1: (D, D) covariance.
        sigma2: (D, D) covariance.

    Returns:
        Scalar float64 tensor.

    Example:
        >>> float(trace_sqrt_product(torch.eye(3) * 4, torch.eye(3)))
        6.0
    """
    root1 = _sqrt_psd(sigma1.double())
    product = root1 @ sigma2.double() @ root1
    eigenvalues = torch.linalg.eigvalsh((product + product.T) / 2)
    return eigenvalues.clamp(min=0).sqrt().sum()


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Args:
        mu1: (D,) mean of the first set.
        sigma1: (D, D) covariance of the first set.
        mu2: (D,) mean of the second set.
        sigma2: (D, D) covariance of the second set.

    Returns:
        The distance (>= 0 up to round-off), as a Python float.

    Example:
        >>> cov = torch.eye(2, dtype=torch.float64)
        >>> frechet_distance(torch.zeros(2), cov, torch.tensor([3.0, 4.0]), cov)
        25.0
    """
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(
            "frechet_distance: shapes do not match: "
            f"mu1 {tuple(mu1.shape)}, sigma1 {tuple(sigma1.shape)}, "
            f"mu2 {tuple(mu2.shape)}, sigma2 {tuple(sigma2.shape)}"
        )
    diff = mu1.double() - mu2.double()
    value = diff.dot(diff) + sigma1.double().trace() + sigma2.double().trace()
    value = value - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(value)


def frechet_distance_from_features(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between two feature sets (biased upward on small sets; see the module docstring).

    Args:
        real: (N, D) reference features.
        fake: (M, D) generated features.

    Returns:
        The distance as a Python float.

    Example:
        >>> x = torch.randn(500, 4)
        >>> abs(frechet_distance_from_features(x, x)) < 1e-9
        True
        >>> round(frechet_distance_from_features(x, x + torch.tensor([1.0, 2.0, 0.0, 0.0])), 6)
        5.0
    """
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))
