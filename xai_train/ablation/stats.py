"""Statistics over seeds: mean ± std, and the change of an arm vs the baseline with a Welch-t interval.

Why Welch and not a bootstrap: ablations here have 3-5 seeds per arm. A bootstrap over 3 values has only
10 distinct resamples and its percentile interval is far too narrow; Welch's t interval on the difference of
means (unequal variances, Welch-Satterthwaite degrees of freedom) is wide with few seeds, as it should be.

The relative change is ``(mean_arm - mean_base) / mean_base``; its interval is the difference's interval
divided by ``mean_base``. That treats the baseline mean as a fixed scale (its noise is in the difference's
standard error, not in the normalisation), which is the usual convention for "x% better than baseline".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof = 1; NaN for n < 2) and count of finite values."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Comparison:
    """An arm vs the baseline: the difference of means with its confidence interval, and the relative change.

    ``difference = mean(arm) - mean(baseline)``; ``relative = difference / mean(baseline)``; ``low``/``high``
    bound the difference, ``relative_low``/``relative_high`` the relative change. NaN where undefined
    (fewer than 2 values in a group, or zero variance in both).
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


def welch_compare(arm: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Welch's t interval for ``mean(arm) - mean(baseline)`` and the relative change vs the baseline.

    Args:
        arm: one value per seed of the arm.
        baseline: one value per seed of the baseline arm.
        confidence: two-sided confidence level.

    Returns:
        A ``Comparison``; the interval is ``d ± t_{(1+c)/2, df} · se`` with ``se² = s_a²/n_a + s_b²/n_b``
        and ``df = se⁴ / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))``.

    Example:
        >>> result = welch_compare([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
        >>> result.difference, round(result.df, 4), result.relative
        (2.0, 2.9412, 1.0)
    """
    a, b = finite(arm), finite(baseline)
    nan = math.nan
    if a.size == 0 or b.size == 0:
        return Comparison(nan, nan, nan, nan, nan, nan, nan, nan, confidence)
    difference = float(a.mean() - b.mean())
    scale = float(b.mean())
    relative = difference / scale if scale != 0 else nan
    low = high = df = p_value = nan
    if a.size >= 2 and b.size >= 2:
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        se = math.sqrt(va + vb)
        if se > 0:
            df = float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)))
            half = float(scipy_stats.t.ppf((1 + confidence) / 2, df)) * se
            low, high = difference - half, difference + half
            p_value = float(2 * scipy_stats.t.sf(abs(difference) / se, df))
    rel_low, rel_high = (low / scale, high / scale) if scale != 0 else (nan, nan)
    if scale < 0:
        rel_low, rel_high = rel_high, rel_low
    return Comparison(difference, low, high, relative, rel_low, rel_high, df, p_value, confidence)


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
    """``"-12% [-30%, +6%]"`` (relative change with its interval), ``"-12%"`` without one, or ``"n/a"``.

    Example:
        >>> format_relative(welch_compare([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]))
        '+100% [-108%, +308%]'
    """
    if math.isnan(comparison.relative):
        return "n/a"
    text = f"{comparison.relative:+.0%}"
    if math.isnan(comparison.relative_low):
        return text
    return f"{text} [{comparison.relative_low:+.0%}, {comparison.relative_high:+.0%}]"
