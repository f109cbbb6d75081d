"""End to end: the multi-label demo (`fairxray demo --profile demo-multilabel`) in a run folder,
then a rerun that resumes (slow).

The nih-demo-official protocol draws whole patients from the real NIH metadata in NIH's official
proportions; its synthetic images carry every finding of their metadata row, fainter in the older
group. This runs the whole DVC graph on it (prepare, images, embed, tune, train, evaluate,
export, track, report) at the profile's small size with a reduced method set and resampling.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fairxray import cli
from fairxray.metrics.predictions import read_predictions

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
SMALL = ["methods=[zero_shot, mlp]", "metrics.n_boot=50", "metrics.n_perm=100", "tune.n_trials=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str, dict]:
    """The demo, then the same command again; returns the folder, its params and what the
    rerun changed (dvc.lock and the outputs' modification times)."""
    out = tmp_path_factory.mktemp("ml") / "out"
    sets = [a for s in SMALL for a in ("--set", s)]
    argv = ["demo", "--profile", "demo-multilabel", "--out", str(out), *sets]
    mp = pytest.MonkeyPatch()
    mp.chdir(REPO)
    try:
        assert cli.main(argv) == 0
        lock = (out / "dvc.lock").read_text()
        outputs = sorted((out / "metrics").rglob("*.json")) + sorted(out.glob("predictions/**/*"))
        mtimes = {f: f.stat().st_mtime_ns for f in outputs}
        assert cli.main(argv) == 0  # the rerun resumes: nothing left to do
    finally:
        mp.undo()
    rerun = {
        "lock_unchanged": (out / "dvc.lock").read_text() == lock,
        "rewritten": [str(f) for f, t in mtimes.items() if f.stat().st_mtime_ns != t],
        "n_outputs": len(mtimes),
    }
    return out, (out / "params.yaml").read_text(), rerun


def test_the_split_keeps_nih_official_proportions_and_no_patient_crosses(run):
    out, params, _ = run
    p = yaml.safe_load(params)
    assert p["data"]["task"] == "multilabel" and p["data"]["protocol"] == "nih-demo-official"
    man = json.loads((out / "data/splits/nih-demo-official/manifest.json").read_text())
    assert abs(man["demo"]["test_share"] - 25_596 / 112_120) < 0.01
    assert all(v == 0 for v in man["leakage"]["shared_patients"].values())
    assert "DEMO" in json.dumps(man["demo"])
    cache = json.loads((out / "data/images/nih-demo-official/manifest.json").read_text())
    assert cache["complete"] and cache["source"] == "synthetic"


def test_every_method_writes_the_multilabel_contract_and_trained_beats_zero_shot(run):
    out, params, _ = run
    p = yaml.safe_load(params)
    classes, sensitive = p["data"]["classes"], p["metrics"]["sensitive"]
    auroc = {}
    for method in ("zero_shot", "mlp"):
        for split in ("val", "test"):
            path = out / f"predictions/toy/{method}/seed77/{split}.parquet"
            df = read_predictions(path, classes, sensitive, task="multilabel")
            assert (df["prob_Effusion"] + df["prob_No Finding"]).round(6).nunique() > 1
        m = json.loads((out / f"metrics/toy/{method}/seed77/metrics.json").read_text())
        auroc[method] = m["auroc_macro"]
        for key in ("underdiagnosis", "underdiagnosis_gap/age_group", "auroc_gap/sex/Effusion"):
            assert key in m, key
        assert "underdiagnosis/age_group&sex/60-99&F" in m
        assert "underdiagnosis_gap/age_group/p_adjusted" in m
        assert 0 <= m["threshold/No Finding"] <= 1
    # A trained head on the synthetic findings ranks far better than an untrained zero-shot.
    assert auroc["mlp"] > 0.75 and auroc["mlp"] > auroc["zero_shot"] + 0.15, auroc


def test_the_report_shows_the_underdiagnosis_table_and_figure(run):
    out, _, _ = run
    report = (out / "reports/report.md").read_text()
    assert "DEMO" in report.splitlines()[2]
    assert "## Underdiagnosis: No Finding false-positive rate per group and intersection" in report
    assert "| toy | mlp | age_group&sex | 60-99&M |" in report
    assert (out / "reports/figures/underdiagnosis.png").stat().st_size > 10_000
    table = (out / "reports/underdiagnosis.csv").read_text()
    assert table.startswith("label,model,method,attribute,group,value,ci_low,ci_high,n_with_finding")
    assert "DEMO" in table and ",toy,mlp,age_group&sex,gap," in table
    summary = json.loads((out / "reports/summary.json").read_text())
    assert summary["label"].startswith("DEMO")


def test_the_run_is_tracked_and_the_rerun_changed_nothing(run):
    out, _, rerun = run
    for method in ("zero_shot", "mlp"):
        tracked = json.loads((out / f"tracked/toy/{method}.json").read_text())
        assert tracked["experiment"] == "fairxray-demo-multilabel"
    # The second run skipped every stage: dvc.lock and every metrics and predictions file as
    # the first run left them.
    assert rerun["lock_unchanged"] and rerun["n_outputs"] > 10
    assert rerun["rewritten"] == []
