"""How many CPU threads torch uses, chosen so that a step does not collapse when other jobs share the CPU.

torch's default is one OpenMP thread per core, and OpenMP threads spin while they wait for each other.
On a 2-core machine with one other busy process that measured 2.26 s per demo step instead of 0.1 s: each
parallel region waits for the thread that shares its core with the other job, and the spinning threads
burn the time slices it would need. ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep) removes most of
that, and one thread on a 2-core machine removes all of it: the other job gets the other core. On the
loaded 2-core development machine (``recipes/benchmark.py --suite contention``, docs/benchmarks.md) the
demo step took 1.5–7.9 s with 2 spinning threads, 0.3–2.1 s with 2 passive ones (the worst beside two
busy processes) and 0.3–1.4 s with one thread.

OpenMP reads ``OMP_WAIT_POLICY`` once, when ``import torch`` loads it; setting it later does nothing to
the running process (measured with torch 2.13's libgomp: 300 small matmuls with gaps took 16 s with the
default policy or with the variable set after the import, 1.1 s with it set before). So every recipe sets
it in its first lines, before anything imports torch, unless the environment already has a value, and
then calls :func:`configure_threads`:

1. ``--threads N`` (a recipe flag) or ``XAI_TRAIN_THREADS=N`` wins; ``auto`` means the default below;
2. else ``OMP_NUM_THREADS``, if set, is respected (torch read it at import);
3. else half the CPUs this process may run on, at least one (one on a 2-core laptop): a job beside it
   can take the other half without stalling every parallel region.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from xai_train.errors import UserError

THREADS_ENV = "XAI_TRAIN_THREADS"
"""Environment variable with the thread count (a whole number >= 1, or ``auto``)."""


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a process runs with, and why.

    Attributes:
        threads: torch intra-op threads.
        source: ``"--threads"``, ``"XAI_TRAIN_THREADS"``, ``"OMP_NUM_THREADS"`` or ``"default"``.
        cpus: CPUs this process may run on.
    """

    threads: int
    source: str
    cpus: int

    def describe(self) -> str:
        """One line for a recipe's log, e.g. ``torch threads: 1 of 2 CPUs (default: ...)``."""
        why = {
            "default": f"default: half the CPUs; change with --threads or {THREADS_ENV}",
            "OMP_NUM_THREADS": "from OMP_NUM_THREADS",
        }.get(self.source, f"from {self.source}")
        return f"torch threads: {self.threads} of {self.cpus} CPUs ({why})"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else the CPU count).

    Returns:
        A count >= 1.

    Example:
        >>> available_cpus() >= 1
        True
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _parse(value: str | int, where: str) -> int | None:
    """A thread count from a flag or variable; ``None`` for ``auto``."""
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise UserError(f"{where} must be a whole number >= 1 or 'auto'; got {value!r}")


def choose_threads(
    requested: str | int | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cpus: int | None = None,
) -> ThreadChoice:
    """The thread count by the rules of this module (pure: reads ``environ``, changes nothing).

    Args:
        requested: the recipe's ``--threads`` value (``None`` if not given; ``"auto"`` = the default).
        environ: the environment (default ``os.environ``).
        cpus: CPUs available (default :func:`available_cpus`).

    Returns:
        The choice and its source.

    Raises:
        UserError: (a ValueError) ``requested`` or ``XAI_TRAIN_THREADS`` is not a whole number >= 1 or ``auto``.

    Example:
        >>> choose_threads(cpus=2, environ={}).threads  # a 2-core laptop: leave a core to other jobs
        1
        >>> choose_threads(cpus=16, environ={}).threads
        8
        >>> choose_threads(cpus=16, environ={"OMP_NUM_THREADS": "3"})
        ThreadChoice(threads=3, source='OMP_NUM_THREADS', cpus=16)
        >>> choose_threads("4", cpus=16, environ={"OMP_NUM_THREADS": "3"}).source
        '--threads'
        >>> choose_threads("0", cpus=2, environ={})
        Traceback (most recent call last):
        ...
        xai_train.errors.UserError: --threads must be a whole number >= 1 or 'auto'; got '0'
    """
    environ = os.environ if environ is None else environ
    cpus = available_cpus() if cpus is None else cpus
    default = max(1, cpus // 2)
    if requested is not None:
        count = _parse(requested, "--threads")
        return ThreadChoice(default if count is None else count, "--threads" if count else "default", cpus)
    if environ.get(THREADS_ENV, "").strip():
        count = _parse(environ[THREADS_ENV], THREADS_ENV)
        return ThreadChoice(default if count is None else count, THREADS_ENV if count else "default", cpus)
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if omp:
        # OpenMP accepts a list ("4,2" for nested levels); the first entry is the outer team.
        first = omp.split(",")[0].strip()
        if first.isdigit() and int(first) >= 1:
            return ThreadChoice(int(first), "OMP_NUM_THREADS", cpus)
    return ThreadChoice(default, "default", cpus)


def configure_threads(requested: str | int | None = None, *, environ: Mapping[str, str] | None = None) -> ThreadChoice:
    """Sets torch's intra-op thread count by :func:`choose_threads`. Call it first thing in a recipe.

    Args:
        requested: the recipe's ``--threads`` value, or ``None``.
        environ: the environment (default ``os.environ``); nothing is written to it.

    Returns:
        The choice (``choice.describe()`` is a log line).

    Example:
        >>> before = torch.get_num_threads()
        >>> configure_threads(2).threads, torch.get_num_threads()
        (2, 2)
        >>> torch.set_num_threads(before)
    """
    choice = choose_threads(requested, environ=environ)
    torch.set_num_threads(choice.threads)
    return choice


@contextmanager
def single_threaded() -> Iterator[None]:
    """Runs the block with one torch intra-op thread, then restores the count: CPU numbers that do not depend
    on how many threads the caller chose.

    A CPU kernel may split a reduction over its threads (a convolution's or a matrix product's inner sum, a
    batch-norm statistic), and the float sums then round differently: the same digits feature classifier
    trained with 1 and with 2 threads differed by up to 0.11 in a weight. One thread fixes the order of
    every sum, so training the feature extractors and computing FD/KID inside this block gives the same bits
    whatever ``--threads`` was (measured in docs/reproducibility.md). It is cheap where it is used: a small
    CNN trains in seconds, and an evaluation is a small share of a run.

    Example:
        >>> before = torch.get_num_threads()
        >>> with single_threaded():
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
