"""GALORE for C-class classifiers: attributive, deliberative and counterfactual maps (Wang & Vasconcelos).

All maps are built from gradient × activation maps of one layer (A (B, K, h, w), summed over channels,
clipped below at ``FLOOR`` = 1e-7 so products stay defined) of four scalar functions of the logits y:

* a = map of y_A, the explained class A (default: the predicted class) — the **attributive** map;
* b = map of y_B, the counter class B (default: the second most probable class);
* s = map of max_c softmax(y)_c, the model's confidence;
* h = map of the softmax entropy, the model's uncertainty.

Each map is divided by its per-image maximum (so products compare across images and 1 − b̂ lies in [0, 1]):

* **counterfactual** (SCOUT, Wang & Vasconcelos, CVPR 2020, "SCOUT: Self-aware Discriminant
  Counterfactual Explanations"): ŝ ⊙ (1 − b̂) ⊙ â — "why A and not B": where A's evidence is, B's is not,
  and the model is confident;
* **deliberative** (Wang & Vasconcelos, "Deliberative Explanations: visualizing network insecurities",
  NeurIPS 2019; GALORE, TPAMI 2023): â ⊙ b̂ ⊙ ĥ — where the top two classes are *both* supported and the
  model is uncertain: the regions that make A and B ambiguous.

One forward pass; four gradient passes through the same graph. The model is left as it was (``explaining``).
"""

from __future__ import annotations

import torch
from einops import reduce
from torch import Tensor, nn

from xai_train.explain.base import check_images, explaining
from xai_train.explain.cams.base import forward_with_layer, resolve_layer, upsample

FLOOR = 1e-7  # the clip of SCOUT's maps: keeps products and the normalisation defined
GALORE_MAPS: tuple[str, ...] = ("attributive", "counter", "confidence", "entropy", "counterfactual", "deliberative")


def normalised_map(gradient: Tensor, activations: Tensor) -> Tensor:
    """Σ_k G ⊙ A clipped at ``FLOOR`` and divided by its per-image maximum: (B, 1, h, w) in (0, 1].

    Example:
        >>> normalised_map(torch.tensor([[[[4.0, 2.0, -1.0]]]]), torch.ones(1, 1, 1, 3)).flatten()[:2].tolist()
        [1.0, 0.5]
    """
    raw = reduce(gradient * activations, "b k h w -> b 1 h w", "sum").clamp_min(FLOOR)
    return raw / reduce(raw, "b 1 h w -> b 1 1 1", "max")


def galore_maps(
    model: nn.Module,
    images: Tensor,
    *,
    layer: nn.Module | None = None,
    target: int | Tensor | None = None,
    counter: int | Tensor | None = None,
    bn_mode: str = "eval",
    upsampled: bool = True,
) -> dict[str, Tensor]:
    """GALORE's maps of a C-class classifier (C >= 2) for the class pair (A = ``target``, B = ``counter``).

    Args:
        model: images -> (B, C) logits.
        images: (B, C_in, H, W).
        layer: the explained module (default: the model's ``feature_layer`` or its last spatial Conv2d).
        target: class A per image (int or (B,)); None = the predicted class.
        counter: class B per image; None = the second most probable class (the runner-up).
        bn_mode: ``"eval"`` or ``"freeze_stats"``.
        upsampled: bilinear upsampling to (H, W).

    Returns:
        ``{name: (B, 1, H, W)}`` for the names in :data:`GALORE_MAPS` (the first four normalised to (0, 1]),
        plus ``"classes"`` (B, 2): the (A, B) pair explained.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        >>> maps = galore_maps(net, torch.randn(2, 1, 4, 4), layer=net[1])
        >>> maps["counterfactual"].shape, bool((maps["counterfactual"] <= 1).all())
        (torch.Size([2, 1, 4, 4]), True)
    """
    check_images(images)
    images = images.detach().clone().requires_grad_(True)
    with explaining(model, bn_mode):
        layer = resolve_layer(model, images, layer)
        logits, activations = forward_with_layer(model, images, layer)
        if logits.dim() != 2 or logits.shape[1] < 2:
            raise ValueError(f"GALORE maps need (B, C >= 2) class logits, got shape {tuple(logits.shape)}")
        batch, classes = logits.shape
        ranked = logits.detach().argsort(1, descending=True)
        pair = torch.stack([pick(target, ranked[:, 0], batch, classes), pick(counter, ranked[:, 1], batch, classes)], 1)
        if (pair[:, 0] == pair[:, 1]).any():
            raise ValueError("GALORE: the counter class must differ from the explained class in every image")
        probabilities = logits.float().softmax(1)
        scores = {
            "attributive": logits.gather(1, pair[:, :1]).sum(),
            "counter": logits.gather(1, pair[:, 1:]).sum(),
            "confidence": probabilities.amax(1).sum(),
            "entropy": -(probabilities * probabilities.clamp_min(1e-12).log()).sum(),
        }
        maps = {}
        for i, (name, score) in enumerate(scores.items()):
            (gradient,) = torch.autograd.grad(score, activations, retain_graph=i < len(scores) - 1)
            maps[name] = normalised_map(gradient.detach().float(), activations.detach().float())
    maps["counterfactual"] = maps["confidence"] * (1 - maps["counter"]) * maps["attributive"]
    maps["deliberative"] = maps["attributive"] * maps["counter"] * maps["entropy"]
    if upsampled:
        maps = {name: upsample(m, tuple(images.shape[-2:])) for name, m in maps.items()}
    maps["classes"] = pair
    return maps


def pick(choice: int | Tensor | None, default: Tensor, batch: int, classes: int) -> Tensor:
    """(B,) class indices from ``choice`` (int, (B,) tensor or None = ``default``), range-checked."""
    if choice is None:
        return default
    index = torch.as_tensor(choice, device=default.device).long().reshape(-1).expand(batch)
    if index.min() < 0 or index.max() >= classes:
        raise ValueError(f"GALORE: class indices must lie in [0, {classes}), got {index.tolist()}")
    return index
