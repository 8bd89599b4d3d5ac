"""Resident memory over a run: sampled every few steps, so that a slow leak shows as a slope.

Two readings (start and end) cannot tell a leak from allocator noise; a least-squares slope over a
trace sampled through the run can: a leak of a few hundred KB per step is tens of MB per 100 steps,
while a flat arm's slope stays within ±1 MB per 100 steps.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch


def rss_mb() -> float:
    """Resident memory of this process now, in MiB (Linux /proc; falls back to the peak elsewhere).

    Returns:
        The resident set size in MiB.

    Example:
        >>> rss_mb() > 0
        True
    """
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def slope_per_100(steps: list[int], values: list[float]) -> float:
    """Least-squares slope of ``values`` against ``steps``, per 100 steps (0 with fewer than two points).

    Args:
        steps: step index of each sample.
        values: the sampled quantity (e.g. MiB).

    Returns:
        The fitted change per 100 steps.

    Example:
        >>> slope_per_100([0, 10, 20, 30], [100.0, 101.0, 102.0, 103.0])  # +1 per 10 steps
        10.0
    """
    if len(steps) < 2:
        return 0.0
    x = torch.tensor(steps, dtype=torch.float64)
    y = torch.tensor(values, dtype=torch.float64)
    x_centred = x - x.mean()
    denominator = (x_centred**2).sum()
    if denominator == 0:
        return 0.0
    return round(float((x_centred * (y - y.mean())).sum() / denominator * 100), 10)


@dataclass
class RSSTrace:
    """Resident memory sampled through a run.

    Attributes:
        steps: step count at each sample (0 = before the first step).
        mb: RSS in MiB at each sample.
    """

    steps: list[int]
    mb: list[float]

    @property
    def slope_mb_per_100_steps(self) -> float:
        """Least-squares growth, MiB per 100 steps: a leak's signature."""
        return slope_per_100(self.steps, self.mb)

    @property
    def start(self) -> float:
        return self.mb[0]

    @property
    def end(self) -> float:
        return self.mb[-1]

    @property
    def peak(self) -> float:
        return max(self.mb)


def trace_rss(
    step: Callable[[], object],
    steps: int,
    *,
    every: int = 10,
    measure: Callable[[], float] = rss_mb,
) -> RSSTrace:
    """Runs ``step`` ``steps`` times, sampling ``measure()`` before the first step and every ``every`` steps.

    Args:
        step: one training step.
        steps: how many to run.
        every: sampling interval in steps (the last step is always sampled).
        measure: the reading (default: this process's RSS in MiB).

    Returns:
        The trace; ``trace.slope_mb_per_100_steps`` is the growth rate.

    Example:
        A step that keeps 1 MiB alive each time leaks 100 MiB per 100 steps:

        >>> kept = []
        >>> trace = trace_rss(lambda: kept.append(bytearray(2**20)), 20, every=5,
        ...                   measure=lambda: sum(map(len, kept)) / 2**20)
        >>> trace.steps, trace.slope_mb_per_100_steps
        ([0, 5, 10, 15, 20], 100.0)
    """
    if steps < 1 or every < 1:
        raise ValueError(f"trace_rss needs steps >= 1 and every >= 1; got steps={steps}, every={every}")
    trace = RSSTrace([0], [measure()])
    for index in range(1, steps + 1):
        step()
        if index % every == 0 or index == steps:
            trace.steps.append(index)
            trace.mb.append(measure())
    return trace
