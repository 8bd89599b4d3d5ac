"""Feature extractors for FD/KID and the on-disk cache of the per-dataset classifiers.

A feature extractor maps images (B, C, H, W) in [-1, 1] to features (B, num_features) and carries a
``name`` that every reported number must quote (``fd`` on ``digits-32-cnn-9719e4c7`` features is not an FID
and not comparable with ``fd`` on other features).

An extractor is named after a hash of its *weights* (``digits-32-cnn-<sha256[:8]>``), so two numbers that quote
the same name were computed on the same network. The digits and shapes extractors (32 px, one channel, the
default recipe) ship with the package in ``extractors/``; every other one is trained deterministically on
first use (one thread, seeded: the same weights whatever the thread count on a given CPU) and cached in
``cache_dir`` (argument), else ``$XAI_TRAIN_CACHE/classifiers``, else ``~/.cache/xai_train/classifiers``, as
``<dataset>-<size>px-<channels>c-<key>.safetensors`` (weights) plus ``.json`` (metadata: name, SHA-256 of the
weights, recipe, accuracy, training time, CPU). ``key`` hashes the dataset name, image size, channels and the
full :class:`ClassifierRecipe` (including its ``version``), so a changed recipe trains a new one. A stored
extractor whose weights do not hash to its name is refused (:class:`ExtractorError`). Nothing is pickled.
In a multi-process run, build the extractor under ``accelerator.main_process_first()`` so that only one rank
trains and the others load the cached file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from xai_train.errors import UserError
from xai_train.fingerprint import cpu_capability, cpu_model
from xai_train.metrics.classifier import ClassifierRecipe, FeatureClassifier, train_classifier

SHIPPED_DIR = Path(__file__).parent / "extractors"
"""The package's trained extractors (digits and shapes, 32 px, the default recipe): ``scripts/ship_extractors.py``."""


class FeatureExtractor(nn.Module):
    """Base class: images (B, C, H, W) in [-1, 1] -> features (B, num_features).

    Args:
        name: identifies the feature space in every reported number.
        num_features: feature dimension (what ``torchmetrics``' FID reads from a custom ``feature`` module).
        image_shape: the (C, H, W) it accepts, or ``None`` if it accepts any size.
    """

    def __init__(self, name: str, num_features: int, image_shape: tuple[int, int, int] | None = None):
        super().__init__()
        self.name, self.num_features = name, num_features
        self.image_shape = None if image_shape is None else tuple(image_shape)

    def check_images(self, images: Tensor) -> None:
        """Raises a ValueError naming the extractor unless ``images`` is (B, *image_shape)."""
        expected = self.image_shape
        if images.ndim != 4 or (expected is not None and tuple(images.shape[1:]) != expected):
            want = "(B, C, H, W)" if expected is None else f"(B, {', '.join(map(str, expected))})"
            raise ValueError(f"feature extractor {self.name!r} expects images {want}, got {tuple(images.shape)}")


class ClassifierFeatures(FeatureExtractor):
    """The penultimate layer of a :class:`FeatureClassifier` (always run in eval mode).

    Args:
        classifier: the trained classifier.
        name: e.g. ``"digits-32-cnn-9719e4c7"``.
        image_shape: (C, H, W) it was trained on.
        metadata: what the cache's JSON holds (recipe, accuracy, training time, ...).
    """

    def __init__(self, classifier: FeatureClassifier, name: str, image_shape: tuple[int, int, int], metadata: dict):
        super().__init__(name, classifier.num_features, image_shape)
        self.classifier = classifier.eval().requires_grad_(False)
        self.metadata = metadata

    def train(self, mode: bool = True) -> ClassifierFeatures:
        super().train(mode)
        self.classifier.eval()  # BatchNorm must keep its running statistics
        return self

    def forward(self, images: Tensor) -> Tensor:
        self.check_images(images)
        return self.classifier.features(images)


def default_cache_dir() -> Path:
    """``$XAI_TRAIN_CACHE/classifiers`` if the variable is set, else ``~/.cache/xai_train/classifiers``."""
    root = os.environ.get("XAI_TRAIN_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "xai_train") / "classifiers"


class ExtractorError(UserError):
    """A stored feature extractor cannot be trusted: its weights do not hash to its name, or its files are
    broken. The message names the file and the fix."""


def recipe_key(dataset: str, image_size: int, channels: int, recipe: ClassifierRecipe) -> str:
    """12 hex digits of a SHA-256 over the dataset, size, channels and recipe (the cache key).

    Example:
        >>> key = recipe_key("digits", 32, 1, ClassifierRecipe())
        >>> key != recipe_key("digits", 32, 1, ClassifierRecipe(epochs=1)), len(key)
        (True, 12)
    """
    payload = {
        "dataset": dataset,
        "image_size": image_size,
        "channels": channels,
        **dataclasses.asdict(recipe),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def weights_sha256(state: Mapping[str, Tensor]) -> str:
    """SHA-256 of a state dict's tensors: names, dtypes, shapes and bytes, in name order (64 hex digits).

    It hashes what the network computes with, not a file: the same weights give the same hash whether they
    were trained here or loaded from a safetensors file.

    Example:
        >>> a = {"w": torch.ones(2), "b": torch.zeros(1)}
        >>> weights_sha256(a) == weights_sha256({"b": torch.zeros(1), "w": torch.ones(2)})
        True
        >>> weights_sha256(a) == weights_sha256({"w": torch.tensor([1.0, 1.0 + 2**-23]), "b": torch.zeros(1)})
        False
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def extractor_name(dataset: str, image_size: int, sha256: str) -> str:
    """``<dataset>-<size>-cnn-<first 8 hex digits of the weights' SHA-256>``: what every FD/KID quotes.

    Example:
        >>> extractor_name("digits", 32, "0123456789abcdef" * 4)
        'digits-32-cnn-01234567'
    """
    return f"{dataset}-{image_size}-cnn-{sha256[:8]}"


def _paths(cache_dir: Path, dataset: str, image_size: int, channels: int, key: str) -> tuple[Path, Path]:
    stem = cache_dir / f"{dataset}-{image_size}px-{channels}c-{key}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def shipped_paths(dataset: str, image_size: int, channels: int) -> tuple[Path, Path]:
    """Where the package keeps a shipped extractor: ``xai_train/metrics/extractors/<dataset>-<size>px-<c>c.*``.

    Example:
        >>> weights, metadata = shipped_paths("digits", 32, 1)
        >>> weights.name, metadata.is_file()
        ('digits-32px-1c.safetensors', True)
    """
    stem = SHIPPED_DIR / f"{dataset}-{image_size}px-{channels}c"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _load(weights: Path, meta_path: Path, shipped: bool = False) -> ClassifierFeatures:
    """Loads an extractor and checks that its weights hash to the SHA-256 and the name its metadata records."""
    if shipped:
        fix = "the package's copy is damaged: reinstall xai-train (or `git checkout xai_train/metrics/extractors`)"
    else:
        fix = f"delete {weights.name} and {meta_path.name} in {weights.parent} to retrain it"
    try:
        metadata = json.loads(meta_path.read_text())
        recipe = metadata["recipe"]
        classifier = FeatureClassifier(
            metadata["channels"], metadata["num_classes"], recipe["width"], recipe["num_features"]
        )
        state = load_file(weights)
        classifier.load_state_dict(state)
        sha256 = weights_sha256(state)
        expected = extractor_name(metadata["dataset"], metadata["image_size"], sha256)
        shape = (metadata["channels"], metadata["image_size"], metadata["image_size"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
        raise ExtractorError(f"feature extractor {weights} cannot be read ({error!r}); {fix}") from error
    if metadata.get("sha256") != sha256 or metadata.get("name") != expected:
        raise ExtractorError(
            f"feature extractor {weights}: its weights hash to {sha256[:8]}, but its metadata says "
            f"{metadata.get('name')!r} (sha256 {str(metadata.get('sha256'))[:8]}): the file was changed or "
            f"written by an older version; {fix}"
        )
    return ClassifierFeatures(classifier, metadata["name"], shape, metadata)


def trained_extractor(
    dataset: str, images: Tensor, labels: Tensor, recipe: ClassifierRecipe, num_classes: int | None = None
) -> tuple[FeatureClassifier, dict]:
    """Trains a feature classifier (deterministically: one thread, seeded) and builds its metadata.

    Returns:
        The classifier and its metadata: ``name`` (from the weights' hash), ``sha256``, ``recipe_key``,
        ``recipe``, accuracy and timing, and where it was trained (torch version, CPU).
    """
    image_size, channels = images.shape[-1], images.shape[1]
    classifier, info = train_classifier(images, labels, recipe, num_classes)
    sha256 = weights_sha256(classifier.state_dict())
    metadata = {
        "name": extractor_name(dataset, image_size, sha256),
        "sha256": sha256,
        "dataset": dataset,
        "image_size": image_size,
        "channels": channels,
        "num_classes": classifier.head.out_features,
        "recipe_key": recipe_key(dataset, image_size, channels, recipe),
        "recipe": dataclasses.asdict(recipe),
        **info,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_capability": cpu_capability(),
    }
    return classifier, metadata


def save_extractor(classifier: FeatureClassifier, metadata: dict, weights: Path, meta_path: Path) -> None:
    """Writes the weights, then the metadata (each to a temporary name, then renamed: a reader never sees half
    a file, and an extractor counts as present only once its JSON exists)."""
    weights.parent.mkdir(parents=True, exist_ok=True)
    for path, write in (
        (weights, lambda p: save_file(classifier.state_dict(), str(p))),
        (meta_path, lambda p: p.write_text(json.dumps(metadata, indent=2) + "\n")),
    ):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write(tmp)
        os.replace(tmp, path)


def load_or_train_classifier(
    dataset: str,
    images: Tensor,
    labels: Tensor,
    *,
    recipe: ClassifierRecipe | None = None,
    cache_dir: str | Path | None = None,
    num_classes: int | None = None,
) -> ClassifierFeatures:
    """The cached feature classifier for ``dataset``, training and caching it on a miss.

    Training is deterministic (one thread, seeded): the same recipe on the same data gives the same weights
    whatever the caller's thread count. The extractor is named after its weights' hash, and a cached file
    whose weights no longer hash to its name is an :class:`ExtractorError`.

    Args:
        dataset: the dataset's name (part of the cache key: use one name per distinct training set).
        images: (N, C, H, W) training images in [-1, 1] (only read on a cache miss).
        labels: (N,) int64 labels.
        recipe: the training recipe (default ``ClassifierRecipe()``).
        cache_dir: where to cache; default :func:`default_cache_dir`.
        num_classes: default ``max(labels) + 1``.

    Returns:
        The extractor; ``extractor.metadata["accuracy"]`` is its held-out accuracy, ``["sha256"]`` its hash.

    Example:
        >>> import tempfile
        >>> x = torch.rand(32, 1, 8, 8) * 2 - 1
        >>> y = (x.mean(dim=(1, 2, 3)) > 0).long()
        >>> recipe = ClassifierRecipe(width=4, num_features=8, epochs=1)
        >>> with tempfile.TemporaryDirectory() as cache:
        ...     extractor = load_or_train_classifier("toy", x, y, recipe=recipe, cache_dir=cache)
        >>> extractor.num_features, extractor.name == "toy-8-cnn-" + extractor.metadata["sha256"][:8]
        (8, True)
    """
    recipe = recipe or ClassifierRecipe()
    image_size, channels = images.shape[-1], images.shape[1]
    key = recipe_key(dataset, image_size, channels, recipe)
    weights, meta_path = _paths(
        Path(cache_dir) if cache_dir else default_cache_dir(), dataset, image_size, channels, key
    )
    if meta_path.is_file() and weights.is_file():
        return _load(weights, meta_path)
    classifier, metadata = trained_extractor(dataset, images, labels, recipe, num_classes)
    save_extractor(classifier, metadata, weights, meta_path)
    return ClassifierFeatures(classifier, metadata["name"], (channels, image_size, image_size), metadata)


def domain_feature_extractor(
    dataset: str,
    *,
    image_size: int = 32,
    channels: int = 1,
    root: str | Path | None = None,
    recipe: ClassifierRecipe | None = None,
    cache_dir: str | Path | None = None,
) -> ClassifierFeatures:
    """The feature classifier of a named dataset (``digits``, ``shapes``, ``mnist``, ...): shipped, or trained once.

    With the default recipe, ``digits`` and ``shapes`` at 32 px, 1 channel, use the weights shipped in the
    package (``xai_train/metrics/extractors/``), so every machine reports FD/KID on the same network. Other
    datasets, sizes and recipes are trained deterministically on first use and cached.

    Args:
        dataset: a name ``xai_train.data.build_dataset`` knows and that has labels.
        image_size: side length of the images it will see.
        channels: channels of the images it will see.
        root: folder of the dataset files (datasets loaded from disk).
        recipe: the training recipe (default ``ClassifierRecipe()``).
        cache_dir: where to cache; default :func:`default_cache_dir`.

    Returns:
        The extractor, with ``.name``, ``.num_features``, ``.metadata["accuracy"]`` and ``.metadata["sha256"]``.

    Example:
        The shipped digits extractor, then a deliberately tiny recipe (5 steps) in a throw-away cache; the
        second call loads the cached file:

        >>> shipped = domain_feature_extractor("digits")
        >>> shipped.name == "digits-32-cnn-" + shipped.metadata["sha256"][:8], shipped.metadata["accuracy"] > 0.98
        (True, True)
        >>> import tempfile
        >>> tiny = ClassifierRecipe(width=4, num_features=8, epochs=1, max_steps=5)
        >>> with tempfile.TemporaryDirectory() as cache:
        ...     extractor = domain_feature_extractor("digits", image_size=16, recipe=tiny, cache_dir=cache)
        ...     again = domain_feature_extractor("digits", image_size=16, recipe=tiny, cache_dir=cache)
        >>> extractor.name.startswith("digits-16-cnn-"), extractor.num_features, again.metadata == extractor.metadata
        (True, 8, True)
    """
    recipe = recipe or ClassifierRecipe()
    if recipe == ClassifierRecipe() and root is None:
        weights, meta_path = shipped_paths(dataset, image_size, channels)
        if meta_path.is_file():
            return _load(weights, meta_path, shipped=True)
    directory = Path(cache_dir) if cache_dir else default_cache_dir()
    weights, meta_path = _paths(
        directory, dataset, image_size, channels, recipe_key(dataset, image_size, channels, recipe)
    )
    if meta_path.is_file() and weights.is_file():
        return _load(weights, meta_path)
    from xai_train.data import build_dataset  # only needed on a cache miss

    data = build_dataset(dataset, root=root, image_size=image_size, channels=channels)
    if data.labels is None:
        raise ValueError(f"dataset {dataset!r} has no labels; a feature classifier needs a labelled dataset")
    return load_or_train_classifier(
        dataset, data.images, data.labels, recipe=recipe, cache_dir=directory, num_classes=data.num_classes
    )


@torch.no_grad()
def extract_features(
    extractor: Callable[[Tensor], Tensor],
    images: Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> Tensor:
    """Features of many images, computed in batches without gradients.

    Args:
        extractor: maps (B, C, H, W) in [-1, 1] to (B, D).
        images: (N, C, H, W) in [-1, 1] (uint8 images are mapped from [0, 255]).
        batch_size: images per forward pass.
        device: where to run; default: the extractor's device.

    Returns:
        (N, D) float32 features on ``device``.

    Example:
        >>> net = FeatureClassifier(1, 2, width=4, num_features=8).eval()
        >>> extract_features(lambda x: net.features(x), torch.zeros(10, 1, 8, 8), batch_size=4).shape
        torch.Size([10, 8])
    """
    if device is None:
        params = next(iter(extractor.parameters()), None) if isinstance(extractor, nn.Module) else None
        device = params.device if params is not None else images.device
    if images.dtype == torch.uint8:
        images = images.float() / 127.5 - 1
    return torch.cat([extractor(batch.to(device).float()).float() for batch in images.split(batch_size)])
