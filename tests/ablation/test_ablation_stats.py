"""Statistics over seeds, against hand-computed values (and scipy's own Welch test for the p-value)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from xai_train.ablation.stats import (
    Summary,
    format_mean_std,
    format_relative,
    minimum_detectable_effect,
    seeds_needed,
    summarize,
    t_test_power,
    welch_compare,
)


def test_summarize_uses_the_sample_std_and_drops_non_finite_values():
    assert summarize([1.0, 2.0, 3.0, 4.0]) == Summary(2.5, pytest.approx(math.sqrt(5 / 3)), 4)
    assert summarize([1.0, float("nan"), 3.0]) == Summary(2.0, pytest.approx(math.sqrt(2)), 2)
    single = summarize([7.0])
    assert single.mean == 7.0 and math.isnan(single.std) and single.n == 1
    assert summarize([]).n == 0


def test_welch_interval_by_hand():
    # arm [2, 4, 6]: mean 4, var 4; baseline [1, 2, 3]: mean 2, var 1.
    # se^2 = 4/3 + 1/3 = 5/3; df = (5/3)^2 / ((4/3)^2/2 + (1/3)^2/2) = (25/9) / (17/18) = 50/17.
    result = welch_compare([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    se, df = math.sqrt(5 / 3), 50 / 17
    half = scipy_stats.t.ppf(0.975, df) * se  # t quantile ~3.20 for df 2.94
    assert result.difference == 2.0 and result.df == pytest.approx(df)
    assert (result.low, result.high) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    assert result.relative == 1.0  # 2 / mean(baseline) = 2 / 2
    assert (result.relative_low, result.relative_high) == (pytest.approx((2 - half) / 2), pytest.approx((2 + half) / 2))
    expected_p = scipy_stats.ttest_ind([2.0, 4.0, 6.0], [1.0, 2.0, 3.0], equal_var=False).pvalue
    assert result.p_value == pytest.approx(expected_p)
    assert result.low < 0 < result.high  # with 3 seeds this doubling is still within noise


def test_welch_with_a_constant_baseline_has_one_degree_of_freedom():
    # arm [10, 12]: var 2, se^2 = 2/2 = 1; baseline constant: df = 1^2 / (1^2 / 1) = 1, t_{0.975,1} = 12.706.
    result = welch_compare([10.0, 12.0], [10.0, 10.0])
    assert result.df == pytest.approx(1.0)
    assert result.high == pytest.approx(1.0 + 12.7062, abs=1e-3)
    assert result.relative == pytest.approx(0.1)


def test_welch_is_undefined_without_two_values_or_without_variance():
    one_seed = welch_compare([1.0], [1.0, 2.0])
    assert one_seed.difference == -0.5 and math.isnan(one_seed.low) and math.isnan(one_seed.p_value)
    no_spread = welch_compare([2.0, 2.0], [1.0, 1.0])
    assert no_spread.relative == 1.0 and math.isnan(no_spread.high)
    assert math.isnan(welch_compare([], [1.0, 2.0]).difference)


def test_a_negative_baseline_keeps_the_interval_ordered():
    result = welch_compare([-2.0, -3.0, -4.0], [-1.0, -2.0, -3.0])
    assert result.relative == pytest.approx(0.5)
    assert result.relative_low < result.relative < result.relative_high


def test_formatting():
    assert format_mean_std(Summary(12.0, 2.0, 3)) == "12 ± 2"
    assert format_mean_std(Summary(0.012345, 0.00123, 3)) == "0.0123 ± 0.00123"
    assert format_mean_std(Summary(math.nan, math.nan, 0)) == "n/a"
    # difference -3, half-width t_{0.975, 50/17} * sqrt(5/3) = 3.218 * 1.291 = 4.155 -> [-7.16, 1.16] / 12
    assert format_relative(welch_compare([8.0, 9.0, 10.0], [10.0, 12.0, 14.0])) == "-25% [-60%, +10%]"
    assert format_relative(welch_compare([2.0], [1.0, 3.0])) == "+0%"


def test_power_figures_match_the_textbook_and_a_simulation():
    # Cohen's tables: d = 1 needs 17 per group, d = 0.5 needs 64, for 80% power at two-sided 5%.
    assert seeds_needed(1.0, 1.0) == 17 and seeds_needed(0.5, 1.0) == 64 and seeds_needed(2.0, 4.0) == 64
    effect = minimum_detectable_effect(3.0, 5)
    assert t_test_power(effect, 3.0, 5) == pytest.approx(0.8, abs=1e-6)
    assert t_test_power(effect, 3.0, 4) < 0.8 < t_test_power(effect, 3.0, 6)
    rng = np.random.default_rng(0)
    base, arm = rng.normal(0.0, 3.0, (40_000, 5)), rng.normal(effect, 3.0, (40_000, 5))
    rejected = scipy_stats.ttest_ind(arm, base, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)  # binomial std at 40k trials: 0.002
    assert math.isnan(minimum_detectable_effect(0.0, 5)) and math.isnan(minimum_detectable_effect(1.0, 1))
    assert math.isnan(seeds_needed(1.0, 0.0)) and seeds_needed(1e-3, 1.0, limit=1000) == math.inf


def test_paired_power_matches_a_simulation():
    effect = minimum_detectable_effect(2.0, 5, paired=True)
    assert t_test_power(effect, 2.0, 5, paired=True) == pytest.approx(0.8, abs=1e-6)
    differences = np.random.default_rng(1).normal(effect, 2.0, (40_000, 5))
    rejected = scipy_stats.ttest_1samp(differences, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)
    assert seeds_needed(0.5, 1.0, paired=True) == 34  # one-sample t, d = 0.5
