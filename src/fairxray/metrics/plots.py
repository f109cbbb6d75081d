"""The per-run PNG plots of ``evaluate``: group F1 with intervals, reliability, confusion; under
multilabel the underdiagnosis rate per group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fairxray import DEMO_BANNER


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


def plot_underdiagnosis(by_group: pd.DataFrame, path: Path, *, demo: bool) -> None:
    """Underdiagnosis rate (the No Finding false-positive rate among images with a finding) per
    group with its interval, one panel per attribute and the intersection."""
    plt = _pyplot()
    d = by_group[by_group["metric"] == "underdiagnosis"] if len(by_group) else by_group
    attrs = list(dict.fromkeys(d["attribute"])) if len(d) else []
    fig, axes = plt.subplots(
        1, max(len(attrs), 1), figsize=(3.0 * max(len(attrs), 1) + 1.5, 3.6), squeeze=False
    )
    for ax, attr in zip(axes[0], attrs, strict=False):
        a = d[d["attribute"] == attr]
        v = a["value"].to_numpy(dtype=float)
        err = np.vstack([v - a["ci_low"].to_numpy(float), a["ci_high"].to_numpy(float) - v])
        err = np.clip(np.where(np.isfinite(err), err, 0), 0, None)
        ax.bar(range(len(a)), np.nan_to_num(v), yerr=err, capsize=3, color="#e45756")
        den = a["n_denominator"] if "n_denominator" in a else a["n"]
        ax.set_xticks(range(len(a)))
        ax.set_xticklabels(
            [f"{g}\nn={n}" for g, n in zip(a["group"], den, strict=True)], fontsize=6
        )
        hi = np.nanmax(np.r_[a["ci_high"].to_numpy(float), v, 0.05])
        ax.set_ylim(0, min(1.0, hi * 1.15))
        ax.set_title(attr, fontsize=8)
        ax.set_ylabel("underdiagnosis rate")
    if not attrs:
        axes[0, 0].axis("off")
    _finish(
        fig, path, demo,
        "Underdiagnosis: share of images with a finding labelled No Finding (bars: CI; n: images "
        "with a finding)",
    )  # fmt: skip
