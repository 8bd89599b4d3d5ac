"""Step timing for benchmarks: interleaved arms, per-step synchronisation, Markdown tables.

Arms are timed round-robin (one step of each arm per round), so a slow phase of the machine hits every
arm alike and ratios measured in one run stay meaningful.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from xai_train.distributed import synchronize  # re-exported: benchmarks time with it


@dataclass
class ArmTiming:
    """Step times (seconds) of one arm, warm-up excluded."""

    name: str
    times: list[float] = field(default_factory=list)
    peak_mb: float = float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


def time_interleaved(
    arms: Mapping[str, Callable[[], object]],
    *,
    steps: int = 20,
    warmup: int = 3,
    device: torch.device | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, ArmTiming]:
    """Times ``arms`` (name → one step) round-robin; returns each arm's kept step times.

    Args:
        arms: callables running one training step each.
        steps: timed rounds (the median is taken over these).
        warmup: untimed rounds first (allocator, autotuning, lazy init).
        device: synchronised around each step when it is a GPU.
        progress: called with a line after each round.

    Returns:
        name → ArmTiming; on CUDA ``peak_mb`` is the arm's peak allocated memory.

    Example:
        >>> result = time_interleaved({"noop": lambda: None}, steps=3, warmup=1)
        >>> len(result["noop"].times)
        3
    """
    device = device or torch.device("cpu")
    timings = {name: ArmTiming(name) for name in arms}
    for round_index in range(warmup + steps):
        for name, step in arms.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                timings[name].times.append(elapsed)
            if device.type == "cuda":
                peak, old = torch.cuda.max_memory_allocated(device) / 2**20, timings[name].peak_mb
                timings[name].peak_mb = peak if math.isnan(old) else max(old, peak)
        if progress is not None:
            progress(f"round {round_index + 1}/{warmup + steps}")
    return timings


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table.

    Args:
        header: column names.
        rows: one sequence of cells per row (formatted with ``str``).

    Returns:
        The table, one line per row, no trailing newline.

    Example:
        >>> print(markdown_table(["a", "b"], [[1, 2.5]]))
        | a | b |
        |---|---|
        | 1 | 2.5 |
    """
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
