"""Every cell's ``cell.json`` -> the paper's tables (Markdown, CSV, one self-contained HTML).

Table 1 (utility): accuracy, per-disease F1, Var_F1, AUROC, Brier, NLL, ECE. Table 2 (fairness): F1
gap, equalized odds, ECE, AUROC, Brier and NLL gaps for each sensitive attribute and the age x sex
intersection, every variant named, ``*`` where the gap stays significant after correction. Table 3:
each gap's inference (interval, null mean, excess, p-values, MDE, group sizes); table 4: per-group
values with intervals; table 5: paired comparisons (``paired_comparisons.csv``). One row per model x
method: the cell's estimate (mean over its distinct runs) and the combined seed x patient interval of
:mod:`fairxray.metrics.inference`. Then "paper vs here" (the published numbers beside ours where the
cell exists) and the deviations from the authors' code.
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
from fairxray.metrics.bootstrap import is_gap_key
from fairxray.metrics.evaluate import labelled
from fairxray.report import summary as headline
from fairxray.report.cells import UTILITY, gap_table, how_to_read, paired_table, read_cells
from fairxray.report.deviations import DEVIATIONS
from fairxray.report.mitigation import write_section as write_mitigation_section

DEMO_LABEL = "synthetic-image, demo-model results"

# The only published cells recoverable from third-party summaries of the paper (the full tables are
# not public).
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


def table_keys(p: Params) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(key, column title) of table 1 and table 2."""
    t1 = [("accuracy", "Accuracy")]
    t1 += [(f"f1/{c}", f"F1 {c}") for c in p.data.classes]
    t1 += [("var_f1", "Var_F1"), ("auroc_macro", "AUROC (macro)"), ("brier", "Brier")]
    t1 += [("nll", "NLL"), ("ece", "ECE (binned)")]
    t2 = []
    attrs = list(p.metrics.sensitive)
    for a in [*attrs, "&".join(attrs)] if len(attrs) > 1 else attrs:
        paper = (
            []
            if "&" in a
            else [
                (f"f1_gap/{a}/paper", f"F1_delta {a} (paper, signed)"),
                (f"eq_odds/{a}/paper", f"EqOdds {a} (paper)"),
                (f"ece_gap/{a}/paper", f"ECE_delta {a} (paper, un-binned; accuracy-driven)"),
            ]
        )
        t2 += paper + [
            (f"f1_gap/{a}/standard", f"F1 gap {a} (max-min)"),
            (f"eq_odds/{a}/worst_case_max", f"EqOdds {a} (fairlearn worst case, max over classes)"),
            (f"ece_gap/{a}/binned", f"ECE gap {a} (binned)"),
            (f"auroc_gap/{a}", f"AUROC gap {a} (max-min)"),
            (f"auroc_worst/{a}", f"worst-group AUROC {a}"),
            (f"brier_gap/{a}", f"Brier gap {a}"),
            (f"nll_gap/{a}", f"NLL gap {a}"),
        ]
    return t1, t2


def _fmt(v: float, digits: int) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"


def _cell(row, key: str, digits: int) -> str:
    """'value [low, high]', with ' *' where the gap is significant after correction."""
    if key not in row:
        return "n/a"
    v = row[key]
    lo, hi = row.get(f"{key}/ci_low", np.nan), row.get(f"{key}/ci_high", np.nan)
    if not math.isfinite(v):
        return "n/a"
    star = " *" if row.get(f"{key}/significant", 0.0) == 1.0 else ""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return _fmt(v, digits) + star
    return f"{_fmt(v, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]{star}"


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
        if is_gap_key(key):
            keep += [f"{key}/p_adjusted", f"{key}/significant"]
    return agg.reindex(columns=keep)


def cell_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells as report rows: ``n_seeds`` and a ``ci`` column naming the interval."""
    agg = cells.copy()
    runs = agg.get("n_runs", agg["n_seeds"]).astype(int)
    agg["n_seeds"] = agg["n_seeds"].astype(int)
    agg["ci"] = [
        f"patients x seeds ({r} runs)"
        if r > 1
        else "patients (1 run" + (", deterministic)" if n > 1 else ")")
        for r, n in zip(runs, agg["n_seeds"], strict=True)
    ]
    return agg


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
            # Every interval contains its estimate (inference.interval), so nothing is clipped.
            xerr = [[x - r.get(f"{key}/ci_low", np.nan)], [r.get(f"{key}/ci_high", np.nan) - x]]
            yerr = [[y - r["accuracy/ci_low"]], [r["accuracy/ci_high"] - y]]
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
    """Per-group ``metric`` of every cell with its interval as an error bar, one panel per
    attribute. The axis spans every bar's interval: no error bar is clipped."""
    plt = _pyplot()
    d = by_group[by_group["metric"] == metric]
    attrs = list(dict.fromkeys(d["attribute"])) if len(d) else []
    fig, axes = plt.subplots(
        1, max(len(attrs), 1), figsize=(4.5 * max(len(attrs), 1), 3.6), squeeze=False
    )
    for ax, attr in zip(axes[0], attrs, strict=False):
        a = d[d["attribute"] == attr]
        groups = list(dict.fromkeys(a["group"]))
        cells = list(dict.fromkeys(zip(a["model"], a["method"], strict=True)))
        width = 0.8 / max(len(groups), 1)
        x = np.arange(len(cells))
        for j, g in enumerate(groups):
            rows = a[a["group"] == g].set_index(["model", "method"]).reindex(cells)
            v = rows["value"].to_numpy(dtype=float)
            err = np.vstack(
                [v - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - v]
            )
            ax.bar(x + j * width, v, width, yerr=np.nan_to_num(err), capsize=2, label=g)
        lo = np.nanmin(np.r_[a["ci_low"].to_numpy(float), a["value"].to_numpy(float), 0.0])
        hi = np.nanmax(np.r_[a["ci_high"].to_numpy(float), a["value"].to_numpy(float)])
        ax.set_ylim(lo - 0.02, hi + 0.02)
        ax.set_xticks(x + 0.4 - width / 2)
        ax.set_xticklabels([f"{m}\n{k}" for m, k in cells], fontsize=6)
        ax.set_title(f"{metric} by {attr}", fontsize=8)
        ax.legend(fontsize=6)
    title = f"Per-group {metric} with {'intervals'} (cell estimate, all seeds combined)"
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


def load_inputs(p: Params, root: str | Path, profile: str | None):
    """What both reports start from: the runs, the evaluated cells (at least one, else one
    actionable error) and the profile the report is labelled with."""
    from fairxray.errors import UserError

    c = collect(p, root)
    cells = read_cells(p, root)
    if cells.table.empty:
        raise UserError(
            f"report: no cell.json under {Path(root) / paths.METRICS}; run `fairxray evaluate "
            "--model M --method X` first"
        )
    return c, cells, profile or ("demo" if "demo" in c.profiles else p.profile)


def build_report(
    p: Params,
    out_dir: str | Path = paths.REPORTS,
    root: str | Path = ".",
    profile: str | None = None,
) -> dict:
    """Write the report into ``out_dir`` atomically; return a summary (rows, missing runs, files)."""
    c, cells, profile = load_inputs(p, root, profile)
    demo = profile == "demo"
    t1, t2 = table_keys(p)
    agg = cell_rows(cells.table)
    gaps = gap_table(cells)
    keys = [*UTILITY, *[k for k, _ in t2 if is_gap_key(k)]]
    paired, pair_notes = paired_table(p, cells, keys)
    tables = {
        "tab1": display_table(agg, t1),
        "tab2": display_table(agg, t2),
        "tab3": _gap_display(gaps[gaps["table"] == "fairness"]) if len(gaps) else gaps,
        "tab4": _group_display(cells.by_group),
        "tab5": _paired_display(paired),
        "pvh": paper_vs_here(agg, demo),
        "dev": pd.DataFrame(
            DEVIATIONS, columns=["choice", "what differs from the released code, and why"]
        ),
    }
    notes = _notes(p, c, profile, demo) + pair_notes
    if cells.missing:
        notes.append(f"Missing cells ({len(cells.missing)}): " + ", ".join(cells.missing))
    read = how_to_read(p, cells, gaps)

    tmp = Path(out_dir).with_name(f".{Path(out_dir).name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "figures").mkdir(parents=True)
    _write_data(tmp, agg, t1, t2, tables["pvh"], demo)
    for name, df in (
        ("gap_inference", gaps),
        ("groups", cells.by_group),
        ("paired_comparisons", paired),
    ):
        labelled(df, demo).to_csv(tmp / f"{name}.csv", index=False)
    # summary.json and the grid picture: the headline figures only (fairxray.report.summary).
    headline.write_summary(tmp / "summary.json", agg, demo)
    grid = headline.figure_grid(agg, headline.read_paired(tmp), demo)
    (tmp / "figures" / headline.FIGURE).write_bytes(_png(grid))
    mit_md, mit_html = write_mitigation_section(tmp, p, root, demo)
    fig1 = _png(figure_accuracy_vs_gaps(agg, t2, demo))
    fig2 = (
        _png(figure_group_bars(cells.by_group, "macro_f1", demo)) if len(cells.by_group) else None
    )
    (tmp / "figures" / "accuracy_vs_gaps.png").write_bytes(fig1)
    if fig2:
        (tmp / "figures" / "group_macro_f1.png").write_bytes(fig2)
    _write_markdown(tmp, tables, notes, read, demo, bool(fig2), mit_md)
    _write_html(tmp, tables, notes, read, demo, fig1, fig2, mit_html)
    out_dir = _publish(tmp, Path(out_dir))
    return {
        "rows": len(agg),
        "runs": len(c.runs),
        "missing": c.missing,
        "out": str(out_dir),
        "profile": profile,
        "significant": _significant_lines(gaps),
        "paired": int(len(paired)),
    }


def _significant_lines(gaps: pd.DataFrame) -> list[str]:
    """One line per cell: its gaps significant after correction, with their adjusted p-values."""
    out = []
    if not len(gaps):
        return out
    for (model, method), g in gaps.groupby(["model", "method"], sort=False):
        sig = g[g["significant"] == 1.0]
        parts = [f"{r.gap} {r.value:.3f} (p_adj {r.p_adjusted:.4f})" for r in sig.itertuples()]
        out.append(f"{model}/{method}: " + ("; ".join(parts) if parts else "no significant gap"))
    return out


def _gap_display(g: pd.DataFrame) -> pd.DataFrame:
    out = g[["model", "method", "gap"]].copy()
    out["value [interval]"] = [
        f"{r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" if math.isfinite(r.value) else "n/a"
        for r in g.itertuples()
    ]
    out["ci"] = g["ci_method"]
    for c in ("null_mean", "excess", "mde"):
        out[c] = [_fmt(v, 3) for v in g[c]]
    out["p"] = [_fmt(v, 4) for v in g["p_value"]]
    out["p_adj"] = [_fmt(v, 4) for v in g["p_adjusted"]]
    out["significant"] = [
        "yes" if v == 1.0 else "no" if v == 0.0 else "n/a" for v in g["significant"]
    ]
    out["groups (n)"] = g["group_sizes"]
    return out


def _group_display(bg: pd.DataFrame) -> pd.DataFrame:
    if not len(bg):
        return pd.DataFrame()
    d = bg[bg["metric"].isin(["macro_f1", "auroc_macro"])]
    out = d[["model", "method", "metric", "attribute", "group", "n"]].copy()
    out["value [interval]"] = [
        f"{r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" if math.isfinite(r.value) else "n/a"
        for r in d.itertuples()
    ]
    return out


def _paired_display(t: pd.DataFrame) -> pd.DataFrame:
    if not len(t):
        return pd.DataFrame(columns=["comparison"])
    out = pd.DataFrame(
        {
            "comparison": [
                f"{r.model}/{r.method} - {r.ref_model}/{r.ref_method}" for r in t.itertuples()
            ],
            "metric": t["metric"],
            "diff [interval]": [
                f"{r.diff:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
                if math.isfinite(r.diff)
                else "n/a"
                for r in t.itertuples()
            ],
            "p": [_fmt(v, 4) for v in t["p_value"]],
            "p_adj": [_fmt(v, 4) for v in t["p_adjusted"]],
            "significant": ["yes" if v == 1.0 else "no" for v in t["significant"]],
        }
    )
    return out


def _notes(p: Params, c: Collected, profile: str, demo: bool) -> list[str]:
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
        "Values are fractions (0.596 = 59.6 %). n/a = undefined (see each cell's "
        "cell_evaluation.json).",
    ]
    if c.missing:
        notes.append(f"Missing runs ({len(c.missing)}): " + ", ".join(c.missing))
    return notes


def _write_data(tmp: Path, agg: pd.DataFrame, t1, t2, pvh: pd.DataFrame, demo: bool) -> None:
    """The CSV tables, the scatter data of the DVC plots and ``summary.json`` (every one carries
    the DEMO label in the demo profile)."""
    labelled(csv_table(agg, t1), demo).to_csv(tmp / "table1_utility.csv", index=False)
    labelled(csv_table(agg, t2), demo).to_csv(tmp / "table2_fairness.csv", index=False)
    labelled(pvh, demo).to_csv(tmp / "paper_vs_here.csv", index=False)
    scatter = pd.DataFrame(
        {
            "run": [f"{m}/{x}" for m, x in zip(agg["model"], agg["method"], strict=True)],
            "accuracy": agg["accuracy"],
        }
    )
    for key, _ in t2:
        scatter[_plot_name(key)] = agg[key] if key in agg else np.nan
    labelled(scatter, demo).to_csv(tmp / "accuracy_vs_gaps.csv", index=False)


_TITLES = {
    "tab1": "Table 1: utility (accuracy, per-disease F1, Var_F1, AUROC, Brier, NLL, ECE)",
    "tab2": "Table 2: fairness gaps by attribute (variants named; * significant after correction)",
    "tab3": "Table 3: inference for each fairness gap (null, excess, p-values, MDE, group sizes)",
    "tab4": "Table 4: per-group macro-F1 and AUROC with intervals",
    "tab5": "Table 5: paired comparisons (same test patients; paired_comparisons.csv)",
}


def _write_markdown(
    tmp: Path, t: dict, notes, read, demo: bool, has_fig2: bool, extra: str = ""
) -> None:
    label = f"**{DEMO_BANNER}** ({DEMO_LABEL})\n\n" if demo else ""
    md = [
        "# fairxray report: fairness of CLIP-based models on NIH ChestX-ray14\n",
        label + "\n".join(f"- {n}" for n in notes) + "\n",
        "## How to read this\n",
        "\n".join(f"- {n}" for n in read) + "\n",
    ]
    for key, title in _TITLES.items():
        md += [f"## {title}\n", _markdown(t[key]) + "\n"]
    md += [
        "## Paper vs here\n",
        (
            "Published numbers (from third-party summaries of the paper) beside ours where the same "
            "model (and method) ran. "
            + (f"Ours are {DEMO_LABEL}: not comparable with the paper.\n" if demo else "\n")
        ),
        _markdown(t["pvh"]) + "\n",
        "## Deviations from the paper's released code\n",
        _markdown(t["dev"]) + "\n",
        "## Figures\n",
        f"![accuracy vs headline gaps](figures/{headline.FIGURE})\n",
        "![accuracy vs gaps](figures/accuracy_vs_gaps.png)\n",
        "![per-group macro-F1](figures/group_macro_f1.png)\n" if has_fig2 else "",
        extra,
    ]
    (tmp / "report.md").write_text("\n".join(md))
    (tmp / "table1_utility.md").write_text(label + _markdown(t["tab1"]) + "\n")
    (tmp / "table2_fairness.md").write_text(label + _markdown(t["tab2"]) + "\n")


def _write_html(
    tmp: Path, t: dict, notes, read, demo: bool, fig1: bytes, fig2, extra=()
) -> None:
    def img(data: bytes, alt: str) -> str:
        return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'

    def bullets(items) -> str:
        return "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in items) + "</ul>"

    ids = {"tab1": "table1", "tab2": "table2", "tab3": "table3", "tab4": "table4", "tab5": "table5"}
    sections = [("About", bullets(notes)), ("How to read this", bullets(read))]
    sections += [(title, _html_table(t[k], ids[k])) for k, title in _TITLES.items()]
    sections += [
        ("Paper vs here", _html_table(t["pvh"], "paper-vs-here")),
        ("Deviations from the paper's released code", _html_table(t["dev"], "deviations")),
        ("The grid at a glance", img((tmp / "figures" / headline.FIGURE).read_bytes(), "grid")),
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
