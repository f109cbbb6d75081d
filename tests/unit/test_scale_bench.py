"""benchmarks/scale.py at tiny sizes, so it cannot rot before the next full run: the script as
shipped (its own child processes, ``--sizes``, ``--out``) on the ``prepare`` step, the JSON it prints
and writes, the slope and per-1k figures recomputed here; the other steps' inputs and work run
in this process on a few hundred rows; the multi-label prediction tables it can write meet the
contract.

The script run (module fixture) is two child processes: a few seconds of CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fairxray.config import load_params
from fairxray.metrics.predictions import validate_predictions

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "scale.py"
SIZES = (320, 640)


def _module():
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "scale.json"
    sizes = ",".join(map(str, SIZES))
    cmd = [sys.executable, str(SCRIPT), "--sizes", sizes, "--steps", "prepare", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    assert printed == json.loads(out.read_text())
    return printed


def test_the_script_measures_each_size_in_its_own_process(tiny):
    assert tiny["benchmark"] == "scale" and tiny["complete"] is True
    assert tiny["sizes"] == list(SIZES) and list(tiny["steps"]) == ["prepare"]
    assert tiny["date_utc"].endswith("Z") and tiny["cores"] >= 1
    runs = tiny["steps"]["prepare"]["runs"]
    assert [r["n"] for r in runs] == list(SIZES)
    for r in runs:
        # prepare really split n rows of the metadata into the three lists' splits.
        assert r["rows_processed"] == r["n"] == sum(r["rows_per_split"].values())
        assert min(r["rows_per_split"].values()) > 0
        test_share = r["rows_per_split"]["test"] / r["n"]
        assert 0.15 < test_share < 0.3  # NIH's 22.8 % of images in test_list.txt
        assert 0 < r["seconds"] < r["process_seconds"]  # the step, not the interpreter start
        assert 0 < r["rss_start_mb"] <= r["peak_rss_mb"]
        assert r["peak_increase_mb"] == pytest.approx(
            r["peak_rss_mb"] - r["rss_start_mb"], abs=0.11
        )
        assert r["seconds_per_1k"] == pytest.approx(
            1000 * r["seconds"] / r["n"], rel=1e-3, abs=1e-4
        )


def test_slope_is_the_log_log_least_squares_fit(tiny):
    runs = tiny["steps"]["prepare"]["runs"]
    x = np.log([r["n"] for r in runs])
    y = np.log([r["seconds"] for r in runs])
    by_hand = (y[1] - y[0]) / (x[1] - x[0])  # two points: the line through them
    assert tiny["steps"]["prepare"]["slope_seconds"] == pytest.approx(by_hand, abs=1e-3)
    slope = _module().slope
    assert slope([1e3, 1e4, 1e5], [2.0, 20.0, 200.0]) == pytest.approx(1.0)
    assert slope([1e3, 1e4, 1e5], [1.0, 100.0, 1e4]) == pytest.approx(2.0)
    assert slope([1e3], [5.0]) is None
    fit = _module().fixed_plus_linear([1e3, 1e4, 1e5], [2.5, 7.0, 52.0])  # 2 s + 0.5 s per 1k
    assert fit == {"fixed_seconds": 2.0, "seconds_per_1k": 0.5, "max_rel_residual": 0.0}
    assert tiny["steps"]["prepare"]["slope_seconds_top"] == pytest.approx(by_hand, abs=1e-3)


def test_unknown_step_is_refused_by_name():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "prepare,nope"], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "nope" in proc.stderr


def test_embed_and_evaluate_steps_process_every_row(tmp_path, monkeypatch):
    mod = _module()
    p = mod._with_overrides(load_params(REPO / "params.yaml"), {"n_boot": 2, "n_perm": 2})
    args = type("Args", (), {"image_size": 0})()
    monkeypatch.chdir(tmp_path)  # embed's run changes into its folder, as the stage's cwd
    for name, n in (("embed", 200), ("evaluate", 300)):
        folder = tmp_path / name
        folder.mkdir()
        mod.STEPS[name].setup(n, folder, p, args)
        facts = mod.STEPS[name].run(folder, p)
        assert facts["rows"] == n
    emb = np.load(tmp_path / "embed" / "embeddings" / "toy" / "train.npz")
    assert emb["features"].shape == (140, 128)  # 70 % of the rows, toy's 128-d features
    metrics = json.loads((tmp_path / "evaluate" / "metrics" / "metrics.json").read_text())
    assert metrics["n/images"] == 300
    assert (tmp_path / "evaluate" / "metrics" / "by_group.csv").exists()


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_prediction_tables_meet_the_contract(task):
    mod = _module()
    classes = ["A", "B", "C", "D", "E"]
    df = mod.predictions_frame(2000, classes, ["0-59", "60-99"], task)
    validate_predictions(df, classes, ("age_group", "sex"), "<bench>", task)
    assert df["patient_id"].nunique() == pytest.approx(2000 / 3.64, rel=0.15)
    assert df.groupby("patient_id")["sex"].nunique().max() == 1  # sex is per patient
    if task == "multilabel":
        y = df[[f"y_{c}" for c in classes]].to_numpy()
        assert y.sum(1).mean() == pytest.approx(1.6, rel=0.1)
        single = y.sum(1) == 1
        assert (df["label_idx"][~single] == -1).all()
        assert (df["label_idx"][single] == y[single].argmax(1)).all()
