"""A tiny concept segmenter for generated images, trained on a labelled dataset's masks in seconds.

GAN Dissection needs a concept segmentation of *generated* images. On ``shapes`` the masks and labels come
free, so a small encoder–decoder learns per-pixel classes {background, circle, square, triangle}; on
``digits`` the "mask" is the ink (pixels above mid-grey) and the concepts are the ten digit classes.
Any other segmenter works too: dissection only needs ``images (B, C, H, W) in [-1, 1] -> (B, K, H, W) bool``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from xai_train.errors import UserError

INK_LEVEL = 0.0  # digits: a pixel above mid-grey (images in [-1, 1]) is ink


@dataclasses.dataclass(frozen=True)
class SegmenterRecipe:
    """How the segmenter is built and trained; its hash keys the cache.

    Attributes:
        width: channels of the first stage (doubled once).
        steps: optimizer steps (the cache makes it a one-off).
        batch_size: images per step.
        lr: Adam learning rate.
        seed: initialisation and batch order.
        version: bump when the architecture or training changes.
    """

    width: int = 8
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    version: str = "seg-v1"


class ConceptSegmenter(nn.Module):
    """Per-pixel concept classes: two stride-2 stages with dilated context, upsampled, joined with a skip.

    Args:
        channels: image channels C.
        concepts: the class names; index 0 is the background.
        width: first-stage channels.

    Example:
        >>> seg = ConceptSegmenter(1, ("background", "a", "b"), width=4)
        >>> seg(torch.zeros(2, 1, 16, 16)).shape, seg.masks(torch.zeros(2, 1, 16, 16)).dtype
        (torch.Size([2, 3, 16, 16]), torch.bool)
    """

    def __init__(self, channels: int, concepts: tuple[str, ...], width: int = 16):
        super().__init__()
        self.concepts = tuple(concepts)
        w = width
        self.stem = nn.Sequential(nn.Conv2d(channels, w, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=4, dilation=4), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Conv2d(3 * w, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, len(concepts), 1))

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, K, H, W) of images (B, C, H, W) in [-1, 1]."""
        skip = self.stem(images)
        context = F.interpolate(self.down(skip), size=images.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([skip, context], dim=1))

    @torch.no_grad()
    def masks(self, images: Tensor) -> Tensor:
        """One-hot concept masks (B, K, H, W) bool: each pixel belongs to its arg-max concept."""
        logits = self(images)
        return F.one_hot(logits.argmax(dim=1), len(self.concepts)).permute(0, 3, 1, 2).bool()


def pixel_labels(images: Tensor, labels: Tensor, masks: Tensor | None) -> Tensor:
    """Per-pixel class (N, H, W): 0 = background, ``label + 1`` inside the object (mask, or ink if none).

    Example:
        >>> images = torch.tensor([[[[-1.0, 1.0]]]])
        >>> pixel_labels(images, torch.tensor([2]), None).tolist()
        [[[0, 3]]]
    """
    inside = masks[:, 0] > 0.5 if masks is not None else images.mean(dim=1) > INK_LEVEL
    return torch.where(inside, labels.view(-1, 1, 1) + 1, torch.zeros_like(labels).view(-1, 1, 1))


def train_segmenter(
    images: Tensor,
    labels: Tensor,
    masks: Tensor | None,
    class_names: tuple[str, ...],
    recipe: SegmenterRecipe | None = None,
) -> tuple[ConceptSegmenter, float]:
    """Trains a :class:`ConceptSegmenter` (cross-entropy per pixel, class-balanced) on real images.

    Args:
        images: (N, C, H, W) in [-1, 1].
        labels: (N,) class indices.
        masks: (N, 1, H, W) object masks, or ``None`` to use the ink.
        class_names: names of the classes (the concepts are ``("background", *class_names)``).
        recipe: the recipe (default ``SegmenterRecipe()``).

    Returns:
        ``(segmenter in eval mode, pixel accuracy on the last 10% of the images, held out)``.

    Example:
        >>> from xai_train.data import make_shapes
        >>> data = make_shapes(64, image_size=16, seed=0)
        >>> seg, accuracy = train_segmenter(data.images, data.labels, data.masks, data.class_names,
        ...                                 SegmenterRecipe(width=4, steps=2, batch_size=8))
        >>> seg.concepts
        ('background', 'circle', 'square', 'triangle')
    """
    recipe = recipe or SegmenterRecipe()
    target = pixel_labels(images, labels, masks)
    holdout = max(1, len(images) // 10)
    train_x, train_y = images[:-holdout], target[:-holdout]
    generator = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    model = ConceptSegmenter(images.shape[1], ("background", *class_names), recipe.width)
    frequency = torch.bincount(train_y.flatten(), minlength=len(model.concepts)).float() + 1
    weight = (frequency.sum() / frequency).sqrt()  # background dominates the pixels
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    for _ in range(recipe.steps):
        pick = torch.randint(len(train_x), (recipe.batch_size,), generator=generator)
        loss = F.cross_entropy(model(train_x[pick]), train_y[pick], weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x).argmax(dim=1) for x in images[-holdout:].split(256)])
    return model, (predicted == target[-holdout:]).float().mean().item()


def load_or_train_segmenter(
    dataset: str,
    *,
    image_size: int = 32,
    channels: int = 1,
    recipe: SegmenterRecipe | None = None,
    cache_dir: str | Path | None = None,
) -> ConceptSegmenter:
    """The cached segmenter of a built-in labelled dataset (``shapes``, ``digits``, ...), trained on a miss.

    Args:
        dataset: a name ``xai_train.data.build_dataset`` knows, with labels.
        image_size: image side.
        channels: image channels.
        recipe: the recipe (part of the cache key).
        cache_dir: default ``xai_train.metrics.default_cache_dir() / "segmenters"``.

    Returns:
        The segmenter (eval mode); ``segmenter.accuracy`` is its held-out pixel accuracy.

    Example:
        >>> import tempfile
        >>> cache = tempfile.mkdtemp()
        >>> recipe = SegmenterRecipe(width=2, steps=1, batch_size=4)
        >>> seg = load_or_train_segmenter("shapes", image_size=8, recipe=recipe, cache_dir=cache)
        >>> again = load_or_train_segmenter("shapes", image_size=8, recipe=recipe, cache_dir=cache)  # from the cache
        >>> again.concepts, torch.equal(seg.head[-1].weight, again.head[-1].weight)
        (('background', 'circle', 'square', 'triangle'), True)
    """
    from xai_train.data import build_dataset
    from xai_train.metrics import default_cache_dir

    recipe = recipe or SegmenterRecipe()
    key = hashlib.sha256(json.dumps([dataset, image_size, channels, dataclasses.asdict(recipe)]).encode())
    folder = Path(cache_dir or default_cache_dir() / "segmenters")
    stem = folder / f"{dataset}-{image_size}px-{channels}c-{key.hexdigest()[:12]}"
    weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if weights.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        model = ConceptSegmenter(channels, tuple(info["concepts"]), recipe.width)
        model.load_state_dict(load_file(weights))
        model.accuracy = info["accuracy"]
        return model.eval()
    data = build_dataset(dataset, image_size=image_size, channels=channels)
    if data.labels is None or data.class_names is None:
        raise UserError(f"dataset {dataset!r} has no labels; the concept segmenter needs a labelled dataset")
    model, accuracy = train_segmenter(data.images, data.labels, data.masks, tuple(data.class_names), recipe)
    model.accuracy = accuracy
    stem.parent.mkdir(parents=True, exist_ok=True)
    for path, write in (
        (weights, lambda p: save_file(model.state_dict(), str(p))),
        (meta, lambda p: p.write_text(json.dumps({"concepts": model.concepts, "accuracy": accuracy}))),
    ):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write(tmp)
        os.replace(tmp, path)
    return model
