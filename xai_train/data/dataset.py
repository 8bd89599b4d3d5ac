"""The in-memory image dataset every loader returns, its error type, and seeded subsets."""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


class DataError(ValueError):
    """A dataset could not be built: unknown name, bad arguments, or a missing or malformed file."""


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for one purpose (``keys``) from a user seed, independent across purposes.

    The same arguments give the same result in every process, so every rank can draw identical numbers
    without communicating. Strings are mapped to integers with CRC-32 (stable across runs, unlike ``hash``).

    Args:
        seed: the user's seed, >= 0.
        keys: what the seed is for, e.g. ``("batches", epoch)``.

    Returns:
        An integer in [0, 2**63) for ``torch.Generator().manual_seed`` or ``numpy.random.default_rng``.

    Example:
        >>> derive_seed(0, "batches", 3) == derive_seed(0, "batches", 3) != derive_seed(0, "batches", 4)
        True
    """
    if seed < 0:
        raise DataError(f"seed must be >= 0, got {seed}")
    entropy = [seed, *(zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images (with optional labels and masks) held in memory as tensors.

    Args:
        images: (N, C, H, W) float32 in [-1, 1], C in {1, 3}. Float rather than uint8 because resized and
            procedural images are not on a 1/255 grid; at 32x32 even CIFAR-10's 50k images take 0.6 GB.
        labels: (N,) int64 class indices, or None.
        masks: (N, 1, H, W) float32 in {0, 1} marking the object (``shapes`` only), or None.
        name: the dataset's name, e.g. ``"digits"``.
        class_names: names of the label values (index = label), or None.

    Example:
        >>> ds = ImageDataset(torch.zeros(4, 1, 8, 8), labels=torch.tensor([0, 1, 0, 1]), name="toy")
        >>> len(ds), ds.channels, ds.image_size, ds[1]["label"].item()
        (4, 1, 8, 1)
    """

    images: Tensor
    labels: Tensor | None = None
    masks: Tensor | None = None
    name: str = ""
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        images, labels, masks = self.images, self.labels, self.masks
        where = f"dataset {self.name!r}"
        if images.dim() != 4 or images.shape[1] not in (1, 3) or images.dtype != torch.float32:
            raise DataError(
                f"{where}: images must be float32 (N, C, H, W) with C in (1, 3), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if len(images):
            low, high = (v.item() for v in torch.aminmax(images))
            if low < -1 or high > 1:
                raise DataError(f"{where}: images must lie in [-1, 1], got [{low:.3f}, {high:.3f}]")
        n, _, h, w = images.shape
        if labels is not None and (labels.shape != (n,) or labels.dtype != torch.int64):
            raise DataError(f"{where}: labels must be int64 ({n},), got {labels.dtype} {tuple(labels.shape)}")
        if masks is not None and masks.shape != (n, 1, h, w):
            raise DataError(f"{where}: masks must have shape {(n, 1, h, w)}, got {tuple(masks.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """One sample: ``{"image": (C, H, W)}``, plus ``"label"`` () and ``"mask"`` (1, H, W) if present."""
        item = {"image": self.images[index]}
        if self.labels is not None:
            item["label"] = self.labels[index]
        if self.masks is not None:
            item["mask"] = self.masks[index]
        return item

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        """Side length H (datasets built here are square)."""
        return self.images.shape[2]

    @property
    def num_classes(self) -> int | None:
        """Number of classes: ``len(class_names)``, else ``max(label) + 1``, else None without labels."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is None or len(self.labels) == 0:
            return None
        return int(self.labels.max()) + 1

    def subset(self, indices: Tensor) -> ImageDataset:
        """The samples at ``indices`` ((K,) int64), in that order, as a new dataset.

        Example:
            >>> ds = ImageDataset(torch.linspace(-1, 1, 4).reshape(4, 1, 1, 1))
            >>> ds.subset(torch.tensor([3, 0])).images.flatten().tolist()
            [1.0, -1.0]
        """

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[indices]

        return dataclasses.replace(
            self, images=pick(self.images), labels=pick(self.labels), masks=pick(self.masks)
        )

    def sample(self, num_samples: int, seed: int) -> ImageDataset:
        """A seeded random subset of exactly ``num_samples`` samples (see ``random_indices``).

        Example:
            >>> ds = ImageDataset(torch.zeros(10, 1, 4, 4))
            >>> len(ds.sample(3, seed=0))
            3
        """
        return self.subset(random_indices(len(self), num_samples, seed, "num_samples", self.name))

    def random_subset(self, fraction: float, seed: int) -> ImageDataset:
        """A seeded random subset of ``max(1, round(fraction * N))`` samples (see ``random_indices``).

        Args:
            fraction: share of the samples to keep, in (0, 1]; 1 returns the dataset itself.
            seed: the user's seed (a purpose-specific seed is derived from it).

        Returns:
            The subset as a new ``ImageDataset``.

        Example:
            >>> ds = ImageDataset(torch.zeros(10, 1, 4, 4))
            >>> len(ds.random_subset(0.2, seed=0))
            2
        """
        if not 0 < fraction <= 1:
            raise DataError(f"fraction must be in (0, 1], got {fraction}")
        if fraction == 1:
            return self
        keep = max(1, round(fraction * len(self)))
        return self.subset(random_indices(len(self), keep, seed, "fraction", self.name))


def random_indices(total: int, keep: int, seed: int, purpose: str, name: str = "") -> Tensor:
    """Sorted indices of a seeded random subset: the first ``keep`` entries of a permutation of ``total``.

    The same arguments give the same subset in every process, and for a fixed (total, seed, purpose) a
    smaller subset is contained in a larger one, so "20% of the data" is part of "50% of the data".

    Args:
        total: number of samples to choose from.
        keep: subset size, in [1, total].
        seed: the user's seed.
        purpose: stream name mixed into the seed (``"num_samples"``, ``"fraction"``, ...).
        name: dataset name for the error message.

    Returns:
        (keep,) int64, ascending.

    Example:
        >>> small, large = random_indices(10, 2, 0, "demo"), random_indices(10, 5, 0, "demo")
        >>> set(small.tolist()) <= set(large.tolist())
        True
    """
    if not 1 <= keep <= total:
        raise DataError(f"cannot take {keep} samples from dataset {name!r}, which has {total}")
    generator = torch.Generator().manual_seed(derive_seed(seed, purpose))
    return torch.randperm(total, generator=generator)[:keep].sort().values
