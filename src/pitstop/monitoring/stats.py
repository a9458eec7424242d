"""Significance tests for comparing two deployment arms, each with the sample size it needs.

Every comparison says which test it ran, the p-value, the effect (challenger minus champion), a
verdict and ``n_needed``: the sample size per arm at which the test would detect a stated effect
(``target``) with two-sided ``alpha`` and ``POWER``. While ``n`` is below ``n_needed``, "no evidence"
means "too few data", not "the same".

- ``compare_errors``: a metric where higher is worse (absolute error at failures), Welch's t-test
  (unequal variances); n needed for a difference of ``target`` (by default a fifth of the
  champion's mean) at the observed spread.
- ``compare_rates``: a proportion where higher is better (failures caught in time), Fisher's exact
  test; n needed by the normal approximation for a difference of ``target`` (0.2 by default).
- ``compare_distributions``: two samples with no better or worse (predictions), Mann-Whitney U;
  the effect is the difference in medians and the common-language effect size; n needed for a
  shift of a fifth of a standard deviation (Cohen's small effect), corrected for the test's
  asymptotic relative efficiency (3/pi against the t-test).
- ``compare_counts``: events over an exposure (work orders per scored reading), the exact
  conditional binomial test of two Poisson rates; n needed in exposure per arm for a rate ratio of
  1.5.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
WORSE, BETTER, NO_EVIDENCE, DIFFERENT = "worse", "better", "no evidence", "different"


@dataclass(frozen=True)
class Comparison:
    metric: str
    test: str
    champion: float | None  # the champion arm's value of the metric (mean, rate, median)
    challenger: float | None
    effect: float | None  # challenger minus champion (for counts: the rate ratio)
    p_value: float | None
    verdict: str  # worse | better | no evidence (or different, for a metric without a direction)
    n: tuple[int, int]  # (champion, challenger)
    n_needed: int | None  # per arm, to detect ``target`` at alpha and power
    target: str  # the effect ``n_needed`` is for, in words

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["n"] = {"champion": self.n[0], "challenger": self.n[1]}
        return out


def _z(alpha: float, power: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def _rounded(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _verdict(p: float | None, effect: float | None, alpha: float, higher_is_worse: bool) -> str:
    if p is None or effect is None or not p < alpha or effect == 0:
        return NO_EVIDENCE
    return WORSE if (effect > 0) == higher_is_worse else BETTER


def n_for_means(sd: float, delta: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Per arm, to detect a difference ``delta`` of two means with standard deviation ``sd``."""
    if not (sd > 0 and delta > 0) or not (math.isfinite(sd) and math.isfinite(delta)):
        return None
    return math.ceil(2 * (_z(alpha, power) * sd / delta) ** 2)


def n_for_proportions(p1: float, p2: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Per arm, to tell a proportion ``p2`` from ``p1`` (normal approximation)."""
    if p1 == p2:
        return None
    za, zb = float(stats.norm.ppf(1 - alpha / 2)), float(stats.norm.ppf(power))
    mean = (p1 + p2) / 2
    top = za * math.sqrt(2 * mean * (1 - mean)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil((top / (p1 - p2)) ** 2)


def compare_errors(
    metric: str,
    champion: np.ndarray,
    challenger: np.ndarray,
    alpha: float = ALPHA,
    target: float | None = None,
) -> Comparison:
    """Welch's t-test on a metric where higher is worse. ``target``: the difference to detect
    (default: a fifth of the champion's mean)."""
    a, b = np.asarray(champion, float), np.asarray(challenger, float)
    n = (len(a), len(b))
    mean_a = float(a.mean()) if len(a) else None
    mean_b = float(b.mean()) if len(b) else None
    delta = target if target is not None else (0.2 * mean_a if mean_a else None)
    spread = [x for x in (a, b) if len(x) >= 2]
    sd = float(np.sqrt(np.mean([x.var(ddof=1) for x in spread]))) if spread else math.nan
    p = effect = None
    if mean_a is not None and mean_b is not None:
        effect = mean_b - mean_a
    if min(n) >= 2:
        if a.var() == 0 and b.var() == 0:
            p = 1.0 if mean_a == mean_b else 0.0  # no spread: the means are the whole story
        else:
            p = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
    return Comparison(
        metric,
        "welch_t",
        _rounded(mean_a),
        _rounded(mean_b),
        _rounded(effect),
        _rounded(p, 6),
        _verdict(p, effect, alpha, higher_is_worse=True),
        n,
        n_for_means(sd, delta or math.nan, alpha),
        f"a difference of {delta:.3g} in the mean" if delta else "a fifth of the champion's mean",
    )


def compare_rates(
    metric: str,
    champion: tuple[int, int],
    challenger: tuple[int, int],
    alpha: float = ALPHA,
    target: float = 0.2,
) -> Comparison:
    """Fisher's exact test on (successes, trials) per arm, where a higher rate is better."""
    (ka, na), (kb, nb) = champion, challenger
    rate_a = ka / na if na else None
    rate_b = kb / nb if nb else None
    p = effect = None
    if na and nb:
        effect = rate_b - rate_a  # type: ignore[operator]
        p = float(stats.fisher_exact([[kb, nb - kb], [ka, na - ka]]).pvalue)
    base = rate_a if rate_a is not None else 0.5
    other = base - target if base - target >= 0 else base + target
    return Comparison(
        metric,
        "fisher_exact",
        _rounded(rate_a),
        _rounded(rate_b),
        _rounded(effect),
        _rounded(p, 6),
        _verdict(p, effect, alpha, higher_is_worse=False),
        (na, nb),
        n_for_proportions(base, other, alpha),
        f"a difference of {target:g} in the rate (from {base:.2f})",
    )


def compare_distributions(
    metric: str, champion: np.ndarray, challenger: np.ndarray, alpha: float = ALPHA
) -> Comparison:
    """Mann-Whitney U (two-sided): do the two samples come from one distribution?"""
    a, b = np.asarray(champion, float), np.asarray(challenger, float)
    p = effect = None
    if len(a) and len(b):
        effect = float(np.median(b) - np.median(a))
        if np.ptp(np.concatenate([a, b])) == 0:
            p = 1.0
        else:
            p = float(stats.mannwhitneyu(b, a, alternative="two-sided").pvalue)
    verdict = DIFFERENT if p is not None and p < alpha else NO_EVIDENCE
    small = 0.2  # Cohen's small effect, in standard deviations
    needed = math.ceil(2 * (_z(alpha, POWER) / small) ** 2 / (3 / math.pi))
    return Comparison(
        metric,
        "mann_whitney_u",
        _rounded(float(np.median(a))) if len(a) else None,
        _rounded(float(np.median(b))) if len(b) else None,
        _rounded(effect),
        _rounded(p, 6),
        verdict,
        (len(a), len(b)),
        needed,
        "a shift of 0.2 standard deviations",
    )


def compare_counts(
    metric: str, champion: tuple[int, int], challenger: tuple[int, int], alpha: float = ALPHA
) -> Comparison:
    """Events over exposure per arm ((events, exposure)): the exact conditional test of two
    Poisson rates (the challenger's share of all events against its share of the exposure)."""
    (ka, ea), (kb, eb) = champion, challenger
    rate_a = ka / ea if ea else None
    rate_b = kb / eb if eb else None
    p = ratio = None
    if ea and eb and ka + kb:
        p = float(stats.binomtest(kb, ka + kb, eb / (ea + eb)).pvalue)
        ratio = (rate_b / rate_a) if rate_a else math.inf  # type: ignore[operator]
    verdict = DIFFERENT if p is not None and p < alpha else NO_EVIDENCE
    needed = None
    if rate_a:  # exposure per arm for a ratio of 1.5 (normal approximation, log rates)
        needed = math.ceil(_z(alpha, POWER) ** 2 * (1 + 1 / 1.5) / (rate_a * math.log(1.5) ** 2))
    return Comparison(
        metric,
        "poisson_exact",
        _rounded(rate_a, 6),
        _rounded(rate_b, 6),
        _rounded(ratio),
        _rounded(p, 6),
        verdict,
        (ea, eb),
        needed,
        "a rate ratio of 1.5",
    )
