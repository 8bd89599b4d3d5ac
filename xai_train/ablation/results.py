"""Reading finished cells and aggregating them per arm.

A cell's numbers come from the files its run left: ``config.yaml`` (the resolved config: the page's settings),
``summary.json`` (``steps``, ``max_steps``,
``train_seconds``, ``median_step_time``) and ``metrics.jsonl`` (one line per evaluation; after a resume a step
can appear twice: the last line wins). Per metric, ``final`` is the value at the last evaluated step and
``best`` the best value over the evaluated steps (lowest; highest for precision/recall), each metric on its
own. Only finished cells (``steps == max_steps``) are aggregated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xai_train.ablation.stats import Comparison, Summary, compare, summarize

METRIC_NAMES = ("fd", "kid", "precision", "recall")
HIGHER_IS_BETTER = ("precision", "recall")
TIME_FIELDS = ("train_seconds", "median_step_time")


@dataclass(frozen=True)
class CellResult:
    """One finished (or not) cell: its summary and its evaluation curve."""

    arm: str
    seed: int
    finished: bool
    summary: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl records sorted by step
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml (the resolved config), {} if missing

    @property
    def extractor(self) -> str:
        return str(self.curve[-1].get("extractor", "")) if self.curve else ""

    @property
    def num_samples(self) -> int | None:
        return self.curve[-1].get("num_samples") if self.curve else None

    def metrics(self) -> list[str]:
        return [name for name in METRIC_NAMES if self.curve and name in self.curve[-1]]


def read_metrics_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """``metrics.jsonl`` records sorted by step, the last record of each step kept; [] if missing.

    Example:
        >>> import tempfile, json, os
        >>> path = os.path.join(tempfile.mkdtemp(), "metrics.jsonl")
        >>> _ = open(path, "w").write("\\n".join(json.dumps(r) for r in [{"step": 2, "fd": 5}, {"step": 1, "fd": 9},
        ...                                                      {"step": 2, "fd": 4}]))
        >>> [(r["step"], r["fd"]) for r in read_metrics_jsonl(path)]
        [(1, 9), (2, 4)]
    """
    path = Path(path)
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[int(record["step"])] = record
    return [by_step[step] for step in sorted(by_step)]


def read_cell(directory: str | Path, arm: str, seed: int) -> CellResult:
    """Reads a cell directory (``summary.json``, ``metrics.jsonl``, ``config.yaml``; any may be missing)."""
    directory = Path(directory)
    summary: dict[str, Any] = {}
    if (directory / "summary.json").is_file():
        summary = json.loads((directory / "summary.json").read_text())
    config: dict[str, Any] = {}
    if (directory / "config.yaml").is_file():
        config = yaml.safe_load((directory / "config.yaml").read_text()) or {}
    finished = bool(summary) and summary.get("steps") == summary.get("max_steps")
    return CellResult(arm, seed, finished, summary, read_metrics_jsonl(directory / "metrics.jsonl"), config)


def collect_cells(ablation_dir: str | Path, arms: Sequence[str]) -> list[CellResult]:
    """Every ``<ablation_dir>/<arm>/seed_<s>`` of the given arms (seeds found on disk), arm order kept."""
    cells = []
    for arm in arms:
        seeds = sorted(
            int(p.name.removeprefix("seed_"))
            for p in (Path(ablation_dir) / arm).glob("seed_*")
            if p.name.removeprefix("seed_").lstrip("-").isdigit()
        )
        cells += [read_cell(Path(ablation_dir) / arm / f"seed_{seed}", arm, seed) for seed in seeds]
    return cells


def cell_row(cell: CellResult) -> dict[str, Any]:
    """Flat numbers of one cell: ``final_<m>``, ``best_<m>``, ``best_<m>_step`` per metric, and the times.

    Example:
        >>> cell = CellResult("a", 0, True, {"steps": 20, "max_steps": 20, "train_seconds": 8.0,
        ...                   "median_step_time": 0.4}, [{"step": 10, "fd": 3.0}, {"step": 20, "fd": 5.0}])
        >>> row = cell_row(cell)
        >>> row["final_fd"], row["best_fd"], row["best_fd_step"], row["train_seconds"]
        (5.0, 3.0, 10, 8.0)
    """
    row: dict[str, Any] = {
        "arm": cell.arm,
        "seed": cell.seed,
        "finished": cell.finished,
        "steps": cell.summary.get("steps"),
        "extractor": cell.extractor,
        "num_samples": cell.num_samples,
    }
    for name in TIME_FIELDS:
        row[name] = float(cell.summary.get(name, math.nan))
    for name in cell.metrics():
        points = [(r["step"], float(r[name])) for r in cell.curve if name in r and math.isfinite(float(r[name]))]
        row[f"final_{name}"] = float(cell.curve[-1][name])
        if points:
            pick = max if name in HIGHER_IS_BETTER else min
            step, value = pick(points, key=lambda point: point[1])
            row[f"best_{name}"], row[f"best_{name}_step"] = value, step
    return row


def quantities(metrics: Sequence[str]) -> list[str]:
    """The aggregated columns: final and best of each metric, then the times.

    Example:
        >>> quantities(["fd"])
        ['final_fd', 'best_fd', 'train_seconds', 'median_step_time']
    """
    return [f"{kind}_{name}" for name in metrics for kind in ("final", "best")] + list(TIME_FIELDS)


@dataclass(frozen=True)
class ArmResult:
    """Per-arm aggregate: a ``Summary`` and a ``Comparison`` vs the baseline for each quantity."""

    arm: str
    baseline: bool
    seeds: tuple[int, ...]
    summaries: dict[str, Summary]
    comparisons: dict[str, Comparison]

    @property
    def n(self) -> int:
        return len(self.seeds)


def aggregate(
    rows: Sequence[Mapping[str, Any]],
    arms: Sequence[str],
    baseline: str,
    metrics: Sequence[str],
    confidence: float = 0.95,
) -> list[ArmResult]:
    """Mean ± std per arm over its finished seeds, and each arm vs ``baseline`` (``stats.compare``: paired over
    the seeds both finished, Welch when they share fewer than 2).

    Args:
        rows: ``cell_row`` dicts (unfinished cells are ignored).
        arms: arm names, in the order of the result.
        baseline: the baseline arm's name.
        metrics: metric names (``fd``, ``kid``, ...).
        confidence: of the intervals.

    Returns:
        One ``ArmResult`` per arm with at least one finished seed.

    Example:
        >>> rows = [{"arm": "b", "seed": s, "finished": True, "final_fd": v} for s, v in enumerate([1.0, 2.0, 3.0])]
        >>> rows += [{"arm": "x", "seed": s, "finished": True, "final_fd": v} for s, v in enumerate([2.0, 4.0, 6.0])]
        >>> result = aggregate(rows, ["b", "x"], "b", ["fd"])[1]
        >>> result.summaries["final_fd"].mean, result.comparisons["final_fd"].relative
        (4.0, 1.0)
    """
    finished = [row for row in rows if row.get("finished")]
    columns = quantities(metrics)

    def values(arm: str, column: str) -> list[float]:
        return [float(row.get(column, math.nan)) for row in finished if row["arm"] == arm]

    def by_seed(arm: str, column: str) -> dict[int, float]:
        return {int(row["seed"]): float(row.get(column, math.nan)) for row in finished if row["arm"] == arm}

    results = []
    for arm in arms:
        seeds = tuple(row["seed"] for row in finished if row["arm"] == arm)
        if not seeds:
            continue
        summaries = {column: summarize(values(arm, column)) for column in columns}
        comparisons = {
            column: compare(by_seed(arm, column), by_seed(baseline, column), confidence) for column in columns
        }
        results.append(ArmResult(arm, arm == baseline, seeds, summaries, comparisons))
    return results
