"""Explanation-quality metrics, batched torch (DESIGN.md §6, §8). None of them changes the model.

* ``perturbation`` — deletion / insertion AUC, AOPC-MoRF, each next to a random order; removal by a
  constant, a blur or ROAD's noisy linear imputation (``removal``).
* ``localisation`` — pointing game, mask IoU, energy in mask, with the chance level.
* ``sanity`` — cascading model randomisation and data randomisation (Spearman rank correlation).
* ``robustness`` — captum's ``infidelity(normalize=True)`` and ``sensitivity_max`` for any explainer.
* ``roar`` — remove and retrain on the project's small classifier (offline).

What "better" means: lower deletion, higher insertion and AOPC than the random order; higher localisation
than chance; lower rank correlation after randomisation; lower infidelity and sensitivity; lower ROAR
accuracy than the random order.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    >>> x, maps = torch.randn(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    >>> sorted(perturbation_metrics(model, x, maps, steps=4))[:2]
    ['aopc', 'aopc_random']
"""

from xai_train.explain.quality.localisation import (
    chance_level,
    energy_in_mask,
    localisation_metrics,
    mask_iou,
    pointing_game,
)
from xai_train.explain.quality.perturbation import SCORES, area, explained_score, perturbation_metrics
from xai_train.explain.quality.removal import (
    REMOVALS,
    blur_removal,
    build_removal,
    constant_removal,
    linear_imputation,
    pixel_ranks,
    road_removal,
)
from xai_train.explain.quality.roar import RoarResult, remove_top, roar
from xai_train.explain.quality.robustness import explanation_infidelity, explanation_sensitivity
from xai_train.explain.quality.sanity import (
    SanityResult,
    cascading_randomisation,
    data_randomisation,
    randomisable_layers,
    spearman,
    train_on_shuffled_labels,
)

__all__ = [
    "REMOVALS",
    "SCORES",
    "RoarResult",
    "SanityResult",
    "area",
    "blur_removal",
    "build_removal",
    "cascading_randomisation",
    "chance_level",
    "constant_removal",
    "data_randomisation",
    "energy_in_mask",
    "explained_score",
    "explanation_infidelity",
    "explanation_sensitivity",
    "linear_imputation",
    "localisation_metrics",
    "mask_iou",
    "perturbation_metrics",
    "pixel_ranks",
    "pointing_game",
    "randomisable_layers",
    "remove_top",
    "road_removal",
    "roar",
    "spearman",
    "train_on_shuffled_labels",
]
