"""Drift of live feature windows against a model's training reference: PSI and a two-sample KS
test per feature, with p-values corrected for the number of features tested.

The reference is a profile kept with the model (``reference_profile``): per feature, 201 order
statistics (every half percentile, actual values, so ties and constant features stay exact) and
the row count, so drift needs no training data at serving time. KS against a profile treats those
points as the reference's empirical distribution (the statistic is within 0.005 of the one
against the full sample) and takes the p-value for the full row count; ``drift_between``
compares two samples exactly: ``scipy.stats.ks_2samp``'s statistic and its asymptotic p-value
(``drift_ks.py``: one vectorised pass per feature, a sample sorted once can be reused).

A feature is flagged when its corrected KS p-value is below ``alpha`` and its PSI is at least
``psi_threshold``: a significant *and* material shift. Live windows are autocorrelated (rolling
features of the same machines), which makes KS p-values too small on their own; the PSI floor
keeps a large window from flagging a shift too small to matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import kolmogorov

from pitstop.monitoring.baseline import PREDICTION, band_weights
from pitstop.monitoring.drift_ks import ks_sf, ks_sorted, sorted_columns

__all__ = [
    "PREDICTION",
    "FeatureDrift",
    "SortedReference",
    "adjust",
    "drift_between",
    "drift_conditioned",
    "drift_from_profile",
    "one_family",
    "reference_profile",
]

LEVELS = np.linspace(0.0, 1.0, 201)
PSI_BINS = 10


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    psi: float
    ks: float
    p_value: float
    p_adjusted: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.name,
            "psi": round(self.psi, 4),
            "ks": round(self.ks, 4),
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "drifted": self.drifted,
        }


def reference_profile(X: np.ndarray, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per column of ``X``: mean, std, row count and its order statistics at ``LEVELS``."""
    X = np.asarray(X, np.float64)
    quantiles = np.quantile(X, LEVELS, axis=0, method="inverted_cdf")  # (len(LEVELS), k), actual values
    return {
        name: {
            "mean": float(np.mean(X[:, i])),
            "std": float(np.std(X[:, i])),
            "n": int(X.shape[0]),
            "p01": float(np.quantile(X[:, i], 0.01)),
            "p50": float(np.quantile(X[:, i], 0.5)),
            "p99": float(np.quantile(X[:, i], 0.99)),
            "quantiles": [float(q) for q in quantiles[:, i]],
        }
        for i, name in enumerate(names)
    }


def adjust(p: np.ndarray, method: str = "holm") -> np.ndarray:
    """P-values corrected for testing ``len(p)`` hypotheses: ``bonferroni``, ``holm`` (both control
    the family-wise error) or ``bh`` (Benjamini-Hochberg, the false discovery rate)."""
    p = np.asarray(p, np.float64)
    m = len(p)
    if m == 0:
        return p
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    order = np.argsort(p)
    ranked = p[order]
    if method == "holm":
        adjusted = np.minimum(1.0, np.maximum.accumulate(ranked * (m - np.arange(m))))
    elif method == "bh":
        adjusted = np.minimum(1.0, np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1])
    else:
        raise ValueError(f"unknown correction {method!r}: bonferroni, holm or bh")
    out = np.empty(m)
    out[order] = adjusted
    return out


def _ks_pvalue(d: np.ndarray, n: int, m: int) -> np.ndarray:
    """Two-sided asymptotic p-value of the two-sample KS statistic for the live windows (their
    sizes count machines, often a few dozen): Kolmogorov's limiting distribution with Stephens'
    finite-size correction, within a few percent of ``drift_ks.ks_sf`` (scipy's) and cheap at
    any size."""
    en = max(1.0, n * m / (n + m))
    root = np.sqrt(en)
    return np.asarray(kolmogorov((root + 0.12 + 0.11 / root) * np.asarray(d, np.float64)), np.float64)


def _psi(inner: np.ndarray, ref_share: np.ndarray, values: np.ndarray) -> float:
    """PSI of sorted ``values`` over the bins split at ``inner`` (each bin ``[edge, next edge)``)."""
    counts = np.diff(np.concatenate([[0], np.searchsorted(values, inner, side="left"), [len(values)]]))
    share = counts / max(1, len(values))
    ref = np.clip(ref_share, 1e-4, None)
    cur = np.clip(share, 1e-4, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _profile_bins(quantiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PSI bins from a reference's percentiles: split at its deciles (once where they tie), and
    the reference's share in each bin from its CDF (so a constant or discrete feature gets its
    mass in the right bin)."""
    step = (len(LEVELS) - 1) // PSI_BINS
    inner = np.unique(quantiles[step:-step:step])
    below = LEVELS[np.searchsorted(quantiles, inner, side="left")]  # reference share below each edge
    return inner, np.diff(np.concatenate([[0.0], below, [1.0]]))


@dataclass(frozen=True)
class SortedReference:
    """A reference sample ready for ``drift_between``: each column sorted (finite values only)
    and its PSI bins. Sorting is most of the work on a large sample: build it once
    (``SortedReference.of``) to check many current samples against the same reference."""

    columns: list[np.ndarray]
    bins: list[tuple[np.ndarray, np.ndarray]]

    @classmethod
    def of(cls, X: np.ndarray) -> SortedReference:
        columns = sorted_columns(X)
        return cls(columns, [_profile_bins(_levels(c)) if len(c) else _NO_BINS for c in columns])


_NO_BINS = (np.empty(0), np.ones(1))


def _levels(r: np.ndarray) -> np.ndarray:
    """The sorted sample's order statistics at ``LEVELS`` (the nearest rank)."""
    return r[np.minimum((LEVELS * (len(r) - 1)).round().astype(int), len(r) - 1)]


def drift_from_profile(
    profile: dict[str, dict[str, Any]],
    names: list[str],
    current: np.ndarray,
    *,
    alpha: float = 0.05,
    psi_threshold: float = 0.2,
    correction: str = "holm",
) -> list[FeatureDrift]:
    """Drift of ``current`` (rows × ``names``) against a reference profile."""
    points = [np.asarray(profile[name]["quantiles"], np.float64) for name in names]
    n_ref = np.array([int(profile[name]["n"]) for name in names])
    d, psi, m = _statistics(points, [_profile_bins(q) for q in points], sorted_columns(current))
    p = np.array([_ks_pvalue(d[j : j + 1], n_ref[j], m[j])[0] if m[j] else 1.0 for j in range(len(names))])
    return _verdicts(names, psi, d, p, alpha, psi_threshold, correction)


def drift_between(
    reference: np.ndarray | SortedReference,
    current: np.ndarray,
    names: list[str],
    *,
    alpha: float = 0.05,
    psi_threshold: float = 0.2,
    correction: str = "holm",
) -> list[FeatureDrift]:
    """Drift of ``current`` against a reference *sample* (both rows × ``names``, the reference
    possibly sorted already): ``scipy.stats.ks_2samp``'s statistic and its asymptotic p-value
    (``method="asymp"``, what ``"auto"`` takes past 10,000 rows), and PSI over the reference's
    deciles."""
    ref = reference if isinstance(reference, SortedReference) else SortedReference.of(reference)
    d, psi, m = _statistics(ref.columns, ref.bins, sorted_columns(current))
    n = np.array([len(r) for r in ref.columns])
    size = np.round(n * m / np.maximum(n + m, 1))  # scipy's effective size for the two samples
    p = np.ones(len(names))
    for each in np.unique(size[(n > 0) & (m > 0)]):
        at = (size == each) & (n > 0) & (m > 0)
        p[at] = ks_sf(d[at], max(1, int(each)))
    return _verdicts(names, psi, d, p, alpha, psi_threshold, correction)


def _statistics(
    references: list[np.ndarray], bins: list[tuple[np.ndarray, np.ndarray]], current: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per feature, of sorted reference values (each an empirical distribution, with its PSI
    bins) and sorted current values: the KS statistic, PSI and the current values' count."""
    d, psi = np.zeros(len(current)), np.zeros(len(current))
    for j, (r, c) in enumerate(zip(references, current, strict=True)):
        if len(c) and len(r):
            d[j] = ks_sorted(r, c)
            psi[j] = _psi(*bins[j], c)
    return d, psi, np.array([len(c) for c in current])


def drift_conditioned(
    bands: dict[str, Any],
    names: list[str],
    current: np.ndarray,
    by: list[np.ndarray],
    machines: int,
    *,
    alpha: float = 0.05,
    psi_threshold: float = 0.2,
    correction: str = "holm",
) -> list[FeatureDrift]:
    """Drift of ``current`` (rows × ``names``) against the training fleet in the same place:
    the baseline's ``bands`` (cells of life stage and age, or age, see ``baseline.py``) mixed in
    the live window's own mix of ``by`` (per axis, each row's predicted RUL or age).

    Rows of one machine in a window are not independent (rolling features of one engine), so
    the KS p-value counts machines: the window's ``machines`` against the bands' machines
    (Kish's effective size of the weighted mixture). PSI bins are the mixture's deciles."""
    weights = band_weights(bands, by)
    used = [(w, band) for w, band in zip(weights, bands["bands"], strict=True) if w > 0 and band["n"]]
    d, psi, p = np.zeros(len(names)), np.zeros(len(names)), np.ones(len(names))
    if used:
        total = sum(w for w, _ in used)
        n_ref = 1.0 / max(1e-12, sum(w * w / band["machines"] for w, band in used) / total**2)
        deciles = np.arange(1, PSI_BINS) / PSI_BINS
        for j, (name, c) in enumerate(zip(names, sorted_columns(current), strict=True)):
            if len(c) == 0:
                continue
            parts = [(w / total, np.asarray(band["quantiles"][name], np.float64)) for w, band in used]
            points = np.unique(np.concatenate([*(q for _, q in parts), c]))
            cdf = _mixture_cdf(parts, points, "right")
            d[j] = float(np.max(np.abs(cdf - np.searchsorted(c, points, side="right") / len(c))))
            p[j] = _ks_pvalue(d[j : j + 1], int(n_ref), machines)[0]
            inner = np.unique(points[np.minimum(np.searchsorted(cdf, deciles, side="left"), len(points) - 1)])
            share = np.diff(np.concatenate([[0.0], _mixture_cdf(parts, inner, "left"), [1.0]]))
            psi[j] = _psi(inner, share, c)
    return _verdicts(names, psi, d, p, alpha, psi_threshold, correction)


def _mixture_cdf(
    parts: list[tuple[float, np.ndarray]], x: np.ndarray, side: Literal["left", "right"]
) -> np.ndarray:
    """The CDF at ``x`` of a mixture of empirical distributions (weight, sorted points)."""
    out = np.zeros(len(x))
    for w, q in parts:
        out += w * np.searchsorted(q, x, side=side) / len(q)
    return out


def one_family(
    results: list[FeatureDrift], *, alpha: float = 0.05, psi_threshold: float = 0.2, correction: str = "holm"
) -> list[FeatureDrift]:
    """Verdicts of tests made apart (the features, the prediction) corrected as one family: a
    window is one look at the fleet, however its tests were grouped."""
    return _verdicts(
        [r.name for r in results],
        np.array([r.psi for r in results]),
        np.array([r.ks for r in results]),
        np.array([r.p_value for r in results]),
        alpha,
        psi_threshold,
        correction,
    )


def _verdicts(
    names: list[str],
    psi: np.ndarray,
    d: np.ndarray,
    p: np.ndarray,
    alpha: float,
    psi_threshold: float,
    correction: str,
) -> list[FeatureDrift]:
    adjusted = adjust(p, correction)
    return [
        FeatureDrift(
            name,
            float(psi[j]),
            float(d[j]),
            float(p[j]),
            float(adjusted[j]),
            bool(adjusted[j] < alpha and psi[j] >= psi_threshold),
        )
        for j, name in enumerate(names)
    ]
