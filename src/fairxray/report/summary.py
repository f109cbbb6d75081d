"""The grid at a glance: ``reports/summary.json`` (for ``dvc metrics show`` / ``dvc exp show``)
and the picture of accuracy against each headline gap.

``summary.json`` holds, per ``<model>/<method>``, the headline figures of
:mod:`fairxray.metrics.headline` as the mean over seeds (4 decimals) and ``n_seeds``: ten numbers
a cell. Intervals, p-values and every other metric stay in each run's ``metrics.json`` and in
the report's CSV tables.

The picture: one panel per headline gap, accuracy (y) against the gap (x), one point per
model x method, coloured by method and shaped by model, with intervals on both axes. A filled
point's gap differs from its permutation null in every seed (``K/significant``, corrected); a
hollow one does not, or was not tested. Where ``paired_comparisons.csv`` (model, method,
ref_model, ref_method, metric, diff, ci_low, ci_high, p_value, p_adjusted, significant) has a
significant paired difference on that gap, an arrow runs from the reference to the point.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from fairxray import DEMO_BANNER
from fairxray.metrics.headline import ATTRIBUTES, GAP_TEMPLATES, GAPS, HEADLINE, TITLES

PAIRED = "paired_comparisons.csv"
PAIRED_COLUMNS = (
    "model", "method", "ref_model", "ref_method", "metric",
    "diff", "ci_low", "ci_high", "p_value", "p_adjusted", "significant",
)  # fmt: skip
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
FIGURE = "accuracy_vs_headline_gaps.png"


def headline_keys() -> list[str]:
    """What the report aggregates over seeds for this module: the figures and their tests."""
    return [*HEADLINE, *(f"{k}/significant" for k in GAPS), *(f"{k}/p_adjusted" for k in GAPS)]


def _round(v) -> float | None:
    v = float(v)
    return round(v, 4) if math.isfinite(v) else None


def summary(head: pd.DataFrame, keys=HEADLINE) -> dict:
    """``{"<model>/<method>": {"n_seeds": n, <headline key>: mean, ...}}`` from the aggregate
    (``keys``: :data:`~fairxray.metrics.headline.HEADLINE_ML` under multilabel)."""
    return {
        f"{r['model']}/{r['method']}": {
            "n_seeds": int(r["n_seeds"]),
            **{k: _round(r[k]) if k in r else None for k in keys},
        }
        for _, r in head.iterrows()
    }


def write_summary(path: Path, head: pd.DataFrame, demo: bool = False, keys=HEADLINE) -> None:
    """``summary.json``; in the demo profile it carries the DEMO label first."""
    content = {"label": DEMO_BANNER, **summary(head, keys)} if demo else summary(head, keys)
    path.write_text(json.dumps(content, indent=2) + "\n")


def read_paired(*folders: Path) -> pd.DataFrame | None:
    """The first ``paired_comparisons.csv`` among ``folders`` with the expected columns."""
    from fairxray.errors import UserError

    for folder in folders:
        f = Path(folder) / PAIRED
        if f.is_file():
            df = pd.read_csv(f)
            missing = [c for c in PAIRED_COLUMNS if c not in df.columns]
            if missing:
                raise UserError(f"{f}: missing column(s) {', '.join(missing)}")
            return df
    return None


def _truthy(v) -> bool:
    return str(v).strip().lower() in ("true", "1", "1.0", "yes")


def _err(r: pd.Series, key: str) -> np.ndarray:
    v, lo, hi = (float(r.get(f"{key}{s}", np.nan)) for s in ("", "/ci_low", "/ci_high"))
    return np.nan_to_num(np.array([[max(v - lo, 0.0)], [max(hi - v, 0.0)]]))


def figure_grid(head: pd.DataFrame, paired: pd.DataFrame | None, demo: bool):
    """Accuracy against each headline gap (2 attributes x 3 gaps), see the module docstring."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    methods = list(dict.fromkeys(head["method"]))
    models = list(dict.fromkeys(head["model"]))
    colour = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    marker = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}
    tested = any(
        f"{k}/significant" in head and head[f"{k}/significant"].notna().any() for k in GAPS
    )
    fig, axes = plt.subplots(len(ATTRIBUTES), len(GAP_TEMPLATES), figsize=(13, 7.6), squeeze=False)
    for ax, key in zip(axes.ravel(), GAPS, strict=True):
        _panel(ax, head, paired, key, colour, marker)
    handles = [
        Line2D([], [], color=colour[m], marker="o", ls="", label=f"method {m}") for m in methods
    ]
    handles += [
        Line2D([], [], color="0.3", marker=marker[m], ls="", label=f"model {m}") for m in models
    ]
    handles += [
        Line2D([], [], color="0.3", marker="o", ls="", mfc="none", label="gap not beyond its null"),
        Line2D([], [], color="0.3", ls="--", marker=">", label="paired difference (significant)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    title = "Accuracy against each headline fairness gap (mean over seeds, intervals on both axes)"
    if not tested:
        title += "\nno permutation test in these runs: every point drawn filled"
    fig.suptitle(f"{DEMO_BANNER}\n{title}" if demo else title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def _panel(ax, head, paired, key, colour, marker) -> None:
    pos = {}
    for _, r in head.iterrows():
        x, y = float(r[key]), float(r["accuracy"])
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        pos[(r["model"], r["method"])] = (x, y)
        sig = r.get(f"{key}/significant", np.nan)
        hollow = bool(np.isfinite(sig)) and float(sig) < 1.0
        c = colour[r["method"]]
        ax.errorbar(
            x, y, xerr=_err(r, key), yerr=_err(r, "accuracy"), fmt=marker[r["model"]],
            color=c, mfc="white" if hollow else c, ms=7, capsize=2, elinewidth=0.8,
        )  # fmt: skip
    if paired is not None:
        rows = paired[(paired["metric"] == key) & paired["significant"].map(_truthy)]
        for _, p in rows.iterrows():
            a, b = pos.get((p["ref_model"], p["ref_method"])), pos.get((p["model"], p["method"]))
            if a and b:
                ax.annotate(
                    "", xy=b, xytext=a,
                    arrowprops={"arrowstyle": "->", "ls": "--", "color": "0.3", "lw": 1},
                )  # fmt: skip
                ax.annotate(
                    f"p_adj={float(p['p_adjusted']):.3g}", xy=b, fontsize=6,
                    xytext=(4, -9), textcoords="offset points",
                )  # fmt: skip
    ax.set_title(TITLES[key], fontsize=9)
    ax.set_xlabel(key, fontsize=7)
    ax.set_ylabel("accuracy", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
