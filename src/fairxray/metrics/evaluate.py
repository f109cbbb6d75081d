"""One predictions table -> ``metrics.json``, ``by_group.csv`` and plots (the ``evaluate`` stage).

Point estimates come from :mod:`fairxray.metrics.fairness` (scikit-learn / fairlearn where they compute the
metric); intervals from the vectorised patient bootstrap in :mod:`fairxray.metrics.bootstrap`. Keys of
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
from fairxray.metrics import fairness as fm
from fairxray.metrics.bootstrap import (
    patient_weights,
    percentile_interval,
    replicate_metrics,
)
from fairxray.metrics.plots import plot_confusion, plot_group_f1, plot_reliability
from fairxray.metrics.predictions import prob_columns, read_predictions, validate_predictions

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
    :func:`fairxray.metrics.bootstrap.replicate_metrics` (checked by the tests)."""
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
    boot, boot_bg = _replicates(p, s)

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
        for g, label in enumerate(gr.labels):
            metrics[f"n/{attr}/{label}"] = int(gr.sizes[g])
        rows += _group_rows(p, attr, gr, point_bg, boot_bg, interval)
    pred = p.prob.argmax(axis=1)
    K = len(s.classes)
    confusion = np.bincount(p.y * K + pred, minlength=K * K).reshape(K, K)
    return Evaluation(
        metrics,
        pd.DataFrame(rows),
        _dedupe(msgs),
        _meta(p, s, source),
        _reliability(p, s),
        confusion,
    )


def _replicates(p: Prepared, s: Settings):
    """Bootstrap replicates of every metric (overall, per group); empty without ``n_boot``."""
    if s.n_boot <= 0:
        return {}, {}
    W = patient_weights(p.patients, s.n_boot, s.seed)
    return replicate_metrics(
        W,
        y=p.y,
        prob=p.prob,
        classes=s.classes,
        groupings=p.groupings,
        paper_subgroups=p.paper_subgroups,
        n_bins=s.ece_bins,
        min_group_size=s.min_group_size,
    )


def _group_rows(p: Prepared, attr: str, gr, point_bg, boot_bg, interval) -> list[dict]:
    """``by_group.csv`` rows of one attribute: value, interval, images and patients per group."""
    pats = [int(pd.Series(p.patients[gr.mask(g)]).nunique()) for g in range(len(gr.labels))]
    rows = []
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
                "n": int(gr.sizes[g]),
                "n_patients": pats[g],
            }
        )
    return rows


def _reliability(p: Prepared, s: Settings) -> dict[str, pd.DataFrame]:
    return {
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


def _meta(p: Prepared, s: Settings, source: str) -> dict:
    return {
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


def settings(p) -> Settings:
    """``params.metrics`` plus the expected groups: every configured age bin, so an empty bin shows
    up as an empty (NaN) group instead of disappearing."""
    from fairxray.data.nih import age_group_labels

    m = p.metrics
    levels = {"age_group": age_group_labels(p.data.age_bins)} if "age_group" in m.sensitive else {}
    return Settings(
        classes=tuple(p.data.classes),
        sensitive=tuple(m.sensitive),
        n_boot=m.n_boot,
        ci_level=m.ci_level,
        ece_bins=m.ece_bins,
        min_group_size=m.min_group_size,
        seed=m.seed,
        levels=levels,
    )


def evaluate_file(pred: str | Path, out: str | Path, s: Settings, profile: str) -> Evaluation:
    """Read one predictions file (validated against the contract), evaluate it, write ``out``."""
    df = read_predictions(pred, s.classes, s.sensitive)
    ev = evaluate_frame(df, s, str(pred))
    write_evaluation(ev, out, profile=profile)
    return ev
