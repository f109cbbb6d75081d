"""Equality with scikit-learn and fairlearn on random multi-class data with several groups (1e-12)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    equalized_odds_difference,
    false_positive_rate,
    true_positive_rate,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from fairxray.metrics import fairness as fm

TOL = 1e-12


@st.composite
def dataset(draw):
    """K classes, G groups; every class appears in every group (so every metric is defined)."""
    k = draw(st.integers(2, 5))
    g = draw(st.integers(2, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    per = draw(st.integers(2, 5))
    rng = np.random.default_rng(seed)
    y = np.tile(np.repeat(np.arange(k), per), g)
    groups = np.repeat([f"g{i}" for i in range(g)], per * k)
    extra = rng.integers(0, 3 * k)
    y = np.r_[y, rng.integers(0, k, extra)]
    groups = np.r_[groups, rng.choice([f"g{i}" for i in range(g)], extra)]
    logits = rng.normal(size=(len(y), k)) + 1.5 * np.eye(k)[y] * rng.random()
    # Round to a coarse grid sometimes so tied scores (AUROC) and bin edges occur.
    if rng.random() < 0.5:
        logits = np.round(logits, 1)
    prob = np.exp(logits)
    prob /= prob.sum(axis=1, keepdims=True)
    return y, prob, groups, k


COMMON = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _no_warnings(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", fm.FairnessWarning)
        return fn(*a, **kw)


@COMMON
@given(dataset())
def test_utility_equals_sklearn(data):
    y, prob, _, k = data
    pred = prob.argmax(1)
    u = _no_warnings(fm.utility, y, prob, n_classes=k)
    assert abs(u["accuracy"] - accuracy_score(y, pred)) <= TOL
    np.testing.assert_allclose(
        u["f1"], f1_score(y, pred, average=None, labels=list(range(k))), atol=TOL, rtol=0
    )
    assert abs(u["macro_f1"] - f1_score(y, pred, average="macro")) <= TOL
    assert abs(u["balanced_accuracy"] - balanced_accuracy_score(y, pred)) <= TOL
    ref = (
        roc_auc_score(y, prob, multi_class="ovr", average="macro")
        if k > 2
        else np.mean([roc_auc_score(y == c, prob[:, c]) for c in range(k)])
    )
    assert abs(u["auroc_macro"] - ref) <= TOL


@COMMON
@given(dataset())
def test_group_f1_and_standard_gap_equal_metricframe(data):
    y, prob, groups, k = data
    pred = prob.argmax(1)
    mf = MetricFrame(
        metrics=lambda t, p: f1_score(t, p, labels=list(range(k)), average="macro"),
        y_true=y,
        y_pred=pred,
        sensitive_features=groups,
    )
    by = _no_warnings(fm.group_macro_f1, y, pred, sensitive_features=groups, n_classes=k)
    np.testing.assert_allclose(by.to_numpy(), mf.by_group.to_numpy(dtype=float), atol=TOL, rtol=0)
    gap = _no_warnings(fm.f1_gap_standard, y, pred, sensitive_features=groups, n_classes=k)
    assert abs(gap - mf.difference(method="between_groups")) <= TOL


@COMMON
@given(dataset())
def test_ovr_rates_equal_fairlearn(data):
    y, prob, groups, k = data
    pred = prob.argmax(1)
    tpr, fpr, gr = _no_warnings(fm.ovr_rates, y, pred, sensitive_features=groups, n_classes=k)
    for c in range(k):
        mf = MetricFrame(
            metrics={"tpr": true_positive_rate, "fpr": false_positive_rate},
            y_true=(y == c).astype(int),
            y_pred=(pred == c).astype(int),
            sensitive_features=groups,
        )
        ref = mf.by_group.loc[list(gr.labels)]
        np.testing.assert_allclose(tpr[:, c], ref["tpr"].to_numpy(float), atol=TOL, rtol=0)
        np.testing.assert_allclose(fpr[:, c], ref["fpr"].to_numpy(float), atol=TOL, rtol=0)


@COMMON
@given(dataset())
def test_eq_odds_worst_case_equals_fairlearn_per_class(data):
    y, prob, groups, k = data
    pred = prob.argmax(1)
    got = _no_warnings(fm.eq_odds_worst_case, y, pred, sensitive_features=groups, n_classes=k)
    ref = [
        equalized_odds_difference(
            (y == c).astype(int), (pred == c).astype(int), sensitive_features=groups
        )
        for c in range(k)
    ]
    np.testing.assert_allclose(got["per_class"], ref, atol=TOL, rtol=0)
    assert abs(got["worst_case_max"] - max(ref)) <= TOL
    assert abs(got["worst_case_mean"] - np.mean(ref)) <= TOL


@COMMON
@given(dataset())
def test_eq_odds_paper_equals_mean_of_fairlearn_agg_mean_for_two_groups(data):
    y, prob, groups, k = data
    keep = np.isin(groups, ["g0", "g1"])
    y, prob, groups = y[keep], prob[keep], groups[keep]
    pred = prob.argmax(1)
    got = _no_warnings(fm.eq_odds_paper, y, pred, sensitive_features=groups, n_classes=k)
    ref = np.mean(
        [
            equalized_odds_difference(
                (y == c).astype(int),
                (pred == c).astype(int),
                sensitive_features=groups,
                agg="mean",
            )
            for c in range(k)
        ]
    )
    assert abs(got - ref) <= TOL


@COMMON
@given(dataset(), st.integers(1, 20))
def test_ece_binned_equals_direct_loop(data, n_bins):
    y, prob, groups, _ = data
    conf, pred = prob.max(1), prob.argmax(1)
    # Independent formulation: loop over bins with explicit (lo, hi] tests.
    edges = np.linspace(0, 1, n_bins + 1)
    ref = 0.0
    for m in range(n_bins):
        inside = (conf > edges[m]) & (conf <= edges[m + 1]) if m else conf <= edges[1]
        if inside.any():
            ref += (
                inside.sum()
                / len(y)
                * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
            )
    assert abs(fm.ece_binned(y, prob, n_bins=n_bins) - ref) <= TOL


@COMMON
@given(dataset())
def test_paper_subgroup_f1_equals_sklearn_call_of_the_paper(data):
    y, prob, groups, k = data
    pred = prob.argmax(1)
    sex = np.where(np.arange(len(y)) % 2 == 0, "M", "F")
    sf = pd.DataFrame({"age_group": groups, "sex": sex})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fm.FairnessWarning)
        by = fm.paper_subgroup_f1(y, pred, sensitive_features=sf, n_classes=k)
    for label, value in by.items():
        a, s = label.split("&")
        m = (groups == a) & (sex == s)
        if not m.any():
            assert np.isnan(value)
            continue
        ref = f1_score(y[m], pred[m], average="macro", zero_division=1)
        assert abs(value - ref) <= TOL


def test_f1_gap_paper_equals_direct_formula_on_random_data():
    rng = np.random.default_rng(3)
    n = 400
    y = rng.integers(0, 6, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, 6, n))
    age = rng.choice(["0-59", "60-99"], n)
    sex = rng.choice(["M", "F"], n)

    def f1(m):
        return f1_score(y[m], pred[m], average="macro", zero_division=1)

    cell = {(a, s): f1((age == a) & (sex == s)) for a in ("0-59", "60-99") for s in ("F", "M")}
    ref_age = np.mean([cell["60-99", "M"], cell["60-99", "F"]]) - np.mean(
        [cell["0-59", "M"], cell["0-59", "F"]]
    )
    ref_sex = np.mean([cell["0-59", "M"], cell["60-99", "M"]]) - np.mean(
        [cell["0-59", "F"], cell["60-99", "F"]]
    )
    sf = pd.DataFrame({"age_group": age, "sex": sex})
    got_age = fm.f1_gap_paper(y, pred, sensitive_features=sf, attribute="age_group", n_classes=6)
    got_sex = fm.f1_gap_paper(y, pred, sensitive_features=sf, attribute="sex", n_classes=6)
    assert got_age == pytest.approx(ref_age, abs=TOL)
    assert got_sex == pytest.approx(ref_sex, abs=TOL)
