"""Paired comparisons under ``data.task: multilabel``: a replicate of the paired difference is the
difference of the two runs' metrics on the materialised patient resample; with two runs of the
same true performance the test rejects at about alpha; pairing narrows the interval of correlated
runs; the report writes ``paired_comparisons.csv`` and its section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_metrics_multilabel import CLASSES, SENS, _params, frame, opts

from fairxray.metrics.bootstrap import patient_weights
from fairxray.metrics.multilabel_inference import infer
from fairxray.metrics.paired import paired_bootstrap
from fairxray.metrics.predictions import validate_predictions

KEYS = ("auroc_macro", "underdiagnosis", "underdiagnosis_gap/sex", "underdiagnosis_gap/age_group")


def _other_run(df: pd.DataFrame, seed: int, signal: float = 0.35) -> pd.DataFrame:
    """The same test rows (patients, labels, groups) scored by another model: new noise."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    for c in CLASSES:
        y = out["y_" + c.replace(" ", "_")].to_numpy()
        out[f"prob_{c}"] = np.clip(signal * y + rng.random(len(out)) * (1 - signal), 0, 1)
    return validate_predictions(out, CLASSES, SENS, "other run", task="multilabel")


def test_paired_difference_equals_the_materialised_resample():
    a = frame(n=200, n_pat=70, seed=41)
    b = _other_run(a, seed=42, signal=0.25)
    va, vb = frame(seed=43), frame(seed=44, signal=0.25)
    o = opts(n_boot=12, seed=5, n_bins=4096, min_group_size=1)  # all scores distinct bins
    ra, rb = infer([a], [va], o, ["a"]), infer([b], [vb], o, ["b"])
    t = paired_bootstrap(ra.metrics, ra.replicates, rb.metrics, rb.replicates, keys=KEYS)
    t = t.set_index("metric")
    W = patient_weights(a["patient_id"], 12, 5)  # the evaluate draws, per row
    for r in (0, 7, 11):
        rows = np.repeat(np.arange(len(a)), W[r].astype(int))
        mat = [
            infer([x.iloc[rows].reset_index(drop=True)], [v], opts(min_group_size=1), ["m"])
            for x, v in ((a, va), (b, vb))
        ]
        for k in KEYS:
            want = mat[0].metrics[k] - mat[1].metrics[k]
            got = ra.replicates[k][r] - rb.replicates[k][r]
            assert got == pytest.approx(want, abs=1e-9), (k, r)
    for k in KEYS:
        d = ra.replicates[k] - rb.replicates[k]
        assert t.loc[k, "diff"] == pytest.approx(ra.metrics[k] - rb.metrics[k])
        if t.loc[k, "ci_method"] == "percentile":
            assert t.loc[k, "ci_low"] == pytest.approx(np.quantile(d, 0.025))
            assert t.loc[k, "ci_high"] == pytest.approx(np.quantile(d, 0.975))
        below, above = (1 + np.sum(d <= 0)) / 13, (1 + np.sum(d >= 0)) / 13
        assert t.loc[k, "p_value"] == pytest.approx(min(1.0, 2 * min(below, above)))
    # the bootstrap-SE p (the mitigation section's rule) from the same replicates
    from scipy.stats import norm

    tn = paired_bootstrap(
        ra.metrics, ra.replicates, rb.metrics, rb.replicates, keys=KEYS, p_rule="normal"
    ).set_index("metric")
    for k in KEYS:
        d = ra.replicates[k] - rb.replicates[k]
        z = abs(ra.metrics[k] - rb.metrics[k]) / np.std(d, ddof=1)
        assert tn.loc[k, "p_value"] == pytest.approx(2 * norm.sf(z))
    with pytest.raises(ValueError, match="p_rule"):
        paired_bootstrap(
            ra.metrics, ra.replicates, rb.metrics, rb.replicates, keys=KEYS, p_rule="x"
        )


def test_same_true_performance_rejects_at_about_alpha():
    """Two models of the same true performance on the same test patients: independent noise, the
    same signal and the same decision thresholds (the same validation table; a threshold is part
    of the model, and two thresholds drawn from two validation sets are two different true
    underdiagnosis rates). 60 data sets x 3 comparisons."""
    keys = ("auroc_macro", "underdiagnosis", "underdiagnosis_gap/sex")
    o = opts(sensitive=("sex",), n_boot=99, n_bins=32)
    p = {k: [] for k in keys}
    for i in range(60):
        a = frame(n=300, n_pat=150, seed=1000 + i)
        b = _other_run(a, seed=5000 + i)
        v = frame(seed=2000 + i)
        ra, rb = infer([a], [v], o, ["a"]), infer([b], [v], o, ["b"])
        t = paired_bootstrap(ra.metrics, ra.replicates, rb.metrics, rb.replicates, keys=keys)
        for k, v in zip(t["metric"], t["p_value"], strict=True):
            p[k].append(v)
    rates = {k: float(np.mean(np.asarray(v) <= 0.05)) for k, v in p.items()}
    pooled = float(np.mean([v <= 0.05 for vs in p.values() for v in vs]))
    # nominal 0.05; 180 tests (positively correlated within a data set): sd about 0.02
    assert 0.005 <= pooled <= 0.11, rates
    assert all(r <= 0.15 for r in rates.values()), rates
    # and a real difference is found: a weaker model b (signal 0.15 vs 0.35)
    a = frame(n=300, n_pat=150, seed=77)
    b = _other_run(a, seed=78, signal=0.15)
    ra, rb = infer([a], [frame(seed=79)], o, ["a"]), infer([b], [frame(seed=80)], o, ["b"])
    t = paired_bootstrap(ra.metrics, ra.replicates, rb.metrics, rb.replicates, keys=keys)
    auc = t.set_index("metric").loc["auroc_macro"]
    assert auc["diff"] > 0 and auc["ci_low"] > 0 and auc["p_value"] <= 0.05


def test_pairing_narrows_the_interval_of_correlated_runs():
    """b = a with a small perturbation: scored on the same resamples the difference varies little;
    on independent resamples (another bootstrap seed for b) the patients' variation stays."""
    a = frame(n=400, n_pat=160, seed=51)
    b = a.copy()
    rng = np.random.default_rng(52)
    for c in CLASSES:
        b[f"prob_{c}"] = np.clip(b[f"prob_{c}"] + rng.normal(0, 0.03, len(b)), 0, 1)
    v = frame(seed=53)
    o = opts(n_boot=150, seed=3, n_bins=64)
    ra, rb = infer([a], [v], o, ["a"]), infer([b], [v], o, ["b"])
    rb_free = infer([b], [v], opts(n_boot=150, seed=4, n_bins=64), ["b"])
    args = {"keys": ("auroc_macro", "underdiagnosis")}
    paired = paired_bootstrap(ra.metrics, ra.replicates, rb.metrics, rb.replicates, **args)
    free = paired_bootstrap(ra.metrics, ra.replicates, rb.metrics, rb_free.replicates, **args)
    width = {
        name: (t["ci_high"] - t["ci_low"]).to_numpy() for name, t in (("p", paired), ("u", free))
    }
    assert (width["p"] < 0.5 * width["u"]).all(), width
    assert (paired["diff"] == free["diff"]).all()  # the estimate is the same; only its spread


@pytest.fixture
def cells(tmp_path, monkeypatch):
    from fairxray import paths
    from fairxray.metrics.predictions import write_predictions
    from fairxray.stages.evaluate import main as evaluate

    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path)
    test = frame(seed=20)
    runs = {"mlp": test, "linear_probe": _other_run(test, seed=21, signal=0.2)}
    for i, (method, df) in enumerate(runs.items()):
        for split, x in (("test", df), ("val", frame(seed=30 + i))):
            write_predictions(
                x, paths.prediction_file("toy", method, 77, split), CLASSES, SENS, task="multilabel"
            )
        assert evaluate(["--model", "toy", "--method", method, "--params", str(params)]) == 0
    return params


def test_report_writes_the_paired_comparisons(cells, capsys):
    from fairxray.report.multilabel import paired_keys
    from fairxray.stages.report import main as report

    assert report(["--params", str(cells)]) == 0
    assert "paired_comparisons.csv: 5 row(s)" in capsys.readouterr().out
    t = pd.read_csv("reports/paired_comparisons.csv")
    from fairxray.config import load_params

    assert list(t["metric"]) == paired_keys(load_params(cells))
    assert list(t["metric"]) == [
        "auroc_macro", "underdiagnosis", "underdiagnosis_gap/age_group", "underdiagnosis_gap/sex",
        "underdiagnosis_gap/age_group&sex",
    ]  # fmt: skip
    assert set(t["method"]) == {"mlp"} and set(t["ref_method"]) == {"linear_probe"}
    a = json.loads(Path("metrics/toy/mlp/cell.json").read_text())
    b = json.loads(Path("metrics/toy/linear_probe/cell.json").read_text())
    for _, r in t.iterrows():
        assert r["diff"] == pytest.approx(a[r["metric"]] - b[r["metric"]]), r["metric"]
    assert (t["n_images"] == 300).all() and (t["n_patients"] == a["n/patients"]).all()
    assert t.set_index("metric").loc["auroc_macro", "ci_low"] > 0  # the stronger model
    assert (t["p_adjusted"] >= t["p_value"] - 1e-12).all()
    assert t["label"].str.startswith("DEMO").all()
    md = Path("reports/report.md").read_text()
    assert "## Paired comparisons (same test patients" in md and "toy/linear_probe" in md
    assert 'id="paired"' in Path("reports/report.html").read_text()
