"""Rank-consistent failures: a problem one rank sees becomes the same error on every rank.

If one rank raised on its own, the others would wait forever in the next collective (a DDP all-reduce,
a barrier). ``failures_on_any_rank`` is itself a collective: every rank calls it at the same point with
its own finding (or ``None``), and every rank gets back the same list, so all ranks decide alike.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object


def failures_on_any_rank(accelerator: Accelerator, failure: str | None) -> list[str]:
    """Shares each rank's failure message with every rank; call it on every rank at the same point.

    One small all-reduce when no rank failed; the messages are gathered only when one did.

    Args:
        accelerator: the run's Accelerator.
        failure: this rank's message, or ``None`` if this rank found nothing wrong.

    Returns:
        The messages of all ranks that failed, in rank order (prefixed with ``rank <r>: `` when there are
        several processes); the same list on every rank. Empty when no rank failed.

    Example:
        >>> accelerator = Accelerator(cpu=True)
        >>> failures_on_any_rank(accelerator, None), failures_on_any_rank(accelerator, "loss is nan")
        ([], ['loss is nan'])
    """
    if accelerator.num_processes == 1:
        return [failure] if failure is not None else []
    flag = torch.tensor([0.0 if failure is None else 1.0], device=accelerator.device)
    if accelerator.reduce(flag, reduction="sum").item() == 0:
        return []
    messages = gather_object([failure])
    return [f"rank {rank}: {message}" for rank, message in enumerate(messages) if message is not None]
