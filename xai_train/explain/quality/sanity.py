"""Sanity checks (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

An explanation that does not change when the model does cannot be explaining the model:

* **cascading model randomisation**: re-initialise the layers one by one from the output down (on a copy;
  the model itself is never touched) and track the Spearman rank correlation between each image's map and
  its original map. A faithful method decorrelates; an edge detector (which ignores the model) stays at 1.
* **data randomisation**: compare the maps of a model trained on the true labels with those of the same
  architecture trained on shuffled labels (:func:`train_on_shuffled_labels`); a faithful method's maps differ.

Rank correlations use average ranks for ties (ReLU'd CAMs have many exact zeros) and, by default, the
absolute maps (Adebayo et al. report both; a sign flip alone should not count as "the map changed").
A map that is constant has no ranking: its correlation is reported as 0. Lower correlation = the method
*passes*; our pass mark is a mean correlation below ``threshold`` (0.5) at the end of the cascade.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from xai_train.metrics.classifier import ClassifierRecipe, FeatureClassifier, train_classifier

Explain = Callable[[nn.Module, Tensor], Tensor]
"""``(model, images) -> maps (B, K, H, W)``: an explainer that can be pointed at a modified model."""

NORM_TYPES = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


@dataclass(frozen=True)
class SanityResult:
    """Rank correlations with the original maps after each randomisation stage.

    Attributes:
        stages: the stage names (layer names, top first; or ``"shuffled_labels"``).
        correlations: (len(stages), B) Spearman correlations per image.
        threshold: the pass mark for the last stage's mean correlation.
    """

    stages: tuple[str, ...]
    correlations: Tensor
    threshold: float

    @property
    def final(self) -> float:
        """Mean correlation after the last stage."""
        return float(self.correlations[-1].mean())

    @property
    def passed(self) -> bool:
        """True if the maps decorrelated: the last stage's mean correlation is below the threshold."""
        return self.final < self.threshold


def spearman(first: Tensor, second: Tensor, *, absolute: bool = True) -> Tensor:
    """Per-image Spearman rank correlation of two (B, K, H, W) map batches (channels summed); (B,).

    Example:
        >>> a = torch.arange(8.0).reshape(2, 1, 2, 2)
        >>> spearman(a, a ** 3).tolist(), spearman(a, -a, absolute=False).tolist()
        ([1.0, 1.0], [-1.0, -1.0])
    """
    if first.shape[0] != second.shape[0] or first.shape[-2:] != second.shape[-2:]:
        raise ValueError(f"cannot correlate maps {tuple(first.shape)} and {tuple(second.shape)}")

    def ranks(maps: Tensor) -> np.ndarray:
        values = maps.detach().float().sum(1).flatten(1)
        values = values.abs() if absolute else values
        return rankdata(values.cpu().numpy(), method="average", axis=1)

    a, b = ranks(first), ranks(second)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    norm = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    rho = np.where(norm > 0, (a * b).sum(1) / np.where(norm > 0, norm, 1.0), 0.0)
    return torch.from_numpy(rho).float()


def randomisable_layers(model: nn.Module) -> list[str]:
    """Names of the modules whose own weights the cascade re-initialises, output side first.

    Every module with its own parameters and a ``reset_parameters`` method (Conv, Linear, ...), in the reverse
    of registration order (the order layers are built from the input). Normalisation layers are skipped: their
    reset also wipes the running statistics, which would change the model's input scaling rather than
    randomise a learned mapping.

    Example:
        >>> randomisable_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 1)))
        ['3', '0']
    """
    names = [
        name
        for name, module in model.named_modules()
        if hasattr(module, "reset_parameters")
        and not isinstance(module, NORM_TYPES)
        and any(True for _ in module.parameters(recurse=False))
    ]
    return names[::-1]


def cascading_randomisation(
    model: nn.Module,
    images: Tensor,
    explain: Explain,
    *,
    layers: list[str] | None = None,
    seed: int = 0,
    absolute: bool = True,
    threshold: float = 0.5,
) -> SanityResult:
    """Re-initialises ``layers`` of a copy of ``model`` cumulatively, top first, and correlates the maps.

    Args:
        model: the model explained (not modified: the cascade runs on a deep copy).
        images: (B, C, H, W).
        explain: ``(model, images) -> maps``, e.g. ``lambda m, x: attribute(m, x, "gradcampp")``.
        layers: module names in cascade order; default :func:`randomisable_layers`.
        seed: seeds the re-initialisation (the global RNG is restored afterwards).
        absolute: correlate |maps| (default) or the signed maps.
        threshold: pass mark for the final mean correlation.

    Returns:
        The :class:`SanityResult` (one stage per layer).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 1))
        >>> x = torch.randn(2, 1, 4, 4)
        >>> edges = lambda m, imgs: imgs.diff(dim=-1, prepend=imgs[..., :1]).abs()  # ignores the model
        >>> cascading_randomisation(model, x, edges).passed
        False
    """
    reference = explain(model, images)
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    layers = randomisable_layers(model) if layers is None else list(layers)
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise ValueError(f"cascading_randomisation: no module named {unknown} in the model")
    correlations = []
    with torch.random.fork_rng(devices=[]):
        for i, name in enumerate(layers):
            torch.manual_seed(seed + i)
            modules[name].reset_parameters()
            correlations.append(spearman(reference, explain(randomised, images), absolute=absolute))
    return SanityResult(tuple(layers), torch.stack(correlations), threshold)


def train_on_shuffled_labels(
    images: Tensor, labels: Tensor, recipe: ClassifierRecipe, *, seed: int = 0
) -> tuple[FeatureClassifier, dict[str, float]]:
    """The project's classifier trained on a seeded permutation of ``labels`` (the data-randomisation model).

    Returns:
        The model (eval mode) and its training info (its held-out accuracy should be near chance).
    """
    generator = torch.Generator().manual_seed(seed)
    shuffled = labels[torch.randperm(len(labels), generator=generator)]
    return train_classifier(images, shuffled, recipe, num_classes=int(labels.max()) + 1)


def data_randomisation(
    model: nn.Module,
    random_model: nn.Module,
    images: Tensor,
    explain: Explain,
    *,
    absolute: bool = True,
    threshold: float = 0.5,
) -> SanityResult:
    """Rank correlation between the maps of ``model`` and of ``random_model`` (trained on shuffled labels).

    Example:
        >>> a, b = nn.Sequential(nn.Flatten(), nn.Linear(4, 1)), nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
        >>> same = lambda m, x: x.abs()  # ignores the model
        >>> data_randomisation(a, b, torch.randn(3, 1, 2, 2), same).final
        1.0
    """
    correlation = spearman(explain(model, images), explain(random_model, images), absolute=absolute)
    return SanityResult(("shuffled_labels",), correlation[None], threshold)
