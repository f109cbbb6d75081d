"""One predictions table -> ``metrics.json``, ``by_group.csv`` and plots (the ``evaluate`` stage).

Point estimates come from :mod:`fairxray.fairness` (scikit-learn / fairlearn where they compute the
metric); intervals from the vectorised patient bootstrap in :mod:`fairxray.bootstrap`. Keys of
``metrics.json`` (``attr`` = each sensitive column, plus their intersection ``age_group&sex``):

``accuracy``, ``macro_f1``, ``balanced_accuracy``, ``auroc_macro``, ``f1/<Class>``, ``var_f1``,
``ece`` (binned, top label), ``ece_paper``; ``f1_gap/<attr>/{standard,paper}``,
``eq_odds/<attr>/{paper,worst_case_max,worst_case_mean}``, ``ece_gap/<attr>/{binned,paper}`` (the
``paper`` variants for single attributes only); each with ``<key>/ci_low`` and ``<key>/ci_high``.
Group sizes: ``n/images``, ``n/patients``, ``n/<attr>/<group>``. An undefined value is ``null`` in
JSON (NaN in Python) and its reason is in ``evaluation.json`` under ``warnings``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairxray import DEMO_BANNER
from fairxray import fairness as fm
from fairxray.bootstrap import (
    patient_weights,
    percentile_interval,
    replicate_metrics,
)
from fairxray.predictions import prob_columns, validate_predictions

GAP_VARIANTS = {
    "f1_gap": ("paper", "standard"),
    "eq_odds": ("paper", "worst_case_max", "worst_case_mean"),
    "ece_gap": ("binned", "paper"),
}


@dataclass(frozen=True)
class Settings:
    """What ``evaluate`` needs besides the table; mirrors ``params.metrics``."""

    classes: tuple[str, ...]
    sensitive: tuple[str, ...]
    n_boot: int = 200
    ci_level: float = 0.95
    ece_bins: int = 15
    min_group_size: int = 5
    seed: int = 0
    levels: Mapping[str, Sequence[str]] = field(default_factory=dict)  # expected groups per column


@dataclass(frozen=True)
class Prepared:
    y: np.ndarray
    prob: np.ndarray
    patients: np.ndarray
    groupings: dict[str, fm.Groups]
    paper_subgroups: dict[str, fm.Groups]
    sensitive: pd.DataFrame


@dataclass
class Evaluation:
    metrics: dict[str, float]
    by_group: pd.DataFrame
    warnings: list[str]
    meta: dict
    reliability: dict[str, pd.DataFrame]  # attr -> per group and bin (plots)
    confusion: np.ndarray


def prepare(df: pd.DataFrame, s: Settings, source: str = "<predictions>") -> Prepared:
    validate_predictions(df, s.classes, s.sensitive, source)
    sens = pd.DataFrame({c: df[c].astype(str).to_numpy() for c in s.sensitive})
    levels = {c: list(s.levels[c]) for c in s.sensitive if c in s.levels}
    groupings = {c: fm.group_codes(sens[[c]], levels=levels) for c in s.sensitive}
    if len(s.sensitive) > 1:
        inter = fm.group_codes(sens, levels=levels)
        groupings[inter.attribute] = inter
    paper_subgroups = {
        c: fm.group_codes(sens[[c, *[o for o in s.sensitive if o != c]]], levels=levels)
        for c in s.sensitive
    }
    return Prepared(
        y=df["label_idx"].to_numpy(dtype=np.int64),
        prob=df[prob_columns(s.classes)].to_numpy(dtype=np.float64),
        patients=df["patient_id"].astype(str).to_numpy(),
        groupings=groupings,
        paper_subgroups=paper_subgroups,
        sensitive=sens,
    )


def point_metrics(
    p: Prepared, s: Settings
) -> tuple[dict[str, float], dict[tuple[str, str, str], float]]:
    """The point estimate of every key, with the same keys as
    :func:`fairxray.bootstrap.replicate_metrics` (checked by the tests)."""
    K, y, prob, mgs = len(s.classes), p.y, p.prob, s.min_group_size
    pred = prob.argmax(axis=1)
    everyone = np.full(len(y), "all", dtype=object)
    m: dict[str, float] = {}
    u = fm.utility(y, prob, n_classes=K, min_group_size=mgs, where="all images")
    for k in ("accuracy", "macro_f1", "balanced_accuracy", "auroc_macro"):
        m[k] = u[k]
    for c, name in enumerate(s.classes):
        m[f"f1/{name}"] = float(u["f1"][c])
    m["var_f1"] = fm.var_f1(u["f1"])
    m["ece"] = float(
        fm.ece_by_group(
            y, prob, sensitive_features=everyone, n_bins=s.ece_bins, min_group_size=mgs
        ).iloc[0]
    )
    m["ece_paper"] = float(
        fm.ece_paper_by_group(
            y, prob, sensitive_features=everyone, n_classes=K, min_group_size=mgs
        ).iloc[0]
    )
    bg: dict[tuple[str, str, str], float] = {}
    for attr, gr in p.groupings.items():
        kw = {"sensitive_features": gr, "min_group_size": mgs}
        m[f"f1_gap/{attr}/standard"] = fm.f1_gap_standard(y, pred, n_classes=K, **kw)
        wc = fm.eq_odds_worst_case(y, pred, n_classes=K, **kw)
        m[f"eq_odds/{attr}/worst_case_max"] = wc["worst_case_max"]
        m[f"eq_odds/{attr}/worst_case_mean"] = wc["worst_case_mean"]
        m[f"ece_gap/{attr}/binned"] = fm.ece_gap_binned(y, prob, n_bins=s.ece_bins, **kw)
        if attr in p.paper_subgroups:
            m[f"f1_gap/{attr}/paper"] = fm.f1_gap_paper(
                y,
                pred,
                sensitive_features=p.sensitive[[attr, *[o for o in s.sensitive if o != attr]]],
                attribute=attr,
                n_classes=K,
                min_group_size=mgs,
                levels={c: _labels(p.groupings[c]) for c in s.sensitive},
            )
            m[f"eq_odds/{attr}/paper"] = fm.eq_odds_paper(y, pred, n_classes=K, **kw)
            m[f"ece_gap/{attr}/paper"] = fm.ece_gap_paper(y, prob, n_classes=K, **kw)
        tpr, fpr, _ = fm.ovr_rates(y, pred, n_classes=K, **kw)
        per = {
            "macro_f1_paper": fm.paper_subgroup_f1(y, pred, n_classes=K, **kw),
            "ece_binned": fm.ece_by_group(y, prob, n_bins=s.ece_bins, **kw),
            "ece_paper": fm.ece_paper_by_group(y, prob, n_classes=K, **kw),
        }
        for g, label in enumerate(gr.labels):
            gu = fm.utility(
                y[gr.mask(g)],
                prob[gr.mask(g)],
                n_classes=K,
                min_group_size=mgs,
                where=f"{attr}={label}",
            )
            for k in ("accuracy", "macro_f1", "balanced_accuracy", "auroc_macro"):
                bg[(k, attr, label)] = gu[k]
            for k, series in per.items():
                bg[(k, attr, label)] = float(series.iloc[g])
            for c, name in enumerate(s.classes):
                bg[(f"f1/{name}", attr, label)] = float(gu["f1"][c])
                bg[(f"tpr/{name}", attr, label)] = float(tpr[g, c])
                bg[(f"fpr/{name}", attr, label)] = float(fpr[g, c])
    return m, bg


def _labels(gr: fm.Groups) -> list[str]:
    return list(gr.labels)


def _dedupe(msgs: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(msgs))


def evaluate_frame(df: pd.DataFrame, s: Settings, source: str = "<predictions>") -> Evaluation:
    """All metrics, their patient-bootstrap intervals and group sizes for one predictions table."""
    p = prepare(df, s, source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fm.FairnessWarning)
        point, point_bg = point_metrics(p, s)
    msgs = [str(w.message) for w in caught if issubclass(w.category, fm.FairnessWarning)]

    boot: dict[str, np.ndarray] = {}
    boot_bg: dict[tuple[str, str, str], np.ndarray] = {}
    if s.n_boot > 0:
        W = patient_weights(p.patients, s.n_boot, s.seed)
        boot, boot_bg = replicate_metrics(
            W,
            y=p.y,
            prob=p.prob,
            classes=s.classes,
            groupings=p.groupings,
            paper_subgroups=p.paper_subgroups,
            n_bins=s.ece_bins,
            min_group_size=s.min_group_size,
        )

    def interval(name: str, samples: np.ndarray | None, value: float) -> tuple[float, float]:
        if samples is None:
            return float("nan"), float("nan")
        lo, hi, used = percentile_interval(samples, s.ci_level)
        if math.isfinite(value) and used < s.n_boot:
            msgs.append(
                f"{name}: {s.n_boot - used} of {s.n_boot} bootstrap replicates undefined "
                f"(a resampled group too small or lacking a class); interval from the other {used}"
            )
        return lo, hi

    metrics: dict[str, float] = {}
    for k, v in point.items():
        lo, hi = interval(k, boot.get(k), v)
        metrics[k] = v
        metrics[f"{k}/ci_low"] = lo
        metrics[f"{k}/ci_high"] = hi
    metrics["n/images"] = len(p.y)
    metrics["n/patients"] = int(pd.Series(p.patients).nunique())
    rows = []
    for attr, gr in p.groupings.items():
        sizes = gr.sizes
        pats = [int(pd.Series(p.patients[gr.mask(g)]).nunique()) for g in range(len(gr.labels))]
        for g, label in enumerate(gr.labels):
            metrics[f"n/{attr}/{label}"] = int(sizes[g])
        for (metric, a, label), v in point_bg.items():
            if a != attr:
                continue
            g = gr.labels.index(label)
            lo, hi = interval(f"{metric} {attr}={label}", boot_bg.get((metric, a, label)), v)
            rows.append(
                {
                    "metric": metric,
                    "attribute": attr,
                    "group": label,
                    "value": v,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n": int(sizes[g]),
                    "n_patients": pats[g],
                }
            )
    by_group = pd.DataFrame(rows)
    pred = p.prob.argmax(axis=1)
    K = len(s.classes)
    confusion = np.bincount(p.y * K + pred, minlength=K * K).reshape(K, K)
    reliability = {
        attr: pd.concat(
            [
                fm.reliability(p.y[gr.mask(g)], p.prob[gr.mask(g)], n_bins=s.ece_bins).assign(
                    group=label
                )
                for g, label in enumerate(gr.labels)
            ],
            ignore_index=True,
        )
        for attr, gr in p.groupings.items()
    }
    meta = {
        "source": source,
        "classes": list(s.classes),
        "sensitive": list(s.sensitive),
        "groups": {a: list(g.labels) for a, g in p.groupings.items()},
        "n_boot": s.n_boot,
        "ci_level": s.ci_level,
        "ci_method": "percentile bootstrap over patients (rows of a drawn patient kept together)",
        "ece_bins": s.ece_bins,
        "min_group_size": s.min_group_size,
        "seed": s.seed,
        "prediction_rule": "argmax of the class probabilities",
    }
    return Evaluation(metrics, by_group, _dedupe(msgs), meta, reliability, confusion)


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.floating | np.integer):
        return _json_value(v.item())
    return v


def write_evaluation(ev: Evaluation, out_dir: str | Path, *, profile: str) -> Path:
    """Write ``metrics.json``, ``evaluation.json`` (meta + warnings), ``by_group.csv`` and the PNG
    plots into ``out_dir`` atomically: a temp folder renamed over the old one at the end."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    demo = profile == "demo"
    (tmp / "metrics.json").write_text(
        json.dumps({k: _json_value(v) for k, v in ev.metrics.items()}, indent=2) + "\n"
    )
    meta = {
        **ev.meta,
        "profile": profile,
        "label": DEMO_BANNER if demo else "NIH ChestX-ray14 results",
        "warnings": ev.warnings,
    }
    (tmp / "evaluation.json").write_text(json.dumps(meta, indent=2) + "\n")
    ev.by_group.to_csv(tmp / "by_group.csv", index=False)
    plot_group_f1(ev.by_group, tmp / "group_f1.png", demo=demo)
    plot_reliability(ev.reliability, tmp / "reliability.png", demo=demo)
    plot_confusion(ev.confusion, ev.meta["classes"], tmp / "confusion.png", demo=demo)
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path: Path, demo: bool, title: str) -> None:
    fig.suptitle(f"{DEMO_BANNER}\n{title}" if demo else title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_group_f1(by_group: pd.DataFrame, path: Path, *, demo: bool) -> None:
    """Macro-F1 per group with its patient-bootstrap interval, one panel per attribute."""
    plt = _pyplot()
    d = by_group[by_group["metric"] == "macro_f1"]
    attrs = list(dict.fromkeys(d["attribute"]))
    fig, axes = plt.subplots(1, len(attrs), figsize=(3.2 * len(attrs) + 1, 3.4), squeeze=False)
    for ax, attr in zip(axes[0], attrs, strict=True):
        a = d[d["attribute"] == attr]
        v = a["value"].to_numpy(dtype=float)
        err = np.vstack([v - a["ci_low"].to_numpy(float), a["ci_high"].to_numpy(float) - v])
        # A percentile interval need not contain the point estimate (a skewed bootstrap): the bar
        # then shows only the side that extends beyond it, since matplotlib rejects negative errors.
        err = np.clip(np.where(np.isfinite(err), err, 0), 0, None)
        ax.bar(range(len(a)), np.nan_to_num(v), yerr=err, capsize=3, color="#4c78a8")
        ax.set_xticks(range(len(a)))
        ax.set_xticklabels(
            [f"{g}\nn={n}" for g, n in zip(a["group"], a["n"], strict=True)], fontsize=7
        )
        ax.set_ylim(0, 1)
        ax.set_title(attr, fontsize=8)
        ax.set_ylabel("macro-F1")
    _finish(fig, path, demo, "Per-group macro-F1 (bars: patient-bootstrap CI)")


def plot_reliability(tables: Mapping[str, pd.DataFrame], path: Path, *, demo: bool) -> None:
    """Reliability diagram (accuracy against mean confidence per fixed bin), one line per group."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(3.4 * len(tables) + 1, 3.4), squeeze=False)
    for ax, (attr, t) in zip(axes[0], tables.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        for group, g in t.groupby("group", sort=False):
            g = g[g["n"] > 0]
            ax.plot(
                g["confidence"],
                g["accuracy"],
                marker="o",
                ms=3,
                label=f"{group} (n={int(g['n'].sum())})",
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean top-label confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(attr, fontsize=8)
        ax.legend(fontsize=6)
    _finish(fig, path, demo, "Reliability per group (equal-width bins on [0, 1])")


def plot_confusion(
    confusion: np.ndarray, classes: Sequence[str], path: Path, *, demo: bool
) -> None:
    """Confusion matrix, counts, rows = true class."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.imshow(confusion, cmap="Blues")
    k = len(classes)
    ax.set_xticks(range(k))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k))
    ax.set_yticklabels(classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = confusion.max() if confusion.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                int(confusion[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if confusion[i, j] > top / 2 else "black",
            )
    _finish(fig, path, demo, "Confusion matrix (test split)")
