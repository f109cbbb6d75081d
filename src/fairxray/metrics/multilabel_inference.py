"""One multi-label cell (one model x method, one or more seeds): thresholds chosen on each seed's
validation predictions, point estimates, combined seed x patient bootstrap intervals and the
permutation null of every gap, with the machinery of :mod:`fairxray.metrics.inference`
(patient resamples, permutations, the seed term, interval fallbacks, Holm/BH) applied to the
sufficient statistics of :mod:`fairxray.metrics.multilabel`.

Thresholds stay fixed inside every resample (they are part of the model, chosen on validation);
the test labels enter only through the metrics. Replicates are computed in blocks of ``chunk``
patients' weight vectors, so memory is bounded on a 25,596-image test set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fairxray.metrics import fairness as fm
from fairxray.metrics import multilabel as ml
from fairxray.metrics.bootstrap import patient_weights
from fairxray.metrics.inference import (
    add_seed_term,
    adjust,
    distinct_runs,
    interval,
    mean_points,
    permutation_p,
    permutation_sources,
)
from fairxray.metrics.predictions import prob_columns, target_columns, validate_predictions


@dataclass(frozen=True)
class Options:
    classes: tuple[str, ...]
    sensitive: tuple[str, ...]
    threshold_rule: str = "max_f1"
    target_sensitivity: float = 0.8
    n_boot: int = 200
    n_perm: int = 0
    ci_level: float = 0.95
    min_group_size: int = 5
    correction: str = "holm"
    alpha: float = 0.05
    seed: int = 0
    n_bins: int = ml.N_BINS
    chunk: int = 50
    levels: dict = field(default_factory=dict)


@dataclass
class Result:
    metrics: dict[str, float]
    by_group: pd.DataFrame
    warnings: list[str]
    meta: dict
    replicates: dict[str, np.ndarray]


def arrays(df: pd.DataFrame, o: Options, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``Y`` [N, L] (NaN = masked) and ``P`` [N, L] of one multilabel table."""
    validate_predictions(df, o.classes, o.sensitive, source, task="multilabel")
    return (
        df[target_columns(o.classes)].to_numpy(dtype=np.float64),
        df[prob_columns(o.classes)].to_numpy(dtype=np.float64),
    )


def groupings(df: pd.DataFrame, o: Options) -> dict[str, fm.Groups]:
    sens = pd.DataFrame({c: df[c].astype(str).to_numpy() for c in o.sensitive})
    levels = {c: list(o.levels[c]) for c in o.sensitive if c in o.levels}
    out = {c: fm.group_codes(sens[[c]], levels=levels) for c in o.sensitive}
    if len(o.sensitive) > 1:
        inter = fm.group_codes(sens, levels=levels)
        out[inter.attribute] = inter
    return out


class _Cell:
    """The rows' patients and groups, each run's :class:`~fairxray.metrics.multilabel.Resampler`
    and its per-group patient matrices."""

    def __init__(self, df, runs, o: Options):
        self.o = o
        codes, uniques = pd.factorize(df["patient_id"].astype(str), sort=True)
        self.patients, self.codes, self.P = np.asarray(uniques), codes, len(uniques)
        self.groupings = groupings(df, o)
        N = len(df)
        self.all = {"all": fm.Groups("all", ("all",), np.zeros(N, dtype=np.int64))}
        self.lay = ml.Layout(tuple(o.classes), self.groupings, o.min_group_size)
        self.res = [ml.Resampler(Y, P, t, codes, self.P, o.n_bins) for Y, P, t in runs]
        both = {**self.all, **self.groupings}
        self.mats = [
            {
                a: [r.patient_matrix(gr.mask(g)) for g in range(len(gr.labels))]
                for a, gr in both.items()
            }
            for r in self.res
        ]
        self.whole = [r.patient_matrix() for r in self.res]
        # Under a permutation every image of a patient takes the group of the patient's first row.
        _, first = np.unique(codes, return_index=True)
        self.first_code = {a: gr.codes[first] for a, gr in self.groupings.items()}

    def boot_stats(self, r: int, W: np.ndarray) -> dict:
        return {
            a: self.res[r].stats(ml.group_sums(mats, [W] * len(mats)))
            for a, mats in self.mats[r].items()
        }

    def perm_stats(self, r: int, assigned: np.ndarray) -> dict:
        """Per-group statistics when patient p is in group ``assigned[a][b, p]``."""
        out = {}
        for a, gr in self.groupings.items():
            G = len(gr.labels)
            Z = [(assigned[a] == g).astype(np.float64) for g in range(G)]
            out[a] = self.res[r].stats(ml.group_sums([self.whole[r]] * G, Z))
        return out


def _mean_over_runs(cell: _Cell, fn, arg, gaps_only: bool = False):
    m_acc: dict = {}
    g_acc: dict = {}
    R = len(cell.res)
    for r in range(R):
        st = fn(r, arg)
        if gaps_only:
            st.pop("all", None)
        m, g = ml.keys_from_stats(st, cell.lay)
        for k, v in m.items():
            if not gaps_only or ml.is_gap_key(k):
                m_acc[k] = m_acc.get(k, 0) + v / R
        for k, v in g.items():
            g_acc[k] = g_acc.get(k, 0) + v / R
    return m_acc, ({} if gaps_only else g_acc)


def _exact_point(cell: _Cell, r: int, Y, P) -> tuple[dict, dict]:
    """Point estimates: the counts of the resampler at unit weights, the AUROC exact."""
    st = cell.boot_stats(r, np.ones((1, cell.P)))
    for a, gr in {**cell.all, **cell.groupings}.items():
        for g in range(len(gr.labels)):
            mk = gr.mask(g)
            for j in range(Y.shape[1]):
                st[a]["auroc"][0, g, j] = ml.auroc(Y[mk, j], P[mk, j])
    m, bg = ml.keys_from_stats(st, cell.lay)
    return {k: float(v[0]) for k, v in m.items()}, {k: float(v[0]) for k, v in bg.items()}


def _blocks(n: int, size: int):
    for start in range(0, n, max(size, 1)):
        yield slice(start, min(n, start + size))


def _bootstrap(cell: _Cell, o: Options) -> tuple[dict, dict]:
    W_all = patient_weights(cell.patients, o.n_boot, o.seed)  # [B, P]: the multi-class draws
    parts_m: dict = {}
    parts_g: dict = {}
    for sl in _blocks(o.n_boot, o.chunk):
        m, g = _mean_over_runs(cell, cell.boot_stats, W_all[sl])
        for k, v in m.items():
            parts_m.setdefault(k, []).append(v)
        for k, v in g.items():
            parts_g.setdefault(k, []).append(v)
    return (
        {k: np.concatenate(v) for k, v in parts_m.items()},
        {k: np.concatenate(v) for k, v in parts_g.items()},
    )


def _null(cell: _Cell, o: Options) -> dict[str, np.ndarray]:
    perm = permutation_sources(cell.patients, o.n_perm, o.seed + 1)  # [n_perm, P] patient index
    parts: dict = {}
    for sl in _blocks(o.n_perm, o.chunk):
        assigned = {a: fc[perm[sl]] for a, fc in cell.first_code.items()}
        m, _ = _mean_over_runs(cell, cell.perm_stats, assigned, gaps_only=True)
        for k, v in m.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _small_groups(cell: _Cell) -> list[str]:
    small = [
        f"{a}={label} ({int(n)} images)"
        for a, gr in cell.groupings.items()
        for label, n in zip(gr.labels, gr.sizes, strict=True)
        if n < max(cell.o.min_group_size, 1)
    ]
    if not small:
        return []
    return [
        f"{len(small)} group(s) below min_group_size {cell.o.min_group_size} give NaN: "
        + ", ".join(small)
    ]


def _undefined(gpoint: dict, cell: _Cell) -> list[str]:
    """One line for the per-group rates left undefined in groups of sufficient size (a label with
    no positive, or no negative, there)."""
    small = {
        (a, label)
        for a, gr in cell.groupings.items()
        for label, n in zip(gr.labels, gr.sizes, strict=True)
        if n < max(cell.o.min_group_size, 1)
    }
    bad = sorted(
        f"{m} {a}={g}"
        for (m, a, g), v in gpoint.items()
        if not np.isfinite(v) and (a, g) not in small and m.split("/")[0] in ("auroc", *ml.RATES)
    )
    if not bad:
        return []
    shown = ", ".join(bad[:8]) + (f", ... ({len(bad) - 8} more)" if len(bad) > 8 else "")
    return [f"{len(bad)} per-group value(s) undefined (no positive or no negative): {shown}"]


def infer(
    tests: Sequence[pd.DataFrame],
    vals: Sequence[pd.DataFrame],
    o: Options,
    sources: Sequence[str],
    salt: str = "",
) -> Result:
    """Every metric, interval and gap test of one cell; ``vals[i]`` is the validation table of the
    run ``tests[i]`` (its thresholds come from there only)."""
    runs, thresholds, msgs = [], [], []
    for df, val, src in zip(tests, vals, sources, strict=True):
        Yv, Pv = arrays(val, o, f"{src} (validation)")
        t = ml.choose_thresholds(Yv, Pv, o.threshold_rule, o.target_sensitivity)
        for name in np.asarray(o.classes)[np.isnan(t)]:
            msgs.append(f"{name}: no positive validation image; no threshold, rates NaN")
        Y, P = arrays(df, o, src)
        runs.append((Y, P, t))
        thresholds.append({c: float(v) for c, v in zip(o.classes, t, strict=True)})
    ids = tests[0]["image_id"].astype(str).to_numpy()
    for df, src in zip(tests[1:], sources[1:], strict=True):
        if not np.array_equal(df["image_id"].astype(str).to_numpy(), ids):
            from fairxray.errors import UserError

            raise UserError(f"{src}: image_id rows differ from {sources[0]}; seeds must share rows")
    keep = distinct_runs([(None, np.c_[P, t[None, :].repeat(len(P), 0)]) for _, P, t in runs])
    runs = [runs[i] for i in keep]
    cell = _Cell(tests[0], runs, o)
    pts = [_exact_point(cell, r, Y, P) for r, (Y, P, _) in enumerate(runs)]
    point, sd = mean_points([p[0] for p in pts])
    gpoint, gsd = mean_points([p[1] for p in pts])
    reps, greps = ({}, {})
    if o.n_boot > 0:
        reps, greps = _bootstrap(cell, o)
        reps = add_seed_term(reps, sd, len(runs), o.seed, salt)
        greps = add_seed_term(greps, gsd, len(runs), o.seed, salt + "/groups")
    metrics, methods = {}, {}
    for k, v in point.items():
        lo, hi, how = interval(reps[k], v, o.ci_level) if k in reps else (np.nan, np.nan, "none")
        metrics[k], metrics[f"{k}/ci_low"], metrics[f"{k}/ci_high"] = v, lo, hi
        if how not in ("percentile", "none"):
            methods[k] = how
    by_group = {}
    for key, v in gpoint.items():
        lo, hi, _ = interval(greps[key], v, o.ci_level) if key in greps else (np.nan,) * 3
        by_group[key] = (v, lo, hi)
    if o.n_perm > 0:
        metrics.update(_gap_tests(cell, o, point))
    if len(runs) > 1:
        metrics.update({f"seed_sd/{k}": v for k, v in sd.items()})
    metrics["n_seeds"], metrics["n_runs"] = len(tests), len(runs)
    metrics["n/images"], metrics["n/patients"] = len(ids), cell.P
    for a, gr in cell.groupings.items():
        for label, n in zip(gr.labels, gr.sizes, strict=True):
            metrics[f"n/{a}/{label}"] = int(n)
    for name, t in zip(o.classes, np.mean([r[2] for r in runs], axis=0), strict=True):
        metrics[f"threshold/{name}"] = float(t)
    meta = _meta(o, sources, thresholds, methods, len(runs), len(tests))
    if ml.NO_FINDING not in o.classes:
        meta["notes"].append(f"no '{ml.NO_FINDING}' label in data.classes: no underdiagnosis")
    warns = list(dict.fromkeys(msgs + _small_groups(cell) + _undefined(gpoint, cell)))
    return Result(metrics, _group_rows(cell, runs[0][0], by_group), warns, meta, reps)


def _gap_tests(cell: _Cell, o: Options, point: dict) -> dict[str, float]:
    """p-value, null mean, excess, adjusted p (within :func:`~fairxray.metrics.multilabel.family_of`)
    and significance of every gap. The observed statistic is the binned one (see the module of
    the metrics), as are the null's."""
    null = _null(cell, o)
    observed, _ = _mean_over_runs(cell, cell.boot_stats, np.ones((1, cell.P)), gaps_only=True)
    out, pv = {}, {}
    for k, v in null.items():
        pv[k], null_mean = permutation_p(float(observed[k][0]), v, v)
        out[f"{k}/p_value"], out[f"{k}/null_mean"] = pv[k], null_mean
        out[f"{k}/excess"] = point[k] - null_mean
    fams: dict[str, dict] = {}
    for k, p in pv.items():
        if not k.startswith("fnr_gap/"):
            fams.setdefault(ml.family_of(k), {})[k] = p
    adj: dict[str, float] = {}
    for fam in fams.values():
        adj.update(adjust(fam, o.correction))
    for k in pv:
        a = adj[k] if k in adj else adj.get("tpr_gap/" + k.split("/", 1)[1], np.nan)
        out[f"{k}/p_adjusted"] = a
        out[f"{k}/significant"] = float(a < o.alpha) if np.isfinite(a) else np.nan
    return out


def _group_rows(cell: _Cell, Y: np.ndarray, by_group: dict) -> pd.DataFrame:
    """``by_group.csv``: value, interval, images, patients and the rate's denominator (labelled
    images for AUROC, positives for TPR/FNR, negatives for FPR, images with a finding for
    underdiagnosis)."""
    idx = {c: j for j, c in enumerate(cell.lay.classes)}
    nf = cell.lay.nf
    rows = []
    for (metric, a, label), (v, lo, hi) in by_group.items():
        gr = cell.groupings[a]
        mk = gr.mask(gr.labels.index(label))
        kind, _, name = metric.partition("/")
        if kind == "underdiagnosis":
            den = int(np.sum(Y[mk, nf] == 0))
        elif kind in ("tpr", "fnr"):
            den = int(np.sum(Y[mk, idx[name]] == 1))
        elif kind == "fpr":
            den = int(np.sum(Y[mk, idx[name]] == 0))
        elif kind == "auroc":
            den = int(np.sum(~np.isnan(Y[mk, idx[name]])))
        else:
            den = int(mk.sum())
        rows.append(
            {
                "metric": metric, "attribute": a, "group": label, "value": v,
                "ci_low": lo, "ci_high": hi, "n": int(mk.sum()),
                "n_patients": int(np.unique(cell.codes[mk]).size), "n_denominator": den,
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def _meta(o: Options, sources, thresholds, methods, n_runs: int, n_seeds: int) -> dict:
    return {
        "task": "multilabel",
        "source": ", ".join(sources),
        "classes": list(o.classes),
        "sensitive": list(o.sensitive),
        "threshold_rule": o.threshold_rule,
        "target_sensitivity": o.target_sensitivity,
        "thresholds": dict(zip(sources, thresholds, strict=True)),
        "thresholds_from": "each run's validation predictions only (val.parquet beside test)",
        "prediction_rule": "label positive where prob_<Label> >= its threshold",
        "n_boot": o.n_boot,
        "n_perm": o.n_perm,
        "ci_level": o.ci_level,
        "ci_method": "percentile bootstrap over patients (a patient's images together), seeds on "
        "the same resamples and averaged, plus the seed spread; BC or normal where the percentile "
        "interval excludes the estimate (ci_methods). Resampled AUROC on "
        f"{o.n_bins} score bins per label",
        "ci_methods": methods,
        "null": "permutation of the sensitive values across patients (a patient's images together)",
        "correction": o.correction,
        "correction_families": "per label (its AUROC, TPR, FPR gaps over every attribute; FNR gaps "
        "equal TPR gaps and share their adjusted p); the underdiagnosis gaps; the macro AUROC gaps",
        "alpha": o.alpha,
        "min_group_size": o.min_group_size,
        "seed": o.seed,
        "n_runs": n_runs,
        "deterministic": n_runs == 1 and n_seeds > 1,
        "notes": [],
    }
