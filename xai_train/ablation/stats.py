"""Statistics over seeds: mean ± std, paired and Welch comparisons, equivalence (TOST), multiplicity.

Which test: arms of an ablation share each seed's initialisation, data order and latents, so a comparison is
**paired by seed** (a one-sample t-test on the per-seed differences, ``scipy.stats.ttest_rel``) over the seeds
both arms finished; **Welch** (``ttest_ind(equal_var=False)``, Welch-Satterthwaite degrees of freedom) only
when they share fewer than 2 seeds (:func:`compare`). Why t and not a bootstrap: with 3-16 seeds a bootstrap
percentile interval is far too narrow; the t interval is wide with few seeds, as it should be.

The relative change ``mean(arm) / mean(baseline) - 1`` gets **Fieller's interval** (:func:`fieller_interval`):
the set of ratios ``r`` that the same test does not reject for ``arm - r · baseline``. It counts the
baseline mean's own uncertainty (and, paired, the arms' covariance); dividing the difference's interval by a
fixed baseline mean does not. Paired, it is exact under normality (``ttest_1samp(arm - r · baseline)`` has
p = 1 - confidence at both ends); Welch, the degrees of freedom are those of the Welch test at each end.
When the baseline mean itself is not clearly away from 0 the interval is unbounded (NaN here).

Equivalence (:func:`tost_paired`): two one-sided paired t-tests of ``H0: r <= -margin`` and
``H0: r >= +margin`` on the ratio scale (``arm - (1 ± margin) · baseline``); both rejecting at ``alpha`` is
the same as the ``1 - 2·alpha`` Fieller interval lying inside ``±margin``. Multiplicity: :func:`holm`
(family-wise) and :func:`benjamini_hochberg` (false discovery rate) adjusted p-values.

Power (minimum detectable effects, seeds needed) lives in :mod:`xai_train.ablation.power`; each comparison
carries its own minimum detectable effect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from xai_train.ablation.power import minimum_detectable_effect, welch_df, welch_minimum_detectable_effect


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof = 1; NaN for n < 2) and count of finite values."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Comparison:
    """An arm vs the baseline: the difference of means with its confidence interval, and the relative change.

    ``difference = mean(arm) - mean(baseline)`` (paired: the mean per-seed difference); ``relative =
    difference / mean(baseline)``; ``low``/``high`` bound the difference, ``relative_low``/``relative_high``
    the relative change (Fieller). ``test`` is ``"paired"`` or ``"welch"``; ``n`` the pairs (paired) or the
    arm's values and ``n_baseline`` the baseline's; ``std`` the std of the per-seed differences (paired; NaN
    for Welch); ``mde`` the smallest |difference| this comparison detects with 80% power at its level. NaN
    where undefined (fewer than 2 values, or no spread).
    """

    difference: float
    low: float
    high: float
    relative: float
    relative_low: float
    relative_high: float
    df: float
    p_value: float
    confidence: float
    test: str = "welch"
    n: int = 0
    n_baseline: int = 0
    std: float = math.nan
    mde: float = math.nan


@dataclass(frozen=True)
class Equivalence:
    """A paired TOST on the ratio scale: is ``|mean(arm) / mean(baseline) - 1| < margin``?

    ``p_lower`` tests ``H0: r <= -margin``, ``p_upper`` ``H0: r >= +margin``; ``low``/``high`` is the
    ``1 - 2·alpha`` (90% at alpha 0.05) Fieller interval of the relative change; ``equivalent`` only when
    both p-values are below ``alpha``. ``difference_low``/``difference_high``: the same-level t interval of
    the mean per-seed difference, to hold against ``± margin · mean(baseline)`` (the fixed-margin reading).
    """

    margin: float
    alpha: float
    p_lower: float
    p_upper: float
    low: float
    high: float
    equivalent: bool
    n: int
    difference_low: float
    difference_high: float
    margin_difference: float

    @property
    def p_value(self) -> float:
        """The TOST p-value: the larger of the two one-sided ones."""
        return max(self.p_lower, self.p_upper)


def finite(values: Sequence[float]) -> np.ndarray:
    """The finite values as a float64 array (NaN / inf dropped: a failed evaluation is not a value)."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    return array[np.isfinite(array)]


def summarize(values: Sequence[float]) -> Summary:
    """Mean ± sample std over seeds.

    Example:
        >>> summarize([1.0, 2.0, 3.0])
        Summary(mean=2.0, std=1.0, n=3)
        >>> summarize([4.0]).std
        nan
    """
    array = finite(values)
    if array.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return Summary(float(array.mean()), std, int(array.size))


def fieller_interval(
    mean_a: float, mean_b: float, var_a: float, var_b: float, cov: float, critical: float
) -> tuple[float, float]:
    """Fieller's interval for ``mean_a / mean_b``: the ``r`` with ``(mean_a - r·mean_b)² <= critical² · var(r)``.

    Args:
        mean_a, mean_b: the two means (the ratio's numerator and denominator).
        var_a, var_b: the variances of those means (e.g. ``s²/n``).
        cov: their covariance (paired: the sample covariance over ``n``; unpaired: 0).
        critical: the test's critical value (e.g. ``t_{0.975, n-1}``).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when the set is unbounded (``mean_b`` not clearly away from 0:
        ``mean_b² <= critical² · var_b``).

    Example:
        >>> [round(v, 4) for v in fieller_interval(4.0, 2.0, 4 / 3, 1 / 3, 0.0, 2.0)]  # (8/3)r² - 16r + 32/3: 3 ± √5
        [0.7639, 5.2361]
        >>> fieller_interval(1.0, 0.1, 0.01, 0.01, 0.0, 2.0)
        (nan, nan)
    """
    c2 = critical**2
    quad = mean_b**2 - c2 * var_b
    lin = mean_a * mean_b - c2 * cov
    const = mean_a**2 - c2 * var_a
    discriminant = lin**2 - quad * const
    if not quad > 0 or not discriminant >= 0:
        return math.nan, math.nan
    root = math.sqrt(discriminant)
    return float((lin - root) / quad), float((lin + root) / quad)


def paired_compare(arm: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Paired t comparison of ``arm`` vs ``baseline``, value ``i`` of both from the same seed.

    Args:
        arm: one value per seed.
        baseline: the baseline's value for the same seeds, in the same order (a pair with a non-finite
            value is dropped).
        confidence: two-sided confidence level.

    Returns:
        A ``Comparison`` with ``test="paired"``: the t interval of the mean per-seed difference
        (``df = n - 1``; ``p`` equals ``scipy.stats.ttest_rel``), Fieller's interval of the relative change,
        ``std`` of the differences and the paired minimum detectable effect.

    Example:
        >>> result = paired_compare([11.0, 12.0, 14.0], [10.0, 12.0, 12.0])
        >>> result.test, result.difference, result.df, round(result.p_value, 4)
        ('paired', 1.0, 2.0, 0.2254)
    """
    a, b = np.asarray(arm, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n, nan = int(a.size), math.nan
    if n == 0:
        return Comparison(nan, nan, nan, nan, nan, nan, nan, nan, confidence, "paired", 0, 0)
    differences = a - b
    difference, scale = float(differences.mean()), float(b.mean())
    relative = difference / scale if scale != 0 else nan
    if n < 2 or not differences.std(ddof=1) > 0:
        return Comparison(difference, nan, nan, relative, nan, nan, nan, nan, confidence, "paired", n, n)
    std = float(differences.std(ddof=1))
    se, df = std / math.sqrt(n), n - 1
    critical = float(scipy_stats.t.ppf((1 + confidence) / 2, df))
    p_value = float(2 * scipy_stats.t.sf(abs(difference) / se, df))
    cov = np.cov(a, b, ddof=1)
    ratio_low, ratio_high = fieller_interval(
        float(a.mean()), scale, cov[0, 0] / n, cov[1, 1] / n, cov[0, 1] / n, critical
    )
    return Comparison(
        difference,
        difference - critical * se,
        difference + critical * se,
        relative,
        ratio_low - 1,
        ratio_high - 1,
        float(df),
        p_value,
        confidence,
        "paired",
        n,
        n,
        std,
        minimum_detectable_effect(std, n, alpha=1 - confidence, paired=True),
    )


def welch_compare(arm: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Welch's t interval for ``mean(arm) - mean(baseline)`` and Fieller's interval of the relative change.

    Args:
        arm: one value per seed of the arm.
        baseline: one value per seed of the baseline arm (other seeds: unpaired).
        confidence: two-sided confidence level.

    Returns:
        A ``Comparison`` with ``test="welch"``; the interval is ``d ± t_{(1+c)/2, df} · se`` with
        ``se² = s_a²/n_a + s_b²/n_b`` and ``df = se⁴ / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))``
        (``p`` equals ``scipy.stats.ttest_ind(equal_var=False)``). The relative interval's ends ``r`` are
        where the Welch test of ``arm`` vs ``(1 + r) · baseline`` has p = 1 - confidence.

    Example:
        >>> result = welch_compare([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
        >>> result.difference, round(result.df, 4), result.relative
        (2.0, 2.9412, 1.0)
    """
    a, b = finite(arm), finite(baseline)
    nan = math.nan
    if a.size == 0 or b.size == 0:
        return Comparison(nan, nan, nan, nan, nan, nan, nan, nan, confidence, "welch", int(a.size), int(b.size))
    difference = float(a.mean() - b.mean())
    scale = float(b.mean())
    relative = difference / scale if scale != 0 else nan
    low = high = df = p_value = rel_low = rel_high = mde = nan
    if a.size >= 2 and b.size >= 2:
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        se = math.sqrt(va + vb)
        if se > 0:
            df = float(welch_df(va, a.size, vb, b.size))
            half = float(scipy_stats.t.ppf((1 + confidence) / 2, df)) * se
            low, high = difference - half, difference + half
            p_value = float(2 * scipy_stats.t.sf(abs(difference) / se, df))
            rel_low, rel_high = _welch_ratio_interval(float(a.mean()), scale, va, a.size, vb, b.size, confidence)
            mde = welch_minimum_detectable_effect(
                float(a.std(ddof=1)), int(a.size), float(b.std(ddof=1)), int(b.size), alpha=1 - confidence
            )
    return Comparison(
        difference, low, high, relative, rel_low - 1, rel_high - 1, df, p_value, confidence, "welch",
        int(a.size), int(b.size), nan, mde,
    )  # fmt: skip


def _welch_ratio_interval(
    mean_a: float, mean_b: float, va: float, n_a: int, vb: float, n_b: int, confidence: float
) -> tuple[float, float]:
    """Fieller's ratio interval for two independent means, each end with the Welch df of ``a - r·b`` at it."""
    ends = []
    for side in (0, 1):
        df = welch_df(va, n_a, vb, n_b)
        for _ in range(50):  # fixed point of r = end(t(df(r))): converges in a few steps
            bound = fieller_interval(mean_a, mean_b, va, vb, 0.0, float(scipy_stats.t.ppf((1 + confidence) / 2, df)))
            ratio = bound[side]
            if not math.isfinite(ratio):
                return math.nan, math.nan
            new_df = welch_df(va, n_a, ratio**2 * vb, n_b)
            if abs(new_df - df) < 1e-12 * max(1.0, df):
                break
            df = new_df
        ends.append(ratio)
    return ends[0], ends[1]


def compare(arm: Mapping[int, float], baseline: Mapping[int, float], confidence: float = 0.95) -> Comparison:
    """``arm`` vs ``baseline`` (seed -> value): paired over the seeds both have, Welch if fewer than 2 shared.

    Example:
        >>> compare({0: 11.0, 1: 12.0, 2: 14.0, 3: 99.0}, {0: 10.0, 1: 12.0, 2: 12.0}).test  # seed 3 unpaired
        'paired'
        >>> compare({5: 2.0, 6: 4.0, 7: 6.0}, {0: 1.0, 1: 2.0, 2: 3.0}).test
        'welch'
    """
    shared = [seed for seed in arm if seed in baseline and math.isfinite(arm[seed]) and math.isfinite(baseline[seed])]
    if len(shared) >= 2:
        return paired_compare([arm[s] for s in shared], [baseline[s] for s in shared], confidence)
    return welch_compare(list(arm.values()), list(baseline.values()), confidence)


def tost_paired(
    arm: Sequence[float], baseline: Sequence[float], margin: float = 0.10, alpha: float = 0.05
) -> Equivalence:
    """Equivalence within ``±margin`` of the baseline mean, paired by seed (two one-sided t-tests).

    Args:
        arm: one value per seed.
        baseline: the baseline's values for the same seeds, same order.
        margin: relative margin (0.10: ±10% of the baseline mean).
        alpha: level of each one-sided test.

    Returns:
        An ``Equivalence``: ``p_lower`` is ``ttest_1samp(arm - (1 - margin)·baseline, 0,
        alternative="greater")``, ``p_upper`` the same of ``arm - (1 + margin)·baseline`` with
        ``alternative="less"``; the ``1 - 2·alpha`` Fieller interval; and the fixed-margin reading.

    Example:
        >>> result = tost_paired([10.1, 9.9, 10.2, 9.8, 10.0], [10.0, 10.0, 10.0, 10.0, 10.1], margin=0.10)
        >>> result.equivalent, result.p_value < 1e-4
        (True, True)
    """
    a, b = np.asarray(arm, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n, nan = int(a.size), math.nan
    if n < 2:
        return Equivalence(margin, alpha, nan, nan, nan, nan, False, n, nan, nan, nan)

    def one_sided(values: np.ndarray, upper: bool) -> float:
        std = values.std(ddof=1)
        if not std > 0:
            return nan
        statistic = values.mean() / (std / math.sqrt(n))
        return float(scipy_stats.t.cdf(statistic, n - 1) if upper else scipy_stats.t.sf(statistic, n - 1))

    p_lower, p_upper = one_sided(a - (1 - margin) * b, False), one_sided(a - (1 + margin) * b, True)
    interval = paired_compare(a, b, confidence=1 - 2 * alpha)
    equivalent = bool(p_lower < alpha and p_upper < alpha)
    return Equivalence(
        margin, alpha, p_lower, p_upper, interval.relative_low, interval.relative_high, equivalent, n,
        interval.low, interval.high, margin * float(b.mean()),
    )  # fmt: skip


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error); NaN entries stay NaN and do not count.

    ``p_(i)`` sorted ascending among ``m`` finite values: ``adj_(i) = max_{j<=i} min(1, (m - j + 1)·p_(j))``.

    Example:
        >>> holm([0.01, 0.04, 0.03, float("nan")])
        [0.03, 0.06, 0.06, nan]
    """
    order = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    adjusted = [math.nan] * len(p_values)
    running, m = 0.0, len(order)
    for rank, (p, index) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = round(running, 15)
    return adjusted


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate); NaN entries stay NaN and do not count.

    ``adj_(i) = min_{j>=i} min(1, m·p_(j)/j)`` (equals ``scipy.stats.false_discovery_control``).

    Example:
        >>> benjamini_hochberg([0.01, 0.04, 0.03, float("nan")])
        [0.03, 0.04, 0.04, nan]
    """
    order = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    adjusted = [math.nan] * len(p_values)
    running, m = 1.0, len(order)
    for rank in range(m - 1, -1, -1):
        p, index = order[rank]
        running = min(running, m * p / (rank + 1))
        adjusted[index] = round(running, 15)
    return adjusted


def pooled_std(groups: Sequence[Sequence[float]]) -> Summary:
    """Seed-to-seed standard deviation pooled over arms: ``sqrt(Σ (n_i - 1) s_i² / Σ (n_i - 1))``.

    Returns:
        A ``Summary`` whose ``std`` is the pooled value, ``n`` its degrees of freedom and ``mean`` the mean of
        all values (NaN std without any arm of 2+ values).

    Example:
        >>> pooled_std([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [5.0]])
        Summary(mean=3.2857142857142856, std=1.5811388300841898, n=4)
    """
    arrays = [finite(group) for group in groups]
    usable = [array for array in arrays if array.size >= 2]
    df = sum(array.size - 1 for array in usable)
    values = np.concatenate(arrays) if arrays else np.zeros(0)
    mean = float(values.mean()) if values.size else math.nan
    if df == 0:
        return Summary(mean, math.nan, 0)
    variance = sum((array.size - 1) * array.var(ddof=1) for array in usable) / df
    return Summary(mean, float(math.sqrt(variance)), int(df))


def format_mean_std(summary: Summary, digits: int = 3) -> str:
    """``"12.3 ± 0.45"`` with ``digits`` significant digits for the mean; ``"n/a"`` when empty.

    Example:
        >>> format_mean_std(Summary(12.345, 0.4567, 3)), format_mean_std(Summary(2.0, math.nan, 1))
        ('12.3 ± 0.457', '2')
    """
    if summary.n == 0:
        return "n/a"
    mean = f"{summary.mean:.{digits}g}"
    return mean if math.isnan(summary.std) else f"{mean} ± {summary.std:.{digits}g}"


def format_relative(comparison: Comparison) -> str:
    """``"-12% [-30%, +6%]"`` (relative change with its Fieller interval), ``"-12% [unbounded]"`` when the
    baseline mean is too uncertain to bound the ratio, ``"-12%"`` without any interval, or ``"n/a"``.

    Example:
        >>> format_relative(paired_compare([11.0, 12.0, 14.0, 13.0], [10.0, 12.0, 12.0, 12.0]))
        '+9% [-3%, +20%]'
        >>> format_relative(welch_compare([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]))  # 3 seeds: mean(baseline) ± 72%
        '+100% [unbounded]'
    """
    if math.isnan(comparison.relative):
        return "n/a"
    text = f"{comparison.relative:+.0%}"
    if math.isnan(comparison.relative_low):
        return text if math.isnan(comparison.low) else f"{text} [unbounded]"
    return f"{text} [{comparison.relative_low:+.0%}, {comparison.relative_high:+.0%}]"
