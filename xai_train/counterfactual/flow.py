"""A compact RealNVP (Dinh et al. 2017) on flat vectors: the exactly invertible generator of the counterfactuals.

``forward`` maps data x (B, D) to latents z (B, D) with a standard-normal prior and returns the log-determinant
of the Jacobian; ``inverse`` maps back, exactly (up to float rounding). Affine couplings alternate between two
complementary binary masks; each coupling's scale is ``tanh``-bounded (keeps early training stable). A fixed
standardisation (data mean and std, stored as buffers) comes first.

Why written here instead of a library: a RealNVP on vectors is ~100 lines, the counterfactual code needs only
``forward``/``inverse``/``log_prob``, and the project then carries no extra dependency. zuko 1.6.0 was checked
(it needs only numpy and torch and would install next to torch 2.13); nflows' last release (0.14, 2020) is an
unmaintained sdist.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class AffineCoupling(nn.Module):
    """x_b ↦ x_b·exp(s(x_a)) + t(x_a) on the coordinates where ``mask`` is 0; the masked ones pass through.

    Args:
        mask: (D,) of 0/1; 1 marks the conditioning coordinates.
        hidden: width of the two hidden layers of the (s, t) network.

    Example:
        >>> coupling = AffineCoupling(torch.tensor([1.0, 0.0]), hidden=4)
        >>> y, logdet = coupling(torch.ones(3, 2))  # starts as the identity
        >>> y.tolist()[0], logdet.tolist()
        ([1.0, 1.0], [0.0, 0.0, 0.0])
    """

    def __init__(self, mask: Tensor, hidden: int) -> None:
        super().__init__()
        dim = mask.numel()
        self.register_buffer("mask", mask.float().clone())  # own storage: safetensors refuses shared tensors
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2 * dim)
        )
        nn.init.zeros_(self.net[-1].weight)  # every coupling starts as the identity
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        scale, shift = self.net(x_a).chunk(2, dim=1)
        free = 1 - self.mask
        return torch.tanh(scale) * free, shift * free

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D) -> (y (B, D), log|det J| (B,))."""
        scale, shift = self._scale_shift(x * self.mask)
        return x * torch.exp(scale) + shift, scale.sum(dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        """The exact inverse of :meth:`forward`."""
        scale, shift = self._scale_shift(y * self.mask)
        return (y - shift) * torch.exp(-scale)


class RealNVP(nn.Module):
    """Standardisation followed by ``num_couplings`` affine couplings with alternating masks.

    Args:
        dim: data dimension D.
        num_couplings: number of coupling layers (even numbers transform every coordinate equally often).
        hidden: width of each coupling network.
        mask: (D,) 0/1 pattern of the first coupling (its complement is used by every second one);
            default: the even coordinates (for 8×8 images flattened row-major, use a checkerboard).
        mean: (D,) data mean for the standardisation; default zeros.
        std: (D,) data std; default ones.

    Example:
        >>> flow = RealNVP(4, num_couplings=2, hidden=8)
        >>> x = torch.randn(3, 4)
        >>> z, logdet = flow(x)
        >>> torch.allclose(flow.inverse(z), x, atol=1e-6), flow.log_prob(x).shape
        (True, torch.Size([3]))
    """

    def __init__(
        self,
        dim: int,
        num_couplings: int = 8,
        hidden: int = 128,
        mask: Tensor | None = None,
        mean: Tensor | None = None,
        std: Tensor | None = None,
    ) -> None:
        super().__init__()
        if dim < 2 or num_couplings < 1 or hidden < 1:
            raise ValueError(
                f"RealNVP needs dim >= 2, num_couplings >= 1 and hidden >= 1; got {dim}, {num_couplings}, {hidden}"
            )
        first = (torch.arange(dim) % 2 == 0).float() if mask is None else mask.float().flatten()
        if first.numel() != dim:
            raise ValueError(f"RealNVP: mask has {first.numel()} entries, expected dim={dim}")
        self.dim = dim
        self.couplings = nn.ModuleList(
            AffineCoupling(first if i % 2 == 0 else 1 - first, hidden) for i in range(num_couplings)
        )
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.float().flatten())
        self.register_buffer("std", torch.ones(dim) if std is None else std.float().flatten().clamp_min(1e-3))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data x (B, D) -> latents z (B, D) and log|det ∂z/∂x| (B,)."""
        z = (x - self.mean) / self.std
        logdet = -torch.log(self.std).sum().expand(x.shape[0])
        for coupling in self.couplings:
            z, step = coupling(z)
            logdet = logdet + step
        return z, logdet

    def inverse(self, z: Tensor) -> Tensor:
        """Latents z (B, D) -> data x (B, D), the exact inverse of :meth:`forward`."""
        for coupling in reversed(self.couplings):
            z = coupling.inverse(z)
        return z * self.std + self.mean

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) (B,) under a standard-normal prior on z."""
        z, logdet = self(x)
        return -0.5 * (z**2).sum(dim=1) - 0.5 * self.dim * math.log(2 * math.pi) + logdet


def checkerboard(height: int, width: int) -> Tensor:
    """(height·width,) 0/1 checkerboard, flattened row-major (the RealNVP image mask).

    Example:
        >>> checkerboard(2, 2).tolist()
        [1.0, 0.0, 0.0, 1.0]
    """
    rows, cols = torch.arange(height)[:, None], torch.arange(width)[None, :]
    return ((rows + cols) % 2 == 0).float().flatten()


def train_flow(
    data: Tensor,
    *,
    num_couplings: int = 8,
    hidden: int = 128,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    dequantize: float = 0.0,
    mask: Tensor | None = None,
    seed: int = 0,
    progress: bool = False,
) -> RealNVP:
    """Fits a :class:`RealNVP` to ``data`` by maximum likelihood (Adam, cosine-decayed learning rate).

    Args:
        data: (N, D) float training vectors.
        num_couplings: coupling layers.
        hidden: width of each coupling network.
        steps: optimizer steps.
        batch_size: vectors per step (sampled with replacement).
        lr: peak Adam learning rate.
        dequantize: width of uniform noise added to each sample (discrete pixel levels need it: digits have
            17 levels, i.e. 2/16 in [-1, 1]); 0 for continuous data.
        mask: first coupling's 0/1 mask (see :class:`RealNVP`).
        seed: initialisation and batch order.
        progress: show a tqdm bar.

    Returns:
        The trained flow in eval mode with ``requires_grad`` off (it is used frozen).

    Example:
        >>> flow = train_flow(torch.randn(64, 2) * 0.5, num_couplings=2, hidden=8, steps=5)
        >>> flow.log_prob(torch.zeros(1, 2)).shape
        torch.Size([1])
    """
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"train_flow: expected data (N >= 2, D), got shape {tuple(data.shape)}")
    data = data.float()
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        flow = RealNVP(data.shape[1], num_couplings, hidden, mask, data.mean(dim=0), data.std(dim=0))
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    from tqdm.auto import tqdm  # only needed while training

    for _ in tqdm(range(steps), desc="flow", disable=not progress):
        batch = data[torch.randint(0, data.shape[0], (batch_size,), generator=generator)]
        if dequantize > 0:
            batch = batch + (torch.rand(batch.shape, generator=generator) - 0.5) * dequantize
        loss = -flow.log_prob(batch).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return flow.eval().requires_grad_(False)
