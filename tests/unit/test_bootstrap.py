"""Patient bootstrap: resamples patients, is seeded, equals the metrics on the materialised
resample, and gives intervals around the point estimate on well-behaved data."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairxray.metrics import fairness as fm
from fairxray.metrics.bootstrap import patient_weights, percentile_interval, replicate_metrics
from fairxray.metrics.evaluate import Settings, evaluate_frame, point_metrics, prepare

CLASSES = ("A", "B", "C", "D")


def frame(n_patients=60, images_per_patient=2, k=4, signal=1.5, seed=0):
    """Random predictions table; a patient's images share age group and sex."""
    rng = np.random.default_rng(seed)
    n = n_patients * images_per_patient
    pid = np.repeat([f"{i:08d}" for i in range(n_patients)], images_per_patient)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + signal * np.eye(k)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    df = pd.DataFrame(
        {
            "image_id": [
                f"{p}_{j:03d}.png"
                for p, j in zip(pid, np.arange(n) % images_per_patient, strict=True)
            ],
            "patient_id": pid,
            "label_idx": y,
        }
    )
    for c, name in enumerate(CLASSES[:k]):
        df[f"prob_{name}"] = prob[:, c]
    df["age_group"] = np.repeat(rng.choice(["0-59", "60-99"], n_patients), images_per_patient)
    df["sex"] = np.repeat(rng.choice(["F", "M"], n_patients), images_per_patient)
    return df


def test_weights_resample_patients_not_images():
    pid = np.repeat(["p1", "p2", "p3", "p4", "p5"], [1, 2, 3, 1, 3])
    W = patient_weights(pid, n_boot=300, seed=1)
    assert W.shape == (300, len(pid))
    for p in np.unique(pid):
        cols = W[:, pid == p]
        assert (cols == cols[:, :1]).all()  # a patient's images are drawn together
    # Each replicate draws 5 patients: the weights of one row per patient sum to 5.
    first = [np.flatnonzero(pid == p)[0] for p in np.unique(pid)]
    np.testing.assert_array_equal(W[:, first].sum(axis=1), 5)
    assert (W >= 0).all() and np.array_equal(W, np.round(W))


def test_weights_are_seeded():
    pid = [f"p{i}" for i in range(50)]
    np.testing.assert_array_equal(patient_weights(pid, 20, 7), patient_weights(pid, 20, 7))
    assert not np.array_equal(patient_weights(pid, 20, 7), patient_weights(pid, 20, 8))


def test_seeded_evaluations_are_identical():
    s = Settings(classes=CLASSES, sensitive=("age_group", "sex"), n_boot=50, seed=3)
    a = evaluate_frame(frame(), s).metrics
    b = evaluate_frame(frame(), s).metrics
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]) or (np.isnan(a[k]) and np.isnan(b[k])) for k in a)


def test_percentile_interval():
    # 1..101: the 2.5 % and 97.5 % quantiles (linear interpolation) are 3.5 and 98.5.
    lo, hi, used = percentile_interval(np.r_[np.arange(1, 102), np.nan], 0.95)
    assert (lo, hi, used) == (pytest.approx(3.5), pytest.approx(98.5), 101)
    assert np.isnan(percentile_interval([np.nan, 1.0], 0.95)[0])


def _same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-12


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_weighted_metrics_equal_metrics_of_materialised_resample(seed, min_group_size):
    """Replicate b with weights w equals every point metric on the table with row i repeated w_i
    times: the vectorised bootstrap computes exactly the fairness module's numbers."""
    df = frame(n_patients=24, seed=seed, signal=1.0)
    s = Settings(
        classes=CLASSES, sensitive=("age_group", "sex"), n_boot=0, min_group_size=min_group_size
    )
    p = prepare(df, s)
    W = patient_weights(p.patients, n_boot=2, seed=seed)
    boot, boot_bg = replicate_metrics(
        W,
        y=p.y,
        prob=p.prob,
        classes=CLASSES,
        groupings=p.groupings,
        paper_subgroups=p.paper_subgroups,
        n_bins=s.ece_bins,
        min_group_size=min_group_size,
    )
    for b in range(len(W)):
        resampled = df.loc[df.index.repeat(W[b].astype(int))].reset_index(drop=True)
        # Keep every group of the original table even if the resample lost one.
        s_b = Settings(
            classes=CLASSES,
            sensitive=s.sensitive,
            n_boot=0,
            min_group_size=min_group_size,
            levels={a: list(p.groupings[a].labels) for a in s.sensitive},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fm.FairnessWarning)
            point, point_bg = point_metrics(prepare(resampled, s_b), s_b)
        assert point.keys() == boot.keys()
        bad = [k for k in point if not _same(point[k], boot[k][b])]
        assert not bad, [(k, point[k], boot[k][b]) for k in bad]
        assert point_bg.keys() == boot_bg.keys()
        bad = [k for k in point_bg if not _same(point_bg[k], boot_bg[k][b])]
        assert not bad, [(k, point_bg[k], boot_bg[k][b]) for k in bad]


def test_intervals_contain_point_estimate_on_well_behaved_data():
    df = frame(n_patients=400, signal=2.0, seed=5)
    # Signed and utility metrics only: max-min gaps are >= 0 and biased upwards under
    # resampling, so their percentile interval may exclude a gap near 0 (documented in report).
    s = Settings(classes=CLASSES, sensitive=("age_group", "sex"), n_boot=200, seed=0)
    m = evaluate_frame(df, s).metrics
    keys = [
        "accuracy",
        "macro_f1",
        "balanced_accuracy",
        "auroc_macro",
        "var_f1",
        "ece",
        "ece_paper",
        *[f"f1/{c}" for c in CLASSES],
        "f1_gap/age_group/paper",
        "f1_gap/sex/paper",
    ]
    for k in keys:
        assert m[f"{k}/ci_low"] <= m[k] <= m[f"{k}/ci_high"], k
        assert m[f"{k}/ci_low"] < m[f"{k}/ci_high"], k


def test_bootstrap_is_fast():
    df = frame(n_patients=120, images_per_patient=2, k=4)  # 240 rows, as the NIH 6x200 test split
    s = Settings(classes=CLASSES, sensitive=("age_group", "sex"), n_boot=200)
    p = prepare(df, s)
    t0 = time.perf_counter()
    replicate_metrics(
        patient_weights(p.patients, 200, 0),
        y=p.y,
        prob=p.prob,
        classes=CLASSES,
        groupings=p.groupings,
        paper_subgroups=p.paper_subgroups,
        n_bins=15,
        min_group_size=5,
    )
    assert time.perf_counter() - t0 < 3.0
