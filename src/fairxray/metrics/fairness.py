"""Utility and fairness metrics as pure functions over one predictions table.

Conventions (every function):

- ``y_true``: int class index per image, ``0..K-1``; ``y_pred``: predicted index (argmax of the
  probabilities); ``y_prob``: ``[N, K]`` probabilities (softmax, rows sum to 1), never logits.
- ``sensitive_features`` is keyword-only: a Series / 1-D array (one attribute), or a DataFrame /
  mapping of several columns, whose combinations form intersectional groups (as in fairlearn).
  Group order: a column's ``levels`` if given, else its categorical categories, else its values in
  natural order (``"0-59" < "60-99" < "100-119"``, ``"F" < "M"``). A level given in ``levels`` but
  absent from the data is an empty group.
- A group with fewer than ``min_group_size`` images (or none), or, for the metrics that need every
  class (per-class F1, macro-F1, balanced accuracy, AUROC, TPR), lacking a class, gives NaN and a
  :class:`FairnessWarning`; a gap over groups is NaN when any group is NaN. Never a silent 0.
- Variants are named: ``paper`` follows the authors' ``calculate_metrics.py`` (the
  authors' released evaluation script) and is defined for exactly two groups; ``standard`` / ``worst_case`` / ``binned`` take any number.

fairlearn and scikit-learn compute what they can (F1, accuracy, balanced accuracy, AUROC, MetricFrame
group differences, fairlearn's equalized-odds difference); this module adds the one-vs-rest handling,
binned ECE, the paper's variants and the NaN rules.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, equalized_odds_difference
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

NLL_EPS = 1e-15  # probabilities are clipped at this floor before the log (a 0 would give inf)
JOIN = "&"  # attribute and group names of intersections: "age_group&sex", "60-99&M"


class FairnessWarning(UserWarning):
    """A metric left undefined (NaN) or computed on a group the caller should know about."""


def _warn(msg: str) -> None:
    warnings.warn(msg, FairnessWarning, stacklevel=3)


def natural_key(value: object) -> tuple:
    """Sort key that orders digit runs numerically: ``"9-59" < "60-99" < "100-119"``."""
    parts = re.split(r"(\d+)", str(value))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != "")


@dataclass(frozen=True)
class Groups:
    """Rows mapped to ordered groups: ``labels[codes[i]]`` is row i's group."""

    attribute: str
    labels: tuple[str, ...]
    codes: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=len(self.labels))

    def mask(self, g: int) -> np.ndarray:
        return self.codes == g


def _columns(sensitive_features) -> dict[str, pd.Series]:
    if isinstance(sensitive_features, pd.DataFrame):
        return {str(c): sensitive_features[c].reset_index(drop=True) for c in sensitive_features}
    if isinstance(sensitive_features, Mapping):
        return {str(k): pd.Series(v).reset_index(drop=True) for k, v in sensitive_features.items()}
    if isinstance(sensitive_features, pd.Series):
        name = str(sensitive_features.name) if sensitive_features.name is not None else "group"
        return {name: sensitive_features.reset_index(drop=True)}
    arr = np.asarray(sensitive_features)
    if arr.ndim != 1:
        raise ValueError("sensitive_features: pass a 1-D array, a Series, a DataFrame or a mapping")
    return {"group": pd.Series(arr)}


def _levels(col: pd.Series, given: Sequence[str] | None) -> list[str]:
    observed = sorted({str(v) for v in col.dropna()}, key=natural_key)
    if given is not None:
        base = [str(v) for v in given]
    elif isinstance(col.dtype, pd.CategoricalDtype):
        base = [str(v) for v in col.cat.categories]
    else:
        base = []
    return base + [v for v in observed if v not in base]


def group_codes(sensitive_features, *, levels: Mapping[str, Sequence[str]] | None = None) -> Groups:
    """Groups of the rows; several columns give their Cartesian product (empty cells kept)."""
    cols = _columns(sensitive_features)
    if not cols:
        raise ValueError("sensitive_features: no columns")
    levels = levels or {}
    per_col, codes = [], []
    for name, col in cols.items():
        if col.isna().any():
            raise ValueError(f"sensitive_features: column '{name}' has missing values")
        lv = _levels(col, levels.get(name))
        index = {v: i for i, v in enumerate(lv)}
        per_col.append(lv)
        codes.append(np.array([index[str(v)] for v in col], dtype=np.int64))
    labels = tuple(JOIN.join(combo) for combo in itertools.product(*per_col))
    flat = np.zeros(len(codes[0]), dtype=np.int64)
    for lv, c in zip(per_col, codes, strict=True):
        flat = flat * len(lv) + c
    return Groups(JOIN.join(cols), labels, flat)


def _as_groups(sensitive_features, levels) -> Groups:
    if isinstance(sensitive_features, Groups):
        return sensitive_features
    return group_codes(sensitive_features, levels=levels)


def _too_small(n: int, min_group_size: int, where: str) -> bool:
    if n < max(min_group_size, 1):
        _warn(f"{where}: {n} images, fewer than min_group_size {max(min_group_size, 1)}; NaN")
        return True
    return False


def _missing_classes(y_true: np.ndarray, n_classes: int) -> list[int]:
    return sorted(set(range(n_classes)) - set(np.unique(y_true).tolist()))


# ---------------------------------------------------------------- utility, one set of images


def per_class_f1(y_true, y_pred, *, n_classes: int) -> np.ndarray:
    """F1 of each class c, one-vs-rest: ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``.

    NaN for a class absent from ``y_true`` (recall undefined; the paper's code writes 1 there via
    ``zero_division=1``, which only matters when the class is absent from predictions too).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    f1 = f1_score(
        y_true, y_pred, labels=list(range(n_classes)), average=None, zero_division=np.nan
    ).astype(float)
    support = np.bincount(y_true, minlength=n_classes)
    f1[support == 0] = np.nan
    return f1


def var_f1(f1: Sequence[float]) -> float:
    """``Var_F1 = 1/(K-1) * sum_c (F1_c - mean F1)^2`` over the K per-disease F1 values (ddof 1, as
    the paper's ``DataFrame.var``). NaN when any F1_c is NaN or K < 2."""
    f1 = np.asarray(f1, dtype=float)
    if f1.size < 2 or np.isnan(f1).any():
        return float("nan")
    return float(np.var(f1, ddof=1))


def macro_auroc(y_true, y_prob, *, n_classes: int) -> float:
    """Macro one-vs-rest AUROC: ``mean_c AUROC(y == c, p_c)``; NaN if a class has no positive or no
    negative (same as scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``)."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    out = []
    for c in range(n_classes):
        pos = y_true == c
        if pos.all() or not pos.any():
            return float("nan")
        out.append(roc_auc_score(pos, y_prob[:, c]))
    return float(np.mean(out))


def auroc_per_class(y_true, y_prob, *, n_classes: int) -> np.ndarray:
    """One-vs-rest ``AUROC_c = roc_auc_score(y == c, p_c)`` per class; NaN where class c has no
    positive or no negative."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        pos = y_true == c
        if pos.any() and not pos.all():
            out[c] = roc_auc_score(pos, y_prob[:, c])
    return out


def brier_score(y_true, y_prob, *, n_classes: int) -> float:
    """Multi-class Brier score ``mean_i sum_c (p_ic - 1[y_i = c])^2`` (0 perfect, 2 worst); NaN on
    an empty set. Proper: rewards calibration and sharpness together."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    if len(y_true) == 0:
        return float("nan")
    return float(((y_prob - np.eye(n_classes)[y_true]) ** 2).sum(axis=1).mean())


def nll(y_true, y_prob, *, n_classes: int) -> float:
    """Negative log-likelihood ``mean_i -log p_i,y_i`` (scikit-learn's ``log_loss`` on rows that sum
    to 1), probabilities clipped at :data:`NLL_EPS`; NaN on an empty set."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    if len(y_true) == 0:
        return float("nan")
    return float(-np.log(np.clip(y_prob[np.arange(len(y_true)), y_true], NLL_EPS, 1.0)).mean())


def utility(y_true, y_prob, *, n_classes: int, min_group_size: int = 1, where: str = "all") -> dict:
    """Accuracy, per-class F1 (``f1``, array), macro-F1 (mean of ``f1``), balanced accuracy (mean
    per-class recall) and macro OvR AUROC of one set of images; ``y_pred = argmax y_prob``.

    Too small -> everything NaN; a class missing from ``y_true`` -> accuracy kept, the rest NaN.
    """
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=float).reshape(len(y_true), n_classes)
    nan = float("nan")
    out = {
        "n": len(y_true),
        "accuracy": nan,
        "macro_f1": nan,
        "balanced_accuracy": nan,
        "auroc_macro": nan,
        "f1": np.full(n_classes, np.nan),
    }
    if _too_small(len(y_true), min_group_size, where):
        return out
    y_pred = y_prob.argmax(axis=1)
    out["accuracy"] = float(accuracy_score(y_true, y_pred))
    missing = _missing_classes(y_true, n_classes)
    if missing:
        _warn(f"{where}: no image of class index {missing}; F1, balanced accuracy, AUROC NaN")
        out["f1"] = per_class_f1(y_true, y_pred, n_classes=n_classes)
        return out
    out["f1"] = per_class_f1(y_true, y_pred, n_classes=n_classes)
    out["macro_f1"] = float(np.mean(out["f1"]))
    out["balanced_accuracy"] = float(balanced_accuracy_score(y_true, y_pred))
    out["auroc_macro"] = macro_auroc(y_true, y_prob, n_classes=n_classes)
    return out


# ---------------------------------------------------------------- calibration


def bin_index(confidence, n_bins: int) -> np.ndarray:
    """Equal-width bins on [0, 1], right-closed: bin m holds ``m/M < conf <= (m+1)/M``
    (bin 0 also holds 0), so the edges do not depend on the group's own score range."""
    conf = np.asarray(confidence, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)


def reliability(y_true, y_prob, *, n_bins: int = 15) -> pd.DataFrame:
    """Per bin: ``n``, mean top-label confidence, accuracy (NaN in empty bins)."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    conf, correct = y_prob.max(axis=1), (y_prob.argmax(axis=1) == y_true).astype(float)
    b = bin_index(conf, n_bins)
    n = np.bincount(b, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, conf, minlength=n_bins) / n
        acc = np.bincount(b, correct, minlength=n_bins) / n
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame(
        {"lo": edges[:-1], "hi": edges[1:], "n": n, "confidence": mean_conf, "accuracy": acc}
    )


def ece_binned(y_true, y_prob, *, n_bins: int = 15) -> float:
    """Top-label expected calibration error with M fixed equal-width bins on [0, 1]:
    ``ECE = sum_m (n_m / n) * |acc_m - conf_m|`` where ``conf_m`` is the mean max-probability and
    ``acc_m`` the accuracy of the argmax prediction in bin m. NaN on an empty set."""
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        return float("nan")
    r = reliability(y_true, y_prob, n_bins=n_bins)
    filled = r["n"] > 0
    return float(
        (r.loc[filled, "n"] * (r.loc[filled, "accuracy"] - r.loc[filled, "confidence"]).abs()).sum()
        / len(y_true)
    )


def ece_paper(y_true, y_prob, *, n_classes: int) -> float:
    """The paper's un-binned "ECE": ``mean_c mean_i |p_ic - 1[y_i = c]|`` (per-class mean absolute
    error, macro over classes), on probabilities (the released code fed logits; defect 6)."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    if len(y_true) == 0:
        return float("nan")
    onehot = np.eye(n_classes)[y_true]
    return float(np.mean(np.abs(y_prob - onehot).mean(axis=0)))


def _group_values(groups: Groups, fn, min_group_size: int, what: str) -> np.ndarray:
    out = np.full(len(groups.labels), np.nan)
    for g, label in enumerate(groups.labels):
        m = groups.mask(g)
        if _too_small(int(m.sum()), min_group_size, f"{what} {groups.attribute}={label}"):
            continue
        out[g] = fn(m)
    return out


def _spread(values: np.ndarray, groups: Groups, what: str) -> float:
    if len(values) < 2:
        _warn(f"{what} {groups.attribute}: only one group; gap NaN")
        return float("nan")
    if np.isnan(values).any():
        return float("nan")
    return float(values.max() - values.min())


def ece_by_group(
    y_true, y_prob, *, sensitive_features, n_bins: int = 15, min_group_size: int = 1, levels=None
) -> pd.Series:
    """:func:`ece_binned` within each group."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    gr = _as_groups(sensitive_features, levels)
    vals = _group_values(
        gr, lambda m: ece_binned(y_true[m], y_prob[m], n_bins=n_bins), min_group_size, "ECE"
    )
    return pd.Series(vals, index=list(gr.labels), name="ece_binned")


def ece_gap_binned(
    y_true, y_prob, *, sensitive_features, n_bins: int = 15, min_group_size: int = 1, levels=None
) -> float:
    """``ECE_gap = max_g ECE_g - min_g ECE_g`` with :func:`ece_binned` per group (any number)."""
    gr = _as_groups(sensitive_features, levels)
    vals = ece_by_group(
        y_true,
        y_prob,
        sensitive_features=gr,
        n_bins=n_bins,
        min_group_size=min_group_size,
    ).to_numpy()
    return _spread(vals, gr, "ECE gap (binned)")


def ece_paper_by_group(
    y_true, y_prob, *, sensitive_features, n_classes: int, min_group_size: int = 1, levels=None
) -> pd.Series:
    """:func:`ece_paper` within each group."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    gr = _as_groups(sensitive_features, levels)
    vals = _group_values(
        gr,
        lambda m: ece_paper(y_true[m], y_prob[m], n_classes=n_classes),
        min_group_size,
        "ECE (paper)",
    )
    return pd.Series(vals, index=list(gr.labels), name="ece_paper")


def _two_levels(gr: Groups, what: str) -> bool:
    if len(gr.labels) != 2:
        _warn(
            f"{what} {gr.attribute}: the paper variant needs exactly two groups, got "
            f"{len(gr.labels)} ({', '.join(gr.labels)}); NaN"
        )
        return False
    return True


def ece_gap_paper(
    y_true, y_prob, *, sensitive_features, n_classes: int, min_group_size: int = 1, levels=None
) -> float:
    """``ECE_delta = |E_1 - E_2|`` with ``E_g`` = :func:`ece_paper` on group g's images; two groups
    only (more: NaN and a warning)."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=float)
    gr = _as_groups(sensitive_features, levels)
    if not _two_levels(gr, "ECE gap (paper)"):
        return float("nan")
    vals = ece_paper_by_group(
        y_true, y_prob, sensitive_features=gr, n_classes=n_classes, min_group_size=min_group_size
    ).to_numpy()
    return float(abs(vals[1] - vals[0]))


# ---------------------------------------------------------------- F1 across groups


def group_macro_f1(
    y_true, y_pred, *, sensitive_features, n_classes: int, min_group_size: int = 1, levels=None
) -> pd.Series:
    """Macro-F1 over all K classes within each group (fairlearn ``MetricFrame.by_group`` of
    ``f1_score(labels=0..K-1, average="macro")``); NaN for a group that is too small or lacks a class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    gr = _as_groups(sensitive_features, levels)
    out = pd.Series(np.nan, index=list(gr.labels), name="macro_f1")
    valid = []
    for g, label in enumerate(gr.labels):
        m = gr.mask(g)
        where = f"F1 {gr.attribute}={label}"
        if _too_small(int(m.sum()), min_group_size, where):
            continue
        missing = _missing_classes(y_true[m], n_classes)
        if missing:
            _warn(f"{where}: no image of class index {missing}; group macro-F1 NaN")
            continue
        valid.append(g)
    if valid:
        keep = np.isin(gr.codes, valid)
        mf = MetricFrame(
            metrics=lambda t, p: f1_score(
                t, p, labels=list(range(n_classes)), average="macro", zero_division=np.nan
            ),
            y_true=y_true[keep],
            y_pred=y_pred[keep],
            sensitive_features=np.asarray(gr.labels, dtype=object)[gr.codes[keep]],
        )
        for label, v in mf.by_group.items():
            out[label] = float(v)
    return out


def f1_gap_standard(
    y_true, y_pred, *, sensitive_features, n_classes: int, min_group_size: int = 1, levels=None
) -> float:
    """``F1_gap = max_g macroF1_g - min_g macroF1_g`` over any number of groups (fairlearn's
    ``MetricFrame.difference(method="between_groups")``); NaN if any group's macro-F1 is NaN."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    gr = _as_groups(sensitive_features, levels)
    by = group_macro_f1(
        y_true,
        y_pred,
        sensitive_features=gr,
        n_classes=n_classes,
        min_group_size=min_group_size,
    )
    if len(by) < 2 or by.isna().any():
        return _spread(by.to_numpy(), gr, "F1 gap (standard)")
    mf = MetricFrame(
        metrics=lambda t, p: f1_score(t, p, labels=list(range(n_classes)), average="macro"),
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=np.asarray(gr.labels, dtype=object)[gr.codes],
    )
    return float(mf.difference(method="between_groups"))


def paper_macro_f1(y_true, y_pred, *, n_classes: int) -> float:
    """The paper's group F1: ``f1_score(average="macro", zero_division=1)`` with scikit-learn's
    default labels (classes present in ``y_true`` or ``y_pred``). NaN on an empty set."""
    if len(y_true) == 0:
        return float("nan")
    return float(f1_score(y_true, y_pred, average="macro", zero_division=1))


def paper_subgroup_f1(
    y_true,
    y_pred,
    *,
    sensitive_features,
    n_classes: int,
    min_group_size: int = 1,
    levels=None,
) -> pd.Series:
    """:func:`paper_macro_f1` in every intersectional subgroup of the columns (young-M, ...).

    A subgroup lacking a class keeps the paper's value (classes absent from both truth and
    prediction drop out of its average) and gets a warning; a too small one is NaN."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    gr = _as_groups(sensitive_features, levels)

    def one(m):
        missing = _missing_classes(y_true[m], n_classes)
        if missing:
            _warn(
                f"F1 (paper) {gr.attribute}={gr.labels[gr.codes[m][0]]}: no image of class "
                f"index {missing}; value kept as the paper computes it"
            )
        return paper_macro_f1(y_true[m], y_pred[m], n_classes=n_classes)

    vals = _group_values(gr, one, min_group_size, "F1 (paper)")
    return pd.Series(vals, index=list(gr.labels), name="macro_f1_paper")


def f1_gap_paper(
    y_true,
    y_pred,
    *,
    sensitive_features,
    attribute: str,
    n_classes: int,
    min_group_size: int = 1,
    levels=None,
) -> float:
    """The paper's signed F1_delta for ``attribute`` (the authors' ``calculate_metrics.py``).

    Subgroups are ``attribute`` x every other column of ``sensitive_features`` (the paper: age x
    sex). With ``a_1, a_2`` the attribute's two levels in order and ``F1(a, o)`` the paper macro-F1
    (:func:`paper_macro_f1`) of subgroup (a, o)::

        F1_delta = mean_o F1(a_2, o) - mean_o F1(a_1, o)

    so with levels ordered naturally F1_delta(age) = mean(old-M, old-F) - mean(young-M, young-F)
    and F1_delta(sex) = mean(young-M, old-M) - mean(young-F, old-F), the paper's signs. Needs
    exactly two levels (else NaN and a warning); any NaN subgroup makes it NaN.
    """
    cols = _columns(sensitive_features)
    if attribute not in cols:
        raise ValueError(f"f1_gap_paper: attribute '{attribute}' not in {list(cols)}")
    levels = dict(levels or {})
    attr_groups = group_codes({attribute: cols[attribute]}, levels=levels)
    if not _two_levels(attr_groups, "F1 gap (paper)"):
        return float("nan")
    ordered = {attribute: cols[attribute], **{k: v for k, v in cols.items() if k != attribute}}
    sub = group_codes(ordered, levels=levels)
    f1 = paper_subgroup_f1(
        y_true,
        y_pred,
        sensitive_features=sub,
        n_classes=n_classes,
        min_group_size=min_group_size,
    ).to_numpy()
    # The attribute is the slowest-varying column of the product, so each half is one level.
    low, high = np.split(f1, 2)
    if np.isnan(f1).any():
        return float("nan")
    return float(high.mean() - low.mean())


# ---------------------------------------------------------------- equalized odds, one-vs-rest


def ovr_rates(
    y_true, y_pred, *, sensitive_features, n_classes: int, min_group_size: int = 1, levels=None
) -> tuple[np.ndarray, np.ndarray, Groups]:
    """One-vs-rest ``TPR[g, c] = P(pred = c | y = c, g)`` and ``FPR[g, c] = P(pred = c | y != c, g)``.

    NaN (with a warning) where the group is too small, has no image of class c (TPR) or only images
    of class c (FPR); the paper's code wrote 0 there."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    gr = _as_groups(sensitive_features, levels)
    tpr = np.full((len(gr.labels), n_classes), np.nan)
    fpr = np.full((len(gr.labels), n_classes), np.nan)
    for g, label in enumerate(gr.labels):
        m = gr.mask(g)
        where = f"TPR/FPR {gr.attribute}={label}"
        if _too_small(int(m.sum()), min_group_size, where):
            continue
        t, p = y_true[m], y_pred[m]
        for c in range(n_classes):
            pos, neg = t == c, t != c
            if pos.any():
                tpr[g, c] = np.mean(p[pos] == c)
            else:
                _warn(f"{where}: no image of class index {c}; TPR NaN")
            if neg.any():
                fpr[g, c] = np.mean(p[neg] == c)
            else:
                _warn(f"{where}: only images of class index {c}; FPR NaN")
    return tpr, fpr, gr


def eq_odds_paper(
    y_true, y_pred, *, sensitive_features, n_classes: int, min_group_size: int = 1, levels=None
) -> float:
    """The paper's multi-class equalized odds for two groups g1, g2, one-vs-rest per class c::

        EqOdds = mean_c ( |TPR_c(g1) - TPR_c(g2)| + |FPR_c(g1) - FPR_c(g2)| ) / 2

    (per class this equals fairlearn's ``equalized_odds_difference(agg="mean")``). Two groups only;
    NaN with a warning otherwise or when a rate is undefined."""
    gr = _as_groups(sensitive_features, levels)
    if not _two_levels(gr, "EqOdds (paper)"):
        return float("nan")
    tpr, fpr, _ = ovr_rates(
        y_true, y_pred, sensitive_features=gr, n_classes=n_classes, min_group_size=min_group_size
    )
    per_class = (np.abs(tpr[0] - tpr[1]) + np.abs(fpr[0] - fpr[1])) / 2
    return float(np.mean(per_class))


def eq_odds_worst_case(
    y_true, y_pred, *, sensitive_features, n_classes: int, min_group_size: int = 1, levels=None
) -> dict:
    """fairlearn's worst-case equalized odds per class, one-vs-rest, over any number of groups::

        EO_c = max( max_g TPR_c - min_g TPR_c , max_g FPR_c - min_g FPR_c )

    (``equalized_odds_difference(y == c, pred == c, agg="worst_case")``), summarised as
    ``worst_case_max = max_c EO_c`` and ``worst_case_mean = mean_c EO_c``; ``per_class`` holds EO_c.
    A class whose rate is undefined in some group is NaN (fairlearn would count it as 0)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    gr = _as_groups(sensitive_features, levels)
    tpr, fpr, _ = ovr_rates(
        y_true, y_pred, sensitive_features=gr, n_classes=n_classes, min_group_size=min_group_size
    )
    per_class = np.full(n_classes, np.nan)
    if len(gr.labels) < 2:
        _warn(f"EqOdds (worst case) {gr.attribute}: only one group; NaN")
    else:
        labels = np.asarray(gr.labels, dtype=object)[gr.codes]
        for c in range(n_classes):
            if np.isnan(tpr[:, c]).any() or np.isnan(fpr[:, c]).any():
                continue
            per_class[c] = equalized_odds_difference(
                (y_true == c).astype(int),
                (y_pred == c).astype(int),
                sensitive_features=labels,
                agg="worst_case",
            )
    return {
        "per_class": per_class,
        "worst_case_max": float(np.max(per_class)),
        "worst_case_mean": float(np.mean(per_class)),
    }
