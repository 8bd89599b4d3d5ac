"""Image-level metrics: feed images, get FD / KID / precision-recall named by their feature extractor.

Honest defaults: FD is biased upward on small sample counts (noticeably below ~5k samples, and the bias
depends on the count), so compare FDs only at equal counts and read KID (unbiased) beside it. Numbers
computed on different feature extractors are not comparable; every result carries ``extractor``.

On the CPU, features and statistics are computed on one thread (:func:`xai_train.threads.single_threaded`):
the same images give the same FD/KID bits whatever thread count the run uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from xai_train.metrics.accumulator import FeatureMetrics
from xai_train.metrics.extractor import FeatureExtractor, extract_features
from xai_train.threads import single_threaded

if TYPE_CHECKING:
    from accelerate import Accelerator


class GenerativeMetrics:
    """Streaming FD / KID / precision-recall on images through a feature extractor, on one or many ranks.

    Each rank calls ``update`` with its share of real and generated images; ``compute`` is a collective
    that returns the same result on every rank. The reference side is kept across ``reset(real=False)``.

    Args:
        extractor: maps (B, C, H, W) in [-1, 1] to (B, D); has ``name`` and ``num_features``.
        metrics: any of ``"fd"``, ``"kid"``, ``"pr"``.
        accelerator: for the cross-rank reduction (``None``: ``torch.distributed`` if initialised).
        batch_size: images per extractor forward pass.
        device: where features are computed and kept (default: the accelerator's device, else the CPU).
        kid_subsets: KID subsets.
        kid_subset_size: KID subset size.
        pr_k: neighbourhood size for precision/recall.
        seed: seed of the KID subset draws.

    Example:
        >>> from xai_train.metrics import ClassifierFeatures, FeatureClassifier
        >>> net = FeatureClassifier(1, 10, width=4, num_features=8)
        >>> extractor = ClassifierFeatures(net, "toy-cnn", (1, 8, 8), {})
        >>> metrics = GenerativeMetrics(extractor, kid_subsets=5, kid_subset_size=20)
        >>> metrics.update(real=torch.rand(64, 1, 8, 8) * 2 - 1, fake=torch.rand(64, 1, 8, 8) * 2 - 1)
        >>> result = metrics.compute()
        >>> result["extractor"], sorted(result)
        ('toy-cnn', ['extractor', 'fd', 'kid', 'kid_std', 'num_fake', 'num_real'])
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        *,
        metrics: Iterable[str] = ("fd", "kid"),
        accelerator: Accelerator | None = None,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        pr_k: int = 3,
        seed: int = 0,
    ):
        if device is None:
            device = accelerator.device if accelerator is not None else "cpu"
        self.device = torch.device(device)
        self.extractor = extractor.to(self.device).eval()
        self.batch_size = batch_size
        self.features = FeatureMetrics(
            extractor.num_features,
            metrics=metrics,
            accelerator=accelerator,
            device=self.device,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            pr_k=pr_k,
            seed=seed,
        )

    @property
    def extractor_name(self) -> str:
        return self.extractor.name

    def update(self, real: Tensor | None = None, fake: Tensor | None = None) -> None:
        """Adds this rank's images: each (B, C, H, W) in [-1, 1] (or uint8), or ``None``."""
        self.features.update(
            real=None if real is None else self._features(real),
            fake=None if fake is None else self._features(fake),
        )

    def _features(self, images: Tensor) -> Tensor:
        with self.fixed_threads():
            return extract_features(self.extractor, images, self.batch_size, self.device)

    def fixed_threads(self) -> contextlib.AbstractContextManager:
        """One thread on the CPU (results independent of the caller's thread count); nothing on a GPU."""
        return single_threaded() if self.device.type == "cpu" else contextlib.nullcontext()

    def reset(self, real: bool = True, fake: bool = True) -> None:
        """Clears the chosen sides (``reset(real=False)`` keeps the cached reference)."""
        self.features.reset(real=real, fake=fake)

    def compute(self) -> dict[str, Any]:
        """The metrics plus ``extractor``, ``num_real`` and ``num_fake``. A collective: call on every rank."""
        with self.fixed_threads():
            return {"extractor": self.extractor.name, **self.features.compute()}


def evaluate_images(
    real: Tensor,
    fake: Tensor,
    extractor: FeatureExtractor,
    *,
    metrics: Iterable[str] = ("fd", "kid"),
    batch_size: int = 256,
    **options: Any,
) -> dict[str, Any]:
    """One-shot metrics of generated images against real ones (single process).

    Args:
        real: (N, C, H, W) reference images in [-1, 1].
        fake: (M, C, H, W) generated images in [-1, 1].
        extractor: the feature extractor (its ``name`` is returned as ``extractor``).
        metrics: any of ``"fd"``, ``"kid"``, ``"pr"``.
        batch_size: images per extractor forward pass.
        **options: passed to :class:`GenerativeMetrics` (``kid_subsets``, ``kid_subset_size``, ``pr_k``, ...).

    Returns:
        ``{"extractor", "fd", "kid", "kid_std", ..., "num_real", "num_fake"}``.

    Example:
        >>> from xai_train.metrics import ClassifierFeatures, FeatureClassifier
        >>> net = FeatureClassifier(1, 10, width=4, num_features=8)
        >>> extractor = ClassifierFeatures(net, "toy-cnn", (1, 8, 8), {})
        >>> images = torch.rand(100, 1, 8, 8) * 2 - 1
        >>> result = evaluate_images(images[:50], images[50:], extractor, kid_subsets=10)
        >>> result["extractor"], result["num_real"], result["num_fake"]
        ('toy-cnn', 50, 50)
    """
    evaluator = GenerativeMetrics(extractor, metrics=metrics, batch_size=batch_size, **options)
    evaluator.update(real=real, fake=fake)
    return evaluator.compute()


def tagged_scalars(results: Mapping[str, Any], prefix: str = "eval/") -> dict[str, float]:
    """Scalar names that carry the extractor, for trackers: ``{"eval/fd_digits-32-cnn-9719e4c7": 12.3, ...}``.

    Args:
        results: what :meth:`GenerativeMetrics.compute` returned.
        prefix: prepended to every name.

    Returns:
        Every numeric metric except the sample counts, named ``<prefix><metric>_<extractor>``.

    Example:
        >>> tagged_scalars({"extractor": "digits-32-cnn-9719e4c7", "fd": 1.5, "num_real": 10})
        {'eval/fd_digits-32-cnn-9719e4c7': 1.5}
    """
    extractor = results["extractor"]
    skip = {"extractor", "num_real", "num_fake"}
    return {f"{prefix}{key}_{extractor}": float(value) for key, value in results.items() if key not in skip}
