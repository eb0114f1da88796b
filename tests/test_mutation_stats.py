"""Mutation-testing tests for npo.stats: exact values at every boundary of the time rules."""

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from npo import stats
from npo.stats import Change, mwu_greater, significant_change, speedup_ci, verdict_band

OLD = [1.0, 2.0, 3.0, 4.0, 5.0]  # median 3
NEW = [5.5, 5.8, 6.0, 7.0, 8.0]  # median 6: every new sample above every old one


def test_constants():
    assert stats.ALPHA == 0.01 and stats.MIN_SAMPLES == 3


def test_mwu_greater_is_scipys_one_sided_p():
    want = mannwhitneyu(NEW, OLD, alternative="greater").pvalue
    assert mwu_greater(NEW, OLD) == want
    assert mwu_greater(tuple(NEW), tuple(OLD)) == want
    assert mwu_greater(OLD, NEW) == mannwhitneyu(OLD, NEW, alternative="greater").pvalue
    assert mwu_greater(OLD, NEW) > 0.99


@pytest.mark.parametrize("bad", [1.0, 0.5, -2.0, float("nan")])
def test_threshold_must_exceed_one(bad):
    with pytest.raises(ValueError, match=r"^threshold must be > 1, got "):
        significant_change(OLD, NEW, threshold=bad)


@pytest.mark.parametrize("old, new", [([], NEW), (OLD, []), (None, NEW), ([None, math.nan], NEW),
                                      (OLD, [math.inf, -math.inf])])
def test_no_data(old, new):
    ch = significant_change(old, new)
    assert math.isnan(ch.ratio) and math.isnan(ch.p)
    assert (ch.testable, ch.flagged, ch.rule) == (False, False, "no data")


def test_samples_are_cleaned_before_medians():
    ch = significant_change([None, 1.0, math.nan, 3.0, 2.0, math.inf], [4.0, 6.0, None, 8.0])
    assert ch.ratio == 3.0  # median 6 / median 2


def test_ratio_exactly_at_threshold_is_not_flagged():
    at = significant_change(OLD, NEW, threshold=2.0)
    assert at.ratio == 2.0 and at.testable and not at.flagged
    assert at.p == mannwhitneyu(NEW, OLD, alternative="greater").pvalue
    assert at.rule == "Mann-Whitney U, p < 0.01"
    above = significant_change(OLD, NEW, threshold=1.99)
    assert above.flagged and above.p < 0.01


def test_ratio_exactly_at_inverse_threshold_is_not_flagged():
    at = significant_change(NEW, OLD, threshold=2.0)
    assert at.ratio == 0.5 and not at.flagged
    # the p-value is taken in the direction of the change
    assert at.p == mannwhitneyu(NEW, OLD, alternative="greater").pvalue
    assert significant_change(NEW, OLD, threshold=1.99).flagged


def test_alpha_is_a_strict_bound():
    p = mwu_greater(NEW, OLD)
    assert not significant_change(OLD, NEW, threshold=1.5, alpha=p).flagged
    assert significant_change(OLD, NEW, threshold=1.5, alpha=p * 1.0001).flagged
    assert significant_change(OLD, NEW, alpha=0.05).rule == "Mann-Whitney U, p < 0.05"


def test_default_threshold_is_one_and_a_half():
    old = [1.0, 1.01, 1.02, 1.03, 1.04]  # median 1.02
    flagged = significant_change(old, [x * 1.6 for x in old])
    assert flagged.flagged
    assert not significant_change(old, [x * 1.4 for x in old]).flagged


def test_large_but_insignificant_change_is_not_flagged():
    ch = significant_change([1.0, 5.0, 9.0], [2.0, 10.0, 18.0], threshold=1.5)
    assert ch.ratio == 2.0 and ch.testable and ch.p > 0.01 and not ch.flagged


def test_three_samples_are_testable_two_are_not():
    three = significant_change([1.0, 1.1, 1.2], [3.0, 3.1, 3.2])
    assert three.testable and three.rule.startswith("Mann-Whitney")
    two = significant_change([1.0, 1.1], [3.0, 3.1, 3.2])
    assert two.testable is False and two.flagged is False and math.isnan(two.p)
    assert two.rule == "single sample: not testable"
    assert two.ratio == pytest.approx(3.1 / 1.05, abs=0)
    assert not significant_change([1.0, 1.1, 1.2], [3.0, 3.1]).testable


def test_zero_old_median_gives_nan_ratio_and_no_flag():
    ch = significant_change([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert math.isnan(ch.ratio) and not ch.flagged and ch.testable


@pytest.mark.parametrize("old_ci, new_ci, separate", [
    ((0.9, 1.1), (1.9, 2.1), True),   # new above
    ((1.9, 2.1), (0.9, 1.1), True),   # new below
    ((0.9, 1.9), (1.9, 2.1), False),  # touching: new lo == old hi
    ((1.9, 2.1), (0.9, 1.9), False),  # touching: new hi == old lo
    ((0.9, 2.0), (1.5, 2.5), False),  # overlapping
])
def test_confidence_intervals_without_samples(old_ci, new_ci, separate):
    old, new = [sum(old_ci) / 2], [sum(new_ci) / 2]
    ch = significant_change(old, new, threshold=1.5, old_ci=old_ci, new_ci=new_ci)
    assert ch.testable and math.isnan(ch.p)
    assert ch.rule == "confidence intervals disjoint"
    assert ch.flagged is separate


@pytest.mark.parametrize("old_ci, new_ci, old, new", [
    ((0.9, 1.1), (1.0, 3.0), 1.0, 2.0),   # overlapping, new reaches higher
    ((0.5, 1.5), (1.5, 2.5), 1.0, 2.0),   # touching from above
    ((1.5, 2.5), (0.5, 1.5), 2.0, 1.0),   # touching from below
    ((1.5, 3.0), (0.5, 2.0), 2.0, 1.0),   # overlapping, new starts lower
])
def test_large_ratio_with_overlapping_intervals_is_not_flagged(old_ci, new_ci, old, new):
    ch = significant_change([old], [new], threshold=1.5, old_ci=old_ci, new_ci=new_ci)
    assert ch.testable is True and ch.flagged is False
    assert ch.ratio in (2.0, 0.5)


def test_equal_medians_take_the_p_value_of_new_over_old():
    old, new = [1.0, 2.0, 5.0], [0.0, 2.0, 3.0]
    ch = significant_change(old, new)
    assert ch.ratio == 1.0 and ch.p == mwu_greater(new, old)
    assert mwu_greater(new, old) != mwu_greater(old, new)


def test_disjoint_intervals_still_need_a_large_ratio():
    ch = significant_change([1.0], [1.2], old_ci=(0.99, 1.01), new_ci=(1.19, 1.21))
    assert ch.testable and not ch.flagged and ch.ratio == pytest.approx(1.2, abs=1e-15)


@pytest.mark.parametrize("old_ci, new_ci", [(None, (1, 2)), ((1, 2), None),
                                            ((math.nan, 1.0), (2.0, 3.0)),
                                            ((0.0, 1.0), (2.0, math.inf)),
                                            ((0.0, 1.0), (-math.inf, 3.0)),
                                            ((0.0, math.nan), (2.0, 3.0))])
def test_incomplete_intervals_are_not_testable(old_ci, new_ci):
    ch = significant_change([1.0], [3.0], old_ci=old_ci, new_ci=new_ci)
    assert ch.testable is False and ch.flagged is False and ch.ratio == 3.0
    assert ch.rule == "single sample: not testable"


def test_samples_take_precedence_over_intervals():
    ch = significant_change(OLD, NEW, threshold=1.5, old_ci=(0, 1), new_ci=(0.5, 2))
    assert ch.rule.startswith("Mann-Whitney") and ch.flagged


def test_change_is_a_frozen_record():
    ch = Change(1.0, 0.5, True, False, "r")
    with pytest.raises(AttributeError):
        ch.ratio = 2.0


def _reference_ci(base_groups, groups, level, n_boot, seed):
    """The documented bootstrap, spelled out."""
    rng = np.random.default_rng(seed)

    def totals(gs):
        gs = [np.asarray([float(x) for x in g if x is not None and math.isfinite(x)]) for g in gs]
        point = sum(float(np.median(g)) for g in gs)
        boot = np.zeros(n_boot)
        for g in gs:
            boot += np.median(g[rng.integers(0, g.size, size=(n_boot, g.size))], axis=1)
        return point, boot

    pb, bb = totals(base_groups)
    pm, bm = totals(groups)
    lo, hi = np.quantile(bb / bm, [(1 - level) / 2, 1 - (1 - level) / 2])
    return pb / pm, float(lo), float(hi)


BASE = [[1.0, 1.2, 0.9, 1.1, 1.05], [10.0, 11.0, 9.5, 10.4, 10.2]]
METH = [[2.0, 2.1, 1.9, 2.3, 2.2], [3.0, 3.3, 2.9, 3.1, 3.2, 3.05]]


@pytest.mark.parametrize("level, n_boot, seed", [(0.95, 4000, 0), (0.5, 300, 1), (0.99, 50, 7)])
def test_speedup_ci_is_the_documented_bootstrap(level, n_boot, seed):
    got = speedup_ci(BASE, METH, level=level, n_boot=n_boot, seed=seed)
    want = _reference_ci(BASE, METH, level, n_boot, seed)
    assert got == want
    est, lo, hi = got
    assert est == (1.05 + 10.2) / (2.1 + 3.075)
    assert lo < est < hi


def test_speedup_ci_defaults():
    assert speedup_ci(BASE, METH) == _reference_ci(BASE, METH, 0.95, 4000, 0)
    assert speedup_ci(BASE, METH, seed=1) != speedup_ci(BASE, METH, seed=0)
    narrow = speedup_ci(BASE, METH, level=0.5)
    wide = speedup_ci(BASE, METH, level=0.99)
    assert wide[1] < narrow[1] and narrow[2] < wide[2]


def test_speedup_ci_single_samples_have_no_spread():
    est, lo, hi = speedup_ci([[2.0], [4.0]], [[1.0], [2.0]])
    assert (est, lo, hi) == (2.0, 2.0, 2.0)
    assert isinstance(lo, float) and isinstance(hi, float)


def test_speedup_ci_cleans_samples():
    assert speedup_ci([[2.0, None, math.nan]], [[1.0, math.inf]]) == (2.0, 2.0, 2.0)


@pytest.mark.parametrize("base, meth", [([[1.0], []], [[1.0]]), ([[1.0]], [[]]),
                                        ([[1.0]], [[0.0]]), ([[1.0]], [[-1.0]]),
                                        ([[None]], [[1.0]])])
def test_speedup_ci_undefined(base, meth):
    out = speedup_ci(base, meth)
    assert len(out) == 3 and all(math.isnan(v) for v in out)


@pytest.mark.parametrize("low, high, band, want", [
    (1.2, 1.5, 1.1, "wins"), (1.1, 1.5, 1.1, "tie"), (1.1000001, 1.5, 1.1, "wins"),
    (0.5, 0.9, 1.1, "loses"), (0.5, 1 / 1.1, 1.1, "tie"), (0.5, 1 / 1.1 - 1e-9, 1.1, "loses"),
    (0.95, 1.05, 1.1, "tie"), (math.nan, 2.0, 1.1, "tie"), (2.0, math.nan, 1.1, "tie"),
    (math.inf, math.inf, 1.1, "tie"), (-math.inf, 0.1, 1.1, "tie"), (1.3, 1.4, 1.25, "wins"),
    (1.2, 1.4, 1.25, "tie"), (0.5, 0.79, 1.25, "loses"), (0.5, 0.81, 1.25, "tie"),
])
def test_verdict_band(low, high, band, want):
    assert verdict_band(low, high, band) == want
