"""The comparisons of a results page: which are tested, in which family, and how they are corrected.

A page compares every non-baseline arm with the spec's baseline arm on the final value of every metric, plus
the comparisons the spec declares (``primary``, ``secondary``: see ``xai_train.ablation.spec``). Families:

- **primary**: the one confirmatory comparison, tested alone at 0.05 (its adjusted p is its p), with a TOST
  equivalence test at ``spec.equivalence_margin``;
- **secondary**: Holm-corrected together;
- **exploratory**: every other arm x metric comparison, Holm-corrected together. Without a declared
  primary/secondary the whole page is exploratory.

Every comparison is paired by seed over the seeds both arms finished (Welch when they share fewer than 2);
its minimum detectable effect comes from its own spread. Training time is not in any family: wall-clock on
a shared machine depends on the load, so its change is descriptive only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xai_train.ablation.power import seeds_needed
from xai_train.ablation.spec import AblationSpec, PlannedComparison
from xai_train.ablation.stats import (
    Comparison,
    Equivalence,
    compare,
    format_relative,
    holm,
    summarize,
    tost_paired,
)
from xai_train.benchmarks.timing import markdown_table

DETECT = 0.10
"""The relative change whose seed requirement every page states (a 10% change of the baseline mean)."""

ROLES = ("primary", "secondary", "exploratory")

LABELS = {"fd": "FD", "kid": "KID", "precision": "precision", "recall": "recall"}


@dataclass(frozen=True)
class PageComparison:
    """One tested comparison of a page: what, in which family, its result and its Holm-adjusted p-value."""

    role: str  # primary | secondary | exploratory
    arm: str
    baseline: str
    metric: str
    result: Comparison
    p_holm: float  # within its family (primary: the p-value itself)
    baseline_mean: float
    seeds_for_detect: float  # seeds (pairs) a DETECT change of the baseline mean needs at 80% power
    equivalence: Equivalence | None = None  # the primary's TOST


def seed_values(rows: Sequence[Mapping[str, Any]], arm: str, column: str) -> dict[int, float]:
    """Seed -> value of ``column`` over the finished cells of ``arm`` (the ``cell_row`` dicts).

    Example:
        >>> seed_values([{"arm": "a", "seed": 1, "finished": True, "final_fd": 3.0},
        ...              {"arm": "a", "seed": 2, "finished": False}], "a", "final_fd")
        {1: 3.0}
    """
    return {
        int(row["seed"]): float(row.get(column, math.nan)) for row in rows if row.get("finished") and row["arm"] == arm
    }


def planned_comparisons(spec: AblationSpec, metrics: Sequence[str]) -> list[tuple[str, PlannedComparison]]:
    """``(role, comparison)`` for the page: the declared ones first, then every other arm x metric vs the baseline.

    Example:
        >>> from xai_train.ablation.spec import Arm
        >>> spec = AblationSpec("d", "r.py", "b.yaml", (Arm("v", {}, True), Arm("x")),
        ...                     primary=PlannedComparison("x", "fd", "v"))
        >>> [(role, c.arm, c.metric) for role, c in planned_comparisons(spec, ["fd", "kid"])]
        [('primary', 'x', 'fd'), ('exploratory', 'x', 'kid')]
    """
    declared = ([("primary", spec.primary)] if spec.primary else []) + [("secondary", c) for c in spec.secondary]
    seen = {comparison for _, comparison in declared}
    exploratory = [
        ("exploratory", PlannedComparison(arm.name, metric, spec.baseline.name))
        for arm in spec.arms
        if not arm.baseline
        for metric in metrics
    ]
    return declared + [(role, c) for role, c in exploratory if c not in seen]


def page_comparisons(
    spec: AblationSpec, rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], confidence: float = 0.95
) -> list[PageComparison]:
    """Every comparison of the page with its test, interval, family-wise (Holm) p and power figures.

    Args:
        spec: the ablation (arms, baseline, ``primary``/``secondary``/``equivalence_margin``).
        rows: ``cell_row`` dicts.
        metrics: the metrics present; a declared comparison of a metric no cell has is left out.
        confidence: of the intervals (the primary is tested at ``1 - confidence``).

    Returns:
        ``PageComparison`` per comparison that has values in both arms, in ``planned_comparisons`` order.
    """
    tested = []
    for role, planned in planned_comparisons(spec, metrics):
        if planned.metric not in metrics:
            continue
        column = f"final_{planned.metric}"
        arm, base = seed_values(rows, planned.arm, column), seed_values(rows, planned.baseline, column)
        if not arm or not base:
            continue
        result = compare(arm, base, confidence)
        scale = summarize(list(base.values())).mean
        if result.test == "paired":
            needed = seeds_needed(DETECT * scale, result.std, alpha=1 - confidence, paired=True)
        else:
            spread = math.sqrt((summarize(list(arm.values())).std ** 2 + summarize(list(base.values())).std ** 2) / 2)
            needed = seeds_needed(DETECT * scale, spread, alpha=1 - confidence)
        equivalence = None
        if role == "primary":
            shared = [s for s in arm if s in base]
            equivalence = tost_paired(
                [arm[s] for s in shared], [base[s] for s in shared], spec.equivalence_margin, (1 - confidence)
            )
        tested.append(PageComparison(role, planned.arm, planned.baseline, planned.metric, result, math.nan, scale,
                                     needed, equivalence))  # fmt: skip
    adjusted: dict[int, float] = {}
    for role in ROLES:
        members = [index for index, item in enumerate(tested) if item.role == role]
        p_values = holm([tested[index].result.p_value for index in members])
        adjusted.update(zip(members, p_values, strict=True))
    return [
        PageComparison(
            c.role,
            c.arm,
            c.baseline,
            c.metric,
            c.result,
            adjusted[i],
            c.baseline_mean,
            c.seeds_for_detect,
            c.equivalence,
        )  # fmt: skip
        for i, c in enumerate(tested)
    ]


def describe_test(result: Comparison) -> str:
    """How a comparison was tested, for the page.

    Example:
        >>> from xai_train.ablation.stats import paired_compare, welch_compare
        >>> describe_test(paired_compare([1.0, 2.0, 4.0], [1.0, 1.5, 2.0]))
        'paired t, 3 seeds'
        >>> describe_test(welch_compare([1.0, 2.0], [3.0, 5.0]))
        'Welch t, 2 + 2 seeds, df 1.5'
    """
    if result.test == "paired":
        return f"paired t, {result.n} seeds"
    df = "n/a" if math.isnan(result.df) else f"{result.df:.2g}" if result.df < 10 else f"{result.df:.3g}"
    return f"Welch t, {result.n} + {result.n_baseline} seeds, df {df}"


def comparison_section(comparisons: Sequence[PageComparison]) -> list[str]:
    """Markdown lines: the primary comparison's tests (paired t and TOST) and conclusion, then every tested
    comparison with its test, interval, p, Holm-adjusted p (within its family) and minimum detectable effect."""
    if not comparisons:
        return []
    lines = []
    primary = next((c for c in comparisons if c.role == "primary"), None)
    if primary is not None:
        lines += ["## Primary comparison", "", *primary_lines(primary), ""]
    header = [
        "family",
        "comparison",
        "test",
        "Δ (95% CI)",
        "difference (95% CI)",
        "p",
        "p Holm",
        "minimum detectable effect (80% power)",
        f"seeds for a {DETECT:.0%} change",
    ]
    table = []
    for c in comparisons:
        r, label = c.result, LABELS.get(c.metric, c.metric)
        needed = c.seeds_for_detect
        table.append(
            [
                c.role,
                f"final {label}: {c.arm} vs {c.baseline}",
                describe_test(r),
                format_relative(r),
                f"{_number(r.difference)} [{_number(r.low)}, {_number(r.high)}]",
                _p(r.p_value),
                "—" if c.role == "primary" else _p(c.p_holm),
                f"{_number(r.mde)} ({_share(r.mde / c.baseline_mean)})",
                "n/a" if math.isnan(needed) else (">100000" if math.isinf(needed) else str(int(needed))),
            ]
        )
    families = sorted({c.role for c in comparisons}, key=["primary", "secondary", "exploratory"].index)
    lines += [
        "## Comparisons",
        "",
        "Each row: the final value of a metric, an arm vs its baseline, paired by seed (a one-sample t-test on the "
        "per-seed differences, `scipy.stats.ttest_rel`) over the seeds both finished; Welch's t "
        "(`ttest_ind(equal_var=False)`, its Welch-Satterthwaite df shown) only where they share fewer than 2 "
        "seeds. Δ: relative change with Fieller's 95% interval (the ratios the same test does not reject; "
        "*unbounded* when the baseline mean is too uncertain). *p Holm*: Holm-adjusted within the row's family "
        f"({', '.join(families)}); a difference is claimed only where it is below 0.05 (the primary: its own p). "
        "*Minimum detectable effect*: the smallest true difference this row's test finds with 80% power at "
        "two-sided 5%, from its own spread (paired: the std of the per-seed differences; Welch: the two arms' "
        "stds), in the metric's units and as % of the baseline mean. A true change smaller than it is missed more "
        "often than not: an interval containing 0 says *no effect large enough to detect*, not *no effect*.",
        "",
        markdown_table(header, table),
        "",
    ]
    return lines


def primary_lines(primary: PageComparison) -> list[str]:
    """The primary comparison in words: paired test, TOST, and the conclusion the pre-declared rule allows."""
    r, e, label = primary.result, primary.equivalence, LABELS.get(primary.metric, primary.metric)
    alpha = 1 - r.confidence
    lines = [
        f"Declared in the spec: final {label}, `{primary.arm}` vs `{primary.baseline}`, {describe_test(r)}, tested "
        f"alone at {alpha:.2g}: Δ {format_relative(r)} (difference {_number(r.difference)} "
        f"[{_number(r.low)}, {_number(r.high)}]), p = {_p(r.p_value)}.",
    ]
    verdict_difference = r.p_value < alpha
    verdict_equivalent = bool(e and e.equivalent)
    if e is not None:
        lines[0] += (
            f" Equivalence (TOST, paired, margin ±{e.margin:.0%} of the `{primary.baseline}` mean, ratio scale): "
            f"p = {_p(e.p_lower)} against Δ ≤ −{e.margin:.0%} and p = {_p(e.p_upper)} against Δ ≥ +{e.margin:.0%}; "
            f"{1 - 2 * e.alpha:.0%} interval of Δ [{_percent(e.low)}, {_percent(e.high)}]. Fixed-margin reading: "
            f"{1 - 2 * e.alpha:.0%} interval of the mean difference [{_number(e.difference_low)}, "
            f"{_number(e.difference_high)}] against ±{_number(e.margin_difference)}."
        )
    if verdict_difference:
        direction = "lowers" if r.difference < 0 else "raises"
        conclusion = (
            f"`{primary.arm}` {direction} final {label} by {-r.relative if r.difference < 0 else r.relative:.0%}"
        )
        conclusion += f" (the paired t-test rejects at {alpha:.2g})"
    elif verdict_equivalent and e is not None:
        conclusion = f"equivalent within ±{e.margin:.0%}: no change of final {label} larger than {e.margin:.0%}"
    else:
        margin = f"±{e.margin:.0%}" if e is not None else "the margin"
        conclusion = f"inconclusive at {r.n} seeds: neither a difference nor equivalence within {margin} is shown"
    return [*lines, "", f"**Conclusion: {conclusion}.**"]


def comparison_row(comparison: PageComparison) -> dict[str, Any]:
    """A ``comparisons.csv`` row: family, arms, metric, test, estimates, intervals, p, Holm p, power, TOST."""
    r, e = comparison.result, comparison.equivalence
    row: dict[str, Any] = {
        "family": comparison.role,
        "arm": comparison.arm,
        "baseline": comparison.baseline,
        "metric": f"final_{comparison.metric}",
        "test": r.test,
        "n": r.n,
        "n_baseline": r.n_baseline,
        "df": r.df,
        "baseline_mean": comparison.baseline_mean,
        "difference": r.difference,
        "diff_ci_low": r.low,
        "diff_ci_high": r.high,
        "rel_change": r.relative,
        "rel_ci_low": r.relative_low,
        "rel_ci_high": r.relative_high,
        "p": r.p_value,
        "p_holm": comparison.p_holm,
        "diff_std": r.std,
        "mde": r.mde,
        "seeds_for_10pct": comparison.seeds_for_detect,
    }
    if e is not None:
        row.update(
            tost_margin=e.margin,
            tost_p_lower=e.p_lower,
            tost_p_upper=e.p_upper,
            tost_rel_ci90_low=e.low,
            tost_rel_ci90_high=e.high,
            tost_equivalent=e.equivalent,
        )
    return row


def _number(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.1%}"


def _share(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{abs(value):.1%}"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else ("< 0.0001" if value < 1e-4 else f"{value:.2g}")
