"""Plots of an ablation: a metric vs training step and vs wall-clock, per arm, mean over seeds ± std band.

Matplotlib is used through ``Figure`` and its Agg canvas directly (no ``pyplot``, no global backend state),
so plotting works headless and inside other programs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xai_train.ablation.results import CellResult
from xai_train.atomic import atomic_path


@dataclass(frozen=True)
class ArmCurve:
    """Mean ± std of a metric over seeds at each step evaluated by every seed of an arm.

    ``seconds`` is the wall-clock x axis: the step times the arm's mean training seconds per step.
    """

    arm: str
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    seconds: np.ndarray
    n: int


def arm_curves(cells: Sequence[CellResult], metric: str, arms: Sequence[str]) -> list[ArmCurve]:
    """One ``ArmCurve`` per arm from its finished cells (steps every seed evaluated).

    Example:
        >>> cells = [CellResult("a", s, True, {"steps": 20, "train_seconds": 10.0},
        ...                     [{"step": 10, "fd": 4.0 + s}, {"step": 20, "fd": 2.0 + s}]) for s in (0, 2)]
        >>> curve = arm_curves(cells, "fd", ["a"])[0]
        >>> curve.steps.tolist(), curve.mean.tolist(), curve.seconds.tolist()
        ([10, 20], [5.0, 3.0], [5.0, 10.0])
    """
    curves = []
    for arm in arms:
        runs = [c for c in cells if c.arm == arm and c.finished and any(metric in r for r in c.curve)]
        if not runs:
            continue
        per_seed = [{int(r["step"]): float(r[metric]) for r in c.curve if metric in r} for c in runs]
        steps = sorted(set.intersection(*(set(points) for points in per_seed)))
        values = np.array([[points[s] for s in steps] for points in per_seed], dtype=np.float64)
        std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(steps))
        rates = [
            c.summary["train_seconds"] / c.summary["steps"]
            for c in runs
            if c.summary.get("steps") and math.isfinite(c.summary.get("train_seconds", math.nan))
        ]
        rate = float(np.mean(rates)) if rates else math.nan
        curves.append(ArmCurve(arm, np.array(steps), values.mean(axis=0), std, np.array(steps) * rate, len(runs)))
    return curves


def plot_curves(
    curves: Sequence[ArmCurve], metric: str, path: str | Path, *, title: str = "", ylabel: str = "", baseline: str = ""
) -> Path:
    """Writes a two-panel PNG: ``metric`` vs step (left) and vs wall-clock seconds (right).

    Args:
        curves: from ``arm_curves``.
        metric: the metric's name (axis label when ``ylabel`` is empty).
        path: the PNG to write (parent folders are created).
        title: figure title (say which feature extractor the metric uses).
        ylabel: y-axis label.
        baseline: this arm is drawn dashed in black.

    Returns:
        ``path``.

    Example:
        >>> import tempfile, os
        >>> steps, mean, std = np.array([1, 2]), np.array([3.0, 2.0]), np.array([0.1, 0.2])
        >>> curve = ArmCurve("a", steps, mean, std, seconds=np.array([5.0, 10.0]), n=2)
        >>> os.path.getsize(plot_curves([curve], "fd", os.path.join(tempfile.mkdtemp(), "fd.png"))) > 0
        True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    by_step, by_time = figure.subplots(1, 2, sharey=True)
    for index, curve in enumerate(curves):
        style = {"color": "black", "linestyle": "--"} if curve.arm == baseline else {"color": f"C{index}"}
        label = f"{curve.arm} (n={curve.n})"
        for axes, x in ((by_step, curve.steps), (by_time, curve.seconds)):
            axes.plot(x, curve.mean, marker="o", markersize=3, label=label, **style)
            axes.fill_between(x, curve.mean - curve.std, curve.mean + curve.std, alpha=0.15, color=style["color"])
    by_step.set_xlabel("generator step")
    by_time.set_xlabel("training wall-clock (s, mean per arm)")
    by_step.set_ylabel(ylabel or metric)
    lows = [float(np.min(c.mean)) for c in curves if c.mean.size]
    highs = [float(np.max(c.mean)) for c in curves if c.mean.size]
    if lows and min(lows) > 0 and max(highs) / min(lows) > 10:  # early evaluations dwarf the differences
        by_step.set_yscale("log")
    for axes in (by_step, by_time):
        axes.grid(alpha=0.3)
    by_step.legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".") or None)
    return path
