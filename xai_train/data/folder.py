"""A folder of PNG/JPEG/BMP images (searched recursively), with class subfolders as optional labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageOps

from xai_train.data.convert import check_image_args, uint8_to_signed
from xai_train.data.dataset import DataError, ImageDataset, random_indices

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def list_images(root: Path) -> list[Path]:
    """Image files below ``root`` (any depth, extension case ignored), sorted so every process agrees."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def read_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image, upright (EXIF), resized so its short side is ``image_size``, centre-cropped to a square.

    Args:
        path: the image file.
        image_size: output side length S.
        channels: 1 (PIL ``"L"``, BT.601 luma) or 3 (``"RGB"``; alpha is dropped).

    Returns:
        (S, S) uint8 for 1 channel, (S, S, 3) uint8 for 3.
    """
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("L" if channels == 1 else "RGB")
            image = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BICUBIC)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {err}; expected a PNG, JPEG or BMP file") from err


def load_image_folder(
    root: str | Path,
    *,
    image_size: int = 32,
    channels: int = 3,
    class_folders: bool | None = None,
    num_samples: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """Every image below ``root``, resized and centre-cropped to ``image_size``, with optional labels.

    With class folders, ``root/<class>/**/image.png`` gets the label of ``<class>``'s position among the
    sorted first-level folder names, so the same tree gives the same labels everywhere.

    Args:
        root: the folder.
        image_size: output side length S.
        channels: 1 or 3.
        class_folders: True: labels from first-level subfolders (every image must be inside one);
            False: no labels; None: labels exactly when every image is inside a subfolder.
        num_samples: decode only a seeded random subset of this many files; None = all.
        seed: seed of that subset.

    Returns:
        ``ImageDataset`` named ``"folder"``: images (N, C, S, S) float32 in [-1, 1]; labels (N,) int64 and
        ``class_names`` (the folder names) when labelled.

    Example:
        >>> import tempfile, os
        >>> root = tempfile.mkdtemp()
        >>> os.makedirs(os.path.join(root, "cats"))
        >>> Image.new("RGB", (40, 30), "white").save(os.path.join(root, "cats", "a.png"))
        >>> ds = load_image_folder(root, image_size=16)
        >>> ds.images.shape, ds.class_names, ds.images.min().item()
        (torch.Size([1, 3, 16, 16]), ('cats',), 1.0)
    """
    check_image_args(image_size, channels)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    files = list_images(root)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    folders = [path.relative_to(root).parts[:-1] for path in files]
    loose = [path for path, parts in zip(files, folders, strict=True) if not parts]
    if class_folders is None:
        class_folders = not loose
    elif class_folders and loose:
        raise DataError(f"class_folders=True but {loose[0]} is not inside a class subfolder of {root}")
    # Class names come from every file, so a subset keeps the labels the full folder would give.
    class_names = tuple(sorted({parts[0] for parts in folders})) if class_folders else None
    if num_samples is not None:
        keep = random_indices(len(files), num_samples, seed, "num_samples", "folder").tolist()
        files, folders = [files[i] for i in keep], [folders[i] for i in keep]
    pixels = np.stack([read_image(path, image_size, channels) for path in files])
    pattern = "n h w -> n 1 h w" if channels == 1 else "n h w c -> n c h w"
    images = rearrange(uint8_to_signed(pixels), pattern).contiguous()
    labels = None
    if class_names is not None:
        index = {name: i for i, name in enumerate(class_names)}
        labels = torch.tensor([index[parts[0]] for parts in folders], dtype=torch.int64)
    return ImageDataset(images=images, labels=labels, name="folder", class_names=class_names)
