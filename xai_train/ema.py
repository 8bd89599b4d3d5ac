"""The EMA swap shared by both trainers and the callbacks: run a model with its EMA weights for a block.

Both trainers keep a diffusers ``EMAModel`` of their sampled network (G, the UNet) and publish it in
``TrainState.ema`` under the model's name, so a callback that samples (``EvalMetrics``) sees the same weights
as the trainer's sample grids and exports.

Checkpoints load on the CPU (``map_location="cpu"``); :func:`load_ema_state` is the one way both trainers
restore an EMA, and it puts the shadow weights on the model's device, so the next ``ema.step`` cannot mix devices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from diffusers.training_utils import EMAModel
from torch import nn

from xai_train.explain.precision import model_device


@contextlib.contextmanager
def ema_weights(model: nn.Module, ema: EMAModel | None) -> Iterator[nn.Module]:
    """``model`` in eval mode with the EMA weights swapped in for the block; weights and mode restored after.

    Args:
        model: the unwrapped model (not the DDP wrapper: the swap writes its parameters in place).
        ema: its ``EMAModel``, or ``None`` (then only the eval mode is set).

    Returns:
        A context manager yielding ``model`` itself.

    Example:
        >>> import torch
        >>> model = nn.Linear(1, 1, bias=False)
        >>> ema = EMAModel(model.parameters())
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(2.0)
        >>> ema.shadow_params[0].fill_(5.0)
        tensor([[5.]])
        >>> with ema_weights(model, ema) as m:
        ...     float(m.weight), m.training
        (5.0, False)
        >>> float(model.weight), model.training
        (2.0, True)
    """
    was_training = model.training
    model.eval()
    if ema is not None:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    try:
        yield model
    finally:
        if ema is not None:
            ema.restore(model.parameters())
        model.train(was_training)


def load_ema_state(ema: EMAModel, state: Mapping[str, Any], model: nn.Module) -> None:
    """Loads a checkpointed EMA state and moves the shadow weights to ``model``'s device.

    Args:
        ema: the run's ``EMAModel``.
        state: ``ema.state_dict()`` as read from a checkpoint (tensors on the CPU).
        model: the model the EMA follows (its first parameter's device is used).

    Example:
        >>> import torch
        >>> model = nn.Linear(1, 1)
        >>> ema = EMAModel(model.parameters())
        >>> saved = EMAModel([torch.nn.Parameter(torch.full((1, 1), 3.0)), torch.nn.Parameter(torch.zeros(1))])
        >>> load_ema_state(ema, saved.state_dict(), model)
        >>> float(ema.shadow_params[0]), ema.shadow_params[0].device == model.weight.device
        (3.0, True)
    """
    ema.load_state_dict(state)
    ema.to(model_device(model))
