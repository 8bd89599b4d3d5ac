"""ROAR — RemOve And Retrain (Hooker, Erhan, Kindermans, Kim, NeurIPS 2019), offline, on the project's classifier.

Deletion curves ask a model about images it never saw (holes); ROAR retrains instead: replace each image's
top-k% pixels (by the explanation of a classifier trained on the intact data) with the per-channel dataset
mean, train a fresh classifier on the modified images, and measure its held-out accuracy. If the explanation
found the informative pixels, accuracy falls faster than when the same share of pixels is removed at random.
*Lower* accuracy than the random order at the same k is better. Costs one training per k and order; the
classifier is ``xai_train.metrics.classifier`` with a small ``ClassifierRecipe``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from einops import reduce
from torch import Tensor, nn

from xai_train.explain.quality.removal import pixel_ranks
from xai_train.metrics.classifier import ClassifierRecipe, train_classifier

DEFAULT_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


@dataclass(frozen=True)
class RoarResult:
    """Held-out accuracy after removing each fraction of pixels, in the map's order and at random.

    Attributes:
        fractions: the removed shares k.
        accuracy: (len(fractions),) accuracy with the explanation's top-k pixels removed.
        random_accuracy: (len(fractions),) the same with random pixels removed.
        base_accuracy: accuracy of the classifier trained on intact images.
    """

    fractions: tuple[float, ...]
    accuracy: Tensor
    random_accuracy: Tensor
    base_accuracy: float


def remove_top(images: Tensor, maps: Tensor, fraction: float, fill: Tensor, seed: int = 0) -> Tensor:
    """Images with their top ``fraction`` pixels (by ``maps``) set to ``fill`` ((1, C, 1, 1)).

    Example:
        >>> x = torch.ones(1, 1, 2, 2); maps = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])
        >>> remove_top(x, maps, 0.5, torch.zeros(1, 1, 1, 1)).flatten().tolist()
        [0.0, 0.0, 1.0, 1.0]
    """
    pixels = images.shape[-2] * images.shape[-1]
    removed = pixel_ranks(maps, seed) < round(fraction * pixels)
    return torch.where(removed, fill.to(images), images)


def roar(
    images: Tensor,
    labels: Tensor,
    explain: Callable[[nn.Module, Tensor], Tensor],
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    recipe: ClassifierRecipe | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> RoarResult:
    """Runs ROAR: one classifier on intact images, then one per (fraction, order) on modified ones.

    Args:
        images: (N, C, H, W) in [-1, 1].
        labels: (N,) int64.
        explain: ``(classifier, images) -> maps (B, K, H, W)``, e.g. ``lambda m, x: cam(m, x, "layercam")``.
        fractions: shares of pixels to remove, each in (0, 1).
        recipe: the classifier recipe (default: a small one, ``ClassifierRecipe(width=8, epochs=3)``).
        seed: seeds the random order and the tie-breaks.
        batch_size: images explained per call.

    Returns:
        The :class:`RoarResult`.
    """
    if not fractions or not all(0 < k < 1 for k in fractions):
        raise ValueError(f"ROAR fractions must lie in (0, 1), got {list(fractions)}")
    recipe = recipe or ClassifierRecipe(width=8, epochs=3)
    num_classes = int(labels.max()) + 1
    model, info = train_classifier(images, labels, recipe, num_classes)
    maps = torch.cat([explain(model, chunk).detach().float() for chunk in images.split(batch_size)])
    generator = torch.Generator().manual_seed(seed)
    random_maps = torch.rand(len(images), 1, *images.shape[-2:], generator=generator)
    fill = reduce(images, "n c h w -> 1 c 1 1", "mean")
    accuracy, random_accuracy = [], []
    for k in fractions:
        for source, out in ((maps, accuracy), (random_maps, random_accuracy)):
            _, retrained = train_classifier(remove_top(images, source, k, fill, seed), labels, recipe, num_classes)
            out.append(retrained["accuracy"])
    return RoarResult(tuple(fractions), torch.tensor(accuracy), torch.tensor(random_accuracy), info["accuracy"])
