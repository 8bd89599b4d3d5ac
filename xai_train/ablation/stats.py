"""Statistics over seeds: mean ± std, and the change of an arm vs the baseline with a Welch-t interval.

Why Welch and not a bootstrap: ablations here have 3-5 seeds per arm. A bootstrap over 3 values has only
10 distinct resamples and its percentile interval is far too narrow; Welch's t interval on the difference of
means (unequal variances, Welch-Satterthwaite degrees of freedom) is wide with few seeds, as it should be.

The power figures (:func:`minimum_detectable_effect`, :func:`seeds_needed`) are those of a two-sided
two-sample t-test with equal seeds per arm, computed exactly from the noncentral t distribution, with the
seed-to-seed standard deviation pooled over the arms (:func:`pooled_std`).

The relative change is ``(mean_arm - mean_base) / mean_base``; its interval is the difference's interval
divided by ``mean_base``. That treats the baseline mean as a fixed scale (its noise is in the difference's
standard error, not in the normalisation), which is the usual convention for "x% better than baseline".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
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


def t_test_power(effect: float, std: float, n: int, alpha: float = 0.05, paired: bool = False) -> float:
    """Power of a two-sided t-test to detect ``effect`` with ``n`` seeds per arm.

    Unpaired (default): two-sample test, common seed-to-seed ``std``. Paired: one-sample test on the ``n``
    per-seed differences, ``std`` being the std of those differences (arms that share each seed's init, data
    order and latents differ less from each other than from another seed, and a paired test sees that).

    Example:
        >>> round(t_test_power(1.0, 1.0, 17), 3)  # the textbook case: d = 1 needs 17 per group for 80%
        0.807
        >>> round(t_test_power(1.0, 1.0, 10, paired=True), 3)
        0.803
    """
    if n < 2 or not std > 0:
        return math.nan
    df = n - 1 if paired else 2 * n - 2
    noncentrality = abs(effect) / (std * math.sqrt(1 / n if paired else 2 / n))
    critical = float(scipy_stats.t.ppf(1 - alpha / 2, df))
    if noncentrality > 30:  # power is 1 to double precision; scipy's nct returns NaN further out
        return 1.0
    upper = float(scipy_stats.nct.sf(critical, df, noncentrality))
    lower = float(scipy_stats.nct.cdf(-critical, df, noncentrality))  # the wrong-sign rejections: tiny here,
    return upper + (lower if math.isfinite(lower) else 0.0)  # and scipy returns NaN for some far-tail values


def minimum_detectable_effect(
    std: float, n: int, alpha: float = 0.05, power: float = 0.8, paired: bool = False
) -> float:
    """The smallest difference of means a two-sided t-test at level ``alpha`` finds with probability ``power``.

    Args:
        std: seed-to-seed standard deviation (e.g. :func:`pooled_std`), or of the per-seed differences when
            ``paired``.
        n: seeds per arm.
        alpha: test level (0.05: two-sided 95%).
        power: wanted power.
        paired: see :func:`t_test_power`.

    Returns:
        The effect in the units of ``std`` (NaN for n < 2 or a zero/NaN std).

    Example:
        >>> round(minimum_detectable_effect(1.0, 17), 3), round(minimum_detectable_effect(1.0, 3), 2)
        (0.991, 3.07)
    """
    if n < 2 or not std > 0:
        return math.nan
    return float(
        optimize.brentq(lambda effect: t_test_power(effect, std, n, alpha, paired) - power, 1e-9 * std, 100 * std)
    )


def seeds_needed(
    effect: float, std: float, alpha: float = 0.05, power: float = 0.8, limit: int = 100_000, paired: bool = False
) -> float:
    """Seeds per arm for a two-sided t-test at level ``alpha`` to find ``effect`` with probability ``power``.

    Returns:
        The smallest such count (>= 2); NaN when ``std`` is zero/NaN; inf beyond ``limit``.

    Example:
        >>> seeds_needed(1.0, 1.0), seeds_needed(0.5, 1.0), seeds_needed(0.5, 1.0, paired=True)
        (17, 64, 34)
    """
    if not std > 0 or not abs(effect) > 0:
        return math.nan
    low, high = 2, 2
    while t_test_power(effect, std, high, alpha, paired) < power:
        low, high = high, high * 2
        if high > limit:
            return math.inf
    while low < high:  # the smallest n in [low, high] with enough power (power grows with n)
        middle = (low + high) // 2
        if t_test_power(effect, std, middle, alpha, paired) >= power:
            high = middle
        else:
            low = middle + 1
    return high


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
