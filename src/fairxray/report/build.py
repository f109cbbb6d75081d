"""Every run's ``metrics.json`` -> the paper's two tables (Markdown, CSV, one self-contained HTML).

Table 1 (utility): accuracy, per-disease F1, Var_F1. Table 2 (fairness): F1 gap, equalized odds and
ECE gap for each sensitive attribute, every variant named. One row per model x method: the mean over
seeds and an interval: with two or more seeds a Student-t interval over the seed means
(``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)``); with one seed that run's patient-bootstrap
interval, and the ``ci`` column says which. Then "paper vs here" (the published numbers of
paper-protocol.md §5 beside ours where the cell exists) and the deviations from the authors' code.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fairxray import DEMO_BANNER, paths
from fairxray.config import Params
from fairxray.report.mitigation import write_section as write_mitigation_section

DEMO_LABEL = "synthetic-image, demo-model results"

# paper-protocol.md §5: the only published cells recoverable (third-party summaries of the paper).
# (model, method or None when the paper does not say, metrics.json key, value, what was published)
PUBLISHED = (
    (
        "medclip-vit",
        "full_ft",
        "accuracy",
        0.596,
        "overall accuracy on NIH 6x200 test, 59.6 % (highest in the study) [SUMMARY]",
    ),
    (
        "gloria",
        None,
        "f1_gap/sex/paper",
        0.025,
        "F1_delta gender 2.5 % (best fairness of all models); sign and method not stated [SUMMARY]",
    ),
    (
        "gloria",
        None,
        "f1_gap/age_group/paper",
        0.004,
        "F1_delta age 0.4 %; sign and method not stated [SUMMARY]",
    ),
)

# Every choice that differs from the authors' released code (github.com/mu9enn/fair_analysis_med_clip,
# commit f130500; paper-protocol.md §3-4), and why.
DEVIATIONS = (
    (
        "Class order",
        "Every per-class quantity uses data.classes (the training label order). The released "
        "calculate_metrics.py hard-codes another disease order, so its per-disease F1 columns are "
        "mislabelled and its ECE gap compares probabilities with the wrong one-hot columns (defect 5).",
    ),
    (
        "Calibration on probabilities",
        "ECE_delta (paper variant) is computed on softmax probabilities; the released code fed raw "
        "logits (defect 6), which makes |p - y| meaningless. A binned top-label ECE with fixed "
        "equal-width bins on [0, 1] is reported beside it (ece_gap/<attr>/binned).",
    ),
    (
        "Age groups",
        "Groups come from the age_group column (left-closed bins from data.age_bins). The released "
        "equalized-odds code used age ranges [0, 60] and [60, 150] with <= on both ends, so 60-year-olds "
        "counted in both groups.",
    ),
    (
        "Undefined rates are NaN, not 0",
        "Where a group has no image of a class (TPR undefined) or only that class (FPR undefined), or "
        "is smaller than metrics.min_group_size, the value is NaN with a warning; the released code "
        "wrote 0 for such rates, silently shrinking EqOdds.",
    ),
    (
        "Per-disease F1 of an absent class",
        "f1/<Class> is NaN for a class absent from the test set; the released code used "
        "zero_division=1. Identical whenever every class is present (always, on NIH 6x200). The paper "
        "variant of F1_delta keeps zero_division=1 exactly.",
    ),
    (
        "Additional variants",
        "Beside the paper's signed F1_delta, mean-of-(|dTPR|+|dFPR|)/2 EqOdds and un-binned ECE_delta "
        "(two groups only), the report gives the max-min macro-F1 gap (fairlearn MetricFrame), "
        "fairlearn's worst-case equalized-odds difference per class (max and mean over classes) and "
        "the binned ECE gap, all defined for any number of groups and for age x sex intersections.",
    ),
    (
        "Uncertainty",
        "Every metric carries a percentile bootstrap interval that resamples patients (not images), "
        "and runs are repeated over params.seeds; the paper reports single numbers. Max-min gaps are "
        "non-negative and biased upwards under resampling, so their percentile interval can exclude a "
        "small point estimate; the signed paper F1_delta does not have this problem.",
    ),
    (
        "Split protocol",
        "The paper's nih6x200 sampling (with replacement where a cell is short) is reproduced exactly "
        "as `nih6x200-paper` and its leakage measured in the split manifest (29 repeated image ids; 9 "
        "images and 23 patients in both train and test, defect 7). `nih6x200-clean` is the same "
        "design with each patient used once; data.protocol says which one these runs used.",
    ),
    (
        "LoRA trains",
        "LoRA is peft on each model's declared targets (attention for transformers, convs for "
        "ResNets), tested to receive gradients and change. The released ViT LoRA wrote its update "
        "into in_proj_weight.data, outside autograd, so it never trained (defect 1), and it only "
        "found OpenAI-CLIP module names (defect 2).",
    ),
    (
        "Frozen backbones stay frozen",
        "Linear probe and MLP train heads on embeddings computed once with the backbone in eval mode; "
        "LoRA keeps the backbone's BatchNorm in eval mode. The released code left BatchNorm in train "
        "mode, so its statistics drifted in LP/MLP/LoRA (defect 3).",
    ),
    (
        "Shuffled training",
        "Each epoch visits the training set in a seeded random order; the released loader was not "
        "shuffled over a CSV ordered cell by cell (defect 4).",
    ),
    (
        "Zero-shot prompts",
        "The paper's zero-shot prompts and decision rule are unknown (the released implementation is "
        "commented out). Each model uses a documented prompt ensemble (fairxray.adapt.zero_shot) over "
        "natural-language disease names; probabilities are softmax(logit_scale x cosine).",
    ),
    (
        "Images decoded once",
        "Images are decoded once into a uint8 cache (grayscale, area-downsampled) and each model's "
        "own preprocessing and the paper's augmentation (flips, rotation, jitter) run as tensor "
        "operations; the released code decoded and augmented PNGs with PIL every epoch.",
    ),
)


@dataclass
class Collected:
    runs: pd.DataFrame  # one row per (model, method, seed) with every metrics.json key as a column
    by_group: pd.DataFrame  # by_group.csv of every run, with model/method/seed columns
    missing: list[str]  # metrics folders of the params grid that do not exist
    profiles: set[str]


def _read_metrics(path: Path) -> dict[str, float]:
    raw = json.loads(path.read_text())
    return {k: (float("nan") if v is None else float(v)) for k, v in raw.items()}


def collect(p: Params, root: str | Path = ".") -> Collected:
    """Read ``metrics/<model>/<method>/seed<k>/`` of every model x method x seed in params."""
    from fairxray.errors import UserError

    root = Path(root)
    rows, groups, missing, profiles = [], [], [], set()
    for model in p.models:
        for method in p.methods:
            for seed in p.seeds:
                d = root / paths.metrics_dir(model, method, seed)
                if not (d / "metrics.json").is_file():
                    missing.append(str(d))
                    continue
                rows.append(
                    {
                        "model": model,
                        "method": method,
                        "seed": seed,
                        **_read_metrics(d / "metrics.json"),
                    }
                )
                meta = d / "evaluation.json"
                if meta.is_file():
                    profiles.add(json.loads(meta.read_text()).get("profile", p.profile))
                if (d / "by_group.csv").is_file():
                    bg = pd.read_csv(d / "by_group.csv", keep_default_na=False, na_values=[""])
                    groups.append(bg.assign(model=model, method=method, seed=seed))
    if not rows:
        raise UserError(
            f"report: no metrics.json under {root / paths.METRICS} for models {list(p.models)} x "
            f"methods {list(p.methods)} x seeds {list(p.seeds)}; run `fairxray evaluate` first"
        )
    return Collected(
        pd.DataFrame(rows),
        pd.concat(groups, ignore_index=True) if groups else pd.DataFrame(),
        missing,
        profiles or {p.profile},
    )


def seed_interval(values: Sequence[float], level: float) -> tuple[float, float, float, int]:
    """Mean over seeds and the Student-t interval ``mean +- t_{(1+level)/2, n-1} sd/sqrt(n)``
    (ddof 1) over the finite values; NaN bounds with fewer than two."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def aggregate(runs: pd.DataFrame, keys: Sequence[str], level: float) -> pd.DataFrame:
    """One row per model x method: for each key its mean, ci_low, ci_high, and ``n_seeds``/``ci``."""
    out = []
    for (model, method), r in runs.groupby(["model", "method"], sort=False):
        row: dict = {"model": model, "method": method, "n_seeds": len(r)}
        row["ci"] = f"seeds (t, n={len(r)})" if len(r) > 1 else "patient bootstrap (1 seed)"
        for k in keys:
            vals = r[k].to_numpy(dtype=float) if k in r else np.full(len(r), np.nan)
            mean, lo, hi, _ = seed_interval(vals, level)
            if len(r) == 1:
                lo = float(r[f"{k}/ci_low"].iloc[0]) if f"{k}/ci_low" in r else float("nan")
                hi = float(r[f"{k}/ci_high"].iloc[0]) if f"{k}/ci_high" in r else float("nan")
            row[k], row[f"{k}/ci_low"], row[f"{k}/ci_high"] = mean, lo, hi
        out.append(row)
    return pd.DataFrame(out)


def table_keys(p: Params) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(key, column title) of table 1 and table 2."""
    t1 = [("accuracy", "Accuracy")]
    t1 += [(f"f1/{c}", f"F1 {c}") for c in p.data.classes]
    t1 += [("var_f1", "Var_F1")]
    t2 = []
    for a in p.metrics.sensitive:
        t2 += [
            (f"f1_gap/{a}/paper", f"F1_delta {a} (paper, signed)"),
            (f"f1_gap/{a}/standard", f"F1 gap {a} (max-min)"),
            (f"eq_odds/{a}/paper", f"EqOdds {a} (paper)"),
            (f"eq_odds/{a}/worst_case_max", f"EqOdds {a} (fairlearn worst case, max over classes)"),
            (f"ece_gap/{a}/paper", f"ECE_delta {a} (paper, un-binned)"),
            (f"ece_gap/{a}/binned", f"ECE gap {a} ({'binned'})"),
        ]
    return t1, t2


def _fmt(v: float, digits: int) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"


def _cell(row, key: str, digits: int) -> str:
    v, lo, hi = row[key], row[f"{key}/ci_low"], row[f"{key}/ci_high"]
    if not math.isfinite(v):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return _fmt(v, digits)
    return f"{_fmt(v, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def display_table(agg: pd.DataFrame, cols: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Human table: 'mean [low, high]' strings; Var_F1 with 4 decimals, the rest with 3."""
    out = agg[["model", "method", "n_seeds", "ci"]].rename(columns={"n_seeds": "seeds"}).copy()
    for key, title in cols:
        out[title] = [_cell(r, key, 4 if key == "var_f1" else 3) for _, r in agg.iterrows()]
    return out


def csv_table(agg: pd.DataFrame, cols: Sequence[tuple[str, str]]) -> pd.DataFrame:
    keep = ["model", "method", "n_seeds", "ci"]
    for key, _ in cols:
        keep += [key, f"{key}/ci_low", f"{key}/ci_high"]
    return agg.reindex(columns=keep)


def _markdown(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in r.tolist()) + " |")
    return "\n".join(lines)


def paper_vs_here(agg: pd.DataFrame, demo: bool) -> pd.DataFrame:
    """Published cells beside ours where that model (and method, when the paper names one) ran."""
    rows = []
    for model, method, key, value, what in PUBLISHED:
        mine = agg[(agg["model"] == model) & ((agg["method"] == method) if method else True)]
        base = {
            "model": model,
            "method (paper)": method or "not stated",
            "metric": key,
            "paper": f"{value:.3f}",
            "published as": what,
        }
        if mine.empty:
            rows.append({**base, "method (here)": "-", "here": "not in this run grid"})
        for _, r in mine.iterrows():
            here = _cell(r, key, 3) if key in r else "n/a"
            rows.append(
                {
                    **base,
                    "method (here)": r["method"],
                    "here": f"{here} ({DEMO_LABEL})" if demo else here,
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_accuracy_vs_gaps(agg: pd.DataFrame, t2: Sequence[tuple[str, str]], demo: bool):
    """Accuracy (y) against each fairness gap (x), one point per model x method, with intervals."""
    plt = _pyplot()
    ncol = 3
    nrow = math.ceil(len(t2) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.3 * nrow), squeeze=False)
    labels = [f"{m} / {x}" for m, x in zip(agg["model"], agg["method"], strict=True)]
    colors = plt.cm.tab10(np.arange(len(agg)) % 10)
    for ax, (key, title) in zip(axes.ravel(), t2, strict=False):
        for i, (_, r) in enumerate(agg.iterrows()):
            x, y = r[key], r["accuracy"]
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            xerr = [[max(x - r[f"{key}/ci_low"], 0)], [max(r[f"{key}/ci_high"] - x, 0)]]
            yerr = [[max(y - r["accuracy/ci_low"], 0)], [max(r["accuracy/ci_high"] - y, 0)]]
            xerr = np.nan_to_num(np.asarray(xerr, dtype=float))
            yerr = np.nan_to_num(np.asarray(yerr, dtype=float))
            ax.errorbar(
                x, y, xerr=xerr, yerr=yerr, fmt="o", color=colors[i], label=labels[i], capsize=2
            )
        ax.set_title(title, fontsize=7)
        ax.set_xlabel("gap", fontsize=7)
        ax.set_ylabel("accuracy", fontsize=7)
    for ax in axes.ravel()[len(t2) :]:
        ax.axis("off")
    handles, labs = axes.ravel()[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labs, loc="lower center", ncol=min(len(labs), 4), fontsize=7)
    title = "Accuracy against each fairness gap (model x method; mean and interval)"
    fig.suptitle(f"{DEMO_BANNER}\n{title}" if demo else title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def figure_group_bars(by_group: pd.DataFrame, metric: str, demo: bool):
    """Per-group ``metric`` (mean over seeds) for every model x method, one panel per attribute."""
    plt = _pyplot()
    d = by_group[by_group["metric"] == metric]
    attrs = list(dict.fromkeys(d["attribute"])) if len(d) else []
    fig, axes = plt.subplots(
        1, max(len(attrs), 1), figsize=(4.5 * max(len(attrs), 1), 3.6), squeeze=False
    )
    for ax, attr in zip(axes[0], attrs, strict=False):
        a = d[d["attribute"] == attr]
        mean = a.groupby(["model", "method", "group"], sort=False)["value"].mean().unstack("group")
        groups = list(dict.fromkeys(a["group"]))
        mean = mean.reindex(columns=groups)
        width = 0.8 / max(len(groups), 1)
        x = np.arange(len(mean))
        for j, g in enumerate(groups):
            ax.bar(x + j * width, mean[g].to_numpy(dtype=float), width, label=g)
        ax.set_xticks(x + 0.4 - width / 2)
        ax.set_xticklabels([f"{m}\n{k}" for m, k in mean.index], fontsize=6)
        ax.set_ylim(0, 1)
        ax.set_title(f"{metric} by {attr}", fontsize=8)
        ax.legend(fontsize=6)
    title = f"Per-group {metric}, mean over seeds"
    fig.suptitle(f"{DEMO_BANNER}\n{title}" if demo else title, fontsize=9)
    fig.tight_layout()
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------- writing


def _html_table(df: pd.DataFrame, table_id: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
        for r in df.itertuples(index=False)
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html_page(title: str, banner: str | None, sections: Sequence[tuple[str, str]]) -> str:
    css = (
        "body{font-family:sans-serif;margin:24px;color:#222}"
        "table{border-collapse:collapse;font-size:12px;margin:8px 0 24px}"
        "th,td{border:1px solid #bbb;padding:3px 6px;text-align:left}th{background:#eef}"
        ".banner{background:#fde2a8;border:2px solid #c80;padding:10px;font-weight:bold;margin-bottom:16px}"
        "img{max-width:100%;border:1px solid #ddd}"
    )
    ban = f'<div class="banner" id="banner">{html.escape(banner)}</div>' if banner else ""
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1>{ban}{body}</body></html>\n"
    )


def build_report(
    p: Params,
    out_dir: str | Path = paths.REPORTS,
    root: str | Path = ".",
    profile: str | None = None,
) -> dict:
    """Write the report into ``out_dir`` atomically; return a summary (rows, missing runs, files)."""
    c = collect(p, root)
    profile = profile or ("demo" if "demo" in c.profiles else p.profile)
    demo = profile == "demo"
    t1, t2 = table_keys(p)
    agg = aggregate(c.runs, [k for k, _ in t1 + t2], p.metrics.ci_level)
    tables = {
        "tab1": display_table(agg, t1),
        "tab2": display_table(agg, t2),
        "pvh": paper_vs_here(agg, demo),
        "dev": pd.DataFrame(
            DEVIATIONS, columns=["choice", "what differs from the released code, and why"]
        ),
    }
    notes = _notes(p, c, profile, demo)

    tmp = Path(out_dir).with_name(f".{Path(out_dir).name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "figures").mkdir(parents=True)
    _write_data(tmp, agg, t1, t2, tables["pvh"])
    mit_md, mit_html = write_mitigation_section(tmp, p, root, demo)
    fig1 = _png(figure_accuracy_vs_gaps(agg, t2, demo))
    fig2 = _png(figure_group_bars(c.by_group, "macro_f1", demo)) if len(c.by_group) else None
    (tmp / "figures" / "accuracy_vs_gaps.png").write_bytes(fig1)
    if fig2:
        (tmp / "figures" / "group_macro_f1.png").write_bytes(fig2)
    _write_markdown(tmp, tables, notes, demo, bool(fig2), mit_md)
    _write_html(tmp, tables, notes, demo, fig1, fig2, mit_html)
    out_dir = _publish(tmp, Path(out_dir))
    return {
        "rows": len(agg),
        "runs": len(c.runs),
        "missing": c.missing,
        "out": str(out_dir),
        "profile": profile,
    }


def _notes(p: Params, c: Collected, profile: str, demo: bool) -> list[str]:
    level = p.metrics.ci_level
    proto = f"Protocol: {p.data.protocol}" + (
        " (the paper's sampling, with its train/test leakage kept for comparability)"
        if p.data.protocol == "nih6x200-paper"
        else " (leakage-free; the paper's own protocol is nih6x200-paper)"
        if p.data.protocol == "nih6x200-clean"
        else ""
    )
    notes = [
        f"Profile: {profile}" + (f" -- {DEMO_BANNER}" if demo else ""),
        proto,
        f"Cells: mean over seeds [{int(level * 100)} % interval]; column 'ci' names the interval "
        "(Student t over seeds, or the run's patient bootstrap when there is one seed).",
        "Values are fractions (0.596 = 59.6 %). n/a = undefined (see each run's evaluation.json).",
    ]
    if c.missing:
        notes.append(f"Missing runs ({len(c.missing)}): " + ", ".join(c.missing))
    return notes


def _write_data(tmp: Path, agg: pd.DataFrame, t1, t2, pvh: pd.DataFrame) -> None:
    """The CSV tables, the scatter data of the DVC plots and ``summary.json``."""
    csv_table(agg, t1).to_csv(tmp / "table1_utility.csv", index=False)
    csv_table(agg, t2).to_csv(tmp / "table2_fairness.csv", index=False)
    pvh.to_csv(tmp / "paper_vs_here.csv", index=False)
    scatter = pd.DataFrame(
        {
            "run": [f"{m}/{x}" for m, x in zip(agg["model"], agg["method"], strict=True)],
            "accuracy": agg["accuracy"],
        }
    )
    for key, _ in t2:
        scatter[_plot_name(key)] = agg[key]
    scatter.to_csv(tmp / "accuracy_vs_gaps.csv", index=False)
    # One numbers-only file for `dvc metrics show/diff` (a metrics folder also holds PNG and CSV).
    summary = {
        f"{r['model']}/{r['method']}": {
            "n_seeds": int(r["n_seeds"]),
            **{k: _num(r[k]) for k in agg.columns if k not in ("model", "method", "n_seeds", "ci")},
        }
        for _, r in agg.iterrows()
    }
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _write_markdown(
    tmp: Path, t: dict, notes: list[str], demo: bool, has_fig2: bool, extra: str = ""
) -> None:
    label = f"**{DEMO_BANNER}** ({DEMO_LABEL})\n\n" if demo else ""
    md = [
        "# fairxray report: fairness of CLIP-based models on NIH ChestX-ray14\n",
        label + "\n".join(f"- {n}" for n in notes) + "\n",
        "## Table 1: utility (accuracy, per-disease F1, Var_F1)\n",
        _markdown(t["tab1"]) + "\n",
        "## Table 2: fairness gaps by attribute (variants named)\n",
        _markdown(t["tab2"]) + "\n",
        "## Paper vs here\n",
        (
            "Published numbers (paper-protocol.md §5) beside ours where the same model (and method) ran. "
            + (f"Ours are {DEMO_LABEL}: not comparable with the paper.\n" if demo else "\n")
        ),
        _markdown(t["pvh"]) + "\n",
        "## Deviations from the paper's released code\n",
        _markdown(t["dev"]) + "\n",
        "## Figures\n",
        "![accuracy vs gaps](figures/accuracy_vs_gaps.png)\n",
        "![per-group macro-F1](figures/group_macro_f1.png)\n" if has_fig2 else "",
        extra,
    ]
    (tmp / "report.md").write_text("\n".join(md))
    (tmp / "table1_utility.md").write_text(label + _markdown(t["tab1"]) + "\n")
    (tmp / "table2_fairness.md").write_text(label + _markdown(t["tab2"]) + "\n")


def _write_html(
    tmp: Path, t: dict, notes: list[str], demo: bool, fig1: bytes, fig2, extra=()
) -> None:
    def img(data: bytes, alt: str) -> str:
        return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'

    sections = [
        ("About", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"),
        ("Table 1: utility (accuracy, per-disease F1, Var_F1)", _html_table(t["tab1"], "table1")),
        ("Table 2: fairness gaps by attribute", _html_table(t["tab2"], "table2")),
        ("Paper vs here", _html_table(t["pvh"], "paper-vs-here")),
        ("Deviations from the paper's released code", _html_table(t["dev"], "deviations")),
        ("Accuracy against each fairness gap", img(fig1, "accuracy against each fairness gap")),
    ]
    if fig2:
        sections.append(("Per-group macro-F1", img(fig2, "per-group macro-F1")))
    sections.extend(extra)
    page = _html_page(
        "fairxray report", f"{DEMO_BANNER} ({DEMO_LABEL})" if demo else None, sections
    )
    (tmp / "report.html").write_text(page)


def _publish(tmp: Path, out_dir: Path) -> Path:
    """Swap the finished temp folder in for ``out_dir`` (the old one is removed after)."""
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _plot_name(key: str) -> str:
    """A CSV column name without '/' and '&' for DVC plot field names."""
    return key.replace("/", "__").replace("&", "_x_")
