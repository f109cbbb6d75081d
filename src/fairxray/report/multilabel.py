"""The report under ``data.task: multilabel``: every cell's ``cell.json`` / ``cell_by_group.csv``
-> a per-label table, an underdiagnosis table, the summary over labels, a figure of the
underdiagnosis rate per subgroup, and ``summary.json`` with the multi-label headline figures.

- Per-label table (``multilabel_labels.csv``): one row per model x method x label x attribute:
  the label's AUROC with its interval and decision threshold (chosen on validation), then the
  AUROC, TPR, FPR and FNR gaps of that attribute, each with its interval, adjusted p-value (within
  the label's row family, :func:`fairxray.metrics.multilabel.family_of`) and the group sizes.
- Underdiagnosis table (``underdiagnosis.csv``): per model x method x attribute (and the age x sex
  intersection) x group, the rate with its interval, the images with a finding (its denominator)
  and patients; one ``gap`` row per attribute with the max - min gap, interval and adjusted p.
- Paired comparisons (``paired_comparisons.csv``, the multi-class columns): each method against
  ``metrics.reference_method`` (same model) and each model against ``metrics.reference_model``
  (same method), on the same test patients: the difference in macro AUROC, in the underdiagnosis
  rate and in each underdiagnosis gap (:func:`paired_keys`), by
  :func:`fairxray.report.cells.paired_table` from the cells' ``replicates.npz`` (both sides
  scored on one set of patient resamples; each run at its own validation thresholds; seeds
  combined as for the intervals), corrected over the whole table.
The multi-class report (:mod:`fairxray.report.build`) is not used for these cells.
"""

from __future__ import annotations

import base64
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from fairxray import DEMO_BANNER, paths
from fairxray.config import Params
from fairxray.metrics.evaluate import labelled
from fairxray.metrics.headline import HEADLINE_ML, TITLES_ML
from fairxray.report import summary as headline
from fairxray.report.build import (
    DEMO_LABEL,
    _html_page,
    _html_table,
    _markdown,
    _notes,
    _png,
    _publish,
    cell_rows,
    figure_group_bars,
    load_inputs,
)
from fairxray.report.cells import paired_table

GAPS = ("auroc_gap", "tpr_gap", "fpr_gap", "fnr_gap")
FIGURE = "underdiagnosis.png"


def _attrs(p: Params) -> list[str]:
    a = list(p.metrics.sensitive)
    return [*a, "&".join(a)] if len(a) > 1 else a


def _get(r: pd.Series, key: str) -> float:
    v = r.get(key, np.nan)
    return float(v) if v is not None else float("nan")


def _fmt(v: float, d: int = 3) -> str:
    return f"{v:.{d}f}" if math.isfinite(v) else "n/a"


def _ci(r: pd.Series, key: str) -> str:
    v, lo, hi = _get(r, key), _get(r, f"{key}/ci_low"), _get(r, f"{key}/ci_high")
    if not math.isfinite(v):
        return "n/a"
    star = " *" if _get(r, f"{key}/significant") == 1.0 else ""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return _fmt(v) + star
    return f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]{star}"


def _sizes(r: pd.Series, attr: str) -> str:
    cols = [c for c in r.index if c.startswith(f"n/{attr}/")]
    return ", ".join(
        f"{c.split('/', 2)[2]}: {int(r[c])}" for c in cols if math.isfinite(_get(r, c))
    )


def label_table(agg: pd.DataFrame, p: Params) -> pd.DataFrame:
    """The per-label rows, numeric (the CSV)."""
    rows = []
    for _, r in agg.iterrows():
        for name in p.data.classes:
            for a in _attrs(p):
                row = {"model": r["model"], "method": r["method"], "label_name": name,
                       "attribute": a}  # fmt: skip
                for k, key in (("auroc", f"auroc/{name}"), ("threshold", f"threshold/{name}")):
                    row[k] = _get(r, key)
                row["auroc_ci_low"] = _get(r, f"auroc/{name}/ci_low")
                row["auroc_ci_high"] = _get(r, f"auroc/{name}/ci_high")
                for g in GAPS:
                    key = f"{g}/{a}/{name}"
                    for suffix in ("", "/ci_low", "/ci_high", "/p_value", "/p_adjusted",
                                   "/significant"):  # fmt: skip
                        row[f"{g}{suffix.replace('/', '_')}"] = _get(r, key + suffix)
                row["group_sizes"] = _sizes(r, a)
                rows.append(row)
    return pd.DataFrame(rows)


def label_display(agg: pd.DataFrame, p: Params) -> pd.DataFrame:
    rows = []
    for _, r in agg.iterrows():
        for name in p.data.classes:
            for a in _attrs(p):
                row = {
                    "model": r["model"], "method": r["method"], "label": name, "attribute": a,
                    "AUROC": _ci(r, f"auroc/{name}"),
                    "threshold (val)": _fmt(_get(r, f"threshold/{name}")),
                }  # fmt: skip
                for g in GAPS:
                    key = f"{g}/{a}/{name}"
                    row[g.replace("_", " ").upper().replace(" GAP", " gap")] = (
                        f"{_ci(r, key)} (p_adj {_fmt(_get(r, key + '/p_adjusted'), 4)})"
                    )
                row["groups (n)"] = _sizes(r, a)
                rows.append(row)
    return pd.DataFrame(rows)


def underdiagnosis_table(agg: pd.DataFrame, by_group: pd.DataFrame, p: Params) -> pd.DataFrame:
    """Rate per group (interval, denominator, patients) and one gap row per attribute."""
    rows = []
    bg = by_group[by_group["metric"] == "underdiagnosis"] if len(by_group) else by_group
    for _, r in agg.iterrows():
        for a in _attrs(p):
            sub = bg[(bg["model"] == r["model"]) & (bg["method"] == r["method"])]
            for _, g in sub[sub["attribute"] == a].iterrows():
                rows.append(
                    {
                        "model": r["model"], "method": r["method"], "attribute": a,
                        "group": str(g["group"]), "value": g["value"], "ci_low": g["ci_low"],
                        "ci_high": g["ci_high"], "n_with_finding": g.get("n_denominator", np.nan),
                        "n": g["n"], "n_patients": g.get("n_patients", np.nan),
                        "p_value": np.nan, "p_adjusted": np.nan, "significant": np.nan,
                    }
                )  # fmt: skip
            key = f"underdiagnosis_gap/{a}"
            rows.append(
                {
                    "model": r["model"], "method": r["method"], "attribute": a, "group": "gap",
                    "value": _get(r, key), "ci_low": _get(r, f"{key}/ci_low"),
                    "ci_high": _get(r, f"{key}/ci_high"), "n_with_finding": np.nan, "n": np.nan,
                    "n_patients": np.nan, "p_value": _get(r, f"{key}/p_value"),
                    "p_adjusted": _get(r, f"{key}/p_adjusted"),
                    "significant": _get(r, f"{key}/significant"),
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def underdiagnosis_display(t: pd.DataFrame) -> pd.DataFrame:
    if not len(t):
        return pd.DataFrame(columns=["model", "method", "attribute", "group"])
    out = t[["model", "method", "attribute", "group"]].copy()
    out["rate [interval]"] = [
        f"{_fmt(r.value)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
        + (" *" if r.significant == 1.0 else "")
        for r in t.itertuples()
    ]
    out["n with a finding"] = [
        "" if not math.isfinite(float(v)) else int(v) for v in t["n_with_finding"]
    ]
    out["p_adj"] = [_fmt(float(v), 4) if math.isfinite(float(v)) else "" for v in t["p_adjusted"]]
    return out


def paired_keys(p: Params) -> list[str]:
    """The multi-label paired comparisons: macro AUROC, the underdiagnosis rate, its gaps."""
    return ["auroc_macro", "underdiagnosis", *[f"underdiagnosis_gap/{a}" for a in _attrs(p)]]


def paired_display(t: pd.DataFrame) -> pd.DataFrame:
    """One line per comparison: difference [interval], p, adjusted p (*), images and patients."""
    cols = ["model", "method", "vs", "metric", "difference [interval]", "p", "p_adj", "n"]
    if not len(t):
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(
        {
            "model": t["model"], "method": t["method"],
            "vs": [f"{a}/{b}" for a, b in zip(t["ref_model"], t["ref_method"], strict=True)],
            "metric": t["metric"],
            "difference [interval]": [
                f"{_fmt(r.diff)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
                + (" *" if r.significant == 1.0 else "")
                for r in t.itertuples()
            ],
            "p": [_fmt(float(v), 4) for v in t["p_value"]],
            "p_adj": [_fmt(float(v), 4) for v in t["p_adjusted"]],
            "n": [
                f"{int(a)} images, {int(b)} patients" if math.isfinite(a * b) else "n/a"
                for a, b in zip(t["n_images"], t["n_patients"], strict=True)
            ],
        }
    )  # fmt: skip


def summary_display(agg: pd.DataFrame) -> pd.DataFrame:
    out = agg[["model", "method", "n_seeds", "ci"]].rename(columns={"n_seeds": "seeds"}).copy()
    for k in HEADLINE_ML:
        out[TITLES_ML[k]] = [_ci(r, k) for _, r in agg.iterrows()]
    return out


def _read_lines(p: Params) -> list[str]:
    m = p.metrics
    rule = (
        "the threshold maximising F1"
        if m.threshold_rule == "max_f1"
        else f"the highest threshold reaching sensitivity {m.target_sensitivity}"
    )
    return [
        f"Decision thresholds: one per label, {rule} on each seed's validation predictions "
        "(metrics.threshold_rule); they stay fixed in every bootstrap and permutation replicate.",
        "Underdiagnosis (Seyyed-Kalantari et al., Nat. Med. 2021): among images with a finding "
        "(y_No_Finding = 0), the share the model labels No Finding; gap = max - min over groups.",
        f"Intervals: {int(m.ci_level * 100)} % patient x seed bootstrap ({m.n_boot} resamples); "
        f"* = significant after {'Holm' if m.correction == 'holm' else 'Benjamini-Hochberg'} "
        f"correction at alpha {m.alpha} ({m.n_perm} permutations of the sensitive values across "
        "patients) within a row family: one label's AUROC/TPR/FPR gaps over the attributes, the "
        "underdiagnosis gaps, the summary gaps. FNR gaps equal TPR gaps (same p).",
        "Resampled AUROCs use score bins per label (at most 1e-3 off the exact AUROC); estimates "
        "are exact. n/a = undefined (a group below metrics.min_group_size, or no positive).",
        f"Paired comparisons: each method against {m.reference_method} (same model) and each "
        f"model against {m.reference_model or p.models[0]} (same method), on the same test "
        "patients: both sides are scored on the same patient resamples, so the variation they "
        "share cancels; difference = row - reference, percentile interval (bc/normal where it "
        "would exclude the difference), two-sided bootstrap p of no difference, "
        f"{'Holm' if m.correction == 'holm' else 'Benjamini-Hochberg'}-adjusted over the whole "
        "table; * = significant at alpha. No mitigation section under multilabel.",
    ]


def build_multilabel_report(
    p: Params, out_dir: str | Path = paths.REPORTS, root: str | Path = ".", profile=None
) -> dict:
    """Write the multi-label report into ``out_dir`` atomically; return a summary."""
    c, cells, profile = load_inputs(p, root, profile)
    demo = profile == "demo"
    agg = cell_rows(cells.table)
    labels = label_table(agg, p)
    under = underdiagnosis_table(agg, cells.by_group, p)
    paired, pair_notes = paired_table(p, cells, paired_keys(p))
    tables = {
        "Summary over labels (the headline figures)": summary_display(agg),
        "Per-label table: AUROC and the TPR/FPR/FNR gaps at the validation thresholds": (
            label_display(agg, p)
        ),
        "Underdiagnosis: No Finding false-positive rate per group and intersection": (
            underdiagnosis_display(under)
        ),
        "Paired comparisons (same test patients; paired_comparisons.csv)": paired_display(paired),
    }
    notes = _notes(p, c, profile, demo)
    notes.append("Task: multilabel (data.classes are independent labels).")
    notes += pair_notes
    if cells.missing:
        notes.append(f"Missing cells ({len(cells.missing)}): " + ", ".join(cells.missing))
    read = _read_lines(p)
    tmp = Path(out_dir).with_name(f".{Path(out_dir).name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "figures").mkdir(parents=True)
    labelled(labels, demo).to_csv(tmp / "multilabel_labels.csv", index=False)
    labelled(under, demo).to_csv(tmp / "underdiagnosis.csv", index=False)
    labelled(cells.by_group, demo).to_csv(tmp / "groups.csv", index=False)
    labelled(paired, demo).to_csv(tmp / "paired_comparisons.csv", index=False)
    headline.write_summary(tmp / "summary.json", agg, demo, keys=HEADLINE_ML)
    fig = _png(figure_group_bars(cells.by_group, "underdiagnosis", demo))
    (tmp / "figures" / FIGURE).write_bytes(fig)
    _write(tmp, tables, notes, read, demo, fig)
    out = _publish(tmp, Path(out_dir))
    sig = [
        f"{r.model}/{r.method}: underdiagnosis gap {r.attribute} {r.value:.3f} "
        f"(p_adj {r.p_adjusted:.4f})"
        for r in under[(under["group"] == "gap") & (under["significant"] == 1.0)].itertuples()
    ]
    return {"rows": len(agg), "runs": len(c.runs), "missing": c.missing, "out": str(out),
            "profile": profile, "significant": sig, "paired": len(paired),
            "files": "report.md, report.html, multilabel_labels.csv, underdiagnosis.csv, "
            "groups.csv, summary.json, figures/underdiagnosis.png, "
            f"paired_comparisons.csv: {len(paired)} row(s)"}  # fmt: skip


def _write(tmp: Path, tables: dict, notes, read, demo: bool, fig: bytes) -> None:
    label = f"**{DEMO_BANNER}** ({DEMO_LABEL})\n\n" if demo else ""
    md = [
        "# fairxray report: multi-label fairness on chest X-rays\n",
        label + "\n".join(f"- {n}" for n in notes) + "\n",
        "## How to read this\n",
        "\n".join(f"- {n}" for n in read) + "\n",
    ]
    for title, df in tables.items():
        md += [f"## {title}\n", _markdown(df) + "\n"]
    md += ["## Figures\n", f"![underdiagnosis per subgroup](figures/{FIGURE})\n"]
    (tmp / "report.md").write_text("\n".join(md))

    def bullets(items) -> str:
        import html

        return "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in items) + "</ul>"

    ids = ("multilabel-summary", "multilabel-labels", "underdiagnosis", "paired")
    sections = [("About", bullets(notes)), ("How to read this", bullets(read))]
    sections += [(t, _html_table(df, i)) for (t, df), i in zip(tables.items(), ids, strict=True)]
    src = base64.b64encode(fig).decode()
    sections.append(
        (
            "Underdiagnosis per subgroup",
            f'<img alt="underdiagnosis" src="data:image/png;base64,{src}">',
        )
    )
    page = _html_page(
        "fairxray report (multilabel)", f"{DEMO_BANNER} ({DEMO_LABEL})" if demo else None, sections
    )
    (tmp / "report.html").write_text(page)
