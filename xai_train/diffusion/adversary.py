"""The adversary of an explanation-guided diffusion run: D's update step, its fakes and its replay buffer.

D is trained beside the UNet to tell the noised data ``x_t`` from the model's own samples noised to the
same t (DESIGN.md §5). Its explanations are what the importance callbacks feed back; this module only
trains it. The trainer owns the random draws (so that every rank draws alike) and passes them in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from xai_train.callback import CallbackList, TrainState
from xai_train.diffusion.discriminator import r1_penalty
from xai_train.diffusion.replay import ReplayBuffer
from xai_train.explain.precision import full_precision

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``(d_real (B, 1), d_fake (B, 1)) -> (B,)`` per-sample loss, e.g. ``trainers.losses.discriminator_loss``."""


class Adversary:
    """D(x_t, t), its optimiser and its source of fakes, updated once per micro-batch.

    Args:
        discriminator: ``D(x, t) -> (B, 1)`` (as prepared by Accelerate).
        optimizer: its optimiser (prepared).
        loss_fn: per-sample loss from the logits (non-saturating BCE in the trainer).
        fake_source: "samples" (replay buffer of model samples) or "x0_hat" (the UNet's one-step estimates:
            cheap but biased, D then learns to spot blur).
        buffer: the replay buffer ("samples" only).
        r1_gamma: R1 weight γ; 0 disables.
        r1_every: lazy R1 interval; the penalty is scaled by it (StyleGAN2).

    Example:
        >>> from accelerate import Accelerator
        >>> from xai_train.diffusion.discriminator import TimeConditionedDiscriminator
        >>> from xai_train.trainers.losses import discriminator_loss
        >>> d = TimeConditionedDiscriminator(1, channels=(8,))
        >>> adversary = Adversary(d, torch.optim.Adam(d.parameters()), discriminator_loss, "x0_hat")
        >>> state = TrainState(Accelerator(cpu=True))
        >>> x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 9])
        >>> sorted(adversary.update(state, CallbackList(), x, x.flip(-1), t))
        ['d_fake', 'd_loss', 'd_real']
    """

    def __init__(
        self,
        discriminator: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        fake_source: Literal["samples", "x0_hat"] = "samples",
        buffer: ReplayBuffer | None = None,
        r1_gamma: float = 0.1,
        r1_every: int = 16,
    ):
        if fake_source not in ("samples", "x0_hat"):
            raise ValueError(f"unknown fake_source '{fake_source}'; choose one of: samples, x0_hat")
        if fake_source == "samples" and buffer is None:
            raise ValueError("fake_source='samples' needs a ReplayBuffer")
        self.discriminator = discriminator
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.fake_source = fake_source
        self.buffer = buffer if fake_source == "samples" else None
        self.r1_gamma = r1_gamma
        self.r1_every = r1_every
        self.last_r1 = torch.zeros(())

    def needs_samples(self, step: int) -> bool:
        """True when the replay buffer is due for a refill at ``step``."""
        return self.buffer is not None and self.buffer.needs_refresh(step)

    def update(
        self, state: TrainState, callbacks: CallbackList, real: Tensor, fake: Tensor, timesteps: Tensor
    ) -> dict[str, Tensor]:
        """One D step (inside the trainer's ``accelerator.accumulate``) on noised real and fake batches.

        Args:
            state: the run's state (its step decides the lazy R1).
            callbacks: get ``on_loss(..., "discriminator")`` and ``on_before_optimizer_step``.
            real: (B, C, H, W) noised data at ``timesteps``.
            fake: (B, C, H, W) noised fakes at the same ``timesteps``.
            timesteps: (B,).

        Returns:
            Detached ``d_loss`` (scalar), ``d_real`` and ``d_fake`` logits (B, 1).
        """
        acc = state.accelerator
        lazy_r1 = self.r1_gamma > 0 and state.step % self.r1_every == 0
        real = real.detach().requires_grad_(lazy_r1)
        # One forward over real and fake: DDP expects one forward per backward, and D has no batch coupling.
        # R1 needs an exact input gradient (and differentiates it again): that forward runs in fp32, past the
        # autocast wrapper accelerator.prepare put on D's forward (a nullcontext here would not leave it).
        with full_precision(acc.unwrap_model(self.discriminator)) if lazy_r1 else acc.autocast():
            logits = self.discriminator(torch.cat([real, fake.detach()]), torch.cat([timesteps, timesteps]))
        d_real, d_fake = logits.float().chunk(2)
        loss = callbacks.on_loss(state, self.loss_fn(d_real, d_fake), "discriminator").mean()
        if lazy_r1:
            r1 = r1_penalty(d_real, real)
            self.last_r1 = r1.detach()
            loss = loss + 0.5 * self.r1_gamma * self.r1_every * r1
        acc.backward(loss)
        if acc.sync_gradients:
            callbacks.on_before_optimizer_step(state, "discriminator")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"d_loss": loss.detach(), "d_real": d_real.detach(), "d_fake": d_fake.detach()}

    def statistics(self, step: int) -> dict[str, float]:
        """Last R1 value and, with a buffer, the mean age of its samples in steps."""
        stats = {"r1": float(self.last_r1)}
        if self.buffer is not None and len(self.buffer):
            stats["buffer_age"] = self.buffer.mean_age(step)
        return stats

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"last_r1": self.last_r1.clone()}
        if self.buffer is not None:
            state["buffer"] = self.buffer.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device | str | None = None) -> None:
        self.last_r1 = state["last_r1"].clone()
        if self.buffer is not None and "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
            if self.buffer.images is not None and device is not None:
                self.buffer.images = self.buffer.images.to(device)
