"""Paired comparisons on the same test patients: two cells (model x method, either task), a
mitigated run against its plain run (the report's mitigation section), or any two score arrays
under a metric function (:func:`paired_change`). The one engine for all of them.

Both sides' bootstrap replicates come from the *same* patient resamples (the same patients,
``n_boot`` and seed give the same weight matrix, :func:`fairxray.metrics.bootstrap.patient_weights`),
so replicate b of the difference is ``a_b - b_b`` and the patient-to-patient variation that both
share cancels. The seed terms of the two cells are independent draws (their salts differ).
Corrections: :func:`mark_significant` (Holm or BH over one family, the whole table).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from fairxray.metrics.bootstrap import patient_weights
from fairxray.metrics.inference import adjust, interval

COLUMNS = ("metric", "diff", "ci_low", "ci_high", "ci_method", "p_value")


def paired_bootstrap(
    point_a: Mapping[str, float],
    reps_a: Mapping[str, np.ndarray],
    point_b: Mapping[str, float],
    reps_b: Mapping[str, np.ndarray],
    *,
    keys: Sequence[str],
    level: float = 0.95,
    p_rule: str = "count",
) -> pd.DataFrame:
    """Difference ``a - b`` of each metric in ``keys`` with its paired-bootstrap interval and p-value.

    ``point_*``: the point estimates (``metrics.json`` / ``cell.json``); ``reps_*``: bootstrap
    replicates per key, ``[B]`` each, computed on the same patient resamples in the same order (the
    caller checks; :func:`fairxray.metrics.evaluate.pairing_digest` names them). Returns one row per
    key present on both sides: ``metric``, ``diff`` (``point_a - point_b``), ``ci_low``, ``ci_high``
    (percentile of ``reps_a - reps_b``; BC / normal where it excludes ``diff``, named in
    ``ci_method``), ``p_value`` of "no difference" over the finite replicates ``d``:
    ``p_rule="count"``: two-sided, ``min(1, 2 min(P*(d <= 0), P*(d >= 0)))`` with the
    ``(1 + count) / (1 + B)`` convention (never below ``2 / (1 + B)``); ``"normal"``:
    :func:`normal_p`, the bootstrap standard error's two-sided test (not floored, so a
    correction over many rows can still find an effect)."""
    if p_rule not in ("count", "normal"):
        raise ValueError(f"p_rule must be 'count' or 'normal', not {p_rule!r}")
    rows = []
    for k in keys:
        if k not in point_a or k not in point_b or k not in reps_a or k not in reps_b:
            continue
        d = np.asarray(reps_a[k], dtype=float) - np.asarray(reps_b[k], dtype=float)
        diff = float(point_a[k]) - float(point_b[k])
        lo, hi, how = interval(d, diff, level)
        fin = d[np.isfinite(d)]
        if p_rule == "normal":
            p = normal_p(diff, fin)
        elif fin.size and np.isfinite(diff):
            below = (1 + np.sum(fin <= 0)) / (1 + fin.size)
            above = (1 + np.sum(fin >= 0)) / (1 + fin.size)
            p = float(min(1.0, 2 * min(below, above)))
        else:
            p = float("nan")
        rows.append(
            {"metric": k, "diff": diff, "ci_low": lo, "ci_high": hi, "ci_method": how, "p_value": p}
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def normal_p(diff: float, replicates: np.ndarray) -> float:
    """Two-sided p of "no difference", ``2 (1 - Phi(|diff| / sd(d*)))`` with the bootstrap
    standard error (ddof 1) of the finite replicates; 1 for a zero difference with zero spread, 0
    for a non-zero one; NaN with fewer than two replicates."""
    d = np.asarray(replicates, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2 or not np.isfinite(diff):
        return float("nan")
    sd = float(d.std(ddof=1))
    if sd == 0:
        return 1.0 if diff == 0 else 0.0
    return float(2 * stats.norm.sf(abs(diff) / sd))


def mark_significant(table: pd.DataFrame, correction: str, alpha: float) -> pd.DataFrame:
    """Add ``p_adjusted`` (one family: the whole table) and ``significant`` (1.0 / 0.0)."""
    t = table.reset_index(drop=True).copy()
    adj = adjust({str(i): float(v) for i, v in enumerate(t["p_value"])}, correction)
    t["p_adjusted"] = [adj[str(i)] for i in range(len(t))]
    t["significant"] = [float(v < alpha) if np.isfinite(v) else np.nan for v in t["p_adjusted"]]
    return t


def paired_change(
    y,
    prob_a,
    prob_b,
    patients,
    groups,
    metric_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], float],
    n_boot: int,
    seed: int,
    level: float = 0.95,
    p_rule: str = "normal",
) -> tuple[float, float, float, float]:
    """The change from ``a`` to ``b`` in ``metric_fn(y, prob, groups)`` on the same rows:
    ``(diff, ci_low, ci_high, p_value)`` with ``diff = metric_fn(b) - metric_fn(a)``. Replicate r
    scores both sides on the rows of resample r of :func:`patient_weights` (each row repeated as
    often as its patient was drawn: the draws ``evaluate`` uses for the same patients, ``n_boot``
    and seed); interval and p-value as :func:`paired_bootstrap` (``p_rule`` "normal", as the
    mitigation section). NaN without replicates."""
    y, groups = np.asarray(y), np.asarray(groups)
    prob_a, prob_b = np.asarray(prob_a), np.asarray(prob_b)
    point = {"b": metric_fn(y, prob_b, groups), "a": metric_fn(y, prob_a, groups)}
    if n_boot <= 0:
        return float(point["b"] - point["a"]), float("nan"), float("nan"), float("nan")
    W = patient_weights(patients, n_boot, seed).astype(np.int64)
    reps = {"b": np.empty(n_boot), "a": np.empty(n_boot)}
    for r in range(n_boot):
        rows = np.repeat(np.arange(len(y)), W[r])
        reps["b"][r] = metric_fn(y[rows], prob_b[rows], groups[rows])
        reps["a"][r] = metric_fn(y[rows], prob_a[rows], groups[rows])
    t = paired_bootstrap(
        {"d": point["b"]}, {"d": reps["b"]}, {"d": point["a"]}, {"d": reps["a"]}, keys=["d"],
        level=level, p_rule=p_rule,
    ).iloc[0]  # fmt: skip
    return float(t["diff"]), float(t["ci_low"]), float(t["ci_high"]), float(t["p_value"])
