"""No test-set leakage: changing the test labels changes no selected epoch, no validation score,
no tuned parameter, in both ``fit`` and ``tune``. The validation score is made informative (it
differs between epochs), and a control that selects on the test split shows the check would catch
a leak."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from _trainkit import PROTOCOL, fit_data, train_params, write_project

from fairxray import paths
from fairxray.adapt.fit import fit
from fairxray.config import load_params
from fairxray.models import create


def _scrambled(split):
    """The same images with every label moved to another class."""
    return dataclasses.replace(split, labels=(split.labels + 1) % 6)


def _run(data, hp, seed=3):
    r = fit("mlp", data, hp, seed=seed)
    return r, [h["val_score"] for h in r.history]


def test_fit_selection_ignores_test_labels_and_the_check_has_power():
    data = fit_data(create("toy"), per_class=(6, 3, 3), features=True)
    hp = train_params(epochs=6, selection="neg_loss", lr=1e-2)
    a, scores = _run(data, hp)
    # Informative: every epoch scores differently, so the selected epoch depends on the labels
    # the selection sees.
    assert len(set(np.round(scores, 9))) == len(scores)
    b, scores_b = _run(dataclasses.replace(data, test=_scrambled(data.test)), hp)
    assert a.best_epoch == b.best_epoch and scores == scores_b
    assert np.array_equal(a.val_probs, b.val_probs) and np.array_equal(a.test_probs, b.test_probs)
    # Control: a fit that selects on the test split (test passed as validation) is caught by
    # exactly this comparison.
    leak_a, leak_scores = _run(dataclasses.replace(data, val=data.test), hp)
    leak_b, leak_scores_b = _run(dataclasses.replace(data, val=_scrambled(data.test)), hp)
    assert leak_scores != leak_scores_b


def _tune_once(root, scramble: bool):
    from fairxray.tune.study import tune

    path = write_project(root, train_overrides={"epochs": 2})
    if scramble:
        f = root / "data" / "splits" / PROTOCOL / "test.parquet"
        df = pd.read_parquet(f)
        df["label_idx"] = (df["label_idx"] + 1) % 6
        df["label"] = df["label"].shift(1).fillna(df["label"].iloc[-1])
        df.to_parquet(f, index=False)
    p = load_params(path)
    tp = dataclasses.replace(
        p.tune,
        n_trials=2,
        startup_trials=2,
        space={"lora": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}},
    )
    content = tune(dataclasses.replace(p, tune=tp), "toy", "lora", log=lambda _m: None)
    assert paths.tuned("toy", "lora").exists()
    trials = [(t["params"], t["values"]) for t in content["study"]["trials"]]
    return content["params"], trials


def test_tune_ignores_test_labels(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    params_a, trials_a = _tune_once(tmp_path / "a", scramble=False)
    monkeypatch.chdir(tmp_path / "b")
    params_b, trials_b = _tune_once(tmp_path / "b", scramble=True)
    assert params_a == params_b and trials_a == trials_b
    assert len({v[0] for _, v in trials_a}) == len(trials_a)  # trials differ: informative values
