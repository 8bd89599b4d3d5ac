"""Streaming, distributed-aware accumulation of features for FD, KID and precision/recall.

Each rank calls ``update`` with its share; ``compute`` is a collective (call it on every rank): the FD
state (feature sum, sum of outer products, count; float64) is summed across ranks, and the raw features
that KID and precision/recall need are all-gathered. Every rank then holds the same result. Collectives go
through ``accelerator.reduce/gather`` when an Accelerator is given, else through ``torch.distributed`` when
it is initialised; a single process needs neither.

The reference (real) side is usually fixed for a whole run: once synchronised it is kept, and
``reset(real=False)`` clears only the generated side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from einops import einsum, rearrange
from torch import Tensor

from xai_train.metrics.frechet import frechet_distance, stats_from_sums
from xai_train.metrics.kid import kernel_inception_distance
from xai_train.metrics.precision_recall import precision_recall

if TYPE_CHECKING:
    from accelerate import Accelerator

METRICS: tuple[str, ...] = ("fd", "kid", "pr")
"""Metric names: Fréchet distance, kernel distance, improved precision/recall."""


class Collectives:
    """Sum and row-gather across ranks through Accelerate, ``torch.distributed`` or nothing (one process).

    Args:
        accelerator: the run's Accelerator, or ``None`` to use ``torch.distributed`` if initialised.
    """

    def __init__(self, accelerator: Accelerator | None = None):
        self.accelerator = accelerator

    @property
    def world_size(self) -> int:
        if self.accelerator is not None:
            return self.accelerator.num_processes
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def sum(self, tensor: Tensor) -> Tensor:
        """Element-wise sum over ranks."""
        if self.world_size == 1:
            return tensor
        if self.accelerator is not None:
            return self.accelerator.reduce(tensor.clone(), reduction="sum")
        summed = tensor.clone()
        dist.all_reduce(summed)
        return summed

    def gather_rows(self, rows: Tensor) -> Tensor:
        """Concatenates every rank's (N_r, D) rows in rank order; ranks may hold different N_r (even 0)."""
        if self.world_size == 1:
            return rows
        counts = self._gather(torch.tensor([rows.shape[0]], device=rows.device)).tolist()
        padded = rows.new_zeros(max(counts), rows.shape[1])
        padded[: rows.shape[0]] = rows
        everyone = rearrange(self._gather(padded), "(r n) d -> r n d", r=len(counts))
        return torch.cat([everyone[r, :count] for r, count in enumerate(counts)])

    def _gather(self, tensor: Tensor) -> Tensor:
        if self.accelerator is not None:
            return self.accelerator.gather(tensor)
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)


@dataclasses.dataclass
class _Side:
    """Running state of one side (real or fake) on one rank, or after synchronisation."""

    total: Tensor
    outer: Tensor
    count: int = 0
    features: list[Tensor] = dataclasses.field(default_factory=list)

    def add(self, features: Tensor, keep: bool) -> None:
        x = features.double()
        self.total += x.sum(dim=0)
        self.outer += einsum(x, x, "n i, n j -> i j")
        self.count += x.shape[0]
        if keep:
            self.features.append(features.float())

    def synced(self, collectives: Collectives, keep: bool) -> _Side:
        count = collectives.sum(torch.tensor([self.count], device=self.total.device, dtype=torch.float64))
        features = []
        if keep:
            local = torch.cat(self.features) if self.features else self.total.new_zeros(0, self.total.shape[0])
            features = [collectives.gather_rows(local.float())]
        return _Side(collectives.sum(self.total), collectives.sum(self.outer), int(count.item()), features)


class FeatureMetrics:
    """Streaming FD / KID / precision-recall over features fed in chunks, on one or many ranks.

    Args:
        num_features: feature dimension D.
        metrics: any of ``"fd"``, ``"kid"``, ``"pr"`` (KID and PR keep the features in memory).
        accelerator: for the cross-rank reduction; ``None`` uses ``torch.distributed`` if initialised.
        device: where the state lives (default: the accelerator's device, else the CPU).
        kid_subsets: KID subsets.
        kid_subset_size: KID subset size (clipped to the smaller set).
        pr_k: neighbourhood size of precision/recall.
        seed: seed of the KID subset draws.

    Example:
        >>> metrics = FeatureMetrics(8, metrics=("fd", "kid"), kid_subsets=5, kid_subset_size=50)
        >>> x = torch.randn(200, 8)
        >>> for chunk in x.split(64):
        ...     metrics.update(real=chunk, fake=chunk + 1)
        >>> sorted(metrics.compute())
        ['fd', 'kid', 'kid_std', 'num_fake', 'num_real']
    """

    def __init__(
        self,
        num_features: int,
        *,
        metrics: Iterable[str] = ("fd", "kid"),
        accelerator: Accelerator | None = None,
        device: torch.device | str | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        pr_k: int = 3,
        seed: int = 0,
    ):
        self.metrics = tuple(metrics)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"unknown metrics {unknown} (got {list(self.metrics)}); choose from: {', '.join(METRICS)}")
        self.num_features = num_features
        self.collectives = Collectives(accelerator)
        if device is None:
            device = accelerator.device if accelerator is not None else "cpu"
        self.device = torch.device(device)
        self.kid_subsets, self.kid_subset_size, self.pr_k, self.seed = (
            kid_subsets,
            kid_subset_size,
            pr_k,
            seed,
        )
        self.keep_features = "kid" in self.metrics or "pr" in self.metrics
        self.real = self._empty()
        self.fake = self._empty()
        self._real_synced: _Side | None = None

    def _empty(self) -> _Side:
        d = self.num_features
        return _Side(
            torch.zeros(d, dtype=torch.float64, device=self.device),
            torch.zeros(d, d, dtype=torch.float64, device=self.device),
        )

    def update(self, real: Tensor | None = None, fake: Tensor | None = None) -> None:
        """Adds this rank's features of either or both sides.

        Args:
            real: (B, D) reference features, or ``None``.
            fake: (B, D) generated features, or ``None``.
        """
        for name, features in (("real", real), ("fake", fake)):
            if features is None:
                continue
            if features.ndim != 2 or features.shape[1] != self.num_features:
                raise ValueError(
                    f"FeatureMetrics.update: {name} features must be (B, {self.num_features}), "
                    f"got {tuple(features.shape)}"
                )
            getattr(self, name).add(features.detach().to(self.device), self.keep_features)
            if name == "real":
                self._real_synced = None

    def reset(self, real: bool = True, fake: bool = True) -> None:
        """Clears the state of the chosen sides (``reset(real=False)`` keeps the cached reference)."""
        if real:
            self.real, self._real_synced = self._empty(), None
        if fake:
            self.fake = self._empty()

    def synced_real(self) -> _Side:
        """The reference side summed over ranks (cached until the next real update). A collective."""
        if self._real_synced is None:
            self._real_synced = self.real.synced(self.collectives, self.keep_features)
        return self._real_synced

    def compute(self) -> dict[str, float]:
        """Synchronises across ranks and computes the metrics. A collective: call it on every rank.

        Returns:
            ``fd``; ``kid`` and ``kid_std``; ``precision`` and ``recall`` (those requested), plus
            ``num_real`` and ``num_fake`` (global counts). Identical on every rank.
        """
        real = self.synced_real()
        fake = self.fake.synced(self.collectives, self.keep_features)
        if real.count < 2 or fake.count < 2:
            raise ValueError(
                f"FeatureMetrics.compute: need >= 2 features per side, got {real.count} real and {fake.count} fake"
            )
        results: dict[str, float] = {}
        if "fd" in self.metrics:
            results["fd"] = frechet_distance(
                *stats_from_sums(real.total, real.outer, real.count),
                *stats_from_sums(fake.total, fake.outer, fake.count),
            )
        if "kid" in self.metrics:
            results["kid"], results["kid_std"] = kernel_inception_distance(
                real.features[0],
                fake.features[0],
                subsets=self.kid_subsets,
                subset_size=self.kid_subset_size,
                seed=self.seed,
            )
        if "pr" in self.metrics:
            results["precision"], results["recall"] = precision_recall(real.features[0], fake.features[0], k=self.pr_k)
        results["num_real"], results["num_fake"] = real.count, fake.count
        return results
