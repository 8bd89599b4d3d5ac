"""Datasets held in memory as tensors, and a batch stream for single- and multi-process training.

Every dataset is an ``ImageDataset`` with images (N, C, H, W) float32 in [-1, 1] (plus labels, and masks
for ``shapes``). ``build_dataset`` turns a config's name into one; ``TensorBatches`` serves shuffled batches
on the device with the same order on every rank and after a resume.

Example:
    >>> from xai_train.data import TensorBatches, build_dataset
    >>> dataset = build_dataset("digits", image_size=32, channels=1)
    >>> batches = TensorBatches(dataset.images, batch_size=64, seed=0)
    >>> batches.next().shape
    torch.Size([64, 1, 32, 32])
"""

from xai_train.data.batches import TensorBatches
from xai_train.data.build import DATASET_NAMES, HELDOUT_SPLITS, build_dataset, evaluation_split
from xai_train.data.cifar import NumpyOnlyUnpickler, load_cifar10, read_cifar_batch
from xai_train.data.convert import resize, set_channels, uint8_to_signed
from xai_train.data.dataset import DataError, ImageDataset, derive_seed, random_indices
from xai_train.data.digits import load_digits_dataset
from xai_train.data.folder import load_image_folder
from xai_train.data.idx import load_mnist, read_idx
from xai_train.data.mnist5k import load_mnist5k, mnist5k_split, read_mnist5k
from xai_train.data.parts_shapes import PART_NAMES, make_parts_shapes, parts_shapes_layout
from xai_train.data.shapes import SHAPE_NAMES, make_shapes

__all__ = [
    "DATASET_NAMES",
    "HELDOUT_SPLITS",
    "SHAPE_NAMES",
    "PART_NAMES",
    "DataError",
    "ImageDataset",
    "NumpyOnlyUnpickler",
    "TensorBatches",
    "build_dataset",
    "derive_seed",
    "evaluation_split",
    "load_cifar10",
    "load_digits_dataset",
    "load_image_folder",
    "load_mnist",
    "load_mnist5k",
    "make_parts_shapes",
    "make_shapes",
    "mnist5k_split",
    "parts_shapes_layout",
    "random_indices",
    "read_cifar_batch",
    "read_idx",
    "read_mnist5k",
    "resize",
    "set_channels",
    "uint8_to_signed",
]
