"""`fairxray report` over fixture runs: both tables in Markdown, CSV and HTML; the HTML renders."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import _browser
import numpy as np
import pandas as pd
import pytest
import yaml

from fairxray import DEMO_BANNER, cli, paths
from fairxray.config import PAPER_CLASSES
from fairxray.metrics.headline import HEADLINE
from fairxray.metrics.predictions import prob_columns
from fairxray.report.build import DEMO_LABEL

METHODS = ("linear_probe", "mlp")
SEEDS = (1, 2)


def _predictions(seed: int, signal: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cells = [(c, a, s) for c in range(6) for a in ("0-59", "60-99") for s in ("M", "F")]
    rows = [cell for cell in cells for _ in range(6)]
    y = np.array([r[0] for r in rows])
    logits = rng.normal(size=(len(y), 6)) + signal * np.eye(6)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    df = pd.DataFrame(
        {
            "image_id": [f"{i:08d}_000.png" for i in range(len(y))],
            "patient_id": [f"{i:08d}" for i in range(len(y))],
            "label_idx": y.astype(np.int64),
        }
    )
    for c, col in enumerate(prob_columns(PAPER_CLASSES)):
        df[col] = prob[:, c]
    df["age_group"] = [r[1] for r in rows]
    df["sex"] = [r[2] for r in rows]
    return df


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """Fixture runs (toy x 2 methods x 2 seeds) evaluated by the CLI, then `fairxray report`."""
    root = tmp_path_factory.mktemp("runs")
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    raw.update(models=["toy"], methods=list(METHODS), seeds=list(SEEDS))
    raw["metrics"]["n_boot"] = 20
    raw["metrics"]["n_perm"] = 20
    raw["metrics"]["reference_method"] = "linear_probe"
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    import os

    old = os.getcwd()
    os.chdir(root)
    try:
        for i, method in enumerate(METHODS):
            for seed in SEEDS:
                f = paths.prediction_file("toy", method, seed, "test")
                f.parent.mkdir(parents=True)
                _predictions(seed * 10 + i, signal=1.0 + i).to_parquet(f)
            args = ["evaluate", "--model", "toy", "--method", method, "--params", str(params)]
            assert cli.main(args) == 0
        assert cli.main(["report", "--params", str(params)]) == 0
    finally:
        os.chdir(old)
    return root / paths.REPORTS


def test_both_tables_in_all_three_formats(report_dir):
    for name in ("table1_utility", "table2_fairness"):
        assert (report_dir / f"{name}.md").read_text().count("| toy |") == 2
        csv = pd.read_csv(report_dir / f"{name}.csv")
        assert list(csv["method"]) == list(METHODS) and (csv["n_seeds"] == 2).all()
    t1 = pd.read_csv(report_dir / "table1_utility.csv")
    for key in ["accuracy", "var_f1", *[f"f1/{c}" for c in PAPER_CLASSES]]:
        assert {key, f"{key}/ci_low", f"{key}/ci_high"} <= set(t1.columns)
    t2 = pd.read_csv(report_dir / "table2_fairness.csv")
    for a in ("age_group", "sex"):
        for key in (f"f1_gap/{a}/paper", f"eq_odds/{a}/paper", f"ece_gap/{a}/paper"):
            assert key in t2.columns
    html = (report_dir / "report.html").read_text()
    for anchor in ('id="table1"', 'id="table2"', 'id="paper-vs-here"', 'id="deviations"'):
        assert anchor in html
    assert 'src="data:image/png;base64,' in html and "<link" not in html  # self-contained
    md = (report_dir / "report.md").read_text()
    assert "## Paper vs here" in md and "## Deviations" in md and "59.6" in md


def test_table_values_are_the_cells_combined_estimates(report_dir):
    root = report_dir.parent
    acc = [
        json.loads((root / paths.metrics_dir("toy", "mlp", s) / "metrics.json").read_text())[
            "accuracy"
        ]
        for s in SEEDS
    ]
    cell = json.loads((root / paths.metrics("toy", "mlp") / "cell.json").read_text())
    t1 = pd.read_csv(report_dir / "table1_utility.csv").set_index("method")
    assert t1.loc["mlp", "accuracy"] == pytest.approx(np.mean(acc), abs=1e-12)
    assert t1.loc["mlp", "accuracy/ci_high"] == pytest.approx(cell["accuracy/ci_high"])
    # Patients and seeds combined: about as wide as a seed's patient bootstrap alone, or wider.
    for s in SEEDS:
        m = json.loads((root / paths.metrics_dir("toy", "mlp", s) / "metrics.json").read_text())
        width = t1.loc["mlp", "accuracy/ci_high"] - t1.loc["mlp", "accuracy/ci_low"]
        assert width >= 0.7 * (m["accuracy/ci_high"] - m["accuracy/ci_low"])
    t2 = pd.read_csv(report_dir / "table2_fairness.csv")
    assert {"f1_gap/sex/standard/p_adjusted", "f1_gap/sex/standard/significant"} <= set(t2.columns)
    gaps = pd.read_csv(report_dir / "gap_inference.csv")
    assert {"p_value", "p_adjusted", "null_mean", "excess", "mde", "group_sizes"} <= set(
        gaps.columns
    )
    row = gaps[(gaps["method"] == "mlp") & (gaps["gap"] == "f1_gap/sex/standard")].iloc[0]
    assert row["value"] == pytest.approx(cell["f1_gap/sex/standard"])
    assert row["p_value"] == pytest.approx(cell["f1_gap/sex/standard/p_value"])
    assert row["excess"] == pytest.approx(row["value"] - row["null_mean"])
    assert row["group_sizes"] == "F: 72, M: 72"


def test_paired_comparisons_csv(report_dir):
    t = pd.read_csv(report_dir / "paired_comparisons.csv")
    cols = ["model", "method", "ref_model", "ref_method", "metric", "diff", "ci_low", "ci_high"]
    assert set(cols + ["p_value", "p_adjusted", "significant"]) <= set(t.columns)
    assert set(t["method"]) == {"mlp"} and set(t["ref_method"]) == {"linear_probe"}
    root = report_dir.parent
    a = json.loads((root / paths.metrics("toy", "mlp") / "cell.json").read_text())
    b = json.loads((root / paths.metrics("toy", "linear_probe") / "cell.json").read_text())
    acc = t[t["metric"] == "accuracy"].iloc[0]
    assert acc["diff"] == pytest.approx(a["accuracy"] - b["accuracy"])
    assert acc["ci_low"] <= acc["diff"] <= acc["ci_high"]
    assert (t["p_adjusted"] >= t["p_value"] - 1e-12).all()


def test_demo_is_labelled_everywhere(report_dir):
    for f in ("report.md", "report.html", "table1_utility.md", "table2_fairness.md"):
        assert DEMO_BANNER in (report_dir / f).read_text(), f
    assert DEMO_LABEL in (report_dir / "report.md").read_text()
    pvh = pd.read_csv(report_dir / "paper_vs_here.csv")
    assert set(pvh["model"]) == {"medclip-vit", "gloria"}  # not run here: shown as such
    assert (pvh["here"] == "not in this run grid").all()
    for csv in report_dir.glob("*.csv"):
        assert (pd.read_csv(csv)["label"] == DEMO_BANNER).all(), csv.name
    assert json.loads((report_dir / "summary.json").read_text())["label"] == DEMO_BANNER
    md = (report_dir / "report.md").read_text()
    assert "## How to read this" in md and "accuracy-driven" in md and "Minimum detectable" in md
    assert ".md" not in md.replace("report.md", "")  # cites no notes file outside the repository


def test_dvc_plot_sources_exist(report_dir):
    scatter = pd.read_csv(report_dir / "accuracy_vs_gaps.csv")
    assert "accuracy" in scatter and "f1_gap__age_group__paper" in scatter
    summary = json.loads((report_dir / "summary.json").read_text())  # for `dvc metrics show`
    assert summary.pop("label") == DEMO_BANNER
    assert set(summary) == {"toy/linear_probe", "toy/mlp"}
    for cell, row in summary.items():
        # The headline figures only: ten numbers a cell, each the mean over the seeds' files.
        assert list(row) == ["n_seeds", *HEADLINE] and row["n_seeds"] == len(SEEDS)
        method = cell.split("/")[1]
        runs = [
            json.loads(
                (
                    report_dir.parent / paths.metrics_dir("toy", method, s) / "metrics.json"
                ).read_text()
            )
            for s in SEEDS
        ]
        for k in HEADLINE:
            assert row[k] == pytest.approx(np.mean([r[k] for r in runs]), abs=5e-5), (cell, k)
    for png in ("accuracy_vs_gaps.png", "group_macro_f1.png", "accuracy_vs_headline_gaps.png"):
        assert (report_dir / "figures" / png).read_bytes()[:4] == b"\x89PNG"


def test_report_without_runs_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert cli.main(["report"]) == 2
    assert "run `fairxray evaluate` first" in capsys.readouterr().err


@pytest.mark.skipif(_browser.chromium() is None, reason=_browser.SKIP_REASON)
def test_html_renders_in_headless_chromium(report_dir, tmp_path):
    from PIL import Image

    page = (report_dir / "report.html").resolve().as_uri()
    dom = subprocess.run(
        _browser.command(tmp_path / "profile", "--dump-dom", page),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for anchor in ('id="table1"', 'id="table2"', 'id="paper-vs-here"', 'id="deviations"'):
        assert anchor in dom
    assert dom.count("<tr>") >= 4 and DEMO_BANNER in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        _browser.command(tmp_path / "profile", f"--screenshot={shot}", page),
        capture_output=True,
        timeout=120,
        check=True,
    )
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"), dtype=float)
    assert img.shape[0] >= 800 and img.shape[1] >= 1300
    assert img.std() > 10, "screenshot is blank"
    assert (img < 128).mean() > 0.005, "no dark pixels: nothing rendered"
