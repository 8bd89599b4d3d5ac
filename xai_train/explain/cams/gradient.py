"""The gradient CAMs: pure rules from (A, G) to a map, and every one of them from a single pass.

Notation (DESIGN.md §8): A (B, K, h, w) the layer's activations, G = dy/dA, y the explained logit.

============================  ==========================================================  ===========================
name                          raw map (before the final ReLU)                             reference
============================  ==========================================================  ===========================
``gradcam``                   Σ_k mean_ij(G_k) · A_k                                      Selvaraju et al. 2017
``gradcampp``                 Σ_k w_k A_k, w_k = Σ_ij α_kij ReLU(G_kij),                  Chattopadhay et al. 2018
                              α = G² / (2G² + (Σ_ab A_kab) · G³ + ε), 0 where G = 0
``xgradcam``                  Σ_k w_k A_k, w_k = Σ_ij G·A / (Σ_ij A + ε)                  Fu et al. 2020
``layercam``                  Σ_k ReLU(G_k) ⊙ A_k                                         Jiang et al. 2021
``hirescam``                  Σ_k G_k ⊙ A_k                                               Draelos & Carin 2020
``gradcam_elementwise``       Σ_k ReLU(G_k ⊙ A_k)                                         pytorch-grad-cam's variant
``eigencam``                  projection of centred A (hw × K) on its first principal     Muhammad & Yeasin 2020
                              axis, sign aligned with Grad-CAM's raw map
``eigengradcam``              the same for G ⊙ A                                          pytorch-grad-cam's variant
============================  ==========================================================  ===========================

The final ReLU (``relu=True``, the default, as in every paper above) keeps the evidence *for* the explained
logit. With ``relu=False`` the signed map is returned (HiResCAM then equals captum's
``LayerGradientXActivation`` summed over channels).

**A negative logit** (D says "fake") changes nothing in these rules: they use G = dy/dA, the direction that
makes y larger ("more real"), never y itself; the map still shows the evidence for "real" that D found,
which on a confidently rejected image may be little (an all-zero map after the ReLU is a legal answer).
To explain "fake" instead, explain -y (wrap D) — the maps are not the ReLU-complement of each other.
EigenCAM ignores G except for its sign, which is taken from Grad-CAM's map so that "high" means the same
thing in both (an SVD's sign is arbitrary: without the alignment half of the maps come out inverted).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from einops import rearrange, reduce, repeat
from torch import Tensor, nn

from xai_train.explain.cams.base import capture, resolve_layer, upsample, weighted_sum

EPS = 1e-7  # keeps the Grad-CAM++ and XGradCAM denominators finite where A or G vanish


def gradcam_rule(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM's raw map: channels weighted by their mean gradient. (B, K, h, w) x2 -> (B, 1, h, w)."""
    return weighted_sum(reduce(g, "b k h w -> b k", "mean"), a)


def gradcampp_rule(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM++: weights from the second- and third-order terms of an exponential score model."""
    g2 = g.square()
    denominator = 2 * g2 + reduce(a, "b k h w -> b k 1 1", "sum") * g2 * g
    alpha = torch.where(g != 0, g2 / torch.where(denominator != 0, denominator, EPS), torch.zeros_like(g))
    return weighted_sum(reduce(alpha * g.relu(), "b k h w -> b k", "sum"), a)


def xgradcam_rule(a: Tensor, g: Tensor) -> Tensor:
    """XGradCAM: gradients weighted by the normalised activations (axiom-based Grad-CAM)."""
    weights = reduce(g * a, "b k h w -> b k", "sum") / (reduce(a, "b k h w -> b k", "sum") + EPS)
    return weighted_sum(weights, a)


def layercam_rule(a: Tensor, g: Tensor) -> Tensor:
    """LayerCAM: a per-location weight, the positive gradient."""
    return reduce(g.relu() * a, "b k h w -> b 1 h w", "sum")


def hirescam_rule(a: Tensor, g: Tensor) -> Tensor:
    """HiResCAM: the element-wise gradient × activation, summed over channels (no spatial averaging)."""
    return reduce(g * a, "b k h w -> b 1 h w", "sum")


def elementwise_rule(a: Tensor, g: Tensor) -> Tensor:
    """Grad-CAM element-wise: ReLU before the channel sum."""
    return reduce((g * a).relu(), "b k h w -> b 1 h w", "sum")


def first_component(maps: Tensor, reference: Tensor) -> Tensor:
    """Per-sample projection of centred (B, K, h, w) maps on their first principal axis, sign-aligned.

    Args:
        maps: (B, K, h, w), each sample's h·w locations being the observations of K variables.
        reference: (B, 1, h, w); the projection's sign is chosen so that it correlates non-negatively with it.

    Returns:
        (B, 1, h, w).

    Example:
        >>> a = torch.zeros(1, 2, 2, 2); a[0, :, 0, 0] = 1.0  # one bright location
        >>> first_component(a, a[:, :1]).flatten().tolist()[0] > 0
        True
    """
    h, w = maps.shape[-2:]
    x = rearrange(maps, "b k h w -> b (h w) k").double()  # SVD in float64: near-equal singular values
    x = x - x.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    projection = torch.einsum("bnk,bk->bn", x, vh[:, 0])
    ref = rearrange(reference, "b 1 h w -> b (h w)").double()
    agreement = ((projection - projection.mean(1, keepdim=True)) * (ref - ref.mean(1, keepdim=True))).sum(1)
    sign = torch.where(agreement < 0, -1.0, 1.0).to(projection)
    projection = projection * rearrange(sign, "b -> b 1")
    return rearrange(projection.to(maps.dtype), "b (h w) -> b 1 h w", h=h, w=w)


def eigencam_rule(a: Tensor, g: Tensor) -> Tensor:
    """EigenCAM: the first principal component of A, its sign taken from Grad-CAM."""
    return first_component(a, gradcam_rule(a, g))


def eigengradcam_rule(a: Tensor, g: Tensor) -> Tensor:
    """EigenGradCAM: the first principal component of G ⊙ A, its sign taken from Grad-CAM."""
    return first_component(g * a, gradcam_rule(a, g))


GRADIENT_RULES: Mapping[str, Callable[[Tensor, Tensor], Tensor]] = {
    "gradcam": gradcam_rule,
    "gradcampp": gradcampp_rule,
    "xgradcam": xgradcam_rule,
    "layercam": layercam_rule,
    "hirescam": hirescam_rule,
    "gradcam_elementwise": elementwise_rule,
    "eigencam": eigencam_rule,
    "eigengradcam": eigengradcam_rule,
}
"""Gradient CAM name -> rule ``(A, G) -> raw (B, 1, h, w) map`` (before the final ReLU)."""


def gradient_cams(
    model: nn.Module,
    images: Tensor,
    *,
    methods: Sequence[str] | None = None,
    layer: nn.Module | None = None,
    target: int | Tensor | None = None,
    relu: bool = True,
    upsampled: bool = True,
) -> dict[str, Tensor]:
    """Several gradient CAMs from ONE forward and ONE gradient pass (the model must already be in the
    state :func:`xai_train.explain.explaining` sets; :func:`xai_train.explain.cams.all_cams` does that).

    Args:
        model: images -> (B,), (B, 1) or (B, C) outputs.
        images: (B, C, H, W) with ``requires_grad``.
        methods: names from :data:`GRADIENT_RULES` (default: all of them).
        layer: the explained module (default: D's ``feature_layer`` or its last spatial Conv2d).
        target: class index per image for (B, C) outputs (None = predicted class); see ``target_scores``.
        relu: apply the final ReLU.
        upsampled: bilinear upsampling to (H, W); False keeps the layer's (h, w).

    Returns:
        name -> (B, 1, H, W) maps (or (B, 1, h, w)).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 1))
        >>> x = torch.randn(2, 1, 4, 4, requires_grad=True)
        >>> maps = gradient_cams(model, x, layer=model[0], methods=["gradcam", "layercam"])
        >>> sorted(maps), maps["gradcam"].shape
        (['gradcam', 'layercam'], torch.Size([2, 1, 4, 4]))
    """
    methods = list(GRADIENT_RULES) if methods is None else list(methods)
    unknown = [m for m in methods if m not in GRADIENT_RULES]
    if unknown:
        raise ValueError(f"unknown gradient CAM(s) {unknown}; choose from: {', '.join(GRADIENT_RULES)}")
    layer = resolve_layer(model, images, layer)
    got = capture(model, images, layer, target)
    a, g = got.activations.float(), got.gradients.float()
    maps = {}
    for name in methods:
        raw = GRADIENT_RULES[name](a, g)
        raw = raw.relu() if relu else raw
        maps[name] = upsample(raw, tuple(images.shape[-2:])) if upsampled else raw
    return maps


def gradient_method(name: str) -> Callable[..., Tensor]:
    """The ``METHODS`` entry of one gradient CAM: ``(model, images, *, layer, target, relu) -> (B, C, H, W)``.

    The (B, 1, H, W) map is repeated over the image channels, the shape every explainer returns. As for
    captum's ``gradcam`` in ``METHODS``, the signed map is the default here (``relu=False``): after the ReLU a
    fake that D rejects outright often has an all-zero map, which ``to_mask`` would count as degenerate.

    Example:
        >>> fn = gradient_method("layercam")
        >>> model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 1))
        >>> fn(model, torch.randn(2, 3, 4, 4, requires_grad=True), layer=model[0]).shape
        torch.Size([2, 3, 4, 4])
    """
    if name not in GRADIENT_RULES:
        raise ValueError(f"unknown gradient CAM {name!r}; choose from: {', '.join(GRADIENT_RULES)}")

    def method(
        model: nn.Module,
        images: Tensor,
        *,
        layer: nn.Module | None = None,
        target: int | Tensor | None = None,
        relu: bool = False,
    ) -> Tensor:
        cam = gradient_cams(model, images, methods=[name], layer=layer, target=target, relu=relu)[name]
        return repeat(cam, "b 1 h w -> b c h w", c=images.shape[1]).contiguous()

    method.__name__ = method.__qualname__ = name
    method.__doc__ = (
        f"{name}: see ``xai_train.explain.cams.gradient`` (rule {GRADIENT_RULES[name].__name__}); options: "
        "layer (default D.feature_layer), target (class index per image for C-class models), relu (False)."
    )
    return method
