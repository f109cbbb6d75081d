"""Inference for every metric and gap of a cell (one model x method, one or more seeds).

Three pieces, each vectorised across replicates (the row-weight / per-replicate-code trick of
:mod:`fairxray.metrics.bootstrap`):

- **Combined interval.** Replicate b resamples the test *patients* once (weights ``W_b``), evaluates
  every seed on that same resample and averages over seeds; the seed-to-seed spread of the point
  estimates is added as an independent term ``t_b * sd_seed / sqrt(S)`` with ``t_b`` drawn from a
  Student t with ``S - 1`` degrees of freedom (``S`` = number of distinct runs), so
  ``Var = Var_patients(mean over seeds) + sd_seed^2 / S`` and a small ``S`` widens the interval
  instead of pretending the seed spread is known. Runs whose predictions are identical (zero-shot)
  are one run, not ``S`` copies. The interval is the percentile interval of the replicates; where it
  does not contain the point estimate (max-min gaps are biased upwards under resampling), the
  bias-corrected (BC) percentile interval; where that still excludes it, the normal interval
  ``estimate +- z sd*``. ``ci_methods`` says which key used which.
- **Permutation null of every gap.** H0: the errors do not depend on the sensitive attributes.
  Replicate b permutes the patients' sensitive values across patients (each patient's images move
  together, taking the values of the first image of the patient they are assigned), with the
  predictions and labels fixed; every seed sees the same permutation. ``p = (1 + #{T_null >= T}) /
  (1 + n_perm)`` with ``T`` the seed-mean gap (its absolute value for the signed paper F1_delta).
  ``null_mean`` is the mean gap under H0, ``excess = T - null_mean``. p-values are adjusted within
  a family (one run's or one cell's gaps of one report table: one row of the fairness table, or of
  the per-disease underdiagnosis table) by Holm or Benjamini-Hochberg (``metrics.correction``).
- **Minimum detectable effect.** For each gap, the smallest true gap that the test at hand detects
  with power ``mde_power`` at level ``alpha`` (unadjusted). Simulated: the permutation replicates
  are test sets with the observed images, group sizes and pooled error rates but no gap; a gap of
  size ``d`` is planted by adding ``d`` to the first group's per-group rates (macro-F1, TPR, FPR,
  ECE, AUROC, Brier, NLL; the upper half of the paper's subgroups for F1_delta), which makes every
  gap's true value ``d``; power(d) = P(T_d > the null's 1 - alpha quantile). The MDE is the
  smallest ``d`` on a fine grid whose power reaches ``mde_power`` (NaN above 1).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from fairxray.metrics.bootstrap import (
    confusion_stats,
    gap_values,
    group_stats,
    is_gap_key,
    patient_weights,
    replicate_metrics,
)
from fairxray.metrics.fairness import Groups

CORRECTIONS = ("holm", "bh")
# Shifted per-group statistics: every per-group rate a gap is built from.
_SHIFTED = ("macro_f1", "tpr", "fpr", "ece_binned", "ece_paper", "auroc_macro", "brier", "nll")
MDE_GRID = np.geomspace(0.002, 1.0, 66)  # planted gaps; neighbours 10 % apart, interpolated


@dataclass(frozen=True)
class Design:
    """What inference needs besides the runs' predictions: the rows' grouping and the settings."""

    patients: np.ndarray
    groupings: Mapping[str, Groups]
    paper_subgroups: Mapping[str, Groups]
    classes: tuple[str, ...]
    n_bins: int
    min_group_size: int
    n_boot: int
    n_perm: int
    ci_level: float
    alpha: float
    mde_power: float
    correction: str
    seed: int
    chunk: int = 100  # replicates per vectorised block (bounds memory on large test sets)


# Replicates per vectorised block: [block, N] float arrays stay near 32 MB (100 at the paper's
# 240 test images and at 25k; 40 at 100k), so time and memory stay linear in the test set.
BLOCK_CELLS = 4_000_000


def chunk_for(n_rows: int) -> int:
    """The replicate block size for ``n_rows`` test images (results do not depend on it)."""
    return max(8, min(100, BLOCK_CELLS // max(n_rows, 1)))


def distinct_runs(runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[int]:
    """Indices of the runs that differ: identical probabilities (a deterministic method) count once."""
    keep: list[int] = []
    for i, (_, prob) in enumerate(runs):
        if not any(np.array_equal(prob, runs[j][1]) for j in keep):
            keep.append(i)
    return keep


def _blocks(n: int, size: int):
    for start in range(0, n, max(size, 1)):
        yield slice(start, min(n, start + size))


def _metric_kwargs(d: Design) -> dict:
    return {
        "classes": d.classes,
        "groupings": d.groupings,
        "paper_subgroups": d.paper_subgroups,
        "n_bins": d.n_bins,
        "min_group_size": d.min_group_size,
    }


def bootstrap_replicates(runs, d: Design, W: np.ndarray | None = None):
    """Seed-mean bootstrap replicates ``{key: [B]}`` and per-group ``{(metric, attr, group): [B]}``,
    the same patient resample for every run (without the seed term; see :func:`add_seed_term`)."""
    W = patient_weights(d.patients, d.n_boot, d.seed) if W is None else W
    m_parts: dict[str, list] = {}
    g_parts: dict[tuple, list] = {}
    for sl in _blocks(len(W), d.chunk):
        m_acc: dict = {}
        g_acc: dict = {}
        for y, prob in runs:
            m, g = replicate_metrics(W[sl], y=y, prob=prob, **_metric_kwargs(d))
            for k, v in m.items():
                m_acc[k] = m_acc.get(k, 0) + v / len(runs)
            for k, v in g.items():
                g_acc[k] = g_acc.get(k, 0) + v / len(runs)
        for k, v in m_acc.items():
            m_parts.setdefault(k, []).append(v)
        for k, v in g_acc.items():
            g_parts.setdefault(k, []).append(v)
    return (
        {k: np.concatenate(v) for k, v in m_parts.items()},
        {k: np.concatenate(v) for k, v in g_parts.items()},
    )


def add_seed_term(reps: Mapping, seed_sd: Mapping, n_runs: int, seed: int, salt: str = "") -> dict:
    """``reps[k] + t_b * seed_sd[k] / sqrt(S)`` with ``t_b ~ t(S - 1)``, one draw per replicate shared
    by every key of the cell (seeded by ``seed`` and ``salt``: cells get independent draws)."""
    if n_runs < 2 or not reps:
        return dict(reps)
    B = len(next(iter(reps.values())))
    rng = np.random.default_rng([seed, zlib.crc32(salt.encode())])
    t = stats.t.rvs(n_runs - 1, size=B, random_state=rng)
    scale = 1.0 / np.sqrt(n_runs)
    return {k: v + t * np.nan_to_num(seed_sd.get(k, 0.0)) * scale for k, v in reps.items()}


def interval(samples, estimate: float, level: float) -> tuple[float, float, str]:
    """Percentile interval; the BC interval where the percentile one excludes ``estimate``; the
    normal interval ``estimate +- z sd`` where BC does too. Returns (low, high, method)."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size < 2 or not np.isfinite(estimate):
        return float("nan"), float("nan"), "none"
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(s, [a, 1.0 - a])
    if lo <= estimate <= hi:
        return float(lo), float(hi), "percentile"
    p0 = (np.sum(s < estimate) + 0.5 * np.sum(s == estimate)) / s.size
    p0 = np.clip(p0, 1.0 / (s.size + 1), s.size / (s.size + 1))
    z0, z = stats.norm.ppf(p0), stats.norm.ppf([a, 1.0 - a])
    lo, hi = np.quantile(s, stats.norm.cdf(2 * z0 + z))
    if lo <= estimate <= hi:
        return float(lo), float(hi), "bc"
    half = float(stats.norm.ppf(1.0 - a) * s.std(ddof=1))
    return estimate - half, estimate + half, "normal"


def permutation_sources(patients, n_perm: int, seed: int) -> np.ndarray:
    """``src[b, i]``: the row whose sensitive values row i takes in permutation b. Patients are
    permuted (``numpy.random.default_rng(seed)``); every row of a patient takes the values of the
    first row of its assigned patient, so a patient's images move together."""
    codes, uniques = pd.factorize(pd.Series(patients).astype(str), sort=True)
    first = np.full(len(uniques), -1)
    for i in range(len(codes) - 1, -1, -1):
        first[codes[i]] = i
    rng = np.random.default_rng(seed)
    perm = rng.permuted(np.tile(np.arange(len(uniques)), (n_perm, 1)), axis=1)
    return first[perm[:, codes]]


def _permuted(gr: Groups, src: np.ndarray) -> Groups:
    return Groups(gr.attribute, gr.labels, gr.codes[src])


def _plant(s: Mapping[str, np.ndarray], delta: float) -> dict:
    out = dict(s)
    for k in _SHIFTED:
        v = s[k].copy()
        v[:, 0] += delta
        out[k] = v
    return out


def _plant_sub(sub: Mapping | None, delta: float):
    if sub is None:
        return None
    v = sub["macro_f1_paper"].copy()
    v[:, v.shape[1] // 2 :] += delta
    return {**sub, "macro_f1_paper": v}


def _test_stat(key: str, v: np.ndarray) -> np.ndarray:
    """The one-sided statistic: the signed paper F1_delta is tested two-sided through its size."""
    return np.abs(v) if key.startswith("f1_gap/") and key.endswith("/paper") else v


def permutation_null(
    runs, d: Design, with_mde: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Seed-mean gaps under H0, ``{key: [n_perm]}``, and each gap's power on :data:`MDE_GRID`
    (``{key: [len(grid)]}``, empty without ``with_mde``) against the null's ``1 - alpha`` quantile."""
    src_all = permutation_sources(d.patients, d.n_perm, d.seed + 1)
    null_parts: dict[str, list] = {}
    stats_parts: list = []  # per block: attr -> list over runs of (s, sub)
    for sl in _blocks(d.n_perm, d.chunk):
        src = src_all[sl]
        ones = np.ones(src.shape)
        acc: dict = {}
        block: dict = {}
        for attr, gr in d.groupings.items():
            pg = _permuted(gr, src)
            sg = d.paper_subgroups.get(attr)
            for y, prob in runs:
                s = group_stats(ones, y, prob, pg, len(d.classes), d.n_bins, d.min_group_size)
                s = {k: s[k] for k in (*_SHIFTED, "n")}
                sub = None
                if sg is not None:
                    sub = confusion_stats(
                        ones,
                        y,
                        prob.argmax(1),
                        _permuted(sg, src),
                        len(d.classes),
                        d.min_group_size,
                    )
                    sub = {"macro_f1_paper": sub["macro_f1_paper"]}
                block.setdefault(attr, []).append((s, sub))
                for k, v in gap_values(s, sub, attr, d.classes).items():
                    acc[k] = acc.get(k, 0) + v / len(runs)
        stats_parts.append(block)
        for k, v in acc.items():
            null_parts.setdefault(k, []).append(v)
    null = {k: np.concatenate(v) for k, v in null_parts.items()}
    if not with_mde:
        return null, {}
    joined = {}  # attr -> per run (s, sub) over all permutations
    for attr in d.groupings:
        per_run = []
        for r in range(len(runs)):
            parts = [b[attr][r] for b in stats_parts]
            s = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
            sub = parts[0][1] and {
                "macro_f1_paper": np.concatenate([p[1]["macro_f1_paper"] for p in parts])
            }
            per_run.append((s, sub))
        joined[attr] = per_run
    return null, _power(null, joined, runs, d)


def _power(null, joined, runs, d: Design) -> dict[str, np.ndarray]:
    crit = {
        k: np.nanquantile(_test_stat(k, v), 1.0 - d.alpha) if np.isfinite(v).sum() else np.nan
        for k, v in null.items()
    }
    hits = {k: np.zeros(len(MDE_GRID)) for k in null}
    count = {k: np.zeros(len(MDE_GRID)) for k in null}
    for attr, per_run in joined.items():
        for j, delta in enumerate(MDE_GRID):
            acc: dict = {}
            for s, sub in per_run:
                planted = gap_values(_plant(s, delta), _plant_sub(sub, delta), attr, d.classes)
                for k, v in planted.items():
                    acc[k] = acc.get(k, 0) + v / len(runs)
            for k, v in acc.items():
                t = _test_stat(k, v)
                ok = np.isfinite(t)
                hits[k][j] += np.sum(t[ok] > crit[k])
                count[k][j] += ok.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return {k: hits[k] / count[k] for k in null}


def mde_from_power(power: np.ndarray, target: float) -> float:
    """The smallest grid gap whose power reaches ``target``, linearly interpolated; NaN if none."""
    ok = np.flatnonzero(np.nan_to_num(power) >= target)
    if ok.size == 0:
        return float("nan")
    j = int(ok[0])
    if j == 0:
        return float(MDE_GRID[0])
    p0, p1 = power[j - 1], power[j]
    frac = (target - p0) / (p1 - p0) if p1 > p0 else 1.0
    return float(MDE_GRID[j - 1] + frac * (MDE_GRID[j] - MDE_GRID[j - 1]))


def adjust(p_values: Mapping[str, float], method: str) -> dict[str, float]:
    """Holm (family-wise) or Benjamini-Hochberg (false discovery rate) adjusted p-values of one
    family; NaN p-values stay NaN and do not count towards the family size."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {method!r}")
    keys = [k for k, v in p_values.items() if np.isfinite(v)]
    p = np.array([p_values[k] for k in keys], dtype=float)
    out = {k: float("nan") for k in p_values}
    m = p.size
    if m == 0:
        return out
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    else:
        adj = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
    adj = np.minimum(adj, 1.0)
    for k, v in zip(np.asarray(keys)[order], adj, strict=True):
        out[str(k)] = float(v)
    return out


def table_of(key: str) -> str:
    """The report table, hence the correction family, of a gap: per-disease FNR gaps
    (underdiagnosis) form one, every other gap the fairness table."""
    return "underdiagnosis" if key.startswith("fnr_gap/") else "fairness"


def permutation_p(t0: float, null_stat: np.ndarray, null_gap: np.ndarray) -> tuple[float, float]:
    """``p = (1 + #{T_null >= T}) / (1 + n)`` over the finite null statistics (NaN when ``t0`` or
    every null value is undefined), and the mean of the finite null gaps."""
    tn = np.asarray(null_stat, dtype=float)
    fin = tn[np.isfinite(tn)]
    p = (
        float((1 + np.sum(fin >= t0 - 1e-12)) / (1 + fin.size))
        if np.isfinite(t0) and fin.size
        else np.nan
    )
    v = np.asarray(null_gap, dtype=float)
    return p, float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else np.nan


def gap_inference(
    point: Mapping[str, float], runs, d: Design, with_mde: bool = True
) -> dict[str, float]:
    """``K/p_value``, ``K/p_adjusted``, ``K/null_mean``, ``K/excess``, ``K/mde`` and
    ``K/significant`` (1.0/0.0 after correction within the gap's :func:`table_of`; NaN where the gap
    is undefined) for every gap K."""
    gaps = [k for k in point if is_gap_key(k)]
    if d.n_perm <= 0 or not gaps:
        return {}
    null, power = permutation_null(runs, d, with_mde)
    out: dict[str, float] = {}
    pv: dict[str, float] = {}
    for k in gaps:
        v = null.get(k, np.full(1, np.nan))
        t0 = float(_test_stat(k, np.asarray([point[k]]))[0])
        pv[k], null_mean = permutation_p(t0, _test_stat(k, v), v)
        out[f"{k}/p_value"] = pv[k]
        out[f"{k}/null_mean"] = null_mean
        out[f"{k}/excess"] = point[k] - null_mean
        if with_mde:
            out[f"{k}/mde"] = mde_from_power(power[k], d.mde_power) if k in power else np.nan
    adj: dict[str, float] = {}
    for fam in {table_of(k) for k in gaps}:
        adj.update(adjust({k: v for k, v in pv.items() if table_of(k) == fam}, d.correction))
    for k in gaps:
        out[f"{k}/p_adjusted"] = adj[k]
        out[f"{k}/significant"] = float(adj[k] < d.alpha) if np.isfinite(adj[k]) else np.nan
    return out


@dataclass
class CellInference:
    """Point estimates (mean over distinct runs), intervals and gap inference of one cell."""

    metrics: dict[str, float]
    by_group: dict[tuple[str, str, str], tuple[float, float, float]]  # value, low, high
    replicates: dict[str, np.ndarray]  # combined bootstrap replicates per key (paired comparisons)
    ci_methods: dict[str, str]  # keys whose interval is not the percentile one
    undefined: dict[str, int]  # key or group metric -> replicates in which it was undefined
    n_runs: int


def mean_points(points: Sequence[Mapping]) -> tuple[dict, dict]:
    keys = list(points[0])
    mean = {k: float(np.mean([p[k] for p in points])) for k in keys}
    sd = {
        k: float(np.std([p[k] for p in points], ddof=1)) if len(points) > 1 else float("nan")
        for k in keys
    }
    return mean, sd


def infer_cell(
    points: Sequence[Mapping[str, float]],
    group_points: Sequence[Mapping[tuple, float]],
    runs: Sequence[tuple[np.ndarray, np.ndarray]],
    d: Design,
    salt: str = "",
) -> CellInference:
    """Everything ``metrics.json`` / ``cell.json`` report for the distinct runs of one cell.

    ``points`` / ``group_points``: each run's point estimates (the scikit-learn / fairlearn values of
    :func:`fairxray.metrics.evaluate.point_metrics`); ``runs``: each run's ``(y, prob)`` on the same
    rows. The caller passes distinct runs only (:func:`distinct_runs`)."""
    point, sd = mean_points(points)
    gpoint, gsd = mean_points(group_points)
    metrics: dict[str, float] = {}
    reps: dict = {}
    greps: dict = {}
    if d.n_boot > 0:
        reps, greps = bootstrap_replicates(runs, d)
        reps = add_seed_term(reps, sd, len(runs), d.seed, salt)
        greps = add_seed_term(greps, gsd, len(runs), d.seed, salt + "/groups")
    methods: dict[str, str] = {}
    undefined: dict[str, int] = {}

    def ci(name, key, samples, value):
        if samples is None:
            return float("nan"), float("nan")
        lo, hi, how = interval(samples, value, d.ci_level)
        if how not in ("percentile", "none"):
            methods[name] = how
        bad = int(np.sum(~np.isfinite(samples)))
        if np.isfinite(value) and bad:
            undefined[name] = bad
        return lo, hi

    for k, v in point.items():
        lo, hi = ci(k, k, reps.get(k), v)
        metrics[k], metrics[f"{k}/ci_low"], metrics[f"{k}/ci_high"] = v, lo, hi
    by_group = {}
    for key, v in gpoint.items():
        metric, attr, label = key
        lo, hi = ci(f"{metric} {attr}={label}", key, greps.get(key), v)
        by_group[key] = (v, lo, hi)
    metrics.update(gap_inference(point, runs, d))
    if len(runs) > 1:
        metrics.update({f"seed_sd/{k}": v for k, v in sd.items()})
    return CellInference(metrics, by_group, reps, methods, undefined, len(runs))


def undefined_summary(undefined: Mapping[str, int], n_boot: int) -> list[str]:
    """One calm line per group (or gap attribute): ``undefined in 1/200 replicates for 0-59&F (8
    metrics)``; the interval of each uses the other replicates."""
    where: dict[str, list[int]] = {}
    for name, bad in undefined.items():
        w = name.split("=", 1)[1] if "=" in name else name.split("/")[1] if "/" in name else name
        where.setdefault(w, []).append(bad)
    return [
        f"bootstrap: undefined in {max(b)}/{n_boot} replicates for {w} ({len(b)} metric(s); a "
        "resampled group too small or lacking a class); intervals from the other replicates"
        for w, b in where.items()
    ]
