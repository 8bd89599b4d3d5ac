"""A small CNN classifier trained on a dataset's real images; its penultimate layer is the FD/KID features.

No Inception weights can be downloaded here, so each dataset gets its own feature extractor (the xAI-GAN
authors did the same with a LeNet for MNIST). It is trained by :func:`train_classifier` from a
:class:`ClassifierRecipe`, whose hash keys the on-disk cache (:mod:`xai_train.metrics.extractor`).
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from xai_train.threads import single_threaded


@dataclasses.dataclass(frozen=True)
class ClassifierRecipe:
    """How the feature classifier is built and trained. Any change gives a new cache entry.

    Attributes:
        width: channels of the first conv stage (doubled at each of the three stages).
        num_features: size of the penultimate layer, i.e. of the feature vectors.
        epochs: passes over the training split (digits/shapes reach > 0.95 held-out accuracy in a few).
        max_steps: caps the optimizer steps, so large sets (shapes: 10k images, MNIST: 60k) train in seconds
            to a minute on a CPU; raise it for harder data (CIFAR-10).
        batch_size: training batch size.
        lr: Adam learning rate.
        weight_decay: AdamW weight decay (keeps features from drifting in scale).
        max_shift: random translation in pixels (data augmentation; a GAN's samples are not centred exactly).
        holdout: share of the data held out to measure accuracy.
        seed: initialisation, split and batch order.
        version: bump when the architecture or the training code changes, so old caches are not reused.
    """

    width: int = 16
    num_features: int = 128
    epochs: int = 6
    max_steps: int = 500
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 2
    holdout: float = 0.2
    seed: int = 0
    version: str = "cnn-v2"  # v2: trained on one thread (v1 weights depended on the thread count)


class FeatureClassifier(nn.Module):
    """Three conv stages (conv-BN-ReLU, max-pool while the map is >= 8 px), a pooled hidden layer, logits.

    Args:
        channels: input channels C.
        num_classes: number of classes.
        width: channels of the first stage.
        num_features: size of the hidden (penultimate) layer.

    Attributes:
        num_features: size of the feature vectors returned by :meth:`features`.

    Example:
        >>> net = FeatureClassifier(channels=1, num_classes=10, width=8, num_features=16)
        >>> net.features(torch.zeros(2, 1, 16, 16)).shape, net(torch.zeros(2, 1, 16, 16)).shape
        (torch.Size([2, 16]), torch.Size([2, 10]))
    """

    def __init__(self, channels: int, num_classes: int, width: int = 32, num_features: int = 128):
        super().__init__()
        self.num_features = num_features
        widths = [channels, width, 2 * width, 4 * width]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.hidden = nn.Sequential(nn.Linear(4 * widths[-1], num_features), nn.ReLU())
        self.head = nn.Linear(num_features, num_classes)

    def features(self, images: Tensor) -> Tensor:
        """Penultimate-layer features.

        Args:
            images: (B, C, H, W) in [-1, 1].

        Returns:
            (B, num_features).
        """
        x = images
        for stage in self.stages:
            x = stage(x)
            if x.shape[-1] >= 8:
                x = F.max_pool2d(x, 2)
        return self.hidden(rearrange(self.pool(x), "b c h w -> b (c h w)"))

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (B, num_classes) of images (B, C, H, W) in [-1, 1]."""
        return self.head(self.features(images))


def random_shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translates each image by a random integer offset in [-max_shift, max_shift] (border: -1 = background).

    Args:
        images: (B, C, H, W) in [-1, 1].
        max_shift: largest offset in pixels; 0 returns the input.
        generator: CPU random generator.

    Returns:
        (B, C, H, W) shifted images.

    Example:
        >>> random_shift(torch.zeros(3, 1, 8, 8), 2, torch.Generator().manual_seed(0)).shape
        torch.Size([3, 1, 8, 8])
    """
    if max_shift == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, [max_shift] * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on images (N, C, H, W) with labels (N,).

    Example:
        >>> net = FeatureClassifier(1, 2, width=4, num_features=8)
        >>> 0.0 <= accuracy(net, torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])) <= 1.0
        True
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = sum(
        int((model(x.to(device)).argmax(dim=1).cpu() == y).sum())
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True)
    )
    model.train(was_training)
    return correct / max(1, len(labels))


def train_classifier(
    images: Tensor, labels: Tensor, recipe: ClassifierRecipe, num_classes: int | None = None
) -> tuple[FeatureClassifier, dict[str, float]]:
    """Trains a :class:`FeatureClassifier` on a seeded split and measures its held-out accuracy.

    Runs on the CPU, on one thread (:func:`xai_train.threads.single_threaded`: the same weights whatever the
    caller's thread count) and inside ``torch.random.fork_rng`` (the caller's global RNG state is untouched).

    Args:
        images: (N, C, H, W) float in [-1, 1].
        labels: (N,) int64 class indices.
        recipe: architecture and training hyperparameters.
        num_classes: default ``max(labels) + 1``.

    Returns:
        The trained model (eval mode) and ``{"accuracy", "train_accuracy", "train_time_s", "num_train",
        "num_holdout", "steps"}``.

    Example:
        >>> x = torch.rand(40, 1, 8, 8) * 2 - 1
        >>> y = (x.mean(dim=(1, 2, 3)) > 0).long()
        >>> model, info = train_classifier(x, y, ClassifierRecipe(width=4, num_features=8, epochs=1))
        >>> sorted(info)
        ['accuracy', 'num_holdout', 'num_train', 'steps', 'train_accuracy', 'train_time_s']
    """
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError(
            f"train_classifier: expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} "
            f"and {tuple(labels.shape)}"
        )
    with single_threaded():
        return _train(images, labels, recipe, num_classes)


def _train(
    images: Tensor, labels: Tensor, recipe: ClassifierRecipe, num_classes: int | None
) -> tuple[FeatureClassifier, dict[str, float]]:
    start = time.perf_counter()
    images, labels = images.float().cpu(), labels.long().cpu()
    num_classes = num_classes or int(labels.max()) + 1
    generator = torch.Generator().manual_seed(recipe.seed)
    order = torch.randperm(len(labels), generator=generator)
    num_holdout = max(1, math.floor(recipe.holdout * len(labels)))
    test, train = order[:num_holdout], order[num_holdout:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = FeatureClassifier(images.shape[1], num_classes, recipe.width, recipe.num_features)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    # Every epoch is a fresh permutation; a last batch of one sample is dropped (train-mode BatchNorm).
    batches = [
        batch
        for _ in range(recipe.epochs)
        for batch in train[torch.randperm(len(train), generator=generator)].split(recipe.batch_size)
        if len(batch) > 1
    ][: recipe.max_steps]
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=max(1, len(batches)))
    model.train()
    for batch in batches:
        x = random_shift(images[batch], recipe.max_shift, generator)
        loss = F.cross_entropy(model(x), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    info = {
        "accuracy": accuracy(model, images[test], labels[test]),
        "train_accuracy": accuracy(model, images[train], labels[train]),
        "train_time_s": time.perf_counter() - start,
        "num_train": len(train),
        "num_holdout": num_holdout,
        "steps": len(batches),
    }
    return model, info
