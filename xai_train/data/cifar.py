"""CIFAR-10 from the local python batches, read with an unpickler that can only build numpy arrays.

The batches (``data_batch_1`` ... ``data_batch_5``, ``test_batch``) are pickled dicts. A plain
``pickle.load`` would run whatever a tampered file asks for, so ``NumpyOnlyUnpickler`` resolves only the
few numpy names an array needs and refuses every other global: a file that needs more is rejected, not run.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from xai_train.data.convert import check_image_args, to_target, uint8_to_signed
from xai_train.data.dataset import DataError, ImageDataset, random_indices

BATCH_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
ARCHIVE_FOLDER = "cifar-10-batches-py"  # what the official cifar-10-python.tar.gz unpacks to
SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-10 python version)"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)  # rows of 3072 bytes: 1024 red, 1024 green, 1024 blue, each row-major


def latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` limited to latin-1: how protocol-2 pickles written by Python 3 store bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals an ndarray pickle may name, under their numpy 1.x and 2.x module paths."""
    reconstruct = np.zeros(1).__reduce__()[0]  # the array rebuild function, wherever this numpy keeps it
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5's zero-copy variant
    scalar = np.int64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler for data files: builtin containers, bytes, numbers and numpy arrays, nothing else.

    Example:
        >>> import io
        >>> blob = pickle.dumps({b"data": np.arange(3, dtype=np.uint8)})
        >>> NumpyOnlyUnpickler(io.BytesIO(blob)).load()[b"data"].tolist()
        [0, 1, 2]
        >>> NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(print))).load()  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        _pickle.UnpicklingError: refusing to load builtins.print
    """

    ALLOWED = numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays and builtin containers are allowed"
            ) from None


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch as pixels (N, 3, 32, 32) uint8 and labels (N,) int64.

    Args:
        path: a ``data_batch_*`` or ``test_batch`` file: a pickled dict with ``b"data"`` (N, 3072) uint8
            and ``b"labels"`` (N ints); str keys are accepted too.

    Returns:
        ``(pixels, labels)``.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "data_batch_1")
        >>> batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 5]}
        >>> _ = open(path, "wb").write(pickle.dumps(batch, protocol=2))
        >>> pixels, labels = read_cifar_batch(path)
        >>> pixels.shape, labels.tolist()
        ((2, 3, 32, 32), [3, 5])
    """
    path = Path(path)
    expected = f"expected a pickled dict with b'data' (N, 3072) uint8 and b'labels' from {SOURCE}"
    try:
        with path.open("rb") as file:
            batch = NumpyOnlyUnpickler(file, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 batch not found: {path}; {expected}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {err}; {expected}") from err
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not a dict; {expected}")
    data, labels = (batch.get(key.encode(), batch.get(key)) for key in ("data", "labels"))
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path} lacks the 'data' array or the 'labels' list; {expected}")
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != np.prod(IMAGE_SHAPE):
        raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}; {expected}")
    if labels.shape != (len(data),) or (len(labels) and not 0 <= labels.min() <= labels.max() < 10):
        raise DataError(f"{path}: 'labels' must be {len(data)} integers in 0..9; {expected}")
    c, h, w = IMAGE_SHAPE
    return rearrange(data, "n (c h w) -> n c h w", c=c, h=h, w=w), labels


def load_cifar10(
    root: str | Path,
    *,
    split: str = "train",
    image_size: int = 32,
    channels: int = 3,
    num_samples: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """CIFAR-10 from the python batches in ``root`` or ``root/cifar-10-batches-py``.

    Args:
        root: folder holding the batch files (or the folder the official archive unpacks into).
        split: ``"train"`` (``data_batch_1..5``, 50,000 images) or ``"test"`` (``test_batch``, 10,000).
        image_size: output side length (the batches hold 32x32).
        channels: 3, or 1 (BT.601 luma).
        num_samples: keep a seeded random subset of this size; None = all.
        seed: seed of that subset.

    Returns:
        ``ImageDataset`` named ``"cifar10"``: images (N, C, S, S) float32 in [-1, 1], labels (N,) int64.

    Example:
        >>> load_cifar10("/no/such/folder")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        xai_train.data.dataset.DataError: CIFAR-10 root folder not found: /no/such/folder
    """
    if split not in BATCH_FILES:
        raise DataError(f"unknown split {split!r} for cifar10; choose one of: {', '.join(BATCH_FILES)}")
    check_image_args(image_size, channels)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CIFAR-10 root folder not found: {root}")
    first = BATCH_FILES[split][0]
    folder = next((f for f in (root, root / ARCHIVE_FOLDER) if (f / first).is_file()), None)
    if folder is None:
        raise DataError(
            f"CIFAR-10 batch not found: {root / first} (nor {root / ARCHIVE_FOLDER / first}); "
            f"expected the python batches ({', '.join(BATCH_FILES[split])}) from {SOURCE}"
        )
    batches = [read_cifar_batch(folder / name) for name in BATCH_FILES[split]]
    pixels = np.concatenate([pixels for pixels, _ in batches])
    labels = torch.as_tensor(np.concatenate([labels for _, labels in batches]))
    if num_samples is not None:
        keep = random_indices(len(pixels), num_samples, seed, "num_samples", "cifar10")
        pixels, labels = pixels[keep.numpy()], labels[keep]
    images = uint8_to_signed(pixels)
    return ImageDataset(
        images=to_target(images, image_size, channels),
        labels=labels,
        name="cifar10",
        class_names=CLASS_NAMES,
    )
