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

from fairxray import DEMO_BANNER, paths
from fairxray.errors import UserError
from fairxray.metrics import fairness as fm
from fairxray.metrics.inference import (
    Design,
    chunk_for,
    distinct_runs,
    infer_cell,
    undefined_summary,
)
from fairxray.metrics.plots import (
    plot_confusion,
    plot_group_f1,
    plot_reliability,
    plot_underdiagnosis,
)
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
    n_perm: int = 0
    correction: str = "holm"
    alpha: float = 0.05
    mde_power: float = 0.8
    levels: Mapping[str, Sequence[str]] = field(default_factory=dict)  # expected groups per column
    task: str = "multiclass"  # data.task; multilabel: fairxray.metrics.multilabel_inference
    threshold_rule: str = "max_f1"
    target_sensitivity: float = 0.8


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
    replicates: dict[str, np.ndarray] = field(default_factory=dict)  # bootstrap, per key


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
    m["brier"] = fm.brier_score(y, prob, n_classes=K)
    m["nll"] = fm.nll(y, prob, n_classes=K)
    auc = fm.auroc_per_class(y, prob, n_classes=K)
    for c, name in enumerate(s.classes):
        m[f"f1/{name}"] = float(u["f1"][c])
        m[f"auroc/{name}"] = float(auc[c])
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
        _threshold_free(m, bg, y, prob, attr, gr, s)
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


def _threshold_free(m: dict, bg: dict, y, prob, attr: str, gr: fm.Groups, s: Settings) -> None:
    """Per group: AUROC per class and macro, Brier, NLL, TPR and FNR per class; their max - min gaps
    (``auroc_gap``, ``brier_gap``, ``nll_gap``, ``fnr_gap/<attr>/<Class>``) and ``auroc_worst``."""
    K, G = len(s.classes), len(gr.labels)
    auc, tpr = np.full((G, K), np.nan), np.full((G, K), np.nan)
    brier, nll, macro = np.full(G, np.nan), np.full(G, np.nan), np.full(G, np.nan)
    for g in range(G):
        mk = gr.mask(g)
        if mk.sum() < max(s.min_group_size, 1):
            continue
        yg, pg = y[mk], prob[mk]
        auc[g] = fm.auroc_per_class(yg, pg, n_classes=K)
        macro[g] = auc[g].mean()
        brier[g] = fm.brier_score(yg, pg, n_classes=K)
        nll[g] = fm.nll(yg, pg, n_classes=K)
        for c in range(K):
            pos = yg == c
            tpr[g, c] = np.mean(pg[pos].argmax(1) == c) if pos.any() else np.nan

    def spread(v):
        return float(v.max(axis=0) - v.min(axis=0)) if G > 1 else float("nan")

    m[f"auroc_gap/{attr}"] = spread(macro)
    m[f"brier_gap/{attr}"] = spread(brier)
    m[f"nll_gap/{attr}"] = spread(nll)
    for c, name in enumerate(s.classes):
        m[f"fnr_gap/{attr}/{name}"] = spread(1.0 - tpr[:, c])
    m[f"auroc_worst/{attr}"] = float(macro.min())
    for g, label in enumerate(gr.labels):
        bg[("brier", attr, label)] = float(brier[g])
        bg[("nll", attr, label)] = float(nll[g])
        for c, name in enumerate(s.classes):
            bg[(f"fnr/{name}", attr, label)] = float(1.0 - tpr[g, c])
            bg[(f"auroc/{name}", attr, label)] = float(auc[g, c])


def _labels(gr: fm.Groups) -> list[str]:
    return list(gr.labels)


def _dedupe(msgs: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(msgs))


def design(p: Prepared, s: Settings) -> Design:
    return Design(
        patients=p.patients,
        groupings=p.groupings,
        paper_subgroups=p.paper_subgroups,
        classes=tuple(s.classes),
        n_bins=s.ece_bins,
        min_group_size=s.min_group_size,
        n_boot=s.n_boot,
        n_perm=s.n_perm,
        ci_level=s.ci_level,
        alpha=s.alpha,
        mde_power=s.mde_power,
        correction=s.correction,
        seed=s.seed,
        chunk=chunk_for(len(p.patients)),
    )


def evaluate_frame(df: pd.DataFrame, s: Settings, source: str = "<predictions>") -> Evaluation:
    """All metrics, their patient-bootstrap intervals, the gaps' permutation inference and group
    sizes for one predictions table."""
    return evaluate_runs([df], s, [source])


def evaluate_runs(
    dfs: Sequence[pd.DataFrame], s: Settings, sources: Sequence[str], salt: str = ""
) -> Evaluation:
    """One cell: several runs' predictions on the same test rows (one per seed), combined as in
    :mod:`fairxray.metrics.inference` (identical runs count once)."""
    preps = [prepare(df, s, src) for df, src in zip(dfs, sources, strict=True)]
    ids = dfs[0]["image_id"].astype(str).to_numpy()
    for df, src in zip(dfs[1:], sources[1:], strict=True):
        if not np.array_equal(df["image_id"].astype(str).to_numpy(), ids):
            raise UserError(f"{src}: image_id rows differ from {sources[0]}; seeds must share rows")
    keep = distinct_runs([(q.y, q.prob) for q in preps])
    preps = [preps[i] for i in keep]
    p = preps[0]
    points, gpoints, msgs = [], [], []
    for q in preps:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", fm.FairnessWarning)
            pt, bg = point_metrics(q, s)
        points.append(pt)
        gpoints.append(bg)
        msgs += [str(w.message) for w in caught if issubclass(w.category, fm.FairnessWarning)]
    ci = infer_cell(points, gpoints, [(q.y, q.prob) for q in preps], design(p, s), salt)
    metrics = dict(ci.metrics)
    metrics["n_seeds"] = len(dfs)
    metrics["n_runs"] = ci.n_runs
    metrics["n/images"] = len(p.y)
    metrics["n/patients"] = int(pd.Series(p.patients).nunique())
    rows = []
    for attr, gr in p.groupings.items():
        for g, label in enumerate(gr.labels):
            metrics[f"n/{attr}/{label}"] = int(gr.sizes[g])
        rows += _group_rows(p, attr, gr, ci.by_group)
    K = len(s.classes)
    confusion = np.bincount(p.y * K + p.prob.argmax(axis=1), minlength=K * K).reshape(K, K)
    meta = _meta(p, s, ", ".join(sources))
    meta["ci_methods"] = ci.ci_methods
    meta["n_runs"] = ci.n_runs
    meta["deterministic"] = ci.n_runs == 1 and len(dfs) > 1
    meta["notes"] = undefined_summary(ci.undefined, s.n_boot)
    return Evaluation(
        metrics,
        pd.DataFrame(rows),
        _dedupe(msgs),
        meta,
        _reliability(p, s),
        confusion,
        ci.replicates,
    )


def _group_rows(p: Prepared, attr: str, gr, by_group) -> list[dict]:
    """``by_group.csv`` rows of one attribute: value, interval, images and patients per group."""
    pats = [int(pd.Series(p.patients[gr.mask(g)]).nunique()) for g in range(len(gr.labels))]
    rows = []
    for (metric, a, label), (v, lo, hi) in by_group.items():
        if a != attr:
            continue
        g = gr.labels.index(label)
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
        "ci_method": "percentile bootstrap over patients (rows of a drawn patient kept together), "
        "seeds evaluated on the same resamples and averaged; BC or normal where the percentile "
        "interval excludes the estimate (ci_methods)",
        "n_perm": s.n_perm,
        "null": "permutation of the sensitive values across patients (a patient's images together)",
        "correction": s.correction,
        "alpha": s.alpha,
        "mde_power": s.mde_power,
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
        "label": _label(demo),
        "warnings": ev.warnings,
    }
    (tmp / "evaluation.json").write_text(json.dumps(meta, indent=2) + "\n")
    labelled(ev.by_group, demo).to_csv(tmp / "by_group.csv", index=False)
    if ev.meta.get("task") == "multilabel":
        plot_underdiagnosis(ev.by_group, tmp / "underdiagnosis.png", demo=demo)
    else:
        plot_group_f1(ev.by_group, tmp / "group_f1.png", demo=demo)
        plot_reliability(ev.reliability, tmp / "reliability.png", demo=demo)
        plot_confusion(ev.confusion, ev.meta["classes"], tmp / "confusion.png", demo=demo)
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def labelled(df: pd.DataFrame, demo: bool) -> pd.DataFrame:
    """``df`` with a first ``label`` column holding the DEMO banner in the demo profile."""
    return df.assign(label=DEMO_BANNER)[["label", *df.columns]] if demo else df


def cell_dir(model: str, method: str, split: str = "test") -> Path:
    """``metrics/<model>/<method>/``: the cell's ``cell.json``, ``cell_by_group.csv`` and
    ``replicates.npz`` beside its ``seed<k>/`` folders."""
    return paths.metrics_dir(model, method, 0, split).parent


def write_cell(ev: Evaluation, out_dir: str | Path, *, profile: str, pairing: str) -> Path:
    """The cell's files: ``cell.json`` (every key of ``metrics.json`` for all seeds combined, plus
    ``n_seeds``, ``n_runs``, ``seed_sd/<key>``), ``cell_by_group.csv``, ``cell_evaluation.json`` and
    ``replicates.npz`` (the combined bootstrap replicates per key, float32, with ``pairing``: a
    digest of the patients, ``n_boot`` and seed; two cells with the same pairing used the same
    patient resamples, which :func:`fairxray.metrics.paired.paired_bootstrap` checks)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    demo = profile == "demo"
    files = {
        "cell.json": json.dumps({k: _json_value(v) for k, v in ev.metrics.items()}, indent=2),
        "cell_evaluation.json": json.dumps(
            {**ev.meta, "profile": profile, "label": _label(demo), "warnings": ev.warnings},
            indent=2,
        ),
    }
    for name, text in files.items():
        tmp = out / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text + "\n")
        os.replace(tmp, out / name)
    tmp = out / f".cell_by_group.csv.tmp-{os.getpid()}"
    labelled(ev.by_group, demo).to_csv(tmp, index=False)
    os.replace(tmp, out / "cell_by_group.csv")
    keys = sorted(ev.replicates)
    tmp = out / f".replicates.tmp-{os.getpid()}.npz"
    np.savez_compressed(
        tmp,
        keys=np.asarray(keys),
        values=np.stack([ev.replicates[k] for k in keys]).astype(np.float32)
        if keys
        else np.zeros((0, 0), np.float32),
        pairing=np.asarray(pairing),
    )
    os.replace(tmp, out / "replicates.npz")
    return out


def pairing_digest(df: pd.DataFrame, s: Settings) -> str:
    """Same test patients (sorted), ``n_boot`` and seed -> same bootstrap resamples."""
    import hashlib

    pats = ",".join(sorted(df["patient_id"].astype(str).unique()))
    return hashlib.sha256(f"{pats}|{s.n_boot}|{s.seed}".encode()).hexdigest()[:16]


def evaluate_cell(
    model: str, method: str, seeds: Sequence[int], split: str, s: Settings, profile: str
) -> tuple[list[Evaluation], Evaluation]:
    """``evaluate --model M --method X``: every seed's folder, then the cell (all seeds combined;
    with one distinct run the cell equals that run and is not recomputed)."""
    if s.task == "multilabel":
        return _evaluate_cell_multilabel(model, method, seeds, split, s, profile)
    dfs, evs, srcs = [], [], []
    for seed in seeds:
        pred = paths.prediction_file(model, method, seed, split)
        df = read_predictions(pred, s.classes, s.sensitive)
        ev = evaluate_frame(df, s, str(pred))
        write_evaluation(ev, paths.metrics_dir(model, method, seed, split), profile=profile)
        dfs.append(df)
        evs.append(ev)
        srcs.append(str(pred))
    if (
        len(dfs) == 1
        or len(distinct_runs([(None, q[prob_columns(s.classes)].to_numpy()) for q in dfs])) == 1
    ):
        cell = evs[0]
        cell.metrics["n_seeds"] = len(dfs)
        cell.meta["deterministic"] = len(dfs) > 1
    else:
        cell = evaluate_runs(dfs, s, srcs, salt=f"{model}/{method}")
    write_cell(
        cell, cell_dir(model, method, split), profile=profile, pairing=pairing_digest(dfs[0], s)
    )
    return evs, cell


def _ml_options(s: Settings):
    from fairxray.metrics.multilabel_inference import Options

    return Options(
        classes=tuple(s.classes), sensitive=tuple(s.sensitive), threshold_rule=s.threshold_rule,
        target_sensitivity=s.target_sensitivity, n_boot=s.n_boot, n_perm=s.n_perm,
        ci_level=s.ci_level, min_group_size=s.min_group_size, correction=s.correction,
        alpha=s.alpha, seed=s.seed, levels={k: list(v) for k, v in s.levels.items()},
    )  # fmt: skip


def evaluate_multilabel(tests, vals, s: Settings, sources, salt: str = "") -> Evaluation:
    """One run (or a cell of runs) under ``data.task: multilabel``: thresholds from ``vals``
    (validation only), metrics and inference from :mod:`fairxray.metrics.multilabel_inference`."""
    from fairxray.metrics.multilabel_inference import infer

    r = infer(tests, vals, _ml_options(s), sources, salt)
    return Evaluation(r.metrics, r.by_group, r.warnings, r.meta, {}, np.zeros((0, 0)), r.replicates)


def _read_val(test_file: Path, s: Settings) -> pd.DataFrame:
    """The validation predictions beside ``test_file`` (``.../val.parquet``), for thresholds."""
    val = Path(test_file).with_name("val.parquet")
    if not val.is_file():
        raise UserError(
            f"{val}: validation predictions not found; multilabel thresholds are chosen on "
            f"validation (metrics.threshold_rule), so {Path(test_file).name} needs val.parquet beside it"
        )
    return read_predictions(val, s.classes, s.sensitive, task="multilabel")


def _evaluate_cell_multilabel(model, method, seeds, split, s: Settings, profile: str):
    dfs, vals, evs, srcs = [], [], [], []
    for seed in seeds:
        pred = paths.prediction_file(model, method, seed, split)
        df = read_predictions(pred, s.classes, s.sensitive, task="multilabel")
        val = _read_val(pred, s)
        ev = evaluate_multilabel([df], [val], s, [str(pred)])
        write_evaluation(ev, paths.metrics_dir(model, method, seed, split), profile=profile)
        dfs.append(df)
        vals.append(val)
        evs.append(ev)
        srcs.append(str(pred))
    if len(dfs) == 1:
        cell = evs[0]
    else:
        cell = evaluate_multilabel(dfs, vals, s, srcs, salt=f"{model}/{method}")
    write_cell(
        cell, cell_dir(model, method, split), profile=profile, pairing=pairing_digest(dfs[0], s)
    )
    return evs, cell


def _label(demo: bool) -> str:
    return DEMO_BANNER if demo else "NIH ChestX-ray14 results"


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
        n_perm=m.n_perm,
        correction=m.correction,
        alpha=m.alpha,
        mde_power=m.mde_power,
        levels=levels,
        task=p.data.task,
        threshold_rule=m.threshold_rule,
        target_sensitivity=m.target_sensitivity,
    )


def evaluate_file(pred: str | Path, out: str | Path, s: Settings, profile: str) -> Evaluation:
    """Read one predictions file (validated against the contract), evaluate it, write ``out``.
    Under multilabel the thresholds come from ``val.parquet`` beside ``pred``."""
    if s.task == "multilabel":
        df = read_predictions(pred, s.classes, s.sensitive, task="multilabel")
        ev = evaluate_multilabel([df], [_read_val(pred, s)], s, [str(pred)])
        write_evaluation(ev, out, profile=profile)
        return ev
    df = read_predictions(pred, s.classes, s.sensitive)
    ev = evaluate_frame(df, s, str(pred))
    write_evaluation(ev, out, profile=profile)
    return ev
