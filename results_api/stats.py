"""The statistics behind the comparison table and the comparisons, all from scipy.stats.

- A cell (one experiment over seeds) is summarised by its count, mean, sample standard deviation, the 95 %
  confidence interval of the mean (Student t, n - 1 degrees of freedom), min and max. One run has no spread and no
  interval.
- Two cells are compared with Welch's t-test (unequal variances) and its 95 % interval for mean(b) - mean(a); a
  cell against a published number with a one-sample t-test and its interval. A side with fewer than 2 runs is never
  tested: its verdict is "cannot tell (n < 2)". Two sides with no spread at all (every seed gave the same number)
  have no t-test either: the sign of the difference decides.
- p-values of one response are Holm-adjusted together (family-wise error rate 5 %); the verdict reads the adjusted
  p-value.
- "Seeds for 80 % power": the smallest number of runs per side with which a two-sided t-test at 5 % would detect
  the observed difference 80 % of the time, if the observed difference and spread were the truth (noncentral t).

A verdict is evidence at a stated error rate, not proof: "no detectable difference" means these runs cannot tell
the two apart, not that they are equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# scipy.stats is imported in the functions that use it: it takes a second to import, and every `resnet-study`
# command imports this module (through the result models) whether it tests anything or not.

ALPHA = 0.05
CONFIDENCE = 0.95
POWER = 0.80
MAX_SEEDS = 100_000  # beyond this, "seeds for 80 % power" is reported as not reachable
VERDICTS = ("b lower", "b higher", "no detectable difference", "cannot tell (n < 2)")


@dataclass(frozen=True)
class Summary:
    """One cell: an experiment over its seeds (or one published number); its JSON shape in the service too."""

    count: int
    mean: float
    std: float | None  # sample standard deviation (ddof 1); None for one run
    ci_low: float | None  # 95 % Student-t interval of the mean; None for one run
    ci_high: float | None
    min: float
    max: float

    @property
    def half_width(self) -> float | None:
        return None if self.ci_low is None else (self.ci_high - self.ci_low) / 2


def summarize(values) -> Summary:
    from scipy import stats

    x = np.asarray(list(values), dtype=float)
    if len(x) == 0:
        raise ValueError("a cell needs at least one run")
    mean = float(x.mean())
    if len(x) < 2:
        return Summary(1, mean, None, None, None, mean, mean)
    std = float(x.std(ddof=1))
    if std == 0:
        low = high = mean
    else:
        low, high = stats.t.interval(CONFIDENCE, len(x) - 1, loc=mean, scale=stats.sem(x))
    return Summary(len(x), mean, std, float(low), float(high), float(x.min()), float(x.max()))


@dataclass(frozen=True)
class Test:
    diff: float  # mean(b) - mean(a)
    ci_low: float | None
    ci_high: float | None
    p_value: float | None  # None: not tested (n < 2 on a side, or no spread on either)
    seeds_for_power: int | None  # per side; None when not computable (n < 2, no spread, no difference)


def welch(a, b) -> Test:
    """Welch's t-test of mean(b) - mean(a), with its 95 % interval."""
    from scipy import stats

    a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    diff = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return Test(diff, None, None, None, None)
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    if pooled == 0:
        return Test(diff, diff, diff, None, None)
    res = stats.ttest_ind(b, a, equal_var=False)
    ci = res.confidence_interval(CONFIDENCE)
    return Test(diff, float(ci.low), float(ci.high), float(res.pvalue), seeds_for_power(abs(diff) / pooled, "two"))


def against(reference: float, b) -> Test:
    """One-sample t-test of mean(b) against a published number: mean(b) - reference, with its 95 % interval."""
    from scipy import stats

    b = np.asarray(list(b), dtype=float)
    diff = float(b.mean() - reference)
    if len(b) < 2:
        return Test(diff, None, None, None, None)
    std = float(b.std(ddof=1))
    if std == 0:
        return Test(diff, diff, diff, None, None)
    res = stats.ttest_1samp(b, popmean=reference)
    ci = res.confidence_interval(CONFIDENCE)
    return Test(diff, float(ci.low) - reference, float(ci.high) - reference, float(res.pvalue),
                seeds_for_power(abs(diff) / std, "one"))


def _power(effect: float, n: int, design: str) -> float:
    """Power of the two-sided t-test at ALPHA with n runs per side (two-sample) or n runs (one-sample)."""
    from scipy import stats

    if design == "two":
        df, nc = 2 * n - 2, effect * math.sqrt(n / 2)
    else:
        df, nc = n - 1, effect * math.sqrt(n)
    crit = stats.t.ppf(1 - ALPHA / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_for_power(effect: float, design: str = "two") -> int | None:
    """Smallest n >= 2 whose power reaches POWER for standardised effect `effect` (Cohen's d); None if no n up to
    MAX_SEEDS does (or the effect is 0)."""
    if not effect > 0:
        return None
    high = 2  # power grows with n: double until it reaches POWER, then bisect (scipy's noncentral t loses
    while _power(effect, high, design) < POWER:  # precision far beyond the answer, so never evaluate far past it)
        if high >= MAX_SEEDS:
            return None
        high *= 2
    low = max(2, high // 2)
    while low < high:
        mid = (low + high) // 2
        if _power(effect, mid, design) >= POWER:
            high = mid
        else:
            low = mid + 1
    return low


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment over the p-values given (None stays None and does not count)."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(tested)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(test: Test, p_adjusted: float | None, n_a: int | None, n_b: int) -> str:
    """b lower / b higher when the adjusted p-value is below ALPHA; never from a side with one run."""
    if n_b < 2 or (n_a is not None and n_a < 2):
        return "cannot tell (n < 2)"
    if p_adjusted is None:
        return "no detectable difference" if test.diff == 0 else ("b lower" if test.diff < 0 else "b higher")
    if p_adjusted < ALPHA:
        return "b lower" if test.diff < 0 else "b higher"
    return "no detectable difference"
