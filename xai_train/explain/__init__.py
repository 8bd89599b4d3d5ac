"""Explainers of the discriminator and saliency masks (DESIGN.md §4).

* :func:`attribute` — one batched entry point over captum's methods (see :data:`METHODS`), leaving D
  exactly as it was (modes, BatchNorm statistics, ``.grad``, hooks).
* :func:`to_mask` — attributions to a mask in [0, 1] with degenerate maps counted, never NaN.
* :func:`saliency_grad_fn` — free saliency (method ``"grad"``): the mask taken from the generator's own
  backward, inside the gradient hook.
* ``visualize`` — heat-map overlays and PNG grids.
* :func:`cam`, :func:`all_cams` — the CAM suite for any model (``cams/``); ``quality/`` scores explanations;
  :func:`galore_maps` — GALORE's counterfactual and deliberative maps of a classifier (DESIGN.md §8).
"""

from xai_train.explain.attribute import METHODS, attribute, check_method
from xai_train.explain.base import BN_MODES, OUTPUTS, ScoreModel, explaining, hook_counts, patch_feature_mask
from xai_train.explain.cams import all_cams, cam
from xai_train.explain.deeplift_check import check_deeplift
from xai_train.explain.free import FREE_METHOD, saliency_grad_fn
from xai_train.explain.galore import galore_maps
from xai_train.explain.mask import (
    REDUCTIONS,
    SCOPES,
    MaskResult,
    gaussian_blur,
    mask_entropy,
    mask_statistics,
    scatter_mask,
    to_mask,
)
from xai_train.explain.visualize import colormap, overlay, saliency_grid, save_saliency_overlay

__all__ = [
    "BN_MODES",
    "FREE_METHOD",
    "METHODS",
    "OUTPUTS",
    "REDUCTIONS",
    "SCOPES",
    "MaskResult",
    "ScoreModel",
    "all_cams",
    "attribute",
    "cam",
    "check_deeplift",
    "check_method",
    "colormap",
    "explaining",
    "galore_maps",
    "gaussian_blur",
    "hook_counts",
    "mask_entropy",
    "mask_statistics",
    "overlay",
    "patch_feature_mask",
    "saliency_grad_fn",
    "saliency_grid",
    "save_saliency_overlay",
    "scatter_mask",
    "to_mask",
]
