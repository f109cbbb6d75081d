"""Optuna tuning: search spaces typed by TrainParams, objective values against scikit-learn, the
Pareto choice by hand, and real studies on a tiny project (tuned file read by train, resume after
an interruption keeps finished trials, settings-hashed study names)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss

from fairxray import paths
from fairxray.adapt.train import resolve_train_params
from fairxray.config import load_params
from fairxray.errors import UserError
from fairxray.tune import (
    apply_overrides,
    choose_pareto,
    objective_value,
    search_space,
    settings,
    storage_url,
    study_name,
    tune,
)

REPO = Path(__file__).resolve().parents[2]


def _tp(params, **space):
    return dataclasses.replace(params.tune, space=space)


# -- search spaces --------------------------------------------------------------------------


def test_range_type_follows_train_field(params):
    dims = search_space(
        _tp(
            params,
            lora={
                "lora_rank": {"low": 2, "high": 16, "log": True},
                "lora_dropout": {"low": 0, "high": 1},
                "augment.flip_p": {"low": 0.0, "high": 0.5},
                "head": {"choices": ["paper", "linear"]},
            },
        ),
        "lora",
    )
    kinds = {d.name: d.kind for d in dims}
    # lora_rank is an int field; lora_dropout a float field even with integer bounds.
    assert kinds == {
        "lora_rank": "int",
        "lora_dropout": "float",
        "augment.flip_p": "float",
        "head": "categorical",
    }
    assert search_space(_tp(params), "lora") == []


@pytest.mark.parametrize(
    ("spec", "msg"),
    [
        ({"nope": {"low": 1, "high": 2}}, "not a train parameter"),
        ({"augment": {"low": 0, "high": 1}}, "not a train parameter"),
        ({"lr": {"low": 0.0, "high": 1.0, "log": True}}, "log range needs low > 0"),
        ({"lr": {"low": 1.0, "high": 0.1}}, "low must be below high"),
        ({"lora_rank": {"low": 1.5, "high": 4}}, "integer low and high"),
        ({"head_hidden": {"choices": [32, "wide"]}}, "is not a int"),
        ({"head": {"low": 1, "high": 2}}, "takes {choices"),
        ({"lr": {"low": 1e-4}}, "needs low and high"),
    ],
)
def test_bad_space_names_the_key(params, spec, msg):
    with pytest.raises(UserError, match=msg) as err:
        search_space(_tp(params, mlp=spec), "mlp")
    assert f"tune.space.mlp.{next(iter(spec))}" in str(err.value)


def test_params_yaml_spaces_are_valid(params):
    for method in params.methods:
        for d in search_space(params.tune, method):
            hp = apply_overrides(params.train, {d.name: d.choices[0] if d.choices else d.low})
            assert hp != params.train or d.low == getattr(params.train, d.name, None)


def test_overrides_round_trip_through_the_tuned_file(params, tmp_path):
    from fairxray.tune import write_tuned

    overrides = {"lr": 0.0123, "lora_rank": 8, "augment.flip_p": 0.1, "head": "linear"}
    f = write_tuned(tmp_path / "t.yaml", {"params": overrides})
    hp, src = resolve_train_params(params.train, f)
    assert src == str(f)
    assert hp == apply_overrides(params.train, overrides)
    assert (hp.lr, hp.lora_rank, hp.augment.flip_p, hp.head) == (0.0123, 8, 0.1, "linear")
    assert hp.augment.jitter == params.train.augment.jitter


# -- objective values and the Pareto choice ---------------------------------------------------


def test_objective_values_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 50)
    y[:4] = [0, 1, 2, 3]
    probs = rng.dirichlet(np.ones(4), 50)
    pred = probs.argmax(1)
    assert objective_value("macro_f1", y, probs) == pytest.approx(
        f1_score(y, pred, average="macro", labels=[0, 1, 2, 3], zero_division=0)
    )
    assert objective_value("accuracy", y, probs) == pytest.approx(accuracy_score(y, pred))
    assert objective_value("neg_loss", y, probs) == pytest.approx(
        -log_loss(y, probs, labels=[0, 1, 2, 3])
    )


def _t(number, acc, gap):
    return SimpleNamespace(number=number, values=(acc, gap))


def test_pareto_choice_by_hand():
    front = [_t(0, 0.80, 0.20), _t(1, 0.78, 0.10), _t(2, 0.70, 0.02), _t(3, 0.79, float("nan"))]
    assert choose_pareto(front, 0.0).number == 0  # the most accurate
    assert choose_pareto(front, 0.02).number == 1  # 0.78 >= 0.80 - 0.02, gap 0.10 < 0.20
    assert choose_pareto(front, 0.10).number == 2
    assert choose_pareto(front, 1.0).number == 2  # a NaN gap never wins


def test_storage_url(params):
    assert storage_url(params.tune) == "sqlite:///studies/optuna.db"
    assert storage_url(params.tune, "postgresql://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"


# -- real studies on a tiny project ------------------------------------------------------------


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A tiny project (splits, 32 px image cache, params) as cwd; 2 epochs per trial."""
    from _trainkit import write_project

    path = write_project(tmp_path, train_overrides={"epochs": 2})
    monkeypatch.chdir(tmp_path)
    p = load_params(path)
    tp = dataclasses.replace(
        p.tune,
        n_trials=3,
        startup_trials=2,
        space={
            "lora": {
                "lr": {"low": 1e-3, "high": 1e-2, "log": True},
                "lora_rank": {"choices": [2, 4]},
            }
        },
    )
    return dataclasses.replace(p, tune=tp)


def _quiet(_msg):
    return None


def test_study_writes_tuned_file_that_train_reads(project):
    content = tune(project, "toy", "lora", log=_quiet)
    f = paths.tuned("toy", "lora")
    assert f.exists()
    trials = content["study"]["trials"]
    assert len(trials) == 3 and content["study"]["counts"]["complete"] >= 1
    finished = [t for t in trials if t["state"] == "complete"]
    best = max(finished, key=lambda t: t["values"][0])
    assert content["best_trial"] == best["number"]
    assert content["params"] == best["params"]
    hp, src = resolve_train_params(project.train, f)
    assert src == str(f)
    assert hp.lr == best["params"]["lr"] and hp.lora_rank == best["params"]["lora_rank"]
    assert hp.epochs == project.train.epochs  # untuned keys keep params.yaml's values

    import optuna

    study = optuna.load_study(
        study_name=content["study"]["name"], storage=storage_url(project.tune)
    )
    for t in study.trials:
        # fit() reported every epoch's validation score to the pruner
        assert sorted(t.intermediate_values) == list(range(1, len(t.user_attrs["val_history"]) + 1))
        assert t.user_attrs["worker"] == 0


def test_interrupted_study_resumes_with_finished_trials(project, monkeypatch):
    import optuna

    import fairxray.adapt.fit as fitmod

    calls = []
    real_fit = fitmod.fit

    def counting_fit(*a, **k):
        calls.append(1)
        return real_fit(*a, **k)

    monkeypatch.setattr(fitmod, "fit", counting_fit)

    def interrupt_after_two(study, trial):
        if len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune(project, "toy", "lora", callbacks=[interrupt_after_two], log=_quiet)
    assert not paths.tuned("toy", "lora").exists()  # no output from an unfinished study
    assert len(calls) == 2
    name = study_name("toy", "lora", settings(project, "toy", "lora"))
    first = optuna.load_study(study_name=name, storage=storage_url(project.tune)).trials
    kept = [(t.number, t.params, t.values) for t in first]

    content = tune(project, "toy", "lora", log=_quiet)
    assert len(calls) == 3  # only the missing trial ran
    trials = content["study"]["trials"]
    assert [(t["number"], t["params"], t["values"]) for t in trials[:2]] == [
        (n, prm, list(v)) for n, prm, v in kept
    ]
    assert len(trials) == 3
    # The resumed sampler does not redraw a point the study already holds.
    assert trials[2]["params"] not in [t["params"] for t in trials[:2]]

    tune(project, "toy", "lora", log=_quiet)
    assert len(calls) == 3  # a finished study runs nothing


def test_changed_settings_get_their_own_study(project):
    base = study_name("toy", "lora", settings(project, "toy", "lora"))
    assert base.startswith("toy/lora@")
    more_trials = dataclasses.replace(project, tune=dataclasses.replace(project.tune, n_trials=9))
    assert study_name("toy", "lora", settings(more_trials, "toy", "lora")) == base
    longer = dataclasses.replace(project, train=dataclasses.replace(project.train, epochs=5))
    assert study_name("toy", "lora", settings(longer, "toy", "lora")) != base
    # The same weights_dir with changed weights (one tensor nudged) -> another study.
    import torch

    from fairxray.models import create
    from fairxray.models.toy import save_toy

    with_weights = dataclasses.replace(
        project, data=dataclasses.replace(project.data, weights_dir="weights")
    )
    toy = create("toy")
    save_toy(toy, "weights/toy")
    saved = study_name("toy", "lora", settings(with_weights, "toy", "lora"))
    with torch.no_grad():
        next(toy.vision.parameters()).add_(0.01)
    save_toy(toy, "weights/toy")
    assert study_name("toy", "lora", settings(with_weights, "toy", "lora")) != saved


def test_nothing_to_tune(project):
    content = tune(project, "toy", "zero_shot", log=_quiet)
    assert content["tuned"] is False and content["params"] == {}
    hp, _ = resolve_train_params(project.train, paths.tuned("toy", "zero_shot"))
    assert hp == project.train
    content = tune(project, "toy", "mlp", log=_quiet)  # no space for mlp in this project
    assert content["tuned"] is False and "no entry for mlp" in content["reason"]
    # n_trials 0 turns tuning off (the paper profile: its fixed hyperparameters), no study made.
    off = dataclasses.replace(project, tune=dataclasses.replace(project.tune, n_trials=0))
    content = tune(off, "toy", "lora", log=_quiet)
    assert content["tuned"] is False and "tuning off" in content["reason"]
    hp, _ = resolve_train_params(project.train, paths.tuned("toy", "lora"))
    assert hp == project.train


def test_multi_objective_records_a_true_pareto_front(project):
    tp = dataclasses.replace(project.tune, multi_objective=True, n_trials=3, max_cost=0.05)
    content = tune(dataclasses.replace(project, tune=tp), "toy", "lora", log=_quiet)
    key = tp.fairness_key
    done = [t for t in content["study"]["trials"] if t["state"] == "complete"]
    front = content["multi_objective"]["pareto_front"]
    in_front = {f["trial"] for f in front}

    def dominates(a, b):
        return (a[0] >= b[0] and a[1] <= b[1]) and (a[0] > b[0] or a[1] < b[1])

    # Hand check: a trial is on the front exactly when no other trial dominates it.
    for t in done:
        dominated = any(dominates(o["values"], t["values"]) for o in done if o is not t)
        assert (t["number"] in in_front) == (not dominated)
    chosen = next(f for f in front if f["trial"] == content["best_trial"])
    best_obj = max(f["macro_f1"] for f in front)
    eligible = [f for f in front if f["macro_f1"] >= best_obj - 0.05]
    assert chosen[key] == min(f[key] for f in eligible)
    assert content["best_fairness_gap"] == chosen[key]


@pytest.mark.slow
def test_killed_tune_process_resumes(tmp_path):
    """SIGKILL a `fairxray tune` process after its first finished trial (as killing `dvc repro`
    does); a rerun keeps the finished trials and runs only the rest."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    import yaml
    from _trainkit import write_project

    path = write_project(tmp_path, train_overrides={"epochs": 6})
    raw = yaml.safe_load(path.read_text())
    raw["tune"].update(n_trials=5, space={"lora": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [sys.executable, "-m", "fairxray.cli", "tune", "--model", "toy", "--method", "lora"]
    cmd += ["--no-mlflow", "--params", str(path)]
    db = tmp_path / "studies" / "optuna.db"

    def finished() -> list[tuple]:
        with sqlite3.connect(db) as con:
            return con.execute(
                "SELECT number, state FROM trials WHERE state IN ('COMPLETE', 'PRUNED') ORDER BY number"
            ).fetchall()

    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                if finished():
                    break
            except sqlite3.OperationalError:  # tables not created yet
                pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = finished()
    assert 1 <= len(kept) < 5, "the process must die mid-study for this test to mean anything"
    assert not (tmp_path / "tuned" / "toy" / "lora.yaml").exists()

    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(kept)} finished trial(s) kept, {5 - len(kept)} to run" in rerun.stdout
    after = finished()
    assert len(after) == 5 and after[: len(kept)] == kept
    tuned = yaml.safe_load((tmp_path / "tuned" / "toy" / "lora.study.yaml").read_text())
    assert sum(tuned["study"]["counts"].get(s, 0) for s in ("complete", "pruned")) == 5


# -- workers, n_trials and the tuned file -----------------------------------------------------


def _draws(sampler_factory, n_workers: int, per_worker: int) -> list[tuple]:
    """Workers alternate asking trials of one study, each with its own sampler built alike (as
    two `fairxray tune` processes started with the same flags); returns the drawn points."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage)
    workers = [
        optuna.load_study(study_name="s", storage=storage, sampler=sampler_factory())
        for _ in range(n_workers)
    ]
    points = []
    for _ in range(per_worker):
        for study in workers:
            t = study.ask()
            x = (t.suggest_float("lr", 1e-4, 1e-1, log=True), t.suggest_int("rank", 2, 16))
            study.tell(t, x[0])
            points.append(x)
    return points


def test_workers_started_alike_never_draw_the_same_point():
    import optuna

    from fairxray.tune.space import make_sampler

    # The plain seeded TPE sampler of each worker repeats the other's draws (the defect)...
    same = _draws(lambda: optuna.samplers.TPESampler(seed=7, n_startup_trials=4), 2, 2)
    assert same[0] == same[1]
    # ...the per-trial seeded one does not, and a single worker stays reproducible.
    pts = _draws(lambda: make_sampler(7, 4), 2, 3)
    assert len(set(pts)) == len(pts)
    assert _draws(lambda: make_sampler(7, 4), 1, 4) == _draws(lambda: make_sampler(7, 4), 1, 4)


def test_a_lower_n_trials_uses_the_first_trials_by_number(project):
    logs = []
    full = tune(project, "toy", "lora", n_trials=3, log=logs.append)
    first2 = tune(project, "toy", "lora", n_trials=2, log=logs.append)
    assert [t["number"] for t in first2["study"]["trials"]] == [0, 1]
    assert first2["study"]["trials_in_study"] == 3
    assert first2["study"]["trials"] == full["study"]["trials"][:2]
    best = max(first2["study"]["trials"], key=lambda t: (t["values"][0], -t["number"]))
    assert first2["best_trial"] == best["number"] and first2["params"] == best["params"]
    assert any("uses the first 2 by number" in m for m in logs)


def test_train_reads_only_the_chosen_params(project):
    import yaml

    tune(project, "toy", "lora", n_trials=2, log=_quiet)
    params_file = paths.tuned("toy", "lora")
    before = params_file.read_bytes()
    study = yaml.safe_load(paths.tuned_study("toy", "lora").read_text())
    assert study["study"]["n_trials"] == 2
    # The same choice under other study settings (here: a larger n_trials whose extra trial
    # does not win is simulated by rewriting the summary) leaves train's input byte-identical.
    from fairxray.tune import tuned_params, write_tuned

    study["study"]["n_trials"] = 30
    study["study"]["trials"] = study["study"]["trials"] + [{"number": 2, "state": "pruned"}]
    write_tuned(params_file, tuned_params(study))
    assert params_file.read_bytes() == before
    assert set(yaml.safe_load(before)) <= {"format", "model", "method", "tuned", "reason", "params"}
    # train's DVC dependency is that file alone; the study summary is no dependency of train.
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())
    deps = stages["stages"]["train"]["deps"]
    assert "tuned/${item.model}/${item.method}.yaml" in deps
    assert not [d for d in deps if "study" in str(d)]
