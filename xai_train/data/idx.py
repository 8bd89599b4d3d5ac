"""MNIST and Fashion-MNIST from local IDX files (plain or gzipped); nothing is downloaded."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from xai_train.data.convert import check_image_args, to_target, uint8_to_signed
from xai_train.data.dataset import DataError, ImageDataset, random_indices

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)
FILE_PREFIX = {"train": "train", "test": "t10k"}
# Where the files may sit below ``root``: the folder itself, or the layout torchvision leaves behind.
SUBFOLDERS = {"mnist": ("", "raw", "MNIST/raw"), "fashion_mnist": ("", "raw", "FashionMNIST/raw")}
TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
SOURCES = {
    "mnist": "http://yann.lecun.com/exdb/mnist/",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist (data/fashion/)",
}
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),  # fmt: skip
}


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Reads one IDX file (gzipped when the name ends in ``.gz``) into a numpy array.

    Header: two zero bytes, a type byte, a dimension count ``d``, then ``d`` big-endian uint32 sizes.

    Args:
        path: the file.
        expected_magic: when given, the header's first four bytes as a big-endian integer must equal it
            (2051 for image files, 2049 for label files).

    Returns:
        Array of the header's shape and type (native byte order is not guaranteed).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
        >>> _ = open(path, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 3]))
        >>> read_idx(path, expected_magic=2049).tolist()
        [7, 3]
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file: it does not start with 0x00 0x00 <type byte> <ndim>")
    magic, ndim = struct.unpack(">I", raw[:4])[0], raw[3]
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{path}: IDX magic number is {magic}, expected {expected_magic}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header} for {ndim} dims)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: the IDX header says shape {dims} ({expected} data bytes) "
            f"but {len(raw) - header} data bytes follow it"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def find_idx_file(root: Path, name: str, dataset: str) -> Path | None:
    """The first of ``<root>/<subfolder>/<name>`` or ``... .gz`` that exists, else None."""
    for sub in SUBFOLDERS[dataset]:
        for candidate in (root / sub / name, root / sub / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def load_mnist(
    root: str | Path,
    *,
    split: str = "train",
    image_size: int = 32,
    channels: int = 1,
    num_samples: int | None = None,
    seed: int = 0,
    dataset: str = "mnist",
) -> ImageDataset:
    """MNIST or Fashion-MNIST from the IDX files in ``root`` (labels when the labels file is present).

    Looks for ``{train|t10k}-images-idx3-ubyte`` (or ``.gz``) in ``root``, ``root/raw`` and
    ``root/MNIST/raw`` (``root/FashionMNIST/raw`` for Fashion-MNIST), and the matching ``-labels-idx1-ubyte``.

    Args:
        root: folder holding the IDX files.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        image_size: output side length (the files hold 28x28; resized with antialiased bilinear).
        channels: 1, or 3 (grey repeated).
        num_samples: keep a seeded random subset of this size (before conversion, to save time); None = all.
        seed: seed of that subset.
        dataset: ``"mnist"`` or ``"fashion_mnist"`` (file locations, class names, messages).

    Returns:
        ``ImageDataset`` named ``dataset``: images (N, C, S, S) float32 in [-1, 1], labels (N,) int64 or None.

    Example:
        >>> load_mnist("/no/such/folder")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        xai_train.data.dataset.DataError: MNIST root folder not found: /no/such/folder
    """
    if dataset not in SUBFOLDERS:
        raise DataError(f"unknown IDX dataset {dataset!r}; choose one of: {', '.join(SUBFOLDERS)}")
    if split not in FILE_PREFIX:
        raise DataError(f"unknown split {split!r} for {dataset}; choose one of: {', '.join(FILE_PREFIX)}")
    check_image_args(image_size, channels)
    title, root = TITLES[dataset], Path(root)
    if not root.is_dir():
        raise DataError(f"{title} root folder not found: {root}")
    prefix = FILE_PREFIX[split]
    images_path = find_idx_file(root, f"{prefix}-images-idx3-ubyte", dataset)
    if images_path is None:
        looked = ", ".join(str(root / sub) for sub in SUBFOLDERS[dataset])
        raise DataError(
            f"{title} images file not found: {root / prefix}-images-idx3-ubyte(.gz) (looked in {looked}); "
            f"expected the IDX files from {SOURCES[dataset]}"
        )
    pixels = read_idx(images_path, expected_magic=IMAGES_MAGIC)  # (N, 28, 28) uint8
    labels_path = find_idx_file(root, f"{prefix}-labels-idx1-ubyte", dataset)
    labels = None
    if labels_path is not None:
        labels = torch.as_tensor(read_idx(labels_path, expected_magic=LABELS_MAGIC).astype(np.int64))
        if len(labels) != len(pixels):
            raise DataError(
                f"{labels_path} holds {len(labels)} labels but {images_path} holds {len(pixels)} images"
            )
        if len(labels) and labels.max() >= len(CLASS_NAMES[dataset]):
            raise DataError(f"{labels_path}: label {labels.max().item()} is outside 0..9")
    if num_samples is not None:
        keep = random_indices(len(pixels), num_samples, seed, "num_samples", dataset)
        pixels, labels = pixels[keep.numpy()], None if labels is None else labels[keep]
    pixels = pixels if pixels.flags.writeable else pixels.copy()  # torch warns on read-only buffers
    images = rearrange(uint8_to_signed(pixels), "n h w -> n 1 h w")
    return ImageDataset(
        images=to_target(images, image_size, channels),
        labels=labels,
        name=dataset,
        class_names=CLASS_NAMES[dataset] if labels is not None else None,
    )
