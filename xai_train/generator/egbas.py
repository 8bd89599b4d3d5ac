"""E-GBAS: explorative sampling inside generative boundaries (Jeon, Jeong, Choi, AAAI 2020; DESIGN.md §10).

A layer's *generative boundaries* are the zero sets of its pre-activations ``h(z)``. For a query ``z₀``:

1. **Smallest supporting set.** A keep-probability ``p_k = σ(θ_k)`` per unit of the activation layer; each
   step draws relaxed-Bernoulli (binary Concrete) masks ``m ~ RelaxedBernoulli(τ, p)``, multiplies the
   units by ``m`` and minimises ``MSE(G_m(z₀), G(z₀)) + λ·Σ_k p_k``. Units with ``p_k > 1/2`` at the end
   form the supporting set S; their neurons' boundaries define the region
   ``R = {z : sign h_i(z) = sign h_i(z₀) for every neuron i of a unit in S}``.
2. **Tree-like exploration.** Pick an accepted sample (the root is ``z₀``), draw a random direction,
   bisect along it to the region's edge (up to ``radius``), put a child at a uniform fraction of that
   distance, check it lies in R, accept it, push it to the tree.
3. **Baseline.** ε-ball sampling at matched distances: ``z₀ + r_j·d`` with the accepted samples' distances
   ``r_j`` and random directions ``d``; compare the share that keeps S's sign pattern and the share a
   classifier labels like the query.

Unverified in the paper (no official code found), so chosen here and tested: the loss (pixel MSE, L1 on
the probabilities, λ per kept unit), τ = 0.5, masks on units (channels, all positions), the child at a
uniform fraction of the edge distance, parents drawn uniformly from the tree.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from xai_train.errors import UserError
from xai_train.generator.units import channel_layers, find_layer


@contextlib.contextmanager
def _masked(module: nn.Module, mask: Tensor) -> Iterator[None]:
    handle = module.register_forward_hook(lambda _m, _i, output: output * rearrange(mask, "b k -> b k 1 1"))
    try:
        yield
    finally:
        handle.remove()


def pre_activations(generator: nn.Module, layer: str, latents: Tensor) -> Tensor:
    """(N, M) the flattened output of ``layer`` (the pre-activations whose zero sets are the boundaries).

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8).eval()
        >>> pre_activations(G, "project.norm", torch.randn(3, 100)).shape
        torch.Size([3, 512])
    """
    module = find_layer(generator, layer)
    seen: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: seen.append(output))
    try:
        with torch.no_grad():
            generator(latents)
    finally:
        handle.remove()
    return rearrange(seen[0], "n k h w -> n (k h w)")


def supporting_set(
    generator: nn.Module,
    activation: str,
    query: Tensor,
    *,
    l1: float = 1e-3,
    temperature: float = 0.5,
    steps: int = 150,
    lr: float = 0.1,
    mask_samples: int = 8,
    seed: int = 0,
) -> Tensor:
    """The units needed to keep ``G(z₀)``: relaxed-Bernoulli masks with an L1 cost on keep-probabilities.

    Args:
        generator: the generator (eval mode).
        activation: the activation layer whose units are masked (e.g. ``"project.act"``).
        query: (latent_dim,) the query latent ``z₀``.
        l1: cost per unit of keep-probability; a unit stays when dropping it raises the pixel MSE (images
            in [-1, 1]) by more than about this.
        temperature: Concrete temperature τ.
        steps: Adam steps.
        lr: Adam learning rate on the logits θ.
        mask_samples: masks drawn per step (one batched forward pass).
        seed: the mask noise.

    Returns:
        (K,) bool: the supporting units.

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8).eval()
        >>> supporting_set(G, "project.act", torch.randn(100), steps=5).shape
        torch.Size([32])
    """
    module = find_layer(generator, activation)
    generator.eval()
    flags = [(p, p.requires_grad) for p in generator.parameters()]
    z = query.reshape(1, -1).expand(mask_samples, -1)
    with torch.no_grad():
        target = generator(query.reshape(1, -1))
    k = channel_layers(generator)[activation][0]
    logits = torch.full((k,), 3.0, requires_grad=True)  # start by keeping everything (p = 0.95)
    optimizer = torch.optim.Adam([logits], lr=lr)
    noise = torch.Generator().manual_seed(seed)
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for _ in range(steps):
            u = torch.rand(mask_samples, k, generator=noise).clamp(1e-6, 1 - 1e-6)
            mask = torch.sigmoid((logits + u.log() - (-u).log1p()) / temperature)
            with _masked(module, mask):
                fake = generator(z)
            loss = F.mse_loss(fake, target.expand_as(fake)) + l1 * torch.sigmoid(logits).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return torch.sigmoid(logits.detach()) > 0.5


def region_constraints(
    generator: nn.Module, pre_activation: str, query: Tensor, support: Tensor
) -> tuple[Tensor, Tensor]:
    """Which pre-activation neurons bound the region, and the sign each must keep.

    Args:
        generator: the generator.
        pre_activation: the layer before the activation (e.g. ``"project.norm"``).
        query: (latent_dim,).
        support: (K,) bool supporting units.

    Returns:
        ``(neurons (M,) bool, signs (M,) in {−1, 0, 1})``: every neuron of a supporting unit, and the signs
        of the query's pre-activations.

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8).eval()
        >>> support = torch.zeros(32, dtype=torch.bool); support[0] = True
        >>> neurons, signs = region_constraints(G, "project.norm", torch.randn(100), support)
        >>> int(neurons.sum()), signs.shape  # unit 0's 4×4 neurons
        (16, torch.Size([512]))
    """
    h = pre_activations(generator, pre_activation, query.reshape(1, -1))[0]
    per_unit = h.numel() // support.numel()
    return support.repeat_interleave(per_unit), torch.sign(h)


def inside(generator: nn.Module, pre_activation: str, latents: Tensor, neurons: Tensor, signs: Tensor) -> Tensor:
    """(N,) bool: the latents keep the sign of every constrained neuron.

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8).eval()
        >>> z = torch.randn(100)
        >>> neurons, signs = region_constraints(G, "project.norm", z, torch.ones(32, dtype=torch.bool))
        >>> inside(G, "project.norm", torch.stack([z, -z]), neurons, signs).tolist()  # -z flips every sign
        [True, False]
    """
    h = pre_activations(generator, pre_activation, latents)
    return ((torch.sign(h) == signs) | ~neurons).all(dim=1)


def edge_distance(
    is_inside: Callable[[Tensor], Tensor], start: Tensor, directions: Tensor, radius: float, iterations: int = 30
) -> Tensor:
    """Distance along each direction to the region's edge by bisection (capped at ``radius``), batched.

    Args:
        is_inside: latents (B, d) -> (B,) bool.
        start: (B, d) points inside the region.
        directions: (B, d) unit vectors.
        radius: the largest distance searched.
        iterations: bisection steps (error ``radius / 2**iterations``).

    Returns:
        (B,) the last distance known to be inside (``radius`` if the far end is inside).

    Example:
        >>> ball = lambda z: z.norm(dim=1) < 1  # the unit ball: the edge from 0 is at 1
        >>> edge_distance(ball, torch.zeros(2, 3), torch.eye(3)[:2], radius=4.0).round(decimals=6).tolist()
        [1.0, 1.0]
    """
    low = torch.zeros(len(start))
    high = torch.full((len(start),), float(radius))
    far_inside = is_inside(start + radius * directions)
    for _ in range(iterations):
        middle = (low + high) / 2
        ok = is_inside(start + middle[:, None] * directions)
        low = torch.where(ok, middle, low)
        high = torch.where(ok, high, middle)
    return torch.where(far_inside, high, low)


def affine_edge_distance(
    jacobian: Tensor, offset: Tensor, start: Tensor, directions: Tensor, neurons: Tensor, signs: Tensor, radius: float
) -> Tensor:
    """Closed-form edge distance for a layer affine in z, ``h = A·z + b``: the first sign change along the ray.

    Args:
        jacobian: (M, d) ``A``.
        offset: (M,) ``b``.
        start: (B, d).
        directions: (B, d).
        neurons: (M,) bool constrained neurons.
        signs: (M,) the signs to keep.
        radius: cap.

    Returns:
        (B,) ``min_i −h_i(start) / (A·d)_i`` over constrained neurons moving toward zero, capped at ``radius``.

    Example:
        >>> A, b = torch.eye(2), torch.tensor([-1.0, 0.0])  # h = (z1 − 1, z2); the query (2, 1) has signs (+, +)
        >>> start, signs = torch.tensor([[2.0, 1.0]]), torch.ones(2)
        >>> affine_edge_distance(A, b, start, torch.tensor([[-1.0, 0.0]]), torch.ones(2, dtype=torch.bool), signs, 9.0)
        tensor([1.])
    """
    h = start @ jacobian.T + offset  # (B, M)
    rate = directions @ jacobian.T
    toward = (signs * rate < 0) & neurons & (signs != 0)
    t = torch.where(toward, -h / torch.where(toward, rate, torch.ones_like(rate)), torch.full_like(h, float("inf")))
    return t.min(dim=1).values.clamp(max=radius)


def affine_map(generator: nn.Module, pre_activation: str, latent_dim: int) -> tuple[Tensor, Tensor]:
    """``(A (M, d), b (M,))`` of a layer affine in z (checked on random points; raises if it is not).

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8).eval()
        >>> A, b = affine_map(G, "project.norm", 100)
        >>> A.shape, b.shape
        (torch.Size([512, 100]), torch.Size([512]))
    """
    basis = torch.cat([torch.zeros(1, latent_dim), torch.eye(latent_dim)])
    h = pre_activations(generator, pre_activation, basis)
    offset, jacobian = h[0], (h[1:] - h[0]).T
    probe = torch.randn(4, latent_dim, generator=torch.Generator().manual_seed(0))
    predicted = probe @ jacobian.T + offset
    if not torch.allclose(predicted, pre_activations(generator, pre_activation, probe), atol=1e-4, rtol=1e-4):
        raise UserError(f"layer {pre_activation!r} is not affine in z (use the first block, in eval mode)")
    return jacobian, offset


@dataclasses.dataclass
class Exploration:
    """Samples of one query.

    Attributes:
        tree: (T, d) accepted latents (the query first).
        parents: (T,) index of each sample's parent (−1 for the query).
        edges: (T − 1,) edge distance found for each child's ray.
        baseline: (T − 1, d) ε-ball samples at the tree samples' distances from the query.
        baseline_inside: (T − 1,) bool: the ε-ball sample keeps the supporting set's signs.
    """

    tree: Tensor
    parents: Tensor
    edges: Tensor
    baseline: Tensor
    baseline_inside: Tensor


def explore(
    generator: nn.Module,
    pre_activation: str,
    query: Tensor,
    neurons: Tensor,
    signs: Tensor,
    *,
    num_samples: int = 32,
    radius: float = 3.0,
    batch: int = 8,
    seed: int = 0,
) -> Exploration:
    """Grows a tree of samples inside the region, ``batch`` children per round, and the ε-ball baseline.

    Args:
        generator: the generator.
        pre_activation: the boundary layer.
        query: (d,) the root.
        neurons: (M,) bool constrained neurons.
        signs: (M,) signs to keep.
        num_samples: accepted samples besides the query.
        radius: the longest ray searched.
        batch: rays per round (parents drawn uniformly from the tree so far).
        seed: directions, parents and fractions.

    Returns:
        The :class:`Exploration`.

    Example:
        >>> from xai_train.models import DCGANGenerator
        >>> G = DCGANGenerator(image_size=32, channels=1, width=8).eval()
        >>> z = torch.randn(100)
        >>> neurons, signs = region_constraints(G, "project.norm", z, torch.ones(32, dtype=torch.bool))
        >>> result = explore(G, "project.norm", z, neurons, signs, num_samples=4)
        >>> len(result.tree), bool(inside(G, "project.norm", result.tree, neurons, signs).all())
        (5, True)
    """
    rng = torch.Generator().manual_seed(seed)

    def is_inside(z: Tensor) -> Tensor:
        return inside(generator, pre_activation, z, neurons, signs)

    tree, parents, edges = [query.reshape(1, -1)], [-1], []
    count = 0
    while count < num_samples:
        size = min(batch, num_samples - count)
        pool = torch.cat(tree)
        pick = torch.randint(len(pool), (size,), generator=rng)
        directions = F.normalize(torch.randn(size, pool.shape[1], generator=rng), dim=1)
        edge = edge_distance(is_inside, pool[pick], directions, radius)
        children = pool[pick] + (torch.rand(size, generator=rng) * edge)[:, None] * directions
        ok = is_inside(children)  # always for a convex region; a non-convex one can reject
        tree.append(children[ok])
        parents += pick[ok].tolist()
        edges.append(edge[ok])
        count += int(ok.sum())
    tree_t = torch.cat(tree)
    distance = (tree_t[1:] - tree_t[0]).norm(dim=1)
    baseline = tree_t[0] + distance[:, None] * F.normalize(
        torch.randn(len(distance), tree_t.shape[1], generator=rng), dim=1
    )
    return Exploration(tree_t, torch.tensor(parents), torch.cat(edges), baseline, is_inside(baseline))
