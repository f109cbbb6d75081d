"""End to end: `dvc repro` of the demo in a temporary copy of the repository (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1", MLFLOW_ENABLE_TELEMETRY="false")
    return env


def run(cmd: list[str], cwd: Path) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    )
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory) -> Path:
    """The tracked files of this checkout (plus uncommitted edits) in a fresh git repo."""
    dst = tmp_path_factory.mktemp("repo") / "fairxray"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"],
    ):
        subprocess.run(cmd, cwd=dst, check=True, capture_output=True)
    return dst


@pytest.fixture(scope="module")
def first_run(demo_copy) -> str:
    return run(["dvc", "repro"], demo_copy)


def test_demo_repro_runs_the_whole_graph(demo_copy, first_run):
    from fairxray.config import load_params

    p = load_params(demo_copy / "params.yaml")
    for protocol in p.data.protocols:
        man = json.loads((demo_copy / "data" / "splits" / protocol / "manifest.json").read_text())
        assert man["rows"]["test"] == 240
        cache = json.loads((demo_copy / "data" / "images" / protocol / "manifest.json").read_text())
        assert cache["complete"] and cache["source"] == "synthetic"
    paper = json.loads((demo_copy / "data/splits/nih6x200-paper/manifest.json").read_text())
    assert paper["leakage"]["shared_patients"]["train-test"] == 23
    for model in p.models:
        for method in p.methods:
            assert (demo_copy / "tuned" / model / f"{method}.yaml").exists()
            for seed in p.seeds:
                for split in ("val", "test"):
                    assert (
                        demo_copy / f"predictions/{model}/{method}/seed{seed}/{split}.parquet"
                    ).exists()
                metrics = json.loads(
                    (demo_copy / f"metrics/{model}/{method}/seed{seed}/metrics.json").read_text()
                )
                assert {
                    "accuracy",
                    "f1_gap/age_group/paper",
                    "eq_odds/sex/paper",
                    "ece_gap/age_group/binned",
                } <= set(metrics)
            parity = json.loads((demo_copy / f"models/{model}/{method}/onnx.json").read_text())
            assert (demo_copy / f"models/{model}/{method}/model.onnx").exists()
            assert parity["parity"]["passed"] and parity["parity"]["max_abs_diff"] <= p.export.atol
            assert json.loads((demo_copy / f"tracked/{model}/{method}.json").read_text())
        for method in p.mitigate.methods:
            for mitigation in p.mitigations:
                run_dir = f"{method}+{mitigation}"
                for seed in p.seeds:
                    assert (
                        demo_copy / f"metrics/{model}/{run_dir}/seed{seed}/metrics.json"
                    ).exists()
                assert json.loads((demo_copy / f"tracked/{model}/{run_dir}.json").read_text())
    report = (demo_copy / "reports" / "report.html").read_text()
    assert "DEMO" in report
    assert "Mitigation: paired effects against none" in report
    effects = (demo_copy / "reports" / "mitigation_effects.csv").read_text()
    assert all(m in effects for m in p.mitigations)
    assert (demo_copy / "mlruns" / "mlflow.db").exists()
    assert (demo_copy / "studies" / "optuna.db").exists()


def test_dvc_metrics_and_plots_show(demo_copy, first_run):
    out = run(["dvc", "metrics", "show", "--json"], demo_copy)
    assert "accuracy" in out
    # The headline figures only: ten numbers per model x method, not the 300 columns of before.
    summary = json.loads(out)[""]["data"]["reports/summary.json"]["data"]
    assert summary.pop("label").startswith("DEMO")  # the demo's summary says what it is
    assert all(len(cell) == 10 for cell in summary.values()), summary
    run(["dvc", "plots", "show", "--out", "plots-html"], demo_copy)
    page = (demo_copy / "plots-html" / "index.html").read_text()
    assert "<script" not in page and "accuracy_vs_headline_gaps" in page  # offline: images only


def test_second_repro_is_a_noop(demo_copy, first_run):
    out = run(["dvc", "repro"], demo_copy)
    assert "Running stage" not in out
    assert "Data and pipelines are up to date" in out


def test_param_change_reruns_only_dependants(demo_copy, first_run):
    params = demo_copy / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["metrics"]["ci_level"] = 0.9
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    # What DVC would rerun, without running it (evaluate onwards would take minutes).
    out = run(["dvc", "repro", "--dry"], demo_copy)
    assert "Running stage 'evaluate@toy-mlp'" in out and "Running stage 'report'" in out
    for upstream in ("prepare@", "images@", "embed@", "train@", "export@"):
        assert f"Running stage '{upstream}" not in out, upstream


def test_demo_inference_finds_the_planted_age_gap_and_no_sex_gap(demo_copy, first_run):
    """The demo plants a weaker disease pattern in the 60-99 group and no sex effect: after the
    correction within each cell, every trained method's age gap in the Brier score is significant
    and no gap of sex alone is. A weaker pattern lowers the probability of the true class, which the
    Brier score (a proper score) sees even where the argmax is still right: the demo's MLP head is
    96 % accurate and its F1 gap is not significant, its Brier gap is."""
    from fairxray.config import load_params

    p = load_params(demo_copy / "params.yaml")
    for model in p.models:
        for method in p.methods:
            cell = json.loads((demo_copy / f"metrics/{model}/{method}/cell.json").read_text())
            sex = [k for k in cell if k.endswith("/significant") and k.split("/")[1] == "sex"]
            assert sex and not [k for k in sex if cell[k] == 1.0], (model, method)
            if method == "zero_shot":
                continue  # nothing trained: the random toy model has no reason to see the age effect
            key = "brier_gap/age_group"
            assert cell[f"{key}/significant"] == 1.0, (model, method, cell[f"{key}/p_adjusted"])
