"""The statistics behind every published claim about time.

Ground floor: imports nothing from ``npo``. Three rules use it:

* history (:mod:`npo.report.history`): a time change between two commits is
  flagged only if it is larger than a threshold *and* significant
  (:func:`significant_change`);
* the gate (:mod:`npo.gate`): the same test on ratio samples measured in one
  run;
* the honesty table (:mod:`npo.report.honesty`): a wall-clock verdict is
  "wins" or "LOSES" only when the confidence interval of the speed-up lies
  outside the tie band (:func:`speedup_ci`, :func:`verdict_band`).

Single samples never yield significance: with fewer than :data:`MIN_SAMPLES`
samples on a side, :func:`significant_change` says "not testable".

>>> r = significant_change([1.0, 1.02, 0.99, 1.01, 1.0], [2.0, 2.1, 1.98, 2.02, 2.05])
>>> round(r.ratio, 2), r.flagged
(2.02, True)
>>> significant_change([1.0], [3.0]).flagged
False
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ALPHA",
    "MIN_SAMPLES",
    "Change",
    "drift",
    "mwu_greater",
    "paired_ratio_ci",
    "significant_change",
    "speedup_ci",
    "verdict_band",
]

#: Significance level of every time test.
ALPHA = 0.01
#: Fewer samples than this on either side: no significance test, no flag.
MIN_SAMPLES = 3


def _clean(xs) -> list[float]:
    return [float(x) for x in (xs or ()) if x is not None and math.isfinite(float(x))]


def mwu_greater(new: Sequence[float], old: Sequence[float]) -> float:
    """One-sided Mann-Whitney U p-value for "``new`` tends to be larger than ``old``"."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(list(new), list(old), alternative="greater").pvalue)


@dataclass(frozen=True)
class Change:
    """Outcome of :func:`significant_change`."""

    ratio: float  # median(new) / median(old)
    p: float  # one-sided p-value in the direction of the change (nan if not testable)
    testable: bool
    flagged: bool
    rule: str


def significant_change(old, new, *, threshold: float = 1.5, alpha: float = ALPHA,
                       old_ci=None, new_ci=None) -> Change:
    """Is ``new`` different from ``old`` by more than ``threshold``x, significantly?

    With raw samples on both sides (at least :data:`MIN_SAMPLES` each) the test
    is a one-sided Mann-Whitney U in the direction of the change at level
    ``alpha``. Without samples but with confidence intervals (asv's 99% CI),
    the intervals must not overlap. Otherwise the change is not testable and
    never flagged. In every case the median ratio must also exceed
    ``threshold`` (or fall below its inverse).
    """
    if not threshold > 1:
        raise ValueError(f"threshold must be > 1, got {threshold}")
    a, b = _clean(old), _clean(new)
    if not a or not b:
        return Change(math.nan, math.nan, False, False, "no data")
    ratio = statistics.median(b) / statistics.median(a) if statistics.median(a) > 0 else math.nan
    big = math.isfinite(ratio) and (ratio > threshold or ratio < 1 / threshold)
    if len(a) >= MIN_SAMPLES and len(b) >= MIN_SAMPLES:
        p = mwu_greater(b, a) if ratio >= 1 else mwu_greater(a, b)
        return Change(ratio, p, True, big and p < alpha, f"Mann-Whitney U, p < {alpha}")
    if old_ci is not None and new_ci is not None and all(
        math.isfinite(float(v)) for v in (*old_ci, *new_ci)
    ):
        separate = float(new_ci[0]) > float(old_ci[1]) or float(new_ci[1]) < float(old_ci[0])
        return Change(ratio, math.nan, True, big and separate, "confidence intervals disjoint")
    return Change(ratio, math.nan, False, False, "single sample: not testable")


def speedup_ci(base_groups: Sequence[Sequence[float]], groups: Sequence[Sequence[float]], *,
               level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Speed-up ``sum(medians of base_groups) / sum(medians of groups)`` with a bootstrap CI.

    Each argument is a list of sample groups whose medians add up to a total
    (for example ``[setup_samples, solve_samples]``). The bootstrap resamples
    every group independently (seeded, so tables are reproducible) and
    returns ``(estimate, low, high)`` at ``level``. Groups with one sample
    contribute their value without spread.
    """
    rng = np.random.default_rng(seed)

    def totals(gs):
        gs = [np.asarray(_clean(g)) for g in gs]
        if any(g.size == 0 for g in gs):
            return None, None
        point = sum(float(np.median(g)) for g in gs)
        boot = np.zeros(n_boot)
        for g in gs:
            idx = rng.integers(0, g.size, size=(n_boot, g.size))
            boot += np.median(g[idx], axis=1)
        return point, boot

    p_base, b_base = totals(base_groups)
    p_m, b_m = totals(groups)
    if p_base is None or p_m is None or p_m <= 0:
        return math.nan, math.nan, math.nan
    ratios = b_base / b_m
    tail = (1 - level) / 2
    lo, hi = np.quantile(ratios, [tail, 1 - tail])
    return p_base / p_m, float(lo), float(hi)


def paired_ratio_ci(base: Sequence[float], other: Sequence[float], *, level: float = 0.95,
                    n_boot: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Speed-up from paired rounds: the median of ``base[k] / other[k]`` with a bootstrap CI.

    Round k of both was taken at the same time (interleaved), so a load that slows the
    machine for a while divides out of each ratio. The bootstrap resamples rounds (seeded)
    and returns ``(estimate, low, high)`` at ``level``; NaN without a complete pair.
    """
    b, o = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    n = min(b.size, o.size)
    b, o = b[:n], o[:n]
    ok = np.isfinite(b) & np.isfinite(o) & (o > 0)
    ratios = b[ok] / o[ok]
    if ratios.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, ratios.size, size=(n_boot, ratios.size))
    boot = np.median(ratios[idx], axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    return float(np.median(ratios)), float(lo), float(hi)


def drift(samples: Sequence[float]) -> float:
    """How far a series of round samples moved: min of the last two / min of the first two
    (1.0 means steady; NaN under three samples). The minimum of two ignores one slow sample
    (the first solve after a setup is often one)."""
    x = np.asarray(samples, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 3:
        return math.nan
    return float(np.min(x[-2:]) / np.min(x[:2]))


def verdict_band(low: float, high: float, band: float) -> str:
    """``"wins"``, ``"loses"`` or ``"tie"`` for a speed-up CI ``[low, high]``.

    Wins only when the whole interval lies above ``band`` (e.g. 1.1), loses
    only when it lies below ``1/band``; anything touching the band is a tie.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return "tie"
    if low > band:
        return "wins"
    if high < 1 / band:
        return "loses"
    return "tie"
