"""The CAM suite's cost: each CAM per call, in units of one D forward + backward, and batched vs per-image loops.

``recipes/benchmark.py --suite cams`` times these arms round-robin (``time_interleaved``) on a DCGAN D, so the
ratios come from one run; the per-image loops, slow by design, are timed in their own (shorter) run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from xai_train.explain.cams import CAM_METHODS, all_cams, cam

UNIT = "D fwd+bwd"
"""The reference arm: one forward and one backward of D with respect to the images (what saliency costs)."""

ALL_GRADIENT = "all gradient CAMs (one pass)"
"""The arm computing every gradient CAM (``GRADIENT_CAMS``) from one forward and one gradient pass."""

LOOPED: tuple[str, ...] = ("scorecam", "ablationcam")
"""The gradient-free CAMs whose batching is compared with a per-image loop of the same method."""


def forward_backward(discriminator: nn.Module, images: Tensor) -> Callable[[], Tensor]:
    """One forward + backward of D with respect to the images (D's parameters untouched).

    Example:
        >>> D = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
        >>> forward_backward(D, torch.zeros(2, 1, 2, 2))().shape
        torch.Size([2, 1, 2, 2])
    """

    def step() -> Tensor:
        x = images.detach().requires_grad_(True)
        return torch.autograd.grad(discriminator(x).sum(), x)[0]

    return step


def cam_arms(
    discriminator: nn.Module, images: Tensor, methods: Sequence[str] | None = None
) -> dict[str, Callable[[], object]]:
    """Arms: the unit, each CAM (``cam()``: the call users make, D left as it was) and all gradient CAMs at once.

    Args:
        discriminator: D (its ``feature_layer`` or last spatial conv is explained).
        images: (B, C, H, W) the batch every arm explains.
        methods: CAM names (default: every entry of ``CAM_METHODS``, ``gradcam_batched`` shown as ``gradcam``).

    Returns:
        name -> a callable running one call.

    Example:
        >>> D = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 1))
        >>> sorted(cam_arms(D, torch.randn(2, 1, 4, 4), ["layercam"]))
        ['D fwd+bwd', 'all gradient CAMs (one pass)', 'layercam']
    """
    names = list(methods or ["gradcam", *(m for m in CAM_METHODS if m != "gradcam_batched")])
    arms: dict[str, Callable[[], object]] = {UNIT: forward_backward(discriminator, images)}
    for name in names:
        arms[name] = lambda name=name: cam(discriminator, images, name)
    arms[ALL_GRADIENT] = lambda: all_cams(discriminator, images)
    return arms


def per_image_loops(discriminator: nn.Module, images: Tensor, methods: Sequence[str] = LOOPED) -> dict[str, Callable]:
    """Arms calling each method once per image (batch of one): what a non-batched implementation does.

    Example:
        >>> D = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 1))
        >>> list(per_image_loops(D, torch.randn(2, 1, 4, 4), ["scorecam"]))
        ['scorecam (per-image loop)']
    """
    return {
        f"{name} (per-image loop)": lambda name=name: [cam(discriminator, image[None], name) for image in images]
        for name in methods
    }
