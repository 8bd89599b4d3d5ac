"""Statistics over seeds against scipy's own tests (ttest_rel, ttest_ind(equal_var=False), ttest_1samp),
hand-computed cases and simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from xai_train.ablation.power import (
    minimum_detectable_effect,
    seeds_needed,
    t_test_power,
    welch_minimum_detectable_effect,
    welch_power,
)
from xai_train.ablation.stats import (
    Summary,
    benjamini_hochberg,
    compare,
    fieller_interval,
    format_mean_std,
    format_relative,
    holm,
    paired_compare,
    summarize,
    tost_paired,
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
    # Fieller: as r grows, the Welch t of arm - r*baseline tends to -mean_b/se_b = -2/sqrt(1/3) = -3.46 with df -> 2,
    # inside t_{0.975, 2} = 4.30: no r is rejected above, so the ratio is unbounded (3 seeds do not pin the baseline)
    assert math.isnan(result.relative_low) and math.isnan(result.relative_high)
    assert format_relative(result) == "+100% [unbounded]"
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
    result = welch_compare([-12.0, -13.0, -14.0], [-10.0, -11.0, -9.0])
    assert result.relative == pytest.approx(0.3)
    assert result.relative_low < result.relative < result.relative_high


def test_formatting():
    assert format_mean_std(Summary(12.0, 2.0, 3)) == "12 ± 2"
    assert format_mean_std(Summary(0.012345, 0.00123, 3)) == "0.0123 ± 0.00123"
    assert format_mean_std(Summary(math.nan, math.nan, 0)) == "n/a"
    # Fieller ends: where the Welch test of arm vs (1 + r) * baseline has p = 0.05 (checked below); dividing the
    # difference's interval [-7.16, 1.16] by 12 instead would give [-60%, +10%]
    assert format_relative(welch_compare([8.0, 9.0, 10.0], [10.0, 12.0, 14.0])) == "-25% [-45%, +16%]"
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


ARM = [11.2, 12.9, 10.4, 13.8, 12.1, 11.7, 12.6, 10.9]
BASE = [10.8, 12.0, 10.9, 12.7, 11.4, 11.9, 11.5, 10.2]


def test_paired_compare_equals_scipy_ttest_rel():
    result = paired_compare(ARM, BASE)
    reference = scipy_stats.ttest_rel(ARM, BASE)
    differences = np.subtract(ARM, BASE)
    half = scipy_stats.t.ppf(0.975, 7) * differences.std(ddof=1) / math.sqrt(8)
    assert result.test == "paired" and result.n == 8 and result.df == 7
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-12)
    assert result.difference == pytest.approx(differences.mean())
    assert (result.low, result.high) == (
        pytest.approx(differences.mean() - half),
        pytest.approx(differences.mean() + half),
    )
    ci = reference.confidence_interval(0.95)
    assert (result.low, result.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert result.std == pytest.approx(differences.std(ddof=1))
    assert result.mde == pytest.approx(minimum_detectable_effect(result.std, 8, paired=True))


def test_paired_fieller_interval_inverts_the_paired_t_test():
    # each end r: the paired test of arm against (1 + r) * baseline has p exactly 0.05
    result = paired_compare(ARM, BASE)
    for end in (result.relative_low, result.relative_high):
        p = scipy_stats.ttest_1samp(np.subtract(ARM, (1 + end) * np.asarray(BASE)), 0.0).pvalue
        assert p == pytest.approx(0.05, abs=1e-9)
    assert result.relative_low < result.relative < result.relative_high


def test_fieller_covers_the_true_ratio_95_percent_of_the_time():
    # paired seeds: a shared seed effect (std 2) plus each arm's own noise (std 1); true ratio 0.9
    rng = np.random.default_rng(3)
    trials, n, covered = 4000, 6, 0
    critical = scipy_stats.t.ppf(0.975, n - 1)
    seed_effect = rng.normal(0, 2.0, (trials, n))
    base = 10 + seed_effect + rng.normal(0, 1.0, (trials, n))
    arm = 9 + 0.9 * seed_effect + rng.normal(0, 1.0, (trials, n))
    for a, b in zip(arm, base, strict=True):
        cov = np.cov(a, b, ddof=1) / n
        low, high = fieller_interval(a.mean(), b.mean(), cov[0, 0], cov[1, 1], cov[0, 1], critical)
        covered += low <= 0.9 <= high
    assert covered / trials == pytest.approx(0.95, abs=0.01)  # binomial std at 4k trials: 0.0034


def test_welch_fieller_ends_invert_scipys_welch_test():
    arm, base = [8.0, 9.0, 10.0, 9.5, 8.5], [10.0, 12.0, 14.0, 11.0, 13.0]
    result = welch_compare(arm, base)
    assert result.p_value == pytest.approx(scipy_stats.ttest_ind(arm, base, equal_var=False).pvalue)
    for end in (result.relative_low, result.relative_high):
        p = scipy_stats.ttest_ind(arm, (1 + end) * np.asarray(base), equal_var=False).pvalue
        assert p == pytest.approx(0.05, abs=1e-9)


def test_compare_pairs_shared_seeds_and_falls_back_to_welch():
    arm = dict(enumerate(ARM)) | {99: 50.0}  # a seed the baseline lacks is left out of the pairs
    paired = compare(arm, dict(enumerate(BASE)))
    assert paired.test == "paired" and paired.n == 8
    assert paired.p_value == pytest.approx(scipy_stats.ttest_rel(ARM, BASE).pvalue)
    welch = compare({10 + s: v for s, v in enumerate(ARM)}, dict(enumerate(BASE)))
    assert welch.test == "welch" and (welch.n, welch.n_baseline) == (8, 8)
    assert welch.p_value == pytest.approx(scipy_stats.ttest_ind(ARM, BASE, equal_var=False).pvalue)


def test_tost_is_two_one_sided_scipy_t_tests():
    arm, base = np.asarray(ARM), np.asarray(BASE)
    for margin in (0.05, 0.10, 0.20):
        result = tost_paired(ARM, BASE, margin=margin)
        lower = scipy_stats.ttest_1samp(arm - (1 - margin) * base, 0.0, alternative="greater").pvalue
        upper = scipy_stats.ttest_1samp(arm - (1 + margin) * base, 0.0, alternative="less").pvalue
        assert (result.p_lower, result.p_upper) == (pytest.approx(lower), pytest.approx(upper))
        assert result.p_value == max(result.p_lower, result.p_upper)
        # both reject <=> the 90% Fieller interval lies inside +-margin
        inside = -margin < result.low and result.high < margin
        assert result.equivalent == (lower < 0.05 and upper < 0.05) == inside
    assert not tost_paired(ARM, BASE, margin=0.05).equivalent and tost_paired(ARM, BASE, margin=0.20).equivalent
    interval = paired_compare(ARM, BASE, confidence=0.90)
    result = tost_paired(ARM, BASE, margin=0.10)
    assert (result.low, result.high) == (interval.relative_low, interval.relative_high)
    assert result.margin_difference == pytest.approx(0.10 * base.mean())
    assert (result.difference_low, result.difference_high) == (interval.low, interval.high)


def test_holm_and_benjamini_hochberg_by_hand_and_against_scipy():
    p = [0.04, 0.01, 0.2, 0.03, 0.02]
    # sorted 0.01, 0.02, 0.03, 0.04, 0.2 times 5, 4, 3, 2, 1: 0.05, 0.08, 0.09, 0.08 -> 0.09 (monotone), 0.2
    assert holm(p) == pytest.approx([0.09, 0.05, 0.2, 0.09, 0.08])
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # min(1, 2 * 0.4), then max with min(1, 0.5)
    assert holm([0.03]) == [0.03]  # a family of one: unadjusted
    assert benjamini_hochberg(p) == pytest.approx(list(scipy_stats.false_discovery_control(p)))
    with_nan = holm([0.01, math.nan, 0.02])
    assert with_nan[0] == pytest.approx(0.02) and math.isnan(with_nan[1]) and with_nan[2] == pytest.approx(0.02)


def test_welch_power_matches_a_simulation_with_unequal_stds():
    effect = welch_minimum_detectable_effect(1.0, 8, 3.0, 5)
    assert welch_power(effect, 1.0, 8, 3.0, 5) == pytest.approx(0.8, abs=1e-6)
    rng = np.random.default_rng(2)
    a, b = rng.normal(effect, 1.0, (40_000, 8)), rng.normal(0.0, 3.0, (40_000, 5))
    rejected = scipy_stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.02)  # the noncentral-t approximation of Welch's test
    assert welch_compare(ARM, BASE).mde == pytest.approx(
        welch_minimum_detectable_effect(np.std(ARM, ddof=1), 8, np.std(BASE, ddof=1), 8)
    )
