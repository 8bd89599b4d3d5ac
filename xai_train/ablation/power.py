"""Power of the seed comparisons: two-sided t-tests, exact from the noncentral t.

Per comparison from its own spread (:func:`minimum_detectable_effect`, :func:`seeds_needed`): the std of the
per-seed differences when paired (a one-sample test), a common seed-to-seed std for two samples, and the two
arms' own stds with Welch-Satterthwaite degrees of freedom for Welch (:func:`welch_minimum_detectable_effect`).
"""

from __future__ import annotations

import math

from scipy import optimize
from scipy import stats as scipy_stats


def welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """Welch-Satterthwaite degrees of freedom from the two variances of the means (``s²/n``).

    Example:
        >>> round(welch_df(4 / 3, 3, 1 / 3, 3), 4)  # 50/17
        2.9412
    """
    return (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))


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


def welch_power(effect: float, std_a: float, n_a: int, std_b: float, n_b: int, alpha: float = 0.05) -> float:
    """Power of a two-sided Welch test to detect ``effect``, from each arm's own std and count.

    Noncentral t with the Welch-Satterthwaite df and noncentrality ``effect / sqrt(s_a²/n_a + s_b²/n_b)``
    (the usual approximation; checked against a simulation of ``ttest_ind(equal_var=False)`` in the tests).

    Example:
        >>> round(welch_power(1.0, 1.0, 17, 1.0, 17), 3)  # equal stds and counts: the two-sample figure
        0.807
    """
    if n_a < 2 or n_b < 2 or not (std_a > 0 or std_b > 0):
        return math.nan
    va, vb = std_a**2 / n_a, std_b**2 / n_b
    df, noncentrality = welch_df(va, n_a, vb, n_b), abs(effect) / math.sqrt(va + vb)
    if noncentrality > 30:
        return 1.0
    critical = float(scipy_stats.t.ppf(1 - alpha / 2, df))
    lower = float(scipy_stats.nct.cdf(-critical, df, noncentrality))
    return float(scipy_stats.nct.sf(critical, df, noncentrality)) + (lower if math.isfinite(lower) else 0.0)


def welch_minimum_detectable_effect(
    std_a: float, n_a: int, std_b: float, n_b: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest difference of means a two-sided Welch test finds with probability ``power``.

    Example:
        >>> round(welch_minimum_detectable_effect(1.0, 17, 1.0, 17), 3)
        0.991
    """
    if n_a < 2 or n_b < 2 or not (std_a > 0 or std_b > 0):
        return math.nan
    scale = math.sqrt(std_a**2 / n_a + std_b**2 / n_b)
    return float(
        optimize.brentq(
            lambda effect: welch_power(effect, std_a, n_a, std_b, n_b, alpha) - power, 1e-9 * scale, 100 * scale
        )
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
