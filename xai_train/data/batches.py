"""Shuffled batches straight from a tensor on the device: no DataLoader, no workers, no per-sample Python.

For datasets that fit in memory (all the built-in ones) this is the whole input pipeline: the images are
moved to the device once, and each step is one slice of a permutation plus one ``index_select``.

Distributed order: every rank draws the same permutation per epoch (seeded by (seed, epoch), never by the
global RNG) and takes its own contiguous slice of each global batch, so the ranks' batches of one step,
concatenated in rank order, are exactly the batch one process with ``batch_size * world_size`` would get.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from xai_train.data.dataset import DataError, derive_seed


class TensorBatches:
    """Endless per-epoch-shuffled batches of an in-memory image tensor, identical across ranks and resumes.

    Step ``i`` of an epoch gives rank ``r`` the samples ``perm[i*B*W + r*B : i*B*W + (r+1)*B]`` of that
    epoch's permutation (B = ``batch_size`` per rank, W = ``world_size``); the last ``N mod (B*W)`` samples
    of each permutation are skipped, so every step has full batches on every rank.

    Args:
        images: (N, C, H, W) float in [-1, 1], or uint8 0..255 (kept as uint8 on the device, a quarter of
            the memory, and mapped to [-1, 1] per batch).
        batch_size: B, samples per rank and step.
        seed: seed of the permutations (the same on every rank).
        rank: this process's index r in [0, world_size).
        world_size: number of processes W.
        device: where batches live; None keeps the images' device. The data is copied there once.
        labels: (N,) optional labels, served by ``next_with_labels``.

    Example:
        >>> batches = TensorBatches(torch.rand(10, 1, 4, 4) * 2 - 1, batch_size=4, seed=0)
        >>> batches.steps_per_epoch, batches.next().shape, batches.state_dict()["position"]
        (2, torch.Size([4, 1, 4, 4]), 1)
    """

    def __init__(
        self,
        images: Tensor,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str | None = None,
        labels: Tensor | None = None,
    ):
        if images.dim() != 4 or not (images.dtype == torch.uint8 or images.is_floating_point()):
            raise DataError(
                f"images must be float or uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise DataError(
                f"need batch_size >= 1, world_size >= 1 and 0 <= rank < world_size; "
                f"got batch_size={batch_size}, rank={rank}, world_size={world_size}"
            )
        self.num_samples = len(images)
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.global_batch_size = batch_size * world_size
        if self.num_samples < self.global_batch_size:
            raise DataError(
                f"the dataset has {self.num_samples} samples, fewer than one global batch of "
                f"{self.global_batch_size} (batch_size {batch_size} x {world_size} processes)"
            )
        if labels is not None and labels.shape != (self.num_samples,):
            raise DataError(f"labels must have shape ({self.num_samples},), got {tuple(labels.shape)}")
        self.device = images.device if device is None else torch.device(device)
        self.images = images.to(self.device)
        self.labels = None if labels is None else labels.to(self.device)
        self.epoch = 0  # completed epochs = the epoch the next batch comes from
        self.position = 0  # batches already taken from this epoch's permutation (per rank)
        self.permutation = self.epoch_permutation(self.epoch)

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per epoch: ``N // (B * W)``."""
        return self.num_samples // self.global_batch_size

    def epoch_permutation(self, epoch: int) -> Tensor:
        """(N,) int64 on the device: the sample order of ``epoch``, the same on every rank."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "batches", epoch))
        return torch.randperm(self.num_samples, generator=generator).to(self.device)

    def next_indices(self) -> Tensor:
        """Advances one step and returns this rank's (B,) sample indices (on the device)."""
        start = self.position * self.global_batch_size + self.rank * self.batch_size
        indices = self.permutation[start : start + self.batch_size]
        self.position += 1
        if self.position == self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
            self.permutation = self.epoch_permutation(self.epoch)
        return indices

    def to_float(self, images: Tensor) -> Tensor:
        """A batch as float32 in [-1, 1] (uint8 is mapped 0 -> -1, 255 -> 1)."""
        if images.dtype == torch.uint8:
            return images.to(torch.float32).div_(127.5).sub_(1)
        return images.to(torch.float32)

    def next(self) -> Tensor:
        """The next batch: (B, C, H, W) float32 in [-1, 1] on the device."""
        return self.to_float(self.images.index_select(0, self.next_indices()))

    def next_with_labels(self) -> tuple[Tensor, Tensor]:
        """The next batch and its labels: ((B, C, H, W) float32, (B,)), both on the device."""
        if self.labels is None:
            raise DataError("next_with_labels() needs TensorBatches(..., labels=...) ; none were given")
        indices = self.next_indices()
        return self.to_float(self.images.index_select(0, indices)), self.labels.index_select(0, indices)

    def __iter__(self) -> Iterator[Tensor]:
        return self

    def __next__(self) -> Tensor:
        return self.next()

    def state_dict(self) -> dict[str, int]:
        """Plain ints: where the stream stands, plus the sizes that give ``position`` its meaning."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "num_samples": self.num_samples,
            "global_batch_size": self.global_batch_size,
        }

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continues where ``state`` was taken: the following batches equal those of an unbroken run.

        The world size may change as long as the global batch does not: the global batches are the same.

        Args:
            state: from ``state_dict()``; ``num_samples`` and ``global_batch_size`` are checked when present.
        """
        for key in ("num_samples", "global_batch_size"):
            if key in state and int(state[key]) != getattr(self, key):
                raise DataError(
                    f"cannot resume the batch order: the saved state has {key}={int(state[key])}, "
                    f"this run has {getattr(self, key)} (the same data and global batch size are needed)"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.steps_per_epoch:
            raise DataError(
                f"invalid batch state epoch={epoch}, position={position} ({self.steps_per_epoch} steps/epoch)"
            )
        self.epoch, self.position = epoch, position
        self.permutation = self.epoch_permutation(epoch)
