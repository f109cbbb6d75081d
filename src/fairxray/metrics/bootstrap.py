"""Patient-level percentile bootstrap, vectorised.

A bootstrap replicate draws the test set's *patients* with replacement (images of one patient are
correlated, so resampling images would understate the uncertainty) and keeps every image of each
drawn patient as often as the patient was drawn. Each replicate is therefore a vector of integer
row weights ``w`` (``w_i`` = how often row i's patient was drawn); every metric of
:mod:`fairxray.metrics.fairness` is a function of weighted sums (confusion counts, calibration bins,
weighted Mann-Whitney AUROC), so all replicates are computed at once from ``W`` [B, N] instead of
re-running scikit-learn B times. ``tests/unit/test_bootstrap.py`` checks that each weighted metric
equals the :mod:`fairxray.metrics.fairness` function applied to the materialised resample.

NaN rules mirror :mod:`fairxray.metrics.fairness`: a replicate in which a group is too small or lacks a
class gives NaN for the metrics that need it; :func:`percentile_interval` drops such replicates
and reports how many it used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from fairxray.metrics.fairness import NLL_EPS, Groups, bin_index

# Per-group metrics reported in by_group.csv (evaluate's point estimates use the same list).
GROUP_METRICS = (
    "accuracy",
    "macro_f1",
    "balanced_accuracy",
    "auroc_macro",
    "macro_f1_paper",
    "ece_binned",
    "ece_paper",
    "brier",
    "nll",
)


def patient_weights(patient_ids, n_boot: int, seed: int) -> np.ndarray:
    """``W[b, i]`` = how often row i's patient is drawn in replicate b (P patients drawn from P).

    Seeded with ``numpy.random.default_rng(seed)``: the same ids, ``n_boot`` and seed give the same
    matrix. Rows of one patient always share a weight."""
    codes, uniques = pd.factorize(pd.Series(patient_ids).astype(str), sort=True)
    n_pat = len(uniques)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_pat, size=(n_boot, n_pat))
    flat = (draws + np.arange(n_boot)[:, None] * n_pat).ravel()
    counts = np.bincount(flat, minlength=n_boot * n_pat).reshape(n_boot, n_pat)
    return counts[:, codes].astype(np.float64)


def percentile_interval(samples, level: float) -> tuple[float, float, int]:
    """Percentile interval ``(q_(1-level)/2, q_(1+level)/2)`` of the finite replicates, and how
    many there were; NaN bounds with fewer than two."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size < 2:
        return float("nan"), float("nan"), int(s.size)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(s, [alpha, 1.0 - alpha])
    return float(lo), float(hi), int(s.size)


def _weighted_sums(W: np.ndarray, index: np.ndarray, values: np.ndarray, width: int) -> np.ndarray:
    """``out[b, j] = sum_i W[b, i] * values[i] * 1[index[i] = j]`` as one sparse product.

    ``index`` may also be ``[B, N]`` (a row's cell differs between replicates, as when a permutation
    moves the sensitive attribute): then one ``bincount`` over replicate-offset cells."""
    index = np.asarray(index)
    if index.ndim == 2:
        B = len(W)
        flat = (index + np.arange(B)[:, None] * width).ravel()
        wv = np.broadcast_to(W * values, index.shape).ravel()
        return np.bincount(flat, weights=wv, minlength=B * width).reshape(B, width)
    n = len(index)
    S = sparse.csr_matrix((values, (np.arange(n), index)), shape=(n, width))
    return np.asarray(S.T @ W.T).T


def _spread(v: np.ndarray) -> np.ndarray:
    """max - min over the last axis; NaN if any entry is NaN or there is one group only."""
    if v.shape[-1] < 2:
        return np.full(v.shape[:-1], np.nan)
    return v.max(axis=-1) - v.min(axis=-1)


def _div(a, b):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def confusion_stats(
    W: np.ndarray, y, pred, groups: Groups, n_classes: int, min_group_size: int
) -> dict[str, np.ndarray]:
    """Weighted per-group confusion counts and the rates derived from them, all [B, G(, K)]."""
    K, G = n_classes, len(groups.labels)
    y, pred = np.asarray(y), np.asarray(pred)
    C = _weighted_sums(W, (groups.codes * K + y) * K + pred, np.ones(len(y)), G * K * K)
    C = C.reshape(len(W), G, K, K)
    n = C.sum(axis=(2, 3))
    support = C.sum(axis=3)
    predicted = C.sum(axis=2)
    tp = np.diagonal(C, axis1=2, axis2=3)
    small = n < max(min_group_size, 1)
    den = support + predicted
    f1 = _div(2 * tp, den)
    f1[support == 0] = np.nan
    recall = _div(tp, support)
    fpr = _div(predicted - tp, n[..., None] - support)
    # The paper's macro-F1 averages over classes present in truth or prediction (sklearn's default
    # labels); a class absent from both never enters, so zero_division=1 never fires there.
    present = den > 0
    f1_paper = _div(
        np.where(present, 2 * tp / np.where(present, den, 1), 0).sum(-1), present.sum(-1)
    )
    out = {
        "n": n,
        "accuracy": _div(tp.sum(-1), n),
        "f1": f1,
        "macro_f1": f1.mean(-1),
        "balanced_accuracy": recall.mean(-1),
        "tpr": recall,
        "fpr": fpr,
        "macro_f1_paper": f1_paper,
    }
    for k, v in out.items():
        if k != "n":
            v[small] = np.nan
    return out


def weighted_auroc(W: np.ndarray, y, prob, groups: Groups, n_classes: int, min_group_size: int):
    """Per-group one-vs-rest AUROC of each class [B, G, K] by the weighted Mann-Whitney statistic
    ``AUC = sum_{i pos, j neg} w_i w_j (1[s_i > s_j] + 1/2 1[s_i = s_j]) / (W_pos W_neg)``.
    ``groups.codes`` may be ``[B, N]`` (a group's rows differ between replicates)."""
    y, prob = np.asarray(y), np.asarray(prob, dtype=float)
    B, G = len(W), len(groups.labels)
    out = np.full((B, G, n_classes), np.nan)
    codes = np.asarray(groups.codes)
    for c in range(n_classes):
        order = np.argsort(prob[:, c], kind="stable")
        ss = prob[order, c]
        starts = np.r_[0, np.flatnonzero(np.diff(ss)) + 1]
        pos = (y == c)[order]
        if codes.ndim == 2:  # gathered once per class, shared by the groups
            W_sorted, codes_sorted = W[:, order], codes[:, order]
        for g in range(G):
            if codes.ndim == 1:
                keep = codes[order] == g
                if not keep.any():
                    continue
                # The subset keeps its order; tie blocks are recomputed within it.
                sub = order[keep]
                s_sub = prob[sub, c]
                st = np.r_[0, np.flatnonzero(np.diff(s_sub)) + 1]
                Ws, p_sub = W[:, sub], pos[keep]
            else:
                Ws, p_sub, st = W_sorted * (codes_sorted == g), pos, starts
            bp = np.add.reduceat(Ws * p_sub, st, axis=1)
            bn = np.add.reduceat(Ws * ~p_sub, st, axis=1)
            below = np.cumsum(bn, axis=1) - bn
            num = (bp * (below + 0.5 * bn)).sum(axis=1)
            out[:, g, c] = _div(num, bp.sum(axis=1) * bn.sum(axis=1))
    n = _weighted_sums(W, codes, np.ones(len(y)), G)
    out[n < max(min_group_size, 1)] = np.nan
    return out


def calibration_stats(
    W: np.ndarray, y, prob, groups: Groups, n_classes: int, n_bins: int, min_group_size: int
) -> dict[str, np.ndarray]:
    """Per-group binned top-label ECE, the paper's mean |p - y| macro over classes, the Brier score
    ``mean_i sum_c (p_ic - y_ic)^2`` and the NLL ``mean_i -log p_i,y_i``, all [B, G]."""
    y, prob = np.asarray(y), np.asarray(prob, dtype=float)
    G = len(groups.labels)
    conf = prob.max(axis=1)
    correct = (prob.argmax(axis=1) == y).astype(float)
    cell = groups.codes * n_bins + bin_index(conf, n_bins)
    n_bin = _weighted_sums(W, cell, np.ones(len(y)), G * n_bins).reshape(len(W), G, n_bins)
    s_conf = _weighted_sums(W, cell, conf, G * n_bins).reshape(len(W), G, n_bins)
    s_acc = _weighted_sums(W, cell, correct, G * n_bins).reshape(len(W), G, n_bins)
    n = n_bin.sum(axis=2)
    ece = _div(np.abs(s_acc - s_conf).sum(axis=2), n)
    onehot = np.eye(n_classes)[y]
    # mean_c mean_i |p_ic - y_ic| = mean_i (mean_c |p_ic - y_ic|): one value per row.
    out = {"ece_binned": ece}
    per_row = {
        "ece_paper": np.abs(prob - onehot).mean(axis=1),
        "brier": ((prob - onehot) ** 2).sum(axis=1),
        "nll": -np.log(np.clip(prob[np.arange(len(y)), y], NLL_EPS, 1.0)),
    }
    for k, v in per_row.items():
        out[k] = _div(_weighted_sums(W, groups.codes, v, G), n)
    small = n < max(min_group_size, 1)
    for v in out.values():
        v[small] = np.nan
    return out


def group_stats(W, y, prob, gr: Groups, n_classes: int, n_bins: int, min_group_size: int) -> dict:
    """Every per-group statistic [B, G(, K)] of one grouping (codes ``[N]`` or ``[B, N]``)."""
    pred = np.asarray(prob).argmax(axis=1)
    s = confusion_stats(W, y, pred, gr, n_classes, min_group_size)
    s["auroc"] = weighted_auroc(W, y, prob, gr, n_classes, min_group_size)
    s["auroc_macro"] = s["auroc"].mean(axis=-1)
    s.update(calibration_stats(W, y, prob, gr, n_classes, n_bins, min_group_size))
    return s


def gap_values(s: Mapping[str, np.ndarray], sub: Mapping | None, attr: str, classes) -> dict:
    """Every gap of one attribute from its per-group statistics ``s`` (:func:`group_stats`) and, for
    the paper's F1_delta, the confusion statistics ``sub`` of its attribute x other-columns
    subgroups (None for intersections). Pure in ``s``: :mod:`fairxray.metrics.inference` plants
    shifts into ``s`` to simulate power. Keys: see :data:`GAP_KEYS`."""
    B = s["n"].shape[0]
    nan = np.full(B, np.nan)
    per_class = np.maximum(
        _spread(np.moveaxis(s["tpr"], 1, 2)), _spread(np.moveaxis(s["fpr"], 1, 2))
    )
    out = {
        f"f1_gap/{attr}/standard": _spread(s["macro_f1"]),
        f"eq_odds/{attr}/worst_case_max": per_class.max(axis=1),
        f"eq_odds/{attr}/worst_case_mean": per_class.mean(axis=1),
        f"ece_gap/{attr}/binned": _spread(s["ece_binned"]),
        f"auroc_gap/{attr}": _spread(s["auroc_macro"]),
        f"brier_gap/{attr}": _spread(s["brier"]),
        f"nll_gap/{attr}": _spread(s["nll"]),
    }
    fnr_spread = _spread(np.moveaxis(s["tpr"], 1, 2))  # |FNR_g - FNR_h| = |TPR_g - TPR_h|
    for c, name in enumerate(classes):
        out[f"fnr_gap/{attr}/{name}"] = fnr_spread[:, c]
    if sub is not None:
        two = s["n"].shape[1] == 2
        if two:
            low, high = np.split(sub["macro_f1_paper"], 2, axis=1)
            out[f"f1_gap/{attr}/paper"] = high.mean(1) - low.mean(1)
            eo = (
                np.abs(s["tpr"][:, 0] - s["tpr"][:, 1]) + np.abs(s["fpr"][:, 0] - s["fpr"][:, 1])
            ) / 2
            out[f"eq_odds/{attr}/paper"] = eo.mean(axis=1)
            out[f"ece_gap/{attr}/paper"] = np.abs(s["ece_paper"][:, 1] - s["ece_paper"][:, 0])
        else:
            for k in (f"f1_gap/{attr}/paper", f"eq_odds/{attr}/paper", f"ece_gap/{attr}/paper"):
                out[k] = nan
    return out


def is_gap_key(key: str) -> bool:
    """A between-group gap (gets a permutation null), as opposed to a metric or group value."""
    return key.split("/", 1)[0] in GAP_FAMILIES


GAP_FAMILIES = ("f1_gap", "eq_odds", "ece_gap", "auroc_gap", "brier_gap", "nll_gap", "fnr_gap")


def replicate_metrics(
    W: np.ndarray,
    *,
    y,
    prob,
    classes: Sequence[str],
    groupings: Mapping[str, Groups],
    paper_subgroups: Mapping[str, Groups],
    n_bins: int,
    min_group_size: int,
    gaps_only: bool = False,
) -> tuple[dict[str, np.ndarray], dict[tuple[str, str, str], np.ndarray]]:
    """Every metric of ``metrics.json`` and ``by_group.csv`` for each row-weight vector in ``W``.

    ``groupings``: attribute name -> groups, single attributes and intersections; ``paper_subgroups``:
    single attribute -> its subgroups (attribute x the other columns, the attribute slowest). A
    grouping's codes may be ``[B, N]`` (permuted attributes). Keys are those of
    :func:`fairxray.metrics.evaluate.point_metrics`. Returns (metrics, by_group); with
    ``gaps_only`` only the gaps (the by_group dict is empty)."""
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    y, prob = np.asarray(y), np.asarray(prob, dtype=float)
    K = len(classes)
    metrics: dict[str, np.ndarray] = {}
    by_group: dict[tuple[str, str, str], np.ndarray] = {}
    if not gaps_only:
        allg = Groups("all", ("all",), np.zeros(len(y), dtype=np.int64))
        o = group_stats(W, y, prob, allg, K, n_bins, min_group_size)
        for k in ("accuracy", "macro_f1", "balanced_accuracy", "auroc_macro", "brier", "nll"):
            metrics[k] = o[k][:, 0]
        for c, name in enumerate(classes):
            metrics[f"f1/{name}"] = o["f1"][:, 0, c]
            metrics[f"auroc/{name}"] = o["auroc"][:, 0, c]
        f1 = o["f1"][:, 0, :]
        metrics["var_f1"] = np.var(f1, axis=1, ddof=1) if K > 1 else np.full(len(W), np.nan)
        metrics["ece"] = o["ece_binned"][:, 0]
        metrics["ece_paper"] = o["ece_paper"][:, 0]
    for attr, gr in groupings.items():
        s = group_stats(W, y, prob, gr, K, n_bins, min_group_size)
        sub = None
        if attr in paper_subgroups:
            pred = prob.argmax(axis=1)
            sub = confusion_stats(W, y, pred, paper_subgroups[attr], K, min_group_size)
        metrics.update(gap_values(s, sub, attr, classes))
        if gaps_only:
            continue
        metrics[f"auroc_worst/{attr}"] = np.min(s["auroc_macro"], axis=1)
        for g, label in enumerate(gr.labels):
            for k in GROUP_METRICS:
                by_group[(k, attr, label)] = s[k][:, g]
            for c, name in enumerate(classes):
                by_group[(f"f1/{name}", attr, label)] = s["f1"][:, g, c]
                by_group[(f"tpr/{name}", attr, label)] = s["tpr"][:, g, c]
                by_group[(f"fnr/{name}", attr, label)] = 1.0 - s["tpr"][:, g, c]
                by_group[(f"fpr/{name}", attr, label)] = s["fpr"][:, g, c]
                by_group[(f"auroc/{name}", attr, label)] = s["auroc"][:, g, c]
    return metrics, by_group
