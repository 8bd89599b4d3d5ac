"""Importance-driven timestep curriculum with an importance-sampling correction (DESIGN.md §5, b-iii).

Timesteps are drawn from ``p(t)``: a mixture of the uniform distribution and a distribution proportional to
a running score per timestep bucket (e.g. the mean raw saliency of D at that level, which is large where
the model's distribution is still wrong). Each sample's loss is multiplied by ``1/(T·p(t))`` so that the
expected loss, and therefore the optimum, is the uniform-timestep one: the variant is exact, the noise
stays isotropic, and the standard sampler applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from einops import repeat
from torch import Tensor


class TimestepCurriculum:
    """Samples timesteps where the score is high, with weights that undo the bias.

    Args:
        num_train_timesteps: T.
        num_buckets: timesteps share a score per bucket of ``T/num_buckets`` consecutive levels.
        uniform_mix: share of the uniform distribution in ``p`` (keeps ``p(t) ≥ uniform_mix/T``, so every
            weight is at most ``1/uniform_mix``).
        decay: EMA decay of the bucket scores.
        self_normalise: divide the weights by their batch mean (lower variance, slightly biased).

    Example:
        >>> curriculum = TimestepCurriculum(100, num_buckets=4, uniform_mix=0.5)
        >>> curriculum.update(torch.tensor([10, 90]), torch.tensor([0.0, 1.0]))
        >>> curriculum.probabilities().sum().item()
        1.0
        >>> t, w = curriculum.sample(8, torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(w, (1 / (100 * curriculum.probabilities()[t])).float()))
        True
    """

    def __init__(
        self,
        num_train_timesteps: int,
        num_buckets: int = 20,
        uniform_mix: float = 0.5,
        decay: float = 0.9,
        self_normalise: bool = False,
    ):
        if not 0 < uniform_mix <= 1:
            raise ValueError(f"uniform_mix must be in (0, 1], got {uniform_mix} (0 would allow unbounded weights)")
        if num_train_timesteps % num_buckets:
            raise ValueError(f"num_buckets={num_buckets} must divide num_train_timesteps={num_train_timesteps}")
        self.num_train_timesteps = num_train_timesteps
        self.num_buckets = num_buckets
        self.uniform_mix = uniform_mix
        self.decay = decay
        self.self_normalise = self_normalise
        self.scores = torch.ones(num_buckets, dtype=torch.float64)
        self.seen = torch.zeros(num_buckets, dtype=torch.bool)

    def bucket(self, timesteps: Tensor) -> Tensor:
        """(B,) timesteps → (B,) bucket indices."""
        return (timesteps.long().cpu() * self.num_buckets) // self.num_train_timesteps

    def probabilities(self) -> Tensor:
        """(T,) float64 ``p(t)``; uniform until every bucket has a score."""
        if bool(self.seen.all()):
            per_bucket = self.scores / self.scores.sum()
        else:
            per_bucket = torch.full_like(self.scores, 1.0 / self.num_buckets)
        per_step = repeat(per_bucket, "k -> (k n)", n=self.num_train_timesteps // self.num_buckets)
        per_step = per_step / per_step.sum()
        return self.uniform_mix / self.num_train_timesteps + (1 - self.uniform_mix) * per_step

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draws timesteps from ``p``.

        Args:
            batch_size: B.
            generator: CPU generator (seed it identically on every rank for rank-synchronised draws).

        Returns:
            ``(timesteps, weights)``: (B,) long and (B,) float32 ``1/(T·p(t))`` (``E_p[w] = 1``).
        """
        p = self.probabilities()
        timesteps = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = (1.0 / (self.num_train_timesteps * p[timesteps])).float()
        if self.self_normalise:
            weights = weights / weights.mean()
        return timesteps, weights

    def update(self, timesteps: Tensor, scores: Tensor) -> None:
        """Folds per-sample scores (B,) observed at ``timesteps`` (B,) into the bucket EMAs.

        Scores must be non-negative; call with the same (gathered) values on every rank to keep ``p`` equal.
        """
        buckets = self.bucket(timesteps)
        scores = scores.detach().double().cpu().clamp_min(0)
        total = torch.zeros(self.num_buckets, dtype=torch.float64).index_add_(0, buckets, scores)
        count = torch.zeros(self.num_buckets, dtype=torch.float64).index_add_(0, buckets, torch.ones_like(scores))
        present = count > 0
        mean = total[present] / count[present]
        fresh = present & ~self.seen
        self.scores[fresh] = mean[fresh[present]]
        old = present & self.seen
        self.scores[old] = self.decay * self.scores[old] + (1 - self.decay) * mean[old[present]]
        self.seen |= present
        self.scores.clamp_min_(1e-12)

    def state_dict(self) -> dict[str, Any]:
        return {"scores": self.scores.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scores = state["scores"].clone().double()
        self.seen = state["seen"].clone().bool()
