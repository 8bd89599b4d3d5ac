"""The ablation report: ``results.csv`` (per arm), ``cells.csv`` (per cell), ``comparisons.csv``, ``results.md``,
PNG plots, HParams; :func:`publish` copies them next to a page in ``docs/results``.

The page states its settings (data, reference set, steps, seeds, widths, batch, learning rates, latent size,
evaluation samples, extractor, KID scale, environment fingerprint: from the cells' ``config.yaml``,
``metrics.jsonl`` and ``summary.json``). Every comparison is paired by seed (Welch when arms share fewer than
2 seeds; the page says which, with Welch's df), its relative change carries Fieller's 95% interval, its
p-value is Holm-adjusted within its family (primary / secondary / exploratory, see
``xai_train.ablation.comparisons``), and it states its own minimum detectable effect. The primary comparison
also gets a TOST equivalence test. Cells whose fingerprints differ in anything that changes numbers are
refused unless ``allow_mixed``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xai_train.ablation.comparisons import (
    LABELS,
    PageComparison,
    comparison_row,
    comparison_section,
    page_comparisons,
)
from xai_train.ablation.hparams import write_hparams
from xai_train.ablation.page import settings_lines
from xai_train.ablation.plots import arm_curves, plot_curves
from xai_train.ablation.results import ArmResult, aggregate, cell_row, collect_cells, quantities
from xai_train.ablation.spec import AblationSpec, format_value
from xai_train.ablation.stats import Comparison, Summary, format_mean_std, format_relative
from xai_train.atomic import atomic_path, atomic_write
from xai_train.benchmarks.timing import markdown_table
from xai_train.errors import UserError
from xai_train.fingerprint import describe_differences, numeric_differences

ENVIRONMENT_FIELDS = (
    "torch",
    "diffusers",
    "device",
    "gpu",
    "cpu",
    "cpu_capability",
    "torch_threads",
    "processes",
    "mixed_precision",
)
"""Fingerprint fields the report's environment line shows (all numeric fields are compared)."""


def arm_table_rows(results: Sequence[ArmResult], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """``results.csv`` rows: per arm and quantity ``<q>_mean``, ``<q>_std`` and the comparison columns.

    Example:
        >>> from xai_train.ablation.results import aggregate
        >>> rows = [{"arm": a, "seed": s, "finished": True, "final_fd": v}
        ...         for a, vals in (("b", [1.0, 2.0, 3.0]), ("x", [2.0, 4.0, 6.0])) for s, v in enumerate(vals)]
        >>> table = arm_table_rows(aggregate(rows, ["b", "x"], "b", ["fd"]), ["fd"])
        >>> table[1]["final_fd_mean"], table[1]["final_fd_std"], table[1]["final_fd_rel_change"]
        (4.0, 2.0, 1.0)
    """
    table = []
    for result in results:
        row: dict[str, Any] = {
            "arm": result.arm,
            "baseline": result.baseline,
            "n": result.n,
            "seeds": " ".join(map(str, result.seeds)),
        }
        for column in quantities(metrics):
            summary, comparison = result.summaries[column], result.comparisons[column]
            row[f"{column}_mean"], row[f"{column}_std"] = summary.mean, summary.std
            row[f"{column}_diff"] = comparison.difference
            row[f"{column}_diff_ci_low"], row[f"{column}_diff_ci_high"] = comparison.low, comparison.high
            row[f"{column}_rel_change"] = comparison.relative
            row[f"{column}_rel_ci_low"], row[f"{column}_rel_ci_high"] = (
                comparison.relative_low,
                comparison.relative_high,
            )
            row[f"{column}_p"], row[f"{column}_test"] = comparison.p_value, comparison.test
            row[f"{column}_mde"] = comparison.mde
        table.append(row)
    return table


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Writes dict rows as CSV (columns: the union of keys, first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def markdown_report(
    spec: AblationSpec,
    results: Sequence[ArmResult],
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    plots: Sequence[str] = (),
    command: str = "",
    environment: Sequence[str] = (),
    status: Sequence[str] = (),
    settings: Sequence[str] = (),
    comparisons: Sequence[PageComparison] = (),
) -> str:
    """The ``results.md`` text: settings, environment, the per-arm table, the tested comparisons (primary
    with TOST, secondary, exploratory; Holm within each), the arms' overrides, per-cell values, plots.

    Args:
        spec: the ablation.
        results: from ``aggregate``.
        rows: ``cell_row`` dicts (the per-cell table; also the extractor and sample count).
        metrics: metric names present.
        plots: PNG file names (relative to the Markdown file) to embed.
        command: the command that produced the runs.
        environment: lines describing the cells' environment (:func:`check_environments`).
        status: Markdown lines placed right after the title (e.g. "k of N cells finished").
        settings: lines describing the cells' settings (:func:`settings_lines`).
        comparisons: from ``page_comparisons`` (none: no comparison section).

    Returns:
        Markdown text.
    """
    finished = [row for row in rows if row.get("finished")]
    extractors = sorted({str(row["extractor"]) for row in finished if row.get("extractor")})
    samples = sorted({int(row["num_samples"]) for row in finished if row.get("num_samples")})
    extractor = ", ".join(f"`{name}`" for name in extractors) or "n/a"
    baseline = spec.baseline.name
    lines = [f"# Ablation `{spec.name}`", ""]
    if status:
        lines += [*status, ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += [
        f"- recipe `{spec.recipe}`, base config `{spec.base}`; common overrides: "
        + (", ".join(f"`{k}={format_value(v)}`" for k, v in spec.overrides.items()) or "none"),
        f"- {len(finished)} finished cells of {len(rows)} found; baseline arm: `{baseline}`",
        f"- metrics on the feature extractor {extractor}, {', '.join(map(str, samples)) or '?'} generated samples "
        "per evaluation (FD below ~5k samples is biased upward: compare only within this table)",
    ]
    if command:
        lines.append(f"- command: `{command}`")
    lines += [f"- {line}" for line in settings]
    lines += [f"- {line}" for line in environment]
    header = ["arm", "n"]
    for name in metrics:
        label = LABELS.get(name, name)
        header += [f"final {label}", f"best {label}", f"Δ final {label} vs {baseline} (95% CI)"]
    header += ["train time (s)", "Δ time", "step (ms)"]
    table = []
    for result in results:
        line = [f"**{result.arm}**" if result.baseline else result.arm, str(result.n)]
        for name in metrics:
            line += [
                format_mean_std(result.summaries[f"final_{name}"]),
                format_mean_std(result.summaries[f"best_{name}"]),
                "—" if result.baseline else _relative(result.comparisons[f"final_{name}"]),
            ]
        step = result.summaries["median_step_time"]
        line += [
            format_mean_std(result.summaries["train_seconds"]),
            "—" if result.baseline else _relative(result.comparisons["train_seconds"]),
            format_mean_std(Summary(step.mean * 1000, step.std * 1000, step.n)),
        ]
        table.append(line)
    lines += [
        "",
        f"Feature extractor: {extractor}. Mean ± std over seeds (sample std). *final* = last evaluation, "
        "*best* = best evaluation of that metric during the run (optimistic: picked on the evaluation set). "
        f"Δ = relative change of the mean vs `{baseline}`, paired by seed over the seeds both arms finished "
        "(marked *Welch* where they share fewer than 2), with Fieller's 95% interval (it counts the baseline "
        "mean's own uncertainty; `xai_train/ablation/stats.py`); an interval containing 0 is within seed noise. "
        "*train time* = the training loop's wall-clock (`summary.json` `train_seconds`: evaluations and "
        "checkpoints included, summed over resumes); on a shared machine it depends on the load, so its Δ is "
        "descriptive, not a cost measurement. *step* = median generator/UNet step. Lower is better for FD, KID "
        "and time.",
        "",
        markdown_table(header, table),
        "",
    ]
    lines += comparison_section(comparisons)
    arms = [
        [arm.name, ", ".join(f"`{k}={format_value(v)}`" for k, v in arm.overrides.items()) or "(common only)"]
        for arm in spec.arms
    ]
    lines += ["## Arms", "", markdown_table(["arm", "overrides"], arms), ""]
    for plot in plots:
        lines += [f"![{plot}]({plot})", ""]
    cell_header = (
        ["arm", "seed"]
        + [f"final {LABELS.get(m, m)}" for m in metrics]
        + [f"best {LABELS.get(m, m)} (step)" for m in metrics]
        + ["train time (s)"]
    )
    cells = []
    for row in rows:
        if not row.get("finished"):
            cells.append([row["arm"], str(row["seed"]), *["unfinished"] * (2 * len(metrics) + 1)])
            continue
        cells.append(
            [row["arm"], str(row["seed"])]
            + [_number(row.get(f"final_{m}")) for m in metrics]
            + [f"{_number(row.get(f'best_{m}'))} ({row.get(f'best_{m}_step', '?')})" for m in metrics]
            + [_number(row.get("train_seconds"))]
        )
    lines += ["## Cells", "", markdown_table(cell_header, cells), ""]
    return "\n".join(lines)


def check_environments(cells: Sequence[Any], allow_mixed: bool, name: str) -> list[str]:
    """Compares the finished cells' fingerprints; returns the report's environment lines.

    Raises:
        UserError: the cells differ in a field that changes numbers (unless ``allow_mixed``).
    """
    fingerprints: dict[str, Any] = {}
    for cell in cells:
        if cell.finished:
            label = f"{cell.arm}/seed_{cell.seed}"
            fingerprints[label] = cell.summary.get("fingerprint")
            for index, earlier in enumerate(cell.summary.get("earlier_fingerprints") or [], start=1):
                fingerprints[f"{label} (before resume {index})"] = earlier  # a resume elsewhere must show
    if not fingerprints:
        return []
    differences = numeric_differences(fingerprints)
    if differences and not allow_mixed:
        raise UserError(
            f"ablation '{name}': its cells ran in different environments ("
            + " | ".join(describe_differences(differences))
            + "); their numbers are not comparable: re-run the odd cells in a fresh --output-dir, or pass "
            "--allow-mixed to aggregate anyway (the report then says so)"
        )
    known = next((fp for fp in fingerprints.values() if fp is not None), None)
    lines = []
    if known is None:
        lines.append("environment: not recorded (cells made before run fingerprints existed)")
    else:
        shown = [f"{field} `{known.get(field)}`" for field in ENVIRONMENT_FIELDS if known.get(field) is not None]
        same = "every cell" if not differences else "the first cell with a fingerprint"
        lines.append(f"environment ({same}): " + ", ".join(shown))
    if differences:
        lines.append(
            "**mixed environments, aggregated with --allow-mixed**: "
            + "; ".join(describe_differences(differences))
            + ". Differences between these cells include the environment's, not only the arms'."
        )
    return lines


def _number(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def _relative(comparison: Comparison) -> str:
    text = format_relative(comparison)
    return f"{text} (Welch)" if comparison.test == "welch" and text != "n/a" else text


def write_report(
    spec: AblationSpec,
    ablation_dir: str | Path,
    *,
    command: str = "",
    allow_mixed: bool = False,
    status: Sequence[str] = (),
) -> list[Path]:
    """Aggregates an ablation directory: CSVs, Markdown, one PNG per metric, and TensorBoard HParams.

    Args:
        spec: the ablation (arm order, baseline, headline metric).
        ablation_dir: where the cells are.
        command: the command that produced the runs (default: ``ablate_command.txt`` if present).
        allow_mixed: aggregate cells whose environment fingerprints differ (the report says so).
        status: Markdown lines placed right after the page title, as given (a sweep's "k of N finished",
            a "not finished" section).

    Returns:
        The files and folders written.

    Raises:
        UserError: the finished cells' fingerprints differ in a field that changes numbers, and not
            ``allow_mixed``; nothing is written then.
    """
    ablation_dir = Path(ablation_dir)
    ablation_dir.mkdir(parents=True, exist_ok=True)
    if not command and (ablation_dir / "ablate_command.txt").is_file():
        command = (ablation_dir / "ablate_command.txt").read_text().strip()
    arms = [arm.name for arm in spec.arms]
    cells = collect_cells(ablation_dir, arms)
    environment = check_environments(cells, allow_mixed, spec.name)
    rows = [cell_row(cell) for cell in cells]
    metrics = [name for name in LABELS if any(f"final_{name}" in row for row in rows if row.get("finished"))]
    metrics.sort(key=lambda name: name != spec.metric)  # the headline metric first
    results = aggregate(rows, arms, spec.baseline.name, metrics)
    comparisons = page_comparisons(spec, rows, metrics)
    written = [
        write_csv(arm_table_rows(results, metrics), ablation_dir / "results.csv"),
        write_csv(rows, ablation_dir / "cells.csv"),
        write_csv([comparison_row(c) for c in comparisons], ablation_dir / "comparisons.csv"),
    ]
    extractors = sorted({str(row["extractor"]) for row in rows if row.get("finished") and row.get("extractor")})
    plots = []
    for name in metrics:
        label = f"{LABELS.get(name, name)} [{', '.join(extractors)}]"
        path = plot_curves(
            arm_curves(cells, name, arms),
            name,
            ablation_dir / f"{name}_curves.png",
            title=f"{spec.name}: {label}, mean ± std over seeds",
            ylabel=label,
            baseline=spec.baseline.name,
        )
        plots.append(path.name)
        written.append(path)
    settings = settings_lines(cells, results)
    text = markdown_report(spec, results, rows, metrics, plots, command, environment, status, settings, comparisons)
    atomic_write(ablation_dir / "results.md", text)
    written.append(ablation_dir / "results.md")
    written.append(write_hparams(rows, {arm.name: arm.overrides for arm in spec.arms}, ablation_dir / "hparams"))
    return written
