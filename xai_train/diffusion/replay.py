"""Replay buffer of model samples: the fakes the time-conditioned discriminator sees.

Drawing fresh samples (EMA UNet, K DDIM steps) every step would dominate the cost of a training step, so
a fixed-capacity ring buffer is refilled every R steps and D draws its fakes from it. Each entry keeps the
step it was made at, so the trainer can log how stale the fakes are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


class ReplayBuffer:
    """Fixed-capacity ring buffer of images with their creation step.

    Args:
        capacity: most images kept.
        refresh_every: steps between refills (R).

    Example:
        >>> buffer = ReplayBuffer(capacity=4, refresh_every=10)
        >>> buffer.needs_refresh(step=0)
        True
        >>> buffer.add(torch.zeros(3, 1, 2, 2), step=0)
        >>> buffer.add(torch.ones(3, 1, 2, 2), step=10)
        >>> len(buffer), buffer.mean_age(step=12)
        (4, 4.5)
    """

    def __init__(self, capacity: int, refresh_every: int):
        if capacity < 1 or refresh_every < 1:
            raise ValueError(f"ReplayBuffer: capacity and refresh_every must be >= 1; got {capacity}, {refresh_every}")
        self.capacity = capacity
        self.refresh_every = refresh_every
        self.images: Tensor | None = None
        self.birth_step = torch.zeros(0, dtype=torch.long)
        self.next_index = 0
        self.size = 0
        self.last_refresh: int | None = None

    def __len__(self) -> int:
        return self.size

    def needs_refresh(self, step: int) -> bool:
        """True when the buffer is empty or ``refresh_every`` steps passed since the last refill."""
        return self.last_refresh is None or step - self.last_refresh >= self.refresh_every

    def add(self, images: Tensor, step: int) -> None:
        """Writes ``images`` (N, C, H, W) over the oldest entries (detached) and marks a refill at ``step``."""
        images = images.detach()
        if self.images is None:
            self.images = images.new_zeros((self.capacity, *images.shape[1:]))
            self.birth_step = torch.full((self.capacity,), -1, dtype=torch.long)
        if images.shape[1:] != self.images.shape[1:]:
            raise ValueError(
                f"ReplayBuffer.add: images of shape {tuple(images.shape[1:])}, "
                f"buffer holds {tuple(self.images.shape[1:])}"
            )
        images = images[-self.capacity :]
        index = (self.next_index + torch.arange(len(images))) % self.capacity
        self.images[index.to(self.images.device)] = images.to(self.images.dtype)
        self.birth_step[index] = step
        self.next_index = int(index[-1] + 1) % self.capacity
        self.size = min(self.size + len(images), self.capacity)
        self.last_refresh = step

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """Draws ``batch_size`` stored images uniformly with replacement: (batch_size, C, H, W)."""
        if self.images is None or self.size == 0:
            raise RuntimeError("ReplayBuffer.sample: the buffer is empty; call add() first")
        index = torch.randint(0, self.size, (batch_size,), generator=generator)
        return self.images[index.to(self.images.device)]

    def mean_age(self, step: int) -> float:
        """Mean of ``step − creation step`` over the stored images (0 when empty)."""
        if self.images is None or self.size == 0:
            return 0.0
        return float((step - self.birth_step[: self.size]).float().mean())

    def state_dict(self) -> dict[str, Any]:
        return {
            "images": None if self.images is None else self.images.cpu(),
            "birth_step": self.birth_step.clone(),
            "next_index": self.next_index,
            "size": self.size,
            "last_refresh": -1 if self.last_refresh is None else self.last_refresh,
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device | str | None = None) -> None:
        """Restores :meth:`state_dict`; the images land on ``device`` (default: where this buffer's images are,
        else where the saved ones are; checkpoints load on the CPU, so pass the model's device on resume)."""
        if device is None and self.images is not None:
            device = self.images.device
        images = state["images"]
        self.images = None if images is None else (images.to(device) if device is not None else images.clone())
        self.birth_step = state["birth_step"].clone()
        self.next_index = int(state["next_index"])
        self.size = int(state["size"])
        self.last_refresh = None if int(state["last_refresh"]) < 0 else int(state["last_refresh"])
