"""benchmarks/gpu.sh (issue #19) run as shipped, on CPU at tiny sizes, so it cannot rot before a
GPU runs it: the JSON it prints and writes, every section measured, the ratios and the grid
projection recomputed here by hand, and the packages its installer would put on the GPU machine
covering what the run imported. Also the fit loop's ``compile_backend`` hook: with dynamo's
``eager`` backend it must give the eager loop's results bit for bit.

One script run (module fixture): about 15 s of CPU, longer wall time on a shared machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _trainkit import fit_data, train_params

from fairxray.adapt.fit import fit
from fairxray.models import create

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu.sh"


def _gpu_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-out")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--tiny"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    written = json.loads((out / "gpu.json").read_text())
    assert printed == written
    return written


@pytest.mark.heavy  # the GPU benchmark script run at tiny size on CPU (20 s)
def test_every_section_measured_on_cpu(tiny):
    assert tiny["device"] == "cpu" and tiny["tiny"] is True and tiny["random_weights"] is True
    assert tiny["date_utc"].endswith("Z") and tiny["complete"] is True
    loop = tiny["loop"]
    # toy x (full_ft, lora) x batch 8 x compile (off, eager backend)
    assert {(r["method"], r["compile"]) for r in loop} == {
        (m, c) for m in ("full_ft", "lora") for c in ("off", "eager")
    }
    rows = loop + tiny["paper_loop"] + tiny["embed"] + tiny["grid"]
    assert not [r for r in rows if "skipped" in r or "error" in r]
    assert len(tiny["paper_loop"]) == 2 and len(tiny["embed"]) == 1
    assert {r["method"] for r in tiny["grid"]} == {"linear_probe", "mlp", "lora", "full_ft"}
    for r in loop + tiny["paper_loop"] + tiny["embed"]:
        bound = r.get("model_bound_images_per_s", r.get("model_bound_fp32_images_per_s"))
        assert r["end_to_end_images_per_s"] > 0 and bound > 0
        assert r["ratio"] == pytest.approx(r["end_to_end_images_per_s"] / bound, abs=2e-3)
    assert all(r["precision"] == "fp32" and r["workers"] == 2 for r in tiny["paper_loop"])


@pytest.mark.heavy  # the GPU benchmark script run at tiny size on CPU (20 s)
def test_projection_recomputed_by_hand(tiny):
    """Paper grid = sum over pairs of seeds x (fixed + first epoch + 99 steady epochs) plus one
    embedding per model; the tuned grid adds 20 trials per pair (no pruning: all 100 epochs)."""
    rows, proj = tiny["grid"], tiny["projection"]
    run = [r["fixed_seconds"] + r["first_epoch_seconds"] + 99 * r["epoch_seconds"] for r in rows]
    embed = max(r["embed_seconds"] for r in rows)  # one model (toy): its embedding, once
    assert embed > 0 and sum(r["embed_seconds"] > 0 for r in rows) == 2  # linear_probe, mlp
    start = proj["stage_process_start_seconds"]
    assert start > 0
    paper = 3 * sum(run) + embed + start * (1 + 2 * 4)  # embed once; train, evaluate per pair
    assert proj["paper_grid_minutes"] == pytest.approx(paper / 60, abs=0.006)
    assert proj["tuned_grid_minutes_no_pruning"] == pytest.approx(
        (paper + 4 * start + 20 * sum(run)) / 60, abs=0.006
    )
    for r in rows:  # an epoch's wall time holds its training and validation (and checkpoint)
        assert r["epoch_seconds"] >= r["epoch_train_val_seconds"] > 0
    assert proj["runs"] == 12 and proj["pairs"] == 4
    t = tiny["targets"]
    assert t["paper_grid_minutes"]["value"] == proj["paper_grid_minutes"]
    assert t["paper_grid_minutes"]["met"] == (proj["paper_grid_minutes"] <= 20)
    speedups = {s["method"]: s["speedup"] for s in t["speedups_over_paper_settings"]}
    for p in tiny["paper_loop"]:
        ours = next(r for r in tiny["loop"] if r["method"] == p["method"] and r["compile"] == "off")
        want = ours["end_to_end_images_per_s"] / p["end_to_end_images_per_s"]
        assert speedups[p["method"]] == pytest.approx(want, rel=0.01)


def test_project_hand_worked_pruning_bounds():
    """Two pairs, 10 epochs, 2 seeds, 5 trials, 1 startup trial, warm-up 2 (pruned trials run 3
    epochs). Pair a: 1 + 2 + 9 x 0.5 = 7.5 s a run, 1 + 2 + 2 x 0.5 = 4 s pruned; pair b: 2 + 1
    + 9 x 1 = 12 s, 2 + 1 + 2 x 1 = 5 s pruned; embedding 6 s. Paper grid 2 x 19.5 + 6 = 45 s;
    no pruning 45 + 5 x 19.5 = 142.5 s; all prunable pruned 45 + 19.5 + 4 x 9 = 100.5 s. With
    checkpoints free (steady epochs 0.25 and 0.5 s): 2 x (5.25 + 7.5) + 6 = 31.5 s."""
    gpu = _gpu_module()
    rows = [
        {
            "model": "m",
            "fixed_seconds": 1.0,
            "first_epoch_seconds": 2.0,
            "epoch_seconds": 0.5,
            "epoch_train_val_seconds": 0.25,
            "embed_seconds": 6.0,
        },
        {
            "model": "m",
            "fixed_seconds": 2.0,
            "first_epoch_seconds": 1.0,
            "epoch_seconds": 1.0,
            "epoch_train_val_seconds": 0.5,
            "embed_seconds": 0.0,
        },
    ]

    class Args:
        grid_full_epochs, grid_seeds, tune_trials = 10, 2, 5

    class Tune:
        pruner_startup_trials, pruner_warmup_epochs = 1, 2

    proj = gpu.project(rows, Args, Tune)
    assert proj["paper_grid_minutes"] == round(45 / 60, 2)
    assert proj["tuned_grid_minutes_no_pruning"] == round(142.5 / 60, 2)
    assert proj["tuned_grid_minutes_all_prunable_pruned"] == round(100.5 / 60, 2)
    assert proj["pruned_trial_epochs"] == 3
    assert proj["paper_grid_minutes_if_checkpoints_were_free"] == round(31.5 / 60, 2)


def test_budget_exhausted_marks_rows_skipped(capsys):
    """A budget of 0 s measures nothing and says so for every row; no projection, no verdicts."""
    gpu = _gpu_module()
    assert gpu.main(["--tiny", "--budget-s", "0", "--sections", "loop", "embed", "grid"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["loop"] and all(r["skipped"] == "budget" for r in out["loop"])
    assert out["grid"] and all(r["skipped"] == "budget" for r in out["grid"])
    assert out["projection"] is None
    assert out["targets"]["paper_grid_minutes"] == {"value": None, "met": None}
    assert out["targets"]["min_ratio_end_to_end_over_model_bound_eager"]["met"] is None


@pytest.mark.heavy  # the GPU benchmark script run at tiny size on CPU (20 s)
def test_installer_covers_what_the_run_imports(tiny):
    """gpu.sh installs DISTS (at their lock pins) on a bare GPU machine: every distribution the
    tiny run imported must be among them and pinned in requirements.lock."""
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    text = SCRIPT.read_text()
    dists = {norm(n) for n in re.search(r'DISTS="([^"]*)"', text).group(1).split()}
    lock = {
        norm(line.split("==")[0])
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }
    imported = {norm(n) for n in tiny["distributions"]} - {"fairxray"}
    assert "torch" in imported and "pillow" in imported
    assert imported <= dists, sorted(imported - dists)
    assert dists <= lock, sorted(dists - lock)


@pytest.mark.parametrize("method", ["full_ft", "lora"])
def test_compile_hook_eager_backend_is_bit_identical(method):
    data = fit_data()
    hp = train_params(epochs=1)
    plain = fit(method, data, hp, seed=3, model=create("toy"))
    compiled = fit(method, data, hp, seed=3, model=create("toy"), compile_backend="eager")
    assert [h["train_loss"] for h in plain.history] == [h["train_loss"] for h in compiled.history]
    np.testing.assert_array_equal(plain.val_probs, compiled.val_probs)
    np.testing.assert_array_equal(plain.test_probs, compiled.test_probs)
    # the returned module is the eager one (no torch.compile wrapper, plain state-dict keys)
    assert not any(k.startswith("_orig_mod") for k in compiled.module.state_dict())
    assert not isinstance(compiled.module, torch._dynamo.eval_frame.OptimizedModule)
