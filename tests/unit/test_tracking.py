"""MLflow tracking on a tiny project: tune's nested trial runs, track's seed runs (every metric of
metrics.json, resolved params, tags, artifacts), the ONNX model in the registry under the alias
``best`` and loadable from it, and a rerun that supersedes the earlier runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os

import numpy as np
import pytest
import yaml

from fairxray import paths
from fairxray.config import load_params
from fairxray.track.runs import (
    CURRENT,
    KIND,
    TrialLogger,
    client,
    metric_key,
    registered_name,
    track,
    tracked_file,
)


def test_metric_keys_are_valid_mlflow_names():
    from mlflow.utils.validation import validate_param_and_metric_name

    for key in ("f1_gap/age_group&sex/standard", "n/age_group&sex/0-59&F", "f1/Effusion", "a|b"):
        assert validate_param_and_metric_name(metric_key(key))
    assert metric_key("f1_gap/age_group&sex/standard") == "f1_gap/age_group_x_sex/standard"
    assert metric_key("accuracy/ci_low") == "accuracy/ci_low"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """tune (2 trials, logged), train, evaluate, export and track of toy x lora."""
    from _trainkit import write_project

    from fairxray.adapt.train import train
    from fairxray.export.onnx import export
    from fairxray.stages import evaluate
    from fairxray.tune import tune

    root = tmp_path_factory.mktemp("tracking")
    path = write_project(root, train_overrides={"epochs": 2})
    raw = yaml.safe_load(path.read_text())
    # No intervals: keeps it fast and exercises null (NaN) metrics.
    raw["metrics"]["n_boot"] = 0
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    old = os.getcwd()
    os.chdir(root)
    try:
        p = load_params(path)
        tp = dataclasses.replace(
            p.tune,
            n_trials=2,
            space={"lora": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}},
        )
        p = dataclasses.replace(p, tune=tp)
        quiet = lambda _m: None  # noqa: E731
        tuned = tune(p, "toy", "lora", callbacks=[TrialLogger(uri, p, "toy", "lora")], log=quiet)
        train(p, "toy", "lora", list(p.seeds), log=quiet)
        assert evaluate.main(["--model", "toy", "--method", "lora", "--params", str(path)]) == 0
        export(p, "toy", "lora", log=quiet)
        first = track(p, "toy", "lora", tracking_uri=uri, log=quiet)
    finally:
        os.chdir(old)
    return {"root": root, "p": p, "uri": uri, "tuned": tuned, "first": first}


@pytest.fixture
def ctx(logged, monkeypatch):
    monkeypatch.chdir(logged["root"])
    return {**logged, "cl": client(logged["uri"])}


def test_trials_are_nested_under_the_pair_run(ctx):
    cl, first = ctx["cl"], ctx["first"]
    exp = first["experiment_id"]
    trials = cl.search_runs([exp], f"tags.`{KIND}` = 'trial'")
    by_number = {int(r.data.tags["fairxray.trial"]): r for r in trials}
    recorded = ctx["tuned"]["study"]["trials"]
    assert sorted(by_number) == [t["number"] for t in recorded]
    for t in recorded:
        run = by_number[t["number"]]
        assert run.data.tags["mlflow.parentRunId"] == first["parent_run_id"]
        assert run.data.tags["fairxray.study"] == ctx["tuned"]["study"]["name"]
        assert run.data.params == {k: str(v) for k, v in t["params"].items()}
        assert run.data.metrics["val/macro_f1"] == pytest.approx(t["values"][0])
    pairs = cl.search_runs([exp], f"tags.`{KIND}` = 'pair'")
    assert [r.info.run_id for r in pairs] == [first["parent_run_id"]]  # tune and track share it


def test_seed_run_has_every_metric_params_tags_and_artifacts(ctx):
    cl, p, first = ctx["cl"], ctx["p"], ctx["first"]
    seed = p.seeds[0]
    run = cl.get_run(first["seed_runs"][str(seed)])
    metrics = json.loads((paths.metrics_dir("toy", "lora", seed) / "metrics.json").read_text())
    assert len(metrics) > 50
    for k, v in metrics.items():
        got = run.data.metrics[metric_key(k)]
        assert math.isnan(got) if v is None else got == pytest.approx(v), k
    cfg = yaml.safe_load((paths.seed_dir("toy", "lora", seed) / "config.yaml").read_text())
    assert run.data.params["train.lr"] == str(cfg["train"]["lr"])
    assert run.data.params["train.augment.flip_p"] == str(cfg["train"]["augment"]["flip_p"])
    assert run.data.params["hyperparameters_from"] == str(paths.tuned("toy", "lora"))
    manifest = paths.splits(p.data.protocol) / "manifest.json"
    tags = run.data.tags
    assert (
        tags["fairxray.data_manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    )
    assert tags["fairxray.profile"] == p.profile and tags["fairxray.protocol"] == p.data.protocol
    assert tags["fairxray.dvc_stage"] == "train" and "fairxray.git_commit" in tags
    assert tags["mlflow.parentRunId"] == first["parent_run_id"]
    files = {
        a.path
        for folder in ("evaluate", "predictions", "model")
        for a in cl.list_artifacts(run.info.run_id, folder)
    }
    assert {"evaluate/by_group.csv", "evaluate/metrics.json", "predictions/test.parquet"} <= files
    assert "model/onnx.json" in files and any(f.endswith(".png") for f in files)


def test_registered_onnx_model_loads_and_predicts_like_the_export(ctx):
    import mlflow
    import onnx

    from fairxray.export.onnx import ort_probs

    p, first = ctx["p"], ctx["first"]
    name = registered_name(p.mlflow.experiment, "toy", "lora")
    version = ctx["cl"].get_model_version_by_alias(name, "best")
    assert version.run_id == first["seed_runs"][str(p.seeds[0])]
    info = mlflow.models.get_model_info(f"models:/{name}@best")
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 3, 32, 32]
    loaded = mlflow.onnx.load_model(f"models:/{name}@best")
    tmp = ctx["root"] / "registered.onnx"
    onnx.save(loaded, str(tmp))
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(ort_probs(tmp, x), ort_probs(paths.onnx("toy", "lora"), x))


def _seed_runs(cl, exp):
    return cl.search_runs([exp], f"tags.`{KIND}` = 'seed'")


def test_unchanged_rerun_adds_no_run_and_no_version(ctx):
    p, first, cl = ctx["p"], ctx["first"], ctx["cl"]
    before = len(_seed_runs(cl, first["experiment_id"]))
    again = track(p, "toy", "lora", tracking_uri=ctx["uri"], log=lambda _m: None)
    assert again["seed_runs"] == first["seed_runs"]  # content hash unchanged: same run
    assert again["registered_model"]["version"] == first["registered_model"]["version"]
    assert len(_seed_runs(cl, first["experiment_id"])) == before
    name = registered_name(p.mlflow.experiment, "toy", "lora")
    assert len(cl.search_model_versions(f"name = '{name}'")) == 1


def test_rerun_supersedes_seed_runs_and_adds_a_version(ctx):
    p, first, cl = ctx["p"], ctx["first"], ctx["cl"]
    mfile = paths.metrics_dir("toy", "lora", p.seeds[0]) / "metrics.json"
    original = mfile.read_text()
    changed = json.loads(original)
    changed["accuracy"] = 0.123456  # a changed result: a new run, never an edit of the old one
    mfile.write_text(json.dumps(changed))
    try:
        second = track(p, "toy", "lora", tracking_uri=ctx["uri"], log=lambda _m: None)
    finally:
        mfile.write_text(original)
    assert second["parent_run_id"] == first["parent_run_id"]
    old, new = first["seed_runs"][str(p.seeds[0])], second["seed_runs"][str(p.seeds[0])]
    assert old != new
    assert cl.get_run(old).data.tags[CURRENT] == "false"
    assert cl.get_run(new).data.tags[CURRENT] == "true"
    assert cl.get_run(new).data.metrics["accuracy"] == pytest.approx(0.123456)
    name = registered_name(p.mlflow.experiment, "toy", "lora")
    assert cl.get_model_version_by_alias(name, "best").run_id == new
    assert (
        int(second["registered_model"]["version"]) == int(first["registered_model"]["version"]) + 1
    )
    assert json.loads(tracked_file("toy", "lora").read_text()) == second
    # Later tests of this module read the shared store: track the restored results again.
    track(p, "toy", "lora", tracking_uri=ctx["uri"], log=lambda _m: None)


# -- what the UI shows first (fairxray.track.headline) ----------------------------------------


def test_parent_run_shows_the_headline_figures_and_the_experiment_is_training(ctx):
    from fairxray.metrics.headline import HEADLINE
    from fairxray.track import headline as h

    cl, p, first = ctx["cl"], ctx["p"], ctx["first"]
    parent = cl.get_run(first["parent_run_id"])
    seeds = [
        json.loads((paths.metrics_dir("toy", "lora", s) / "metrics.json").read_text())
        for s in p.seeds
    ]
    for i, key in enumerate(HEADLINE, start=1):
        want = np.nanmean([np.nan if m[key] is None else m[key] for m in seeds])
        got = parent.data.metrics[f"{i}.{key}"]
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want), key
    assert parent.data.metrics["n_seeds"] == len(p.seeds)
    # The headline names sort before every other metric, in the order of the list.
    names = sorted(parent.data.metrics)
    expected = [f"{i}.{k}" for i, k in enumerate(HEADLINE, start=1)]
    assert [n for n in names if n in expected] == expected
    first_other = next(i for i, n in enumerate(names) if not n[0].isdigit())
    assert names.index(expected[-1]) < first_other  # group.* and the rest come after
    # Per-group values as chartable metrics, equal to by_group.csv.
    import pandas as pd

    bg = pd.read_csv(
        paths.metrics_dir("toy", "lora", p.seeds[0]) / "by_group.csv", dtype={"group": str}
    )
    row = bg[(bg["attribute"] == "age_group") & (bg["metric"] == "macro_f1")].iloc[-1]
    seed_run = cl.get_run(first["seed_runs"][str(p.seeds[0])])
    got = seed_run.data.metrics[f"group.age_group.{row['group']}.macro_f1"]
    assert got == pytest.approx(row["value"])
    assert seed_run.data.metrics[f"group.age_group.{row['group']}.n"] == row["n"]
    # Provenance on the parent and the seeds: commit, data hash, DVC experiment, tune settings.
    for run in (parent, seed_run):
        t = run.data.tags
        assert t[h.DVC_EXPERIMENT] == h.WORKSPACE and "fairxray.git_commit" in t
        assert t["fairxray.tune.n_trials"] == str(p.tune.n_trials)
        assert len(t["fairxray.data_manifest_sha256"]) == 64
    exp = cl.get_experiment(first["experiment_id"])
    assert exp.tags[h.EXPERIMENT_KIND] == h.TRAINING
    view = json.loads(exp.tags[h.SHARED_VIEW + h.VIEW_KEY])
    assert "metrics.`1.accuracy`" in view["selectedColumns"]


def test_a_dvc_experiment_gets_its_own_parent_run(ctx, monkeypatch):
    from fairxray.track import headline as h
    from fairxray.track.runs import experiment_id, pair_run

    cl, p = ctx["cl"], ctx["p"]
    exp = experiment_id(cl, p.mlflow.experiment, ctx["uri"], p.profile)
    base = pair_run(cl, exp, p, "toy", "lora")
    assert base == ctx["first"]["parent_run_id"]
    monkeypatch.setenv("DVC_EXP_NAME", "fuzzy-owl")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "a" * 40)
    other = pair_run(cl, exp, p, "toy", "lora")
    assert other != base
    assert cl.get_run(other).data.tags[h.DVC_EXPERIMENT] == "fuzzy-owl"
    assert pair_run(cl, exp, p, "toy", "lora") == other  # found again by its tags
    assert h.dvc_tags() == {h.DVC_EXPERIMENT: "fuzzy-owl", h.DVC_BASELINE: "a" * 40}


def test_a_pruned_trial_is_finished_and_tagged(ctx):
    import optuna

    from fairxray.track import headline as h

    p = ctx["p"]
    study = optuna.create_study(direction="maximize", study_name="toy/lora@pruned-test")
    pruned = optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED,
        params={"lr": 0.01},
        distributions={"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)},
        intermediate_values={0: 0.3, 1: 0.35},
    )
    pruned.number = 99
    logger = TrialLogger(ctx["uri"], p, "toy", "lora", log=pytest.fail)
    logger(study, pruned)
    (run,) = ctx["cl"].search_runs(
        [ctx["first"]["experiment_id"]], "tags.`fairxray.study` = 'toy/lora@pruned-test'"
    )
    assert run.info.status == "FINISHED"
    assert run.data.tags[h.PRUNED] == "true" and run.data.tags["fairxray.trial_state"] == "pruned"
    assert run.info.run_name == "trial-99 (pruned)"


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runs_left_running_by_a_dead_process_are_closed_as_killed(ctx):
    import socket

    from fairxray.track.lifecycle import CLOSED, OWNER
    from fairxray.track.runs import METHOD, MODEL

    cl, first = ctx["cl"], ctx["first"]
    exp = first["experiment_id"]
    base = {MODEL: "toy", METHOD: "lora", KIND: "seed"}
    dead = cl.create_run(exp, tags={**base, OWNER: f"{socket.gethostname()}:{_dead_pid()}"})
    alive = cl.create_run(exp, tags={**base, OWNER: f"{socket.gethostname()}:{os.getpid()}"})
    elsewhere = cl.create_run(exp, tags={**base, OWNER: "another-host:1"})
    other_pair = cl.create_run(exp, tags={MODEL: "toy", METHOD: "mlp", OWNER: "x:1"})
    track(ctx["p"], "toy", "lora", tracking_uri=ctx["uri"], log=lambda _m: None)
    status = {r.info.run_id: cl.get_run(r.info.run_id).info.status
              for r in (dead, alive, elsewhere, other_pair)}  # fmt: skip
    assert status[dead.info.run_id] == "KILLED"
    assert CLOSED in cl.get_run(dead.info.run_id).data.tags
    # A live process, another host and another pair's run are left alone.
    assert status[alive.info.run_id] == status[elsewhere.info.run_id] == "RUNNING"
    assert status[other_pair.info.run_id] == "RUNNING"
    for r in (alive, elsewhere, other_pair):
        cl.delete_run(r.info.run_id)


def test_finished_trials_mlflow_lacks_are_logged_on_resync(ctx):
    import socket

    from fairxray.track.lifecycle import OWNER
    from fairxray.tune import make_storage, storage_url

    cl, p, first = ctx["cl"], ctx["p"], ctx["first"]
    exp = first["experiment_id"]
    name = ctx["tuned"]["study"]["name"]

    def trial_runs():
        runs = cl.search_runs([exp], f"tags.`{KIND}` = 'trial' and tags.`fairxray.study` = '{name}'")
        return {int(r.data.tags["fairxray.trial"]): r for r in runs}

    runs = trial_runs()
    numbers = sorted(runs)
    assert len(numbers) == 2
    cl.delete_run(runs[numbers[0]].info.run_id)  # lost: a kill before the run was created
    # A kill during the logging of the other: its run left RUNNING by a process now dead.
    cl.set_terminated(runs[numbers[1]].info.run_id, "RUNNING")
    cl.set_tag(runs[numbers[1]].info.run_id, OWNER, f"{socket.gethostname()}:{_dead_pid()}")
    logger = TrialLogger(ctx["uri"], p, "toy", "lora", log=lambda _m: None)
    relogged = logger.resync(name, make_storage(storage_url(p.tune, None)))
    assert relogged == numbers
    now = [r for r in cl.search_runs([exp], f"tags.`{KIND}` = 'trial' and tags.`fairxray.study` = '{name}'")
           if r.info.status != "RUNNING" and "fairxray.closed" not in r.data.tags]  # fmt: skip
    assert sorted(int(r.data.tags["fairxray.trial"]) for r in now) == numbers
    assert logger.resync(name, make_storage(storage_url(p.tune, None))) == []  # nothing twice


def test_demo_runs_and_registered_models_say_demo(ctx):
    from fairxray import DEMO_BANNER

    cl, first = ctx["cl"], ctx["first"]
    for rid in [first["parent_run_id"], *first["seed_runs"].values()]:
        assert cl.get_run(rid).data.tags["mlflow.note.content"].startswith(DEMO_BANNER)
    reg = first["registered_model"]
    assert cl.get_registered_model(reg["name"]).description.startswith(DEMO_BANNER)
    assert cl.get_model_version(reg["name"], reg["version"]).description.startswith(DEMO_BANNER)
