"""Multi-label metrics (``data.task: multilabel``): pure functions of targets, probabilities and
fixed per-label decision thresholds; no I/O, no models.

Targets ``Y`` are ``[N, L]`` floats (1, 0, NaN = masked: the row does not count for that label),
probabilities ``P`` ``[N, L]``; a label is predicted positive where ``P >= t_l``.

- **Thresholds** (:func:`choose_thresholds`), on validation only: ``max_f1`` picks the threshold
  maximising ``F1 = 2 TP / (2 TP + FP + FN)`` (the highest one on a tie), ``sensitivity`` the highest
  threshold whose sensitivity ``TP / (TP + FN)`` reaches the target.
- **Per label**: AUROC (Mann-Whitney with mid-ranks, the same as scikit-learn's ``roc_auc_score``),
  ``TPR = TP / (TP + FN)``, ``FPR = FP / (FP + TN)``, ``FNR = 1 - TPR``, overall and per group; each
  gap is max - min over the groups of an attribute where the value is defined (two at least).
- **Underdiagnosis** (Seyyed-Kalantari et al., Nat. Med. 2021): the ``No Finding`` false-positive
  rate, i.e. among images with a finding (``y_No_Finding = 0``) the share the model labels
  ``No Finding``; per group of every attribute and of the intersection, and its max - min gap.
- Summaries over labels, per attribute: the gap of the per-group macro AUROC
  (``auroc_macro_gap``) and the mean over labels of the per-label TPR gaps (``tpr_gap_mean``).
- A group with fewer than ``min_group_size`` images is NaN (one summarised warning per table).

**Resampling** (bootstrap and permutation, :class:`Resampler`). Every statistic above is a function
of per-group sums over images: the image count, the confusion counts per label, and per label the
histogram of positives' and negatives' scores over ``n_bins`` score bins (the pooled scores'
quantiles; exact where a label has at most ``n_bins`` distinct scores). These sums are taken once per
patient (and group), so a replicate is a weight per patient: a bootstrap draws multinomial patient
counts, a permutation assigns each patient (all its images together) a group. The sums of all
replicates are one sparse-times-dense product; AUROC per replicate comes from the cumulated
histograms. Binning ties scores that share a bin (a pair inside a bin counts 1/2), which moves an
AUROC by at most half the share of positive-negative pairs in one bin (< 1e-3 with 1,024 bins);
point estimates use the exact AUROC, the permutation test compares like with like (the binned
observed gap against binned null gaps), so its p-value is exact for that statistic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.stats import rankdata

from fairxray.metrics.fairness import Groups

NO_FINDING = "No Finding"
THRESHOLD_RULES = ("max_f1", "sensitivity")
N_BINS = 1024
# Gap families of the multi-label evaluation (every one gets a permutation null).
GAP_FAMILIES = (
    "auroc_gap", "tpr_gap", "fpr_gap", "fnr_gap", "auroc_macro_gap", "tpr_gap_mean",
    "underdiagnosis_gap",
)  # fmt: skip
RATES = ("tpr", "fpr", "fnr")


# ---------------------------------------------------------------- thresholds (validation only)


def threshold_max_f1(y, score) -> float:
    """The threshold ``t`` (one of the scores) maximising F1 of ``score >= t`` against ``y``
    (NaN rows dropped); the highest such ``t`` on a tie; NaN without a positive."""
    y, s = _finite(y, score)
    n_pos = int((y == 1).sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y == 1)
    predicted = np.arange(1, len(s) + 1)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each tie block
    f1 = 2 * tp[last] / (predicted[last] + n_pos)
    return float(s[last[int(np.argmax(f1))]])


def threshold_sensitivity(y, score, target: float) -> float:
    """The highest threshold ``t`` with sensitivity ``#{pos: score >= t} / #pos >= target``:
    the ``ceil(target * #pos)``-th highest positive score; NaN without a positive."""
    y, s = _finite(y, score)
    pos = np.sort(s[y == 1])[::-1]
    if pos.size == 0:
        return float("nan")
    k = min(max(math.ceil(target * pos.size - 1e-9), 1), pos.size)
    return float(pos[k - 1])


def choose_thresholds(Y, P, rule: str, target_sensitivity: float = 0.8) -> np.ndarray:
    """One threshold per label (columns of ``Y`` / ``P``) by ``rule`` (:data:`THRESHOLD_RULES`)."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold_rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    Y, P = np.asarray(Y, dtype=float), np.asarray(P, dtype=float)
    if rule == "max_f1":
        return np.array([threshold_max_f1(Y[:, j], P[:, j]) for j in range(Y.shape[1])])
    return np.array(
        [threshold_sensitivity(Y[:, j], P[:, j], target_sensitivity) for j in range(Y.shape[1])]
    )


def _finite(y, score) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    keep = ~np.isnan(y)
    return y[keep], s[keep]


# ---------------------------------------------------------------- point metrics


def auroc(y, score) -> float:
    """Exact AUROC of one label (NaN rows dropped) by mid-ranks; NaN without both classes."""
    y, s = _finite(y, score)
    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def rates(y, pred) -> dict[str, float]:
    """TPR, FPR and FNR of one label's 0/1 predictions (NaN rows of ``y`` dropped)."""
    y, p = _finite(y, pred)
    pos, neg = y == 1, y == 0
    tpr = float(np.mean(p[pos] == 1)) if pos.any() else float("nan")
    fpr = float(np.mean(p[neg] == 1)) if neg.any() else float("nan")
    return {"tpr": tpr, "fpr": fpr, "fnr": 1.0 - tpr}


def underdiagnosis_rate(y_no_finding, pred_no_finding, *, sensitive_features) -> dict[str, float]:
    """Per group: ``#{y_NF = 0 and predicted NF} / #{y_NF = 0}`` (the No Finding FPR; NaN rows
    and groups without an image with a finding give NaN)."""
    y = np.asarray(y_no_finding, dtype=float)
    pred = np.asarray(pred_no_finding)
    g = np.asarray(sensitive_features).astype(str)
    out = {}
    for label in sorted(set(g.tolist())):
        sick = (g == label) & (y == 0)
        out[label] = float(np.mean(pred[sick] == 1)) if sick.any() else float("nan")
    return out


def spread(v: np.ndarray) -> np.ndarray:
    """max - min over the last axis of the finite entries; NaN with fewer than two."""
    v = np.asarray(v, dtype=float)
    ok = np.isfinite(v)
    hi = np.where(ok, v, -np.inf).max(axis=-1)
    lo = np.where(ok, v, np.inf).min(axis=-1)
    return np.where(ok.sum(axis=-1) >= 2, hi - lo, np.nan)


def _nanmean(v: np.ndarray, axis: int) -> np.ndarray:
    ok = np.isfinite(v)
    n = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, v, 0).sum(axis=axis) / n, np.nan)


# ---------------------------------------------------------------- per-group statistics -> keys


@dataclass(frozen=True)
class Layout:
    """What turns per-group statistics into keys: labels, groupings, the No Finding column."""

    classes: tuple[str, ...]
    groupings: Mapping[str, Groups]  # attribute (and intersection) -> groups; not "all"
    min_group_size: int

    @property
    def nf(self) -> int | None:
        return self.classes.index(NO_FINDING) if NO_FINDING in self.classes else None


def group_rates(n, conf) -> dict[str, np.ndarray]:
    """``n`` [B, G] images and ``conf`` [B, G, L, 4] (TP, FN, FP, TN) -> TPR, FPR, FNR [B, G, L]."""
    tp, fn, fp, tn = (conf[..., j] for j in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(tp + fn > 0, tp / np.where(tp + fn > 0, tp + fn, 1), np.nan)
        fpr = np.where(fp + tn > 0, fp / np.where(fp + tn > 0, fp + tn, 1), np.nan)
    return {"tpr": tpr, "fpr": fpr, "fnr": 1.0 - tpr}


def keys_from_stats(stats: Mapping[str, Mapping[str, np.ndarray]], lay: Layout):
    """Every metric and gap ``{key: [B]}`` and per-group value ``{(metric, attr, group): [B]}``
    from per-grouping statistics ``{"all" | attr: {"n": [B, G], "tpr"/"fpr"/"fnr"/"auroc":
    [B, G, L]}}``; groups below ``min_group_size`` are NaN. Without ``"all"`` (permutations):
    the groupings' keys only."""
    m: dict[str, np.ndarray] = {}
    bg: dict[tuple[str, str, str], np.ndarray] = {}
    nf = lay.nf
    clean = {}
    for attr, s in stats.items():
        small = s["n"] < max(lay.min_group_size, 1)
        c = {k: np.where(small[..., None], np.nan, s[k]) for k in ("auroc", *RATES)}
        c["auroc_macro"] = _nanmean(c["auroc"], axis=-1)
        clean[attr] = c
    if "all" in clean:
        a = clean["all"]
        m["auroc_macro"] = a["auroc_macro"][:, 0]
        for j, name in enumerate(lay.classes):
            m[f"auroc/{name}"] = a["auroc"][:, 0, j]
            for r in RATES:
                m[f"{r}/{name}"] = a[r][:, 0, j]
        if nf is not None:
            m["underdiagnosis"] = a["fpr"][:, 0, nf]
    for attr, gr in lay.groupings.items():
        c = clean[attr]
        m[f"auroc_macro_gap/{attr}"] = spread(c["auroc_macro"])
        m[f"tpr_gap_mean/{attr}"] = _nanmean(spread(np.moveaxis(c["tpr"], 1, 2)), axis=-1)
        for j, name in enumerate(lay.classes):
            m[f"auroc_gap/{attr}/{name}"] = spread(c["auroc"][:, :, j])
            for r in RATES:
                m[f"{r}_gap/{attr}/{name}"] = spread(c[r][:, :, j])
        if nf is not None:
            m[f"underdiagnosis_gap/{attr}"] = spread(c["fpr"][:, :, nf])
        for g, label in enumerate(gr.labels):
            bg[("auroc_macro", attr, label)] = c["auroc_macro"][:, g]
            if nf is not None:
                m[f"underdiagnosis/{attr}/{label}"] = c["fpr"][:, g, nf]
                bg[("underdiagnosis", attr, label)] = c["fpr"][:, g, nf]
            for j, name in enumerate(lay.classes):
                bg[(f"auroc/{name}", attr, label)] = c["auroc"][:, g, j]
                for r in RATES:
                    bg[(f"{r}/{name}", attr, label)] = c[r][:, g, j]
    return m, bg


def is_gap_key(key: str) -> bool:
    return key.split("/", 1)[0] in GAP_FAMILIES


def family_of(key: str) -> str:
    """The correction family (one report row) of a gap: a label's AUROC/TPR/FPR gaps over every
    attribute (``label:<Label>``), the underdiagnosis gaps (``underdiagnosis``), the summaries
    over labels (``summary``: macro AUROC gaps, mean TPR gaps). FNR gaps equal the TPR gaps and
    take their adjusted p-values."""
    fam = key.split("/", 1)[0]
    if fam == "underdiagnosis_gap":
        return "underdiagnosis"
    if fam in ("auroc_macro_gap", "tpr_gap_mean"):
        return "summary"
    return "label:" + key.split("/", 2)[2]


# ---------------------------------------------------------------- resampling engine


def _bin_edges(score: np.ndarray, n_bins: int) -> np.ndarray:
    u = np.unique(score)
    if u.size <= n_bins:
        return u
    return np.unique(np.quantile(score, np.linspace(0, 1, n_bins, endpoint=False)))


class Resampler:
    """Per-patient sufficient statistics of one run (targets, probabilities, thresholds on the
    rows of ``patient_codes``), and the per-group statistics of any patient-weight matrix.

    Feature columns: 0 = images; then per label 4 confusion counts (TP, FN, FP, TN); then per label
    ``n_bins`` positive and ``n_bins`` negative score-bin counts. Masked targets count in neither."""

    def __init__(self, Y, P, thresholds, patient_codes, n_patients: int, n_bins: int = N_BINS):
        Y, P = np.asarray(Y, dtype=float), np.asarray(P, dtype=float)
        N, L = Y.shape
        self.L, self.Q = L, n_bins
        self.n_patients = n_patients
        self.codes = np.asarray(patient_codes)
        pred = P >= np.where(np.isnan(thresholds), np.inf, thresholds)[None, :]
        known = ~np.isnan(Y)
        pos = Y == 1
        cell = np.where(pos, np.where(pred, 0, 1), np.where(pred, 2, 3))
        cols = [np.zeros((N, 1), dtype=np.int64)]
        conf_col = 1 + np.arange(L)[None, :] * 4 + cell
        base = 1 + 4 * L
        bins = np.zeros((N, L), dtype=np.int64)
        for j in range(L):
            k = known[:, j]
            if k.any():
                edges = _bin_edges(P[k, j], n_bins)
                bins[:, j] = np.clip(np.searchsorted(edges, P[:, j], side="right") - 1, 0, None)
        hist_col = base + (np.arange(L)[None, :] * 2 + (~pos)) * n_bins + bins
        self.F = base + 2 * L * n_bins
        rows = np.repeat(np.arange(N)[:, None], 1 + 2 * L, axis=1)
        colm = np.concatenate([cols[0], conf_col, hist_col], axis=1)
        # A label without a threshold (no validation positive) has no confusion counts: NaN rates.
        decided = known & ~np.isnan(np.asarray(thresholds, dtype=float))[None, :]
        keep = np.concatenate([np.ones((N, 1), bool), decided, known], axis=1)
        self._rows, self._cols = rows[keep], colm[keep]

    def patient_matrix(self, row_mask: np.ndarray | None = None) -> sparse.csr_matrix:
        """``X^T`` [F, n_patients]: the sums of each patient's rows (within ``row_mask``)."""
        r, c = self._rows, self._cols
        if row_mask is not None:
            keep = row_mask[r]
            r, c = r[keep], c[keep]
        X = sparse.csr_matrix(
            (np.ones(len(r)), (c, self.codes[r])), shape=(self.F, self.n_patients)
        )
        X.sum_duplicates()
        return X

    def stats(self, sums: np.ndarray) -> dict[str, np.ndarray]:
        """``sums`` [G, F, B] (:func:`group_sums`) -> ``n`` [B, G], rates and binned AUROC
        [B, G, L]."""
        G, B, L, Q = sums.shape[0], sums.shape[2], self.L, self.Q
        conf = np.moveaxis(sums[:, 1 : 1 + 4 * L, :].reshape(G, L, 4, B), -1, 0)  # [B, G, L, 4]
        hist = sums[:, 1 + 4 * L :, :].reshape(G, L, 2, Q, B)
        hp, hn = hist[:, :, 0], hist[:, :, 1]  # [G, L, Q, B], replicates innermost
        below = np.cumsum(hn, axis=2) - hn
        num = np.einsum("glqb,glqb->glb", hp, below + 0.5 * hn)
        den = hp.sum(axis=2) * hn.sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
        n = sums[:, 0, :].T
        return {"n": n, "auroc": np.moveaxis(auc, -1, 0), **group_rates(n, conf)}


def group_sums(mats: Sequence[sparse.csr_matrix], weights: Sequence[np.ndarray]) -> np.ndarray:
    """``out[g, :, b] = mats[g] @ weights[g][b]``: [G, F, B] from per-group ``X^T`` [F, P] and
    patient weights [B, P] (one matrix per group, or one shared)."""
    W0 = np.asarray(weights[0])
    out = np.empty((len(mats), mats[0].shape[0], W0.shape[0]))
    for g, (X, W) in enumerate(zip(mats, weights, strict=True)):
        out[g] = X @ np.ascontiguousarray(np.asarray(W).T)
    return out
