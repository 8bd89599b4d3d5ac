"""How pixels are "removed" for the perturbation metrics: a constant, a blur, or ROAD's noisy linear imputation.

Every removal is a function ``(images (N, C, H, W), removed (N, 1, H, W) bool) -> images`` that changes only
the removed pixels. A constant or a blur leaves a hole whose shape the model can see: deletion curves then
measure "the model dislikes holes" as much as "the pixels mattered" (the class-information leak of Rong et al.
2022, ROAD). ROAD's fix imputes every removed pixel as the weighted mean of its 8 neighbours (weight 1/6 for
the 4 edge neighbours, 1/12 for the 4 diagonal ones), removed neighbours being unknowns too — one sparse linear
system per image and channel — and adds Gaussian noise (std 0.01) so the imputed values carry no sharp hint.

The systems are solved all at once by conjugate gradients with a 3×3 convolution as the matrix product (the
matrix, a weighted graph Laplacian restricted to the removed pixels, is symmetric positive definite when a
removed region touches a kept pixel; a tiny ridge ``RIDGE`` keeps a fully removed image defined: it goes to 0).

Reference: Rong, Leemann, Borisov, Kasneci, Kasneci, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

from xai_train.explain.mask import gaussian_blur

Removal = Callable[[Tensor, Tensor], Tensor]
"""``(images (N, C, H, W), removed (N, 1, H, W) bool) -> images`` with the removed pixels replaced."""

REMOVALS: tuple[str, ...] = ("constant", "blur", "road")
EDGE_WEIGHT, DIAGONAL_WEIGHT = 1 / 6, 1 / 12  # ROAD's neighbour weights
ROAD_NOISE = 0.01  # ROAD's imputation noise (std, in the images' units)
RIDGE = 1e-12  # keeps the matrix definite where a region has no kept pixel (its right-hand side is 0 there)


def neighbour_kernel(device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """ROAD's 3×3 neighbour weights, (1, 1, 3, 3), zero centre.

    Example:
        >>> neighbour_kernel()[0, 0].sum().item() == 4 / 6 + 4 / 12
        True
    """
    d, e = DIAGONAL_WEIGHT, EDGE_WEIGHT
    return torch.tensor([[d, e, d], [e, 0.0, e], [d, e, d]], device=device, dtype=dtype)[None, None]


def neighbour_sum(values: Tensor, kernel: Tensor) -> Tensor:
    """Σ_n w_n · values_n over each pixel's in-image neighbours (zero padding): (N, K, H, W) -> same shape."""
    channels = values.shape[1]
    return F.conv2d(F.pad(values, (1, 1, 1, 1)), kernel.expand(channels, 1, 3, 3), groups=channels)


def linear_imputation(images: Tensor, removed: Tensor, *, max_iterations: int = 500, tolerance: float = 1e-6) -> Tensor:
    """Solves ROAD's imputation systems exactly (to ``tolerance``), batched: no noise added.

    For every removed pixel p: ``v_p = Σ_n w_n v_n / Σ_n w_n`` over its in-image neighbours n, kept
    neighbours contributing their values and removed ones their unknowns.

    Args:
        images: (N, C, H, W).
        removed: (N, 1, H, W) bool.
        max_iterations: conjugate-gradient iteration cap (an H × W hole needs about H + W).
        tolerance: stop when every system's residual norm is below ``tolerance`` × its right-hand side's.

    Returns:
        (N, C, H, W): the kept pixels unchanged, the removed ones imputed.

    Example:
        >>> x = torch.tensor([[[[1.0, 0.0, 3.0]]]])
        >>> [round(v, 5) for v in linear_imputation(x, torch.tensor([[[[False, True, False]]]]))[0, 0, 0].tolist()]
        [1.0, 2.0, 3.0]
    """
    kernel = neighbour_kernel(images.device, torch.float64)
    x = images.double()
    unknown = removed.expand_as(x).double()
    known = x * (1 - unknown)
    degree = neighbour_sum(torch.ones_like(x[:, :1]), kernel)  # Σ w over in-image neighbours

    def matvec(v: Tensor) -> Tensor:
        return unknown * (degree * v - neighbour_sum(v * unknown, kernel)) + RIDGE * v

    b = unknown * neighbour_sum(known, kernel)
    v = torch.zeros_like(x)
    r = b.clone()
    p = r.clone()
    rr = reduce(r * r, "n c h w -> n c 1 1", "sum")
    limit = (tolerance**2) * rr.clamp_min(1e-30)
    for _ in range(max_iterations):
        if bool((rr <= limit).all()):
            break
        ap = matvec(p)
        alpha = rr / reduce(p * ap, "n c h w -> n c 1 1", "sum").clamp_min(1e-30)
        v = v + alpha * p
        r = r - alpha * ap
        rr_next = reduce(r * r, "n c h w -> n c 1 1", "sum")
        p = r + (rr_next / rr.clamp_min(1e-30)) * p
        rr = rr_next
    return torch.where(removed.expand_as(images), v.to(images.dtype), images)


def road_removal(noise: float = ROAD_NOISE, seed: int = 0) -> Removal:
    """ROAD's noisy linear imputation as a :data:`Removal` (Gaussian noise from a private seeded generator).

    Example:
        >>> x = torch.zeros(1, 1, 4, 4); removed = torch.zeros(1, 1, 4, 4, dtype=torch.bool); removed[..., 1, 1] = True
        >>> out = road_removal()(x, removed)
        >>> bool((out[~removed.expand_as(x)] == 0).all()), abs(out[0, 0, 1, 1].item()) < 0.05
        (True, True)
    """

    def remove(images: Tensor, removed: Tensor) -> Tensor:
        imputed = linear_imputation(images, removed)
        generator = torch.Generator().manual_seed(seed)
        jitter = torch.randn(images.shape, generator=generator).to(images.device) * noise
        return torch.where(removed.expand_as(images), imputed + jitter, images)

    return remove


def constant_removal(value: float = 0.0) -> Removal:
    """Removed pixels set to ``value`` (0 = mid-grey for images in [-1, 1]).

    Example:
        >>> constant_removal(0.5)(torch.ones(1, 1, 1, 2), torch.tensor([[[[True, False]]]])).flatten().tolist()
        [0.5, 1.0]
    """

    def remove(images: Tensor, removed: Tensor) -> Tensor:
        return torch.where(removed.expand_as(images), torch.full_like(images, value), images)

    return remove


def blur_removal(sigma: float = 2.0) -> Removal:
    """Removed pixels taken from a Gaussian-blurred copy (Petsiuk et al.'s insertion start image).

    Example:
        >>> x = torch.zeros(1, 1, 5, 5); x[..., 2, 2] = 1.0
        >>> blur_removal(1.0)(x, torch.ones(1, 1, 5, 5, dtype=torch.bool))[0, 0, 2, 2].item() < 1
        True
    """

    def remove(images: Tensor, removed: Tensor) -> Tensor:
        return torch.where(removed.expand_as(images), gaussian_blur(images, sigma), images)

    return remove


def build_removal(name: str, *, value: float = 0.0, sigma: float = 2.0, noise: float = ROAD_NOISE) -> Removal:
    """The removal called ``name``: ``"constant"``, ``"blur"`` or ``"road"``.

    Example:
        >>> build_removal("road") is not None
        True
    """
    if name == "constant":
        return constant_removal(value)
    if name == "blur":
        return blur_removal(sigma)
    if name == "road":
        return road_removal(noise)
    raise ValueError(f"unknown removal {name!r}; choose one of: {', '.join(REMOVALS)}")


def pixel_ranks(maps: Tensor, seed: int = 0) -> Tensor:
    """Each pixel's rank in its image's map, 0 = most relevant; ties broken at random (seeded).

    Args:
        maps: (N, K, H, W) attributions (summed over K first).
        seed: tie-break seed (ReLU'd CAMs have many exact zeros: a fixed order would favour the top rows).

    Returns:
        (N, 1, H, W) int64 ranks in [0, H·W).

    Example:
        >>> pixel_ranks(torch.tensor([[[[0.1, 0.9], [0.5, 0.3]]]])).flatten().tolist()
        [3, 0, 1, 2]
    """
    n, _, h, w = maps.shape
    flat = rearrange(maps.sum(1).float(), "n h w -> n (h w)")
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.stack([torch.randperm(h * w, generator=generator) for _ in range(n)]).to(maps.device)
    order = shuffle.gather(1, torch.sort(flat.gather(1, shuffle), dim=1, descending=True, stable=True).indices)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(h * w, device=maps.device).expand(n, -1))
    return rearrange(ranks, "n (h w) -> n 1 h w", h=h, w=w)
