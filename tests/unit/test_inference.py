"""Inference checked by simulation with known truth and by hand-worked references: the permutation
null's level and power, the combined seed x patient interval's coverage, the paired bootstrap against
the materialised resample, the Holm / BH adjustments, deterministic runs counted once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairxray.metrics import fairness as fm
from fairxray.metrics.bootstrap import patient_weights, replicate_metrics
from fairxray.metrics.evaluate import Settings, evaluate_runs, point_metrics, prepare
from fairxray.metrics.inference import (
    Design,
    adjust,
    bootstrap_replicates,
    gap_inference,
    infer_cell,
    interval,
    permutation_sources,
)
from fairxray.metrics.paired import paired_bootstrap

K = 3
CLASSES = ("A", "B", "C")


def simulate(rng, n_patients=60, per_patient=2, signal=(1.5, 1.5)):
    """Labels, probabilities and a per-patient binary attribute ``age`` (and ``sex``, independent of
    everything); group ``age == 0`` gets logit signal ``signal[0]``, the other ``signal[1]``."""
    n = n_patients * per_patient
    pid = np.repeat(np.arange(n_patients), per_patient)
    age = np.repeat(rng.integers(0, 2, n_patients), per_patient)
    sex = np.repeat(rng.integers(0, 2, n_patients), per_patient)
    y = rng.integers(0, K, n)
    strength = np.where(age == 0, signal[0], signal[1])
    logits = rng.normal(size=(n, K)) + strength[:, None] * np.eye(K)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return pid, age, sex, y, prob


def design(pid, cols: dict, **kw) -> Design:
    groupings = {a: fm.group_codes(pd.Series(v, name=a)) for a, v in cols.items()}
    base = dict(
        patients=pid.astype(str),
        groupings=groupings,
        paper_subgroups={},
        classes=CLASSES,
        n_bins=10,
        min_group_size=1,
        n_boot=0,
        n_perm=100,
        ci_level=0.95,
        alpha=0.05,
        mde_power=0.8,
        correction="holm",
        seed=0,
    )
    base.update(kw)
    return Design(**base)


def points(y, prob, d: Design) -> dict:
    m, _ = replicate_metrics(
        np.ones((1, len(y))),
        y=y,
        prob=prob,
        classes=CLASSES,
        groupings=d.groupings,
        paper_subgroups={},
        n_bins=d.n_bins,
        min_group_size=d.min_group_size,
        gaps_only=True,
    )
    return {k: float(v[0]) for k, v in m.items()}


def test_permutation_moves_patients_whole():
    pid = np.repeat(np.arange(30), [1, 2, 3] * 10)
    src = permutation_sources(pid, n_perm=50, seed=3)
    for b in range(50):
        for p in range(30):
            rows = src[b, pid == p]
            assert (rows == rows[0]).all()  # a patient's images take one patient's values
        assert len(np.unique(pid[src[b]])) == 30  # a permutation: every patient used once


def test_null_calibration_rejects_about_alpha_for_every_gap():
    rng = np.random.default_rng(11)
    rejected: dict[str, int] = {}
    n_sets = 200
    for _ in range(n_sets):
        pid, age, sex, y, prob = simulate(rng)
        d = design(pid, {"age": age, "sex": sex})
        out = gap_inference(points(y, prob, d), [(y, prob)], d, with_mde=False)
        for k, v in out.items():
            if k.endswith("/p_value") and np.isfinite(v):
                rejected[k] = rejected.get(k, 0) + int(v <= 0.05)
    assert len(rejected) >= 20
    rates = {k: v / n_sets for k, v in rejected.items()}
    bad = {k: r for k, r in rates.items() if not 0.015 <= r <= 0.085}
    assert not bad, bad


MDE_KEYS = (
    "f1_gap/age/standard",
    "eq_odds/age/worst_case_mean",
    "ece_gap/age/binned",
    "auroc_gap/age",
    "brier_gap/age",
    "nll_gap/age",
)


def _true_gaps(weak: float) -> dict[str, float]:
    """The gaps of the population (one very large simulated test set) with group 0 at ``weak``."""
    rng = np.random.default_rng(5)
    pid, age, _, y, prob = simulate(rng, n_patients=40_000, per_patient=1, signal=(weak, 1.5))
    d = design(pid, {"age": age})
    return points(y, prob, d)


def test_planted_gap_of_twice_the_mde_is_detected():
    rng = np.random.default_rng(12)
    mdes = []
    for _ in range(10):
        pid, age, _, y, prob = simulate(rng)
        d = design(pid, {"age": age}, n_perm=200)
        out = gap_inference(points(y, prob, d), [(y, prob)], d)
        mdes.append({k: out[f"{k}/mde"] for k in MDE_KEYS})
    mde = {k: float(np.median([m[k] for m in mdes])) for k in MDE_KEYS}
    assert all(0 < v < 1 for v in mde.values()), mde
    weaks = np.linspace(1.5, -1.5, 13)
    truths = [_true_gaps(w) for w in weaks]
    for k in MDE_KEYS:
        j = next((i for i, t in enumerate(truths) if abs(t[k]) >= 2 * mde[k]), None)
        assert j is not None, (k, mde[k], [t[k] for t in truths])
        hits = 0
        for _ in range(60):
            pid, age, _, y, prob = simulate(rng, signal=(weaks[j], 1.5))
            d = design(pid, {"age": age})
            out = gap_inference(points(y, prob, d), [(y, prob)], d, with_mde=False)
            hits += out[f"{k}/p_value"] <= 0.05
        assert hits / 60 >= 0.8, (k, mde[k], truths[j][k], hits)


def test_combined_interval_covers_truth_with_seed_and_patient_variance():
    """Accuracy of S = 3 seeds on P patients: a patient's difficulty is shared by every seed, each
    seed's accuracy has its own random effect (sd 0.08); the truth is the population mean 0.7."""
    from scipy import stats

    rng = np.random.default_rng(21)
    P, S, reps, covered = 80, 3, 200, 0
    y = np.zeros(P, dtype=np.int64)
    for _ in range(reps):
        z = rng.normal(0, np.sqrt(0.5), P)  # patient difficulty, shared by the seeds
        runs, pts, gpts = [], [], []
        for _s in range(S):
            p_s = np.clip(0.7 + rng.normal(0, 0.08), 0.01, 0.99)
            correct = z + rng.normal(0, np.sqrt(0.5), P) < stats.norm.ppf(p_s)
            prob = np.where(correct[:, None], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1])
            runs.append((y, prob))
            pts.append({"accuracy": float(correct.mean())})
            gpts.append({})
        d = design(np.arange(P), {}, n_boot=200, n_perm=0, seed=int(rng.integers(1 << 30)))
        ci = infer_cell(pts, gpts, runs, d)
        m = ci.metrics
        covered += m["accuracy/ci_low"] <= 0.7 <= m["accuracy/ci_high"]
    assert 0.90 <= covered / reps <= 0.99, covered / reps


def test_patients_only_interval_undercovers_the_same_simulation():
    """The reference the combined interval fixes: without the seed term, coverage falls short."""
    from scipy import stats

    rng = np.random.default_rng(21)
    P, S, reps, covered = 80, 3, 200, 0
    y = np.zeros(P, dtype=np.int64)
    for _ in range(reps):
        z = rng.normal(0, np.sqrt(0.5), P)
        runs = []
        for _s in range(S):
            p_s = np.clip(0.7 + rng.normal(0, 0.08), 0.01, 0.99)
            correct = z + rng.normal(0, np.sqrt(0.5), P) < stats.norm.ppf(p_s)
            runs.append((y, np.where(correct[:, None], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1])))
        d = design(np.arange(P), {}, n_boot=200, n_perm=0, seed=int(rng.integers(1 << 30)))
        reps_, _ = bootstrap_replicates(runs, d)
        point = np.mean([(r[1].argmax(1) == 0).mean() for r in runs])
        lo, hi, _ = interval(reps_["accuracy"], point, 0.95)
        covered += lo <= 0.7 <= hi
    assert covered / reps < 0.90


def frames(seed_a=1, seed_b=2, n_patients=30):
    rng = np.random.default_rng(0)
    pid, age, sex, y, _ = simulate(rng, n_patients=n_patients)
    out = []
    for s in (seed_a, seed_b):
        r = np.random.default_rng(s)
        logits = r.normal(size=(len(y), K)) + 1.2 * np.eye(K)[y]
        prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        df = pd.DataFrame(
            {
                "image_id": [f"{i:05d}.png" for i in range(len(y))],
                "patient_id": [f"{p:08d}" for p in pid],
                "label_idx": y,
                "age_group": np.where(age == 0, "0-59", "60-99"),
                "sex": np.where(sex == 0, "F", "M"),
            }
        )
        for c, name in enumerate(CLASSES):
            df[f"prob_{name}"] = prob[:, c]
        out.append(df)
    return out


def test_paired_difference_equals_the_materialised_resample():
    a, b = frames()
    s = Settings(
        classes=CLASSES, sensitive=("age_group", "sex"), n_boot=30, seed=4, min_group_size=1
    )
    pa, pb = prepare(a, s), prepare(b, s)
    d = design(pa.patients, {}, n_boot=30, seed=4)
    d = Design(**{**d.__dict__, "groupings": pa.groupings, "paper_subgroups": pa.paper_subgroups})
    ra, _ = bootstrap_replicates([(pa.y, pa.prob)], d)
    rb, _ = bootstrap_replicates([(pb.y, pb.prob)], d)
    W = patient_weights(pa.patients, 30, 4)
    keys = ("accuracy", "macro_f1", "f1_gap/sex/standard", "eq_odds/age_group/paper", "brier")
    for r in (0, 29):
        rows = np.repeat(np.arange(len(a)), W[r].astype(int))
        ma, _ = point_metrics(prepare(a.iloc[rows].reset_index(drop=True), s), s)
        mb, _ = point_metrics(prepare(b.iloc[rows].reset_index(drop=True), s), s)
        for k in keys:
            assert ra[k][r] - rb[k][r] == pytest.approx(ma[k] - mb[k], abs=1e-9), (k, r)
    pa_pt, _ = point_metrics(pa, s)
    pb_pt, _ = point_metrics(pb, s)
    t = paired_bootstrap(pa_pt, ra, pb_pt, rb, keys=keys, level=0.9).set_index("metric")
    for k in keys:
        diffs = ra[k] - rb[k]
        diffs = diffs[np.isfinite(diffs)]  # a replicate undefined on either side is dropped
        assert t.loc[k, "diff"] == pytest.approx(pa_pt[k] - pb_pt[k])
        if t.loc[k, "ci_method"] == "percentile":
            assert t.loc[k, "ci_low"] == pytest.approx(np.quantile(diffs, 0.05))
            assert t.loc[k, "ci_high"] == pytest.approx(np.quantile(diffs, 0.95))
        below = (1 + np.sum(diffs <= 0)) / (1 + diffs.size)
        above = (1 + np.sum(diffs >= 0)) / (1 + diffs.size)
        assert t.loc[k, "p_value"] == pytest.approx(min(1, 2 * min(below, above)))


def test_holm_and_bh_match_hand_worked_values():
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": float("nan")}
    holm = adjust(p, "holm")
    assert [holm[k] for k in "abcd"] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    bh = adjust(p, "bh")
    assert [bh[k] for k in "abcd"] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert np.isnan(holm["e"]) and np.isnan(bh["e"])
    with pytest.raises(ValueError):
        adjust(p, "bonferroni")


def test_interval_always_contains_its_estimate_and_says_how():
    rng = np.random.default_rng(0)
    lo, hi, how = interval(rng.normal(0, 1, 500), 0.0, 0.95)
    assert how == "percentile" and lo < 0 < hi
    # A max-min gap whose replicates all lie above the estimate (upward resampling bias).
    lo, hi, how = interval(0.1 + rng.random(500) * 0.1, 0.05, 0.95)
    assert how in ("bc", "normal") and lo <= 0.05 <= hi


def test_deterministic_runs_count_once_not_as_copies():
    a, _ = frames()
    s = Settings(classes=CLASSES, sensitive=("age_group", "sex"), n_boot=50, min_group_size=1)
    one = evaluate_runs([a], s, ["a"])
    three = evaluate_runs([a, a.copy(), a.copy()], s, ["a", "b", "c"])
    assert three.metrics["n_runs"] == 1 and three.metrics["n_seeds"] == 3
    for k in ("accuracy", "f1_gap/sex/standard"):
        assert three.metrics[f"{k}/ci_low"] == one.metrics[f"{k}/ci_low"]
        assert three.metrics[f"{k}/ci_high"] > three.metrics[f"{k}/ci_low"]  # never width 0


def test_per_replicate_codes_equal_fixed_codes_when_every_replicate_is_the_same():
    """The permutation path (codes [B, N]) against the bootstrap path (codes [N]) on every metric."""
    rng = np.random.default_rng(0)
    pid, age, sex, y, prob = simulate(rng, n_patients=80)
    d = design(pid, {"age": age, "sex": sex})
    W = patient_weights(pid.astype(str), 7, 1)
    fixed, _ = replicate_metrics(W, y=y, prob=prob, **_kw(d))
    tiled = {
        a: fm.Groups(g.attribute, g.labels, np.tile(g.codes, (7, 1)))
        for a, g in d.groupings.items()
    }
    per_rep, _ = replicate_metrics(W, y=y, prob=prob, **{**_kw(d), "groupings": tiled})
    for k, v in fixed.items():
        np.testing.assert_allclose(per_rep[k], v, rtol=1e-12, atol=1e-12, err_msg=k)


def _kw(d: Design) -> dict:
    return {
        "classes": d.classes,
        "groupings": d.groupings,
        "paper_subgroups": {},
        "n_bins": d.n_bins,
        "min_group_size": d.min_group_size,
    }


def test_replicate_blocks_do_not_change_any_figure(monkeypatch):
    """The block size adapts to the test set (time and memory stay linear); every interval,
    p-value and null equals the one computed in blocks of another size."""
    import dataclasses
    import math
    from pathlib import Path

    from fairxray.config import load_params
    from fairxray.data.nih import age_group_labels
    from fairxray.metrics import evaluate as ev
    from fairxray.metrics.inference import chunk_for

    assert chunk_for(240) == 100 and chunk_for(100_000) == 40 and chunk_for(10**8) == 8
    p = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    s = dataclasses.replace(ev.settings(p), n_boot=30, n_perm=30)
    rng = np.random.default_rng(5)
    n, k = 600, len(p.data.classes)
    prob = rng.dirichlet(np.ones(k), n)
    pid = np.sort(rng.integers(0, 200, n))
    df = pd.DataFrame(
        {
            "image_id": [f"{i:08d}_000.png" for i in range(n)],
            "patient_id": [f"{q:08d}" for q in pid],
            "label_idx": rng.integers(0, k, n),
            **{f"prob_{c}": prob[:, j] for j, c in enumerate(p.data.classes)},
            "age_group": np.asarray(age_group_labels(p.data.age_bins))[rng.integers(0, 2, 200)][pid],
            "sex": np.where(rng.random(200) < 0.5, "F", "M")[pid],
        }
    )
    a = ev.evaluate_frame(df, s).metrics
    monkeypatch.setattr(ev, "chunk_for", lambda _n: 7)
    b = ev.evaluate_frame(df, s).metrics
    assert a.keys() == b.keys()
    for key, v in a.items():
        assert v == b[key] or (math.isnan(v) and math.isnan(b[key])), key
