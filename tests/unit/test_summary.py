"""The grid at a glance (fairxray.report.summary): summary.json holds the headline figures only,
and the picture draws one point per model x method with intervals on both axes, hollow where the
gap is not beyond its null, and an arrow for each significant paired difference."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fairxray.errors import UserError
from fairxray.metrics.headline import GAPS, HEADLINE, TITLES, companions
from fairxray.report import summary as s


def _head(with_tests: bool) -> pd.DataFrame:
    rows = []
    for i, (model, method) in enumerate([("toy", "mlp"), ("toy", "lora"), ("clip", "mlp")]):
        r = {"model": model, "method": method, "n_seeds": 1, "ci": "patient bootstrap (1 seed)"}
        for j, k in enumerate(HEADLINE):
            v = 0.1 * (i + 1) + 0.01 * j
            r.update({k: v, f"{k}/ci_low": v - 0.02, f"{k}/ci_high": v + 0.03})
        for k in GAPS:
            r[f"{k}/significant"] = float(i != 1) if with_tests else np.nan
            r[f"{k}/p_adjusted"] = 0.01 if with_tests else np.nan
        rows.append(r)
    return pd.DataFrame(rows)


def test_headline_list_and_titles_agree():
    assert len(HEADLINE) == 9 and set(TITLES) == set(HEADLINE)
    assert companions("accuracy") == ("accuracy/ci_low", "accuracy/ci_high")
    assert "f1_gap/sex/standard/p_adjusted" in companions("f1_gap/sex/standard")


def test_summary_is_ten_numbers_a_cell(tmp_path):
    head = _head(True)
    head.loc[0, "macro_f1"] = np.nan
    s.write_summary(tmp_path / "summary.json", head)
    out = json.loads((tmp_path / "summary.json").read_text())
    assert list(out) == ["toy/mlp", "toy/lora", "clip/mlp"]
    assert all(len(r) == 10 for r in out.values())
    assert out["toy/mlp"]["macro_f1"] is None  # undefined stays visible, as null
    assert out["toy/lora"]["accuracy"] == pytest.approx(0.2)


def _paired(significant: bool) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": "toy", "method": "lora", "ref_model": "toy", "ref_method": "mlp",
                "metric": GAPS[0], "diff": 0.1, "ci_low": 0.05, "ci_high": 0.15,
                "p_value": 0.001, "p_adjusted": 0.004, "significant": significant,
            }
        ]
    )  # fmt: skip


def _arrows(fig) -> list:
    return [t for ax in fig.axes for t in ax.texts if getattr(t, "arrow_patch", None)]


def test_grid_points_intervals_and_marks():
    fig = s.figure_grid(_head(True), _paired(True), demo=True)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [TITLES[k] for k in GAPS]
    ax = panels[0]
    # One errorbar container per model x method, each with x and y bars.
    assert len(ax.containers) == 3
    for c in ax.containers:
        assert c.has_xerr and c.has_yerr
    # Colour by method, shape by model: the two mlp points share a colour, not a marker.
    lines = [c.lines[0] for c in ax.containers]
    assert lines[0].get_color() == lines[2].get_color() != lines[1].get_color()
    assert lines[0].get_marker() != lines[2].get_marker()
    # toy/lora's gap is not beyond its null: hollow; the others filled.
    assert lines[1].get_markerfacecolor() == "white"
    assert lines[0].get_markerfacecolor() != "white"
    # One significant paired difference on the first gap: one arrow there, none elsewhere.
    assert len(_arrows(fig)) == 1 and _arrows(fig)[0] in ax.texts
    assert "DEMO" in fig._suptitle.get_text()


def test_grid_without_tests_or_significant_pairs():
    fig = s.figure_grid(_head(False), _paired(False), demo=False)
    assert _arrows(fig) == []
    assert "no permutation test" in fig._suptitle.get_text()
    assert "DEMO" not in fig._suptitle.get_text()
    line = fig.axes[0].containers[0].lines[0]
    assert line.get_markerfacecolor() != "white"


def test_paired_file_is_validated(tmp_path):
    assert s.read_paired(tmp_path) is None
    _paired(True).drop(columns=["p_adjusted"]).to_csv(tmp_path / s.PAIRED, index=False)
    with pytest.raises(UserError, match="paired_comparisons.csv: missing column"):
        s.read_paired(tmp_path)
    _paired(True).to_csv(tmp_path / s.PAIRED, index=False)
    assert len(s.read_paired(tmp_path)) == 1
