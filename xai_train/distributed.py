"""Rank-consistent failures: a problem one rank sees becomes the same error on every rank.

If one rank raised on its own, the others would wait forever in the next collective (a DDP all-reduce,
a barrier). ``failures_on_any_rank`` is itself a collective: every rank calls it at the same point with
its own finding (or ``None``), and every rank gets back the same list, so all ranks decide alike.
:func:`rank_consistent` does that for a block that may raise a ``UserError`` on one rank only; :func:`synchronize`
makes a timer measure GPU work instead of kernel launches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from xai_train.errors import UserError


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


@contextlib.contextmanager
def rank_consistent(accelerator: Accelerator, where: str) -> Iterator[None]:
    """Turns a ``UserError`` raised in the block on some ranks into the same ``UserError`` on every rank.

    Use it around a hook that can refuse its input on one rank only (an explainer given NaN fakes after an fp16
    overflow on that rank's batch): without it that rank raises while the others wait in the next all-reduce
    forever. Every rank must enter the block at the same point; leaving it is one small all-reduce when there
    are several processes (nothing otherwise). Other exceptions pass through unchanged (they are bugs).

    Args:
        accelerator: the run's Accelerator.
        where: names the block in the message, e.g. ``"on_generator_forward"``.

    Returns:
        A context manager.

    Raises:
        UserError: ``"<where> failed: rank <r>: <message>"`` on every rank, if any rank raised a UserError.

    Example:
        >>> accelerator = Accelerator(cpu=True)
        >>> try:
        ...     with rank_consistent(accelerator, "on_generator_forward"):
        ...         raise UserError("the images contain NaN")
        ... except UserError as error:
        ...     print(error)  # one process: the error itself; several: "on_generator_forward failed: rank 1: ..."
        the images contain NaN
    """
    failure: str | None = None
    try:
        yield
    except UserError as error:
        if accelerator.num_processes == 1:
            raise
        failure = str(error)
    failures = failures_on_any_rank(accelerator, failure)
    if failures:
        raise UserError(f"{where} failed: {'; '.join(failures)}")


def synchronize(device: torch.device | str) -> None:
    """Waits for the device's queued work (a no-op on the CPU), so that a timer measures the work itself.

    Args:
        device: the device the timed work runs on.

    Example:
        >>> synchronize(torch.device("cpu"))  # nothing to wait for
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
