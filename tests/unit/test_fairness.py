"""Hand-worked examples for each paper variant and for binned ECE, and the NaN / edge-case rules."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from fairxray.metrics import fairness as fm


def _quiet(fn, *args, **kwargs):
    """Call ``fn`` and return (result, FairnessWarning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fm.FairnessWarning)
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in caught if issubclass(w.category, fm.FairnessWarning)]


# ---- paper F1_delta -------------------------------------------------------------------------
# Four subgroups, 3 classes. The paper's group F1 is sklearn's macro-F1 over the labels present
# in truth or prediction, F1_c = 2TP / (2TP + FP + FN):
#   young-F  y=[0,1]    pred=[0,1]    -> class0 1, class1 1                      -> 1
#   young-M  y=[0,1]    pred=[0,0]    -> class0 2/(2+1)=2/3, class1 0            -> 1/3
#   old-F    y=[2,2,1]  pred=[2,1,1]  -> class1 2/(2+1)=2/3, class2 2/(2+1)=2/3  -> 2/3
#   old-M    y=[0,2]    pred=[0,0]    -> class0 2/3, class2 0                    -> 1/3
# F1_delta(age) = mean(old-F, old-M) - mean(young-F, young-M) = 1/2 - 2/3 = -1/6
# F1_delta(sex) = mean(young-M, old-M) - mean(young-F, old-F) = 1/3 - 5/6 = -1/2
PAPER_Y = [0, 1, 0, 1, 2, 2, 1, 0, 2]
PAPER_PRED = [0, 1, 0, 0, 2, 1, 1, 0, 0]
PAPER_SF = pd.DataFrame(
    {
        "age_group": ["0-59"] * 4 + ["60-99"] * 5,
        "sex": ["F", "F", "M", "M", "F", "F", "F", "M", "M"],
    }
)


def test_f1_gap_paper_hand_worked():
    age, msgs = _quiet(
        fm.f1_gap_paper,
        PAPER_Y,
        PAPER_PRED,
        sensitive_features=PAPER_SF,
        attribute="age_group",
        n_classes=3,
    )
    sex, _ = _quiet(
        fm.f1_gap_paper,
        PAPER_Y,
        PAPER_PRED,
        sensitive_features=PAPER_SF[["sex", "age_group"]],
        attribute="sex",
        n_classes=3,
    )
    assert age == pytest.approx(-1 / 6, abs=1e-12)
    assert sex == pytest.approx(-1 / 2, abs=1e-12)
    # Every subgroup lacks a class: the paper's value is kept and the reader is told.
    assert any("value kept as the paper computes it" in m for m in msgs)


def test_f1_gap_paper_sign_follows_level_order_not_row_order():
    rev = PAPER_SF.iloc[::-1].reset_index(drop=True)
    got, _ = _quiet(
        fm.f1_gap_paper,
        PAPER_Y[::-1],
        PAPER_PRED[::-1],
        sensitive_features=rev,
        attribute="age_group",
        n_classes=3,
    )
    assert got == pytest.approx(-1 / 6, abs=1e-12)


def test_f1_gap_paper_needs_two_levels():
    sf = PAPER_SF.assign(age_group=["0-59", "60-99", "100-119"] * 3)
    got, msgs = _quiet(
        fm.f1_gap_paper,
        PAPER_Y,
        PAPER_PRED,
        sensitive_features=sf,
        attribute="age_group",
        n_classes=3,
    )
    assert np.isnan(got)
    assert any("exactly two groups" in m for m in msgs)


# ---- paper EqOdds and fairlearn worst case --------------------------------------------------
# group a: y=[0,1,2,2] pred=[0,2,2,1];  group b: y=[0,1,1,2] pred=[1,1,1,2]
#   class 0: a TPR 1/1=1, FPR 0/3=0;   b TPR 0/1=0, FPR 0/3=0   -> EO_0 = (1 + 0)/2 = 1/2
#   class 1: a TPR 0/1=0, FPR 1/3;     b TPR 2/2=1, FPR 1/2     -> EO_1 = (1 + 1/6)/2 = 7/12
#   class 2: a TPR 1/2,   FPR 1/2;     b TPR 1/1=1, FPR 0/3=0   -> EO_2 = (1/2 + 1/2)/2 = 1/2
# paper EqOdds = (1/2 + 7/12 + 1/2)/3 = 19/36
# worst case per class max(dTPR, dFPR): 1, 1, 1/2 -> max 1, mean 5/6
EO_Y = [0, 1, 2, 2, 0, 1, 1, 2]
EO_PRED = [0, 2, 2, 1, 1, 1, 1, 2]
EO_G = ["a"] * 4 + ["b"] * 4


def test_eq_odds_paper_hand_worked():
    got = fm.eq_odds_paper(EO_Y, EO_PRED, sensitive_features=EO_G, n_classes=3)
    assert got == pytest.approx(19 / 36, abs=1e-12)


def test_eq_odds_worst_case_hand_worked():
    got = fm.eq_odds_worst_case(EO_Y, EO_PRED, sensitive_features=EO_G, n_classes=3)
    np.testing.assert_allclose(got["per_class"], [1, 1, 0.5], atol=1e-12)
    assert got["worst_case_max"] == pytest.approx(1.0)
    assert got["worst_case_mean"] == pytest.approx(5 / 6, abs=1e-12)


# ---- calibration ----------------------------------------------------------------------------
# Two classes, 5 bins with edges 0, .2, .4, .6, .8, 1 (right-closed).
#   p=[.9,.1]  y=0: pred 0, right, conf .9  -> bin (.8,1]
#   p=[.7,.3]  y=1: pred 0, wrong, conf .7  -> bin (.6,.8]
#   p=[.55,.45] y=0: pred 0, right, conf .55 -> bin (.4,.6]
#   p=[.45,.55] y=0: pred 1, wrong, conf .55 -> bin (.4,.6]
# ECE = (1*|1-.9| + 1*|0-.7| + 2*|.5-.55|) / 4 = (.1 + .7 + .1) / 4 = .225
# paper ECE: class 0 |p-y| = .1,.7,.45,.55 -> .45; class 1 the same -> .45
# groups g1 = rows 0-1, g2 = rows 2-3:
#   binned: g1 (.1 + .7)/2 = .4, g2 2*.05/2 = .05 -> gap .35
#   paper:  g1 (.1+.7)/2 = .4 per class -> .4; g2 (.45+.55)/2 = .5 -> |.4 - .5| = .1
ECE_P = np.array([[0.9, 0.1], [0.7, 0.3], [0.55, 0.45], [0.45, 0.55]])
ECE_Y = np.array([0, 1, 0, 0])
ECE_G = ["g1", "g1", "g2", "g2"]


def test_ece_binned_hand_worked():
    assert fm.ece_binned(ECE_Y, ECE_P, n_bins=5) == pytest.approx(0.225, abs=1e-12)
    gap = fm.ece_gap_binned(ECE_Y, ECE_P, sensitive_features=ECE_G, n_bins=5)
    assert gap == pytest.approx(0.35, abs=1e-12)


def test_ece_paper_hand_worked():
    assert fm.ece_paper(ECE_Y, ECE_P, n_classes=2) == pytest.approx(0.45, abs=1e-12)
    gap = fm.ece_gap_paper(ECE_Y, ECE_P, sensitive_features=ECE_G, n_classes=2)
    assert gap == pytest.approx(0.1, abs=1e-12)


def test_bins_are_fixed_on_unit_interval_and_right_closed():
    # 0.2 sits on the first inner edge and belongs to the first bin; 1.0 to the last.
    np.testing.assert_array_equal(
        fm.bin_index([0.0, 0.1, 0.2, 0.21, 0.99, 1.0], 5), [0, 0, 0, 1, 4, 4]
    )
    # ECE of a group does not depend on which other scores exist (bins are not re-fitted per group).
    alone = fm.ece_binned(ECE_Y[2:], ECE_P[2:], n_bins=5)
    assert alone == pytest.approx(0.05, abs=1e-12)


def test_var_f1_is_sample_variance():
    # mean .5; squared deviations .04, 0, .04 -> sum .08 / (3 - 1) = .04
    assert fm.var_f1([0.3, 0.5, 0.7]) == pytest.approx(0.04, abs=1e-12)
    assert np.isnan(fm.var_f1([0.3, np.nan, 0.7]))


# ---- edge cases -----------------------------------------------------------------------------


def _balanced(n_per=4, groups=("a", "b"), k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.tile(np.repeat(np.arange(k), n_per), len(groups))
    g = np.repeat(groups, n_per * k)
    prob = rng.dirichlet(np.ones(k), size=len(y))
    return y, prob, g


def test_empty_group_gives_nan_and_warning():
    y, prob, g = _balanced()
    pred = prob.argmax(1)
    levels = {"age_group": ["a", "b", "c"]}
    sf = pd.DataFrame({"age_group": g})
    gap, msgs = _quiet(
        fm.f1_gap_standard, y, pred, sensitive_features=sf, n_classes=3, levels=levels
    )
    assert np.isnan(gap)
    assert any("age_group=c: 0 images" in m for m in msgs)
    by, _ = _quiet(fm.group_macro_f1, y, pred, sensitive_features=sf, n_classes=3, levels=levels)
    assert list(by.index) == ["a", "b", "c"] and np.isnan(by["c"]) and by[["a", "b"]].notna().all()
    wc, _ = _quiet(
        fm.eq_odds_worst_case, y, pred, sensitive_features=sf, n_classes=3, levels=levels
    )
    assert np.isnan(wc["worst_case_max"])
    paper, msgs = _quiet(
        fm.eq_odds_paper, y, pred, sensitive_features=sf, n_classes=3, levels=levels
    )
    assert np.isnan(paper) and any("exactly two groups" in m for m in msgs)


def test_class_absent_from_a_group_gives_nan_not_zero():
    y, prob, g = _balanced()
    keep = ~((g == "b") & (y == 2))  # group b has no image of class 2
    y, prob, g = y[keep], prob[keep], g[keep]
    pred = prob.argmax(1)
    by, msgs = _quiet(fm.group_macro_f1, y, pred, sensitive_features=g, n_classes=3)
    assert np.isnan(by["b"]) and np.isfinite(by["a"])
    assert any("no image of class index [2]" in m for m in msgs)
    tpr, fpr, _ = _quiet(fm.ovr_rates, y, pred, sensitive_features=g, n_classes=3)[0]
    assert np.isnan(tpr[1, 2]) and np.isfinite(fpr[1, 2])
    eo, msgs = _quiet(fm.eq_odds_paper, y, pred, sensitive_features=g, n_classes=3)
    assert np.isnan(eo) and any("TPR NaN" in m for m in msgs)
    u, _ = _quiet(fm.utility, y[g == "b"], prob[g == "b"], n_classes=3, where="b")
    assert np.isfinite(u["accuracy"]) and np.isnan(u["auroc_macro"]) and np.isnan(u["macro_f1"])


def test_one_group_only():
    y, prob, g = _balanced(groups=("a",))
    pred = prob.argmax(1)
    gap, msgs = _quiet(fm.f1_gap_standard, y, pred, sensitive_features=g, n_classes=3)
    assert np.isnan(gap) and any("only one group" in m for m in msgs)
    ece, _ = _quiet(fm.ece_gap_binned, y, prob, sensitive_features=g)
    assert np.isnan(ece)
    wc, msgs = _quiet(fm.eq_odds_worst_case, y, pred, sensitive_features=g, n_classes=3)
    assert np.isnan(wc["worst_case_max"]) and any("only one group" in m for m in msgs)


def test_group_below_min_size_is_nan():
    y, prob, g = _balanced(n_per=1)  # 3 images per group
    gap, msgs = _quiet(fm.ece_gap_binned, y, prob, sensitive_features=g, min_group_size=5)
    assert np.isnan(gap) and any("fewer than min_group_size 5" in m for m in msgs)


def test_intersectional_groups_are_the_product_in_order():
    sf = pd.DataFrame({"age_group": ["60-99", "0-59", "0-59"], "sex": ["M", "F", "M"]})
    gr = fm.group_codes(sf)
    assert gr.attribute == "age_group&sex"
    assert gr.labels == ("0-59&F", "0-59&M", "60-99&F", "60-99&M")
    np.testing.assert_array_equal(gr.codes, [3, 0, 1])
    np.testing.assert_array_equal(gr.sizes, [1, 1, 0, 1])


def test_natural_order_of_age_bins():
    assert sorted(["60-99", "100-119", "0-59"], key=fm.natural_key) == ["0-59", "60-99", "100-119"]
