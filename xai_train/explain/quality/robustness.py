"""captum's infidelity and sensitivity, wrapped so that any explainer of the project works with them.

* **infidelity** (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019): the
  expected squared gap between ``I · attribution`` and the score change ``f(x) − f(x − I)`` under random
  perturbations I (Gaussian, std ``noise_std``). *Lower* is better. ``normalize=True`` (the default here)
  rescales the attributions by the optimal scalar first, so the value does not depend on the map's scale
  (captum without it moved a ×100 map's infidelity from 8.8e-7 to 0.163: DESIGN.md §8). CAMs are compared
  as (B, C, H, W) maps (``METHODS`` repeats them over the channels).
* **max-sensitivity** (same paper): the largest change of the explanation (Frobenius norm) within an
  L∞ ball of radius ``radius``; *lower* is better (a stable explanation).

Both call the model only, in eval mode with every flag and buffer restored (``explaining``); the explainer
keeps its own guarantees (``attribute`` leaves D untouched).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from captum.metrics import infidelity, sensitivity_max
from torch import Tensor, nn

from xai_train.explain.base import explaining
from xai_train.explain.cams.base import target_scores

MapFn = Callable[[Tensor], Tensor]
"""An explainer bound to its model: images (B, C, H, W) -> attributions (B, C, H, W)."""


def explanation_infidelity(
    model: nn.Module,
    images: Tensor,
    explain: MapFn,
    *,
    target: int | Tensor | None = None,
    noise_std: float = 0.1,
    n_perturb_samples: int = 16,
    normalize: bool = True,
    seed: int = 0,
) -> Tensor:
    """captum ``infidelity`` of ``explain``'s attributions of ``model``'s score; (B,), lower is better.

    Args:
        model: images -> (B,), (B, 1) or (B, C) outputs (the logit / class logit is the explained score).
        images: (B, C, H, W).
        explain: images -> (B, C, H, W) attributions, e.g. ``lambda x: attribute(D, x, "layercam")``.
        target: class index per image for C-class models (None: predicted class).
        noise_std: standard deviation of the Gaussian perturbations.
        n_perturb_samples: perturbations per image.
        normalize: captum's scale-invariant infidelity.
        seed: seeds the perturbations (the global RNG is restored).

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
        >>> x = torch.randn(2, 1, 2, 2)
        >>> exact = lambda imgs: model[1].weight.detach().reshape(1, 1, 2, 2).expand_as(imgs)  # the true gradient
        >>> bool(explanation_infidelity(model, x, exact).max() < 1e-6)
        True
    """
    attributions = explain(images).detach()
    if attributions.shape != images.shape:
        raise ValueError(
            f"infidelity needs attributions shaped like the images {tuple(images.shape)}, got "
            f"{tuple(attributions.shape)} (repeat a (B, 1, H, W) map over the channels first)"
        )
    with explaining(model):
        index = class_index(model, images, target)
    generator = torch.Generator().manual_seed(seed)

    def perturb(inputs: Tensor) -> tuple[Tensor, Tensor]:
        noise = torch.randn(inputs.shape, generator=generator).to(inputs) * noise_std
        return noise, inputs - noise

    def forward(inputs: Tensor, rows: Tensor) -> Tensor:
        return target_scores(model(inputs), rows)

    with explaining(model), torch.no_grad():
        return infidelity(
            forward,
            perturb,
            images.detach(),
            attributions,
            additional_forward_args=(index,),
            n_perturb_samples=n_perturb_samples,
            normalize=normalize,
        ).detach()


def explanation_sensitivity(
    images: Tensor, explain: MapFn, *, radius: float = 0.02, n_perturb_samples: int = 8, seed: int = 0
) -> Tensor:
    """captum ``sensitivity_max`` of ``explain``; (B,), lower is better.

    Args:
        images: (B, C, H, W).
        explain: images -> attributions (any shape per image).
        radius: L∞ radius of the uniform input perturbations.
        n_perturb_samples: perturbations per image.
        seed: seeds captum's perturbations (the global RNG is restored afterwards).

    Example:
        >>> bool((explanation_sensitivity(torch.randn(2, 1, 3, 3), lambda x: x * 0 + 1) == 0).all())
        True
    """

    def explanation(inputs: Tensor | tuple[Tensor, ...], **_: object) -> Tensor | tuple[Tensor, ...]:
        # captum passes a tuple of inputs and expects a tuple back (DESIGN.md §8)
        if isinstance(inputs, tuple):
            return tuple(explain(x).detach() for x in inputs)
        return explain(inputs).detach()

    with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
        torch.manual_seed(seed)
        return sensitivity_max(
            explanation, images.detach(), perturb_radius=radius, n_perturb_samples=n_perturb_samples
        ).detach()


def class_index(model: nn.Module, images: Tensor, target: int | Tensor | None) -> Tensor:
    """(B,) explained class: ``target`` broadcast, else the predicted class (0 for a single logit)."""
    if target is not None:
        return torch.as_tensor(target, device=images.device).long().reshape(-1).expand(images.shape[0])
    with torch.no_grad():
        return model(images).reshape(images.shape[0], -1).argmax(1)
