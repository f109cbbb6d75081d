"""Paired comparisons of two cells (model x method, or mitigation vs none) on the same test patients.

Both sides' bootstrap replicates come from the *same* patient resamples (the same patients,
``n_boot`` and seed give the same weight matrix, :func:`fairxray.metrics.bootstrap.patient_weights`),
so replicate b of the difference is ``a_b - b_b`` and the patient-to-patient variation that both
share cancels. The seed terms of the two cells are independent draws (their salts differ).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

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
) -> pd.DataFrame:
    """Difference ``a - b`` of each metric in ``keys`` with its paired-bootstrap interval and p-value.

    ``point_*``: the point estimates (``metrics.json`` / ``cell.json``); ``reps_*``: bootstrap
    replicates per key, ``[B]`` each, computed on the same patient resamples in the same order (the
    caller checks; :func:`fairxray.metrics.evaluate.pairing_digest` names them). Returns one row per
    key present on both sides: ``metric``, ``diff`` (``point_a - point_b``), ``ci_low``, ``ci_high``
    (percentile of ``reps_a - reps_b``; BC / normal where it excludes ``diff``, named in
    ``ci_method``), ``p_value``: two-sided, ``min(1, 2 min(P*(d <= 0), P*(d >= 0)))`` with the
    ``(1 + count) / (1 + B)`` convention over the finite replicates."""
    rows = []
    for k in keys:
        if k not in point_a or k not in point_b or k not in reps_a or k not in reps_b:
            continue
        d = np.asarray(reps_a[k], dtype=float) - np.asarray(reps_b[k], dtype=float)
        diff = float(point_a[k]) - float(point_b[k])
        lo, hi, how = interval(d, diff, level)
        fin = d[np.isfinite(d)]
        if fin.size and np.isfinite(diff):
            below = (1 + np.sum(fin <= 0)) / (1 + fin.size)
            above = (1 + np.sum(fin >= 0)) / (1 + fin.size)
            p = float(min(1.0, 2 * min(below, above)))
        else:
            p = float("nan")
        rows.append(
            {"metric": k, "diff": diff, "ci_low": lo, "ci_high": hi, "ci_method": how, "p_value": p}
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def mark_significant(table: pd.DataFrame, correction: str, alpha: float) -> pd.DataFrame:
    """Add ``p_adjusted`` (one family: the whole table) and ``significant`` (1.0 / 0.0)."""
    t = table.reset_index(drop=True).copy()
    adj = adjust({str(i): float(v) for i, v in enumerate(t["p_value"])}, correction)
    t["p_adjusted"] = [adj[str(i)] for i in range(len(t))]
    t["significant"] = [float(v < alpha) if np.isfinite(v) else np.nan for v in t["p_adjusted"]]
    return t
