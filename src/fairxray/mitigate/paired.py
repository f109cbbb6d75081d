"""Paired comparison of two prediction sets on the same test rows: the patient bootstrap draws
one set of patient resamples and scores both sides on each, so the interval of the difference
is free of the between-patient variation the two runs share.

Interface (kept small so that a shared implementation, ``fairxray.metrics.paired``, can replace
it one for one)::

    paired_difference(y, prob_a, prob_b, patients, groups, metric_fn, n_boot, seed)
        -> (diff, ci_low, ci_high, p_value)

``diff = metric_fn(b) - metric_fn(a)`` on the full data. The interval is the percentile interval
(95 %) of the resampled differences; the p-value is the two-sided test of "no difference"
(the null reference, a difference of 0) with the bootstrap standard error,
``2 * (1 - Phi(|diff| / sd(d*)))`` (:func:`bootstrap_p`). A count of replicates beyond 0 would
be floored at ``2 / (B + 1)``, too coarse to survive a multiple-testing correction over a
report's many rows. :func:`holm` corrects a family of p-values (Holm, 1979)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

LEVEL = 0.95


def patient_resamples(patients, n_boot: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_boot`` resamples: patients drawn with replacement, all their rows kept."""
    codes, inverse = np.unique(np.asarray(patients), return_inverse=True)
    rows_of = [np.flatnonzero(inverse == k) for k in range(len(codes))]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(codes), len(codes))
        out.append(np.concatenate([rows_of[k] for k in pick]))
    return out


def paired_difference(
    y,
    prob_a,
    prob_b,
    patients,
    groups,
    metric_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], float],
    n_boot: int,
    seed: int,
) -> tuple[float, float, float, float]:
    """``metric_fn(y, prob, groups)`` of b minus that of a, its interval and p-value."""
    y, groups = np.asarray(y), np.asarray(groups)
    prob_a, prob_b = np.asarray(prob_a), np.asarray(prob_b)
    diff = float(metric_fn(y, prob_b, groups) - metric_fn(y, prob_a, groups))
    if n_boot <= 0:
        return diff, float("nan"), float("nan"), float("nan")
    d = []
    for idx in patient_resamples(patients, n_boot, seed):
        d.append(
            metric_fn(y[idx], prob_b[idx], groups[idx])
            - metric_fn(y[idx], prob_a[idx], groups[idx])
        )
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return diff, float("nan"), float("nan"), float("nan")
    lo, hi = np.quantile(d, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return diff, float(lo), float(hi), bootstrap_p(diff, d)


def bootstrap_p(diff: float, replicates: np.ndarray) -> float:
    """Two-sided p of "no difference" from the bootstrap standard error (normal approximation);
    1 for a zero difference with zero spread, 0 for a non-zero one."""
    from scipy.stats import norm

    d = np.asarray(replicates, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) < 2 or not np.isfinite(diff):
        return float("nan")
    sd = float(d.std(ddof=1))
    if sd == 0:
        return 1.0 if diff == 0 else 0.0
    return float(2 * norm.sf(abs(diff) / sd))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# -- metric functions of (y, prob, groups) ---------------------------------------------------


def accuracy(y, prob, groups) -> float:
    return float((prob.argmax(axis=1) == y).mean())


def accuracy_gap(y, prob, groups) -> float:
    """max - min over groups of the group's accuracy."""
    hit = prob.argmax(axis=1) == y
    accs = [hit[groups == g].mean() for g in np.unique(groups)]
    return float(max(accs) - min(accs)) if len(accs) > 1 else float("nan")


def f1_gap(y, prob, groups) -> float:
    """max - min over groups of the group's macro-F1 (all classes of ``prob``)."""
    from sklearn.metrics import f1_score

    pred = prob.argmax(axis=1)
    labels = list(range(prob.shape[1]))
    f1s = [
        f1_score(y[groups == g], pred[groups == g], labels=labels, average="macro", zero_division=0)
        for g in np.unique(groups)
    ]
    return float(max(f1s) - min(f1s)) if len(f1s) > 1 else float("nan")


def eq_odds_gap(y, prob, groups) -> float:
    """Binary: max over {TPR, FPR} of the between-group range (fairlearn's
    ``equalized_odds_difference`` with ``agg="worst_case"``)."""
    pred = prob.argmax(axis=1)
    rates = []
    for g in np.unique(groups):
        m = groups == g
        pos, neg = m & (y == 1), m & (y == 0)
        if not pos.any() or not neg.any():
            return float("nan")
        rates.append((pred[pos].mean(), pred[neg].mean()))
    r = np.asarray(rates)
    return float(max(np.ptp(r[:, 0]), np.ptp(r[:, 1]))) if len(r) > 1 else float("nan")


METRICS: dict[str, Callable] = {
    "accuracy": accuracy,
    "accuracy_gap": accuracy_gap,
    "f1_gap": f1_gap,
}
