"""Multi-label metrics and inference (``data.task: multilabel``): thresholds on validation only,
per-label AUROC / rates against scikit-learn, a hand-worked underdiagnosis example, the
resampling engine against materialised resamples, null calibration and interval coverage by
simulation, the evaluate stage's files and the report section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

from fairxray.metrics import multilabel as ml
from fairxray.metrics.multilabel_inference import Options, infer
from fairxray.metrics.predictions import validate_predictions

CLASSES = ("Atelectasis", "Pleural Thickening", "Effusion", "No Finding")
SENS = ("age_group", "sex")


def frame(n=300, n_pat=100, seed=0, signal=0.35, classes=CLASSES, sex_effect=0.0) -> pd.DataFrame:
    """A multilabel predictions table obeying the contract: findings at ~25 %, No Finding = none;
    ``sex_effect`` makes the No Finding score of F images with a finding higher (underdiagnosis)."""
    rng = np.random.default_rng(seed)
    pat = rng.integers(0, n_pat, n)
    sex = np.where(np.arange(n_pat) % 2 == 0, "M", "F")[pat]
    age = np.where(rng.random(n) < 0.5, "0-59", "60-99")
    L = len(classes)
    Y = (rng.random((n, L)) < 0.25).astype(float)
    Y[:, -1] = (Y[:, :-1].sum(1) == 0).astype(float)
    P = signal * Y + rng.random((n, L)) * (1 - signal)
    P[:, -1] += sex_effect * ((sex == "F") & (Y[:, -1] == 0))
    P = np.clip(P, 0, 1)
    df = pd.DataFrame(
        {
            "image_id": [f"{i:08d}_000.png" for i in range(n)],
            "patient_id": [f"{p:08d}" for p in pat],
            "label_idx": np.full(n, -1, dtype=np.int64),
            "age_group": age,
            "sex": sex,
        }
    )
    for j, c in enumerate(classes):
        df[f"prob_{c}"] = P[:, j]
        df["y_" + c.replace(" ", "_")] = Y[:, j]
    return validate_predictions(df, classes, SENS, "test frame", task="multilabel")


def opts(**kw) -> Options:
    base = {"classes": CLASSES, "sensitive": SENS, "n_boot": 0, "n_perm": 0, "n_bins": 256}
    return Options(**{**base, **kw})


# ---------------------------------------------------------------- thresholds


def test_max_f1_threshold_hand_worked():
    # scores 0.9 0.8 0.7 0.6 0.5 with labels 1 0 1 1 0 (3 positives):
    # t=0.9: F1 = 2*1/(1+3) = .5; t=0.8: 2/(2+3) = .4; t=0.7: 4/(3+3) = .667;
    # t=0.6: 6/(4+3) = .857; t=0.5: 6/(5+3) = .75  -> 0.6
    y = np.array([1, 0, 1, 1, 0.0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert ml.threshold_max_f1(y, s) == 0.6
    # the chosen threshold maximises scikit-learn's F1 over every candidate
    f1 = {t: f1_score(y, s >= t) for t in s}
    assert f1[0.6] == max(f1.values())
    # a masked row does not count: the 0.6 positive masked -> best is t=0.7 (F1 4/5 = .8)
    assert ml.threshold_max_f1(np.array([1, 0, 1, np.nan, 0]), s) == 0.7
    assert np.isnan(ml.threshold_max_f1(np.zeros(5), s))


def test_sensitivity_threshold_hand_worked():
    # positives' scores 0.9 0.7 0.6 0.2 (4); target 0.8 -> ceil(3.2) = 4th highest = 0.2;
    # target 0.75 -> 3rd = 0.6 (sensitivity exactly 0.75); target 0.5 -> 0.7
    y = np.array([1, 0, 1, 1, 0, 1.0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.2])
    assert ml.threshold_sensitivity(y, s, 0.8) == 0.2
    assert ml.threshold_sensitivity(y, s, 0.75) == 0.6
    assert ml.threshold_sensitivity(y, s, 0.5) == 0.7
    for target in (0.3, 0.5, 0.75, 0.8, 1.0):
        t = ml.threshold_sensitivity(y, s, target)
        assert np.mean(s[y == 1] >= t) >= target
        higher = s[s > t]
        if higher.size:  # the next higher candidate misses the target: t is the highest
            assert np.mean(s[y == 1] >= higher.min()) < target


def test_thresholds_come_from_validation_only():
    """Leak test: changing every test label leaves the thresholds unchanged; changing the
    validation labels (the control) changes them."""
    test, val = frame(seed=1), frame(seed=2)
    o = opts()
    a = infer([test], [val], o, ["t"]).meta["thresholds"]["t"]
    flipped = test.copy()
    for c in CLASSES:
        col = "y_" + c.replace(" ", "_")
        flipped[col] = 1.0 - flipped[col]
    b = infer([flipped], [val], o, ["t"])
    assert b.meta["thresholds"]["t"] == a
    assert b.metrics["auroc/Atelectasis"] != pytest.approx(
        infer([test], [val], o, ["t"]).metrics["auroc/Atelectasis"]
    )  # the test labels did change the metrics
    val2 = val.copy()
    val2["y_Atelectasis"] = np.random.default_rng(5).permutation(val2["y_Atelectasis"].to_numpy())
    c = infer([test], [val2], o, ["t"]).meta["thresholds"]["t"]
    assert c["Atelectasis"] != a["Atelectasis"]


# ---------------------------------------------------------------- point metrics


def test_point_metrics_match_scikit_learn():
    test, val = frame(seed=3), frame(seed=4)
    test.loc[::7, "y_Effusion"] = np.nan  # masked rows leave the label's metrics
    r = infer([test], [val], opts(min_group_size=1), ["t"])
    t = r.meta["thresholds"]["t"]
    aucs = []
    for c in CLASSES:
        col = "y_" + c.replace(" ", "_")
        keep = test[col].notna()
        y, p = test.loc[keep, col].to_numpy(), test.loc[keep, f"prob_{c}"].to_numpy()
        assert r.metrics[f"auroc/{c}"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        aucs.append(roc_auc_score(y, p))
        tn, fp, fn, tp = confusion_matrix(y, p >= t[c], labels=[0, 1]).ravel()
        assert r.metrics[f"tpr/{c}"] == pytest.approx(tp / (tp + fn))
        assert r.metrics[f"fpr/{c}"] == pytest.approx(fp / (fp + tn))
        per = []
        for s in ("F", "M"):
            m = keep & (test["sex"] == s)
            yy, pp = test.loc[m, col], test.loc[m, f"prob_{c}"]
            per.append((roc_auc_score(yy, pp), np.mean(pp[yy == 1] >= t[c])))
            g = r.by_group.set_index(["metric", "attribute", "group"])
            assert g.loc[(f"auroc/{c}", "sex", s), "value"] == pytest.approx(per[-1][0])
        assert r.metrics[f"auroc_gap/sex/{c}"] == pytest.approx(abs(per[0][0] - per[1][0]))
        assert r.metrics[f"tpr_gap/sex/{c}"] == pytest.approx(abs(per[0][1] - per[1][1]))
        assert r.metrics[f"fnr_gap/sex/{c}"] == pytest.approx(r.metrics[f"tpr_gap/sex/{c}"])
    assert r.metrics["auroc_macro"] == pytest.approx(np.mean(aucs))


def test_underdiagnosis_hand_worked():
    # 8 images, No Finding threshold 0.5 (from validation); images WITH a finding (y_NF = 0):
    # F: rows 0,1,2 -> predicted NF at 0.9, 0.6 -> 2/3; M: rows 4,5 -> 0.7 only -> 1/2.
    # Rows 3 (F) and 6, 7 (M) have no finding and do not count.
    p_nf = [0.9, 0.6, 0.1, 0.8, 0.7, 0.2, 0.9, 0.3]
    y_nf = [0, 0, 0, 1, 0, 0, 1, 1]
    sex = list("FFFFMMMM")
    assert ml.underdiagnosis_rate(y_nf, np.array(p_nf) >= 0.5, sensitive_features=sex) == {
        "F": pytest.approx(2 / 3),
        "M": pytest.approx(1 / 2),
    }
    classes = ("Effusion", "No Finding")
    df = pd.DataFrame(
        {
            "image_id": [f"{i}.png" for i in range(8)],
            "patient_id": [f"{i:08d}" for i in range(8)],
            "label_idx": np.full(8, -1, dtype=np.int64),
            "age_group": ["0-59", "60-99"] * 4,
            "sex": sex,
            "prob_Effusion": np.linspace(0.1, 0.8, 8),
            "y_Effusion": 1.0 - np.array(y_nf, dtype=float),
            "prob_No Finding": np.array(p_nf),
            "y_No_Finding": np.array(y_nf, dtype=float),
        }
    )
    val = df.copy()
    val["prob_No Finding"] = [0.5, 0.1, 0.2, 0.3, 0.1, 0.2, 0.1, 0.4]  # max-F1 threshold: 0.5
    val["y_No_Finding"] = [1.0, 0, 0, 0, 0, 0, 0, 0]
    o = Options(classes=classes, sensitive=SENS, min_group_size=1, n_boot=0, n_perm=0)
    r = infer([df], [val], o, ["t"])
    assert r.meta["thresholds"]["t"]["No Finding"] == 0.5
    assert r.metrics["underdiagnosis/sex/F"] == pytest.approx(2 / 3)
    assert r.metrics["underdiagnosis/sex/M"] == pytest.approx(1 / 2)
    assert r.metrics["underdiagnosis_gap/sex"] == pytest.approx(1 / 6)
    assert r.metrics["underdiagnosis"] == pytest.approx(3 / 5)
    # intersection: 0-59&F rows 0,2 -> 1/2; 60-99&F row 1 -> 1; 0-59&M row 4 -> 1; 60-99&M 5 -> 0
    assert r.metrics["underdiagnosis/age_group&sex/60-99&F"] == 1.0
    assert r.metrics["underdiagnosis/age_group&sex/60-99&M"] == 0.0
    assert r.metrics["underdiagnosis_gap/age_group&sex"] == 1.0
    # min_group_size 3: the four intersection cells (2 images each) give NaN and one warning
    r3 = infer([df], [val], Options(**{**o.__dict__, "min_group_size": 3}), ["t"])
    assert np.isnan(r3.metrics["underdiagnosis/age_group&sex/0-59&F"])
    assert np.isnan(r3.metrics["underdiagnosis_gap/age_group&sex"])
    assert r3.metrics["underdiagnosis_gap/sex"] == pytest.approx(1 / 6)
    assert len([w for w in r3.warnings if "min_group_size" in w]) == 1


# ---------------------------------------------------------------- resampling engine


def test_resampler_equals_materialised_resample():
    """A bootstrap replicate's sums equal the point metrics of the resample built row by row."""
    df = frame(n=200, n_pat=60, seed=6)
    Y = df[[f"y_{c.replace(' ', '_')}" for c in CLASSES]].to_numpy(float)
    P = df[[f"prob_{c}" for c in CLASSES]].to_numpy(float)
    t = np.full(len(CLASSES), 0.5)
    codes, uniques = pd.factorize(df["patient_id"], sort=True)
    res = ml.Resampler(Y, P, t, codes, len(uniques), n_bins=4096)  # all scores distinct bins
    w = np.random.default_rng(0).multinomial(len(uniques), np.ones(len(uniques)) / len(uniques))
    st = res.stats(ml.group_sums([res.patient_matrix()], [w[None, :].astype(float)]))
    rows = np.repeat(np.arange(len(df)), w[codes])
    for j in range(len(CLASSES)):
        yy, pp = Y[rows, j], P[rows, j]
        assert st["auroc"][0, 0, j] == pytest.approx(roc_auc_score(yy, pp), abs=1e-12)
        assert st["tpr"][0, 0, j] == pytest.approx(np.mean(pp[yy == 1] >= 0.5))
        assert st["fpr"][0, 0, j] == pytest.approx(np.mean(pp[yy == 0] >= 0.5))
    # with few bins the AUROC is binned: close, not equal
    coarse = ml.Resampler(Y, P, t, codes, len(uniques), n_bins=64)
    sc = coarse.stats(ml.group_sums([coarse.patient_matrix()], [np.ones((1, len(uniques)))]))
    exact = [roc_auc_score(Y[:, j], P[:, j]) for j in range(len(CLASSES))]
    assert np.max(np.abs(sc["auroc"][0, 0] - exact)) < 0.01


def test_null_calibration_and_interval_coverage():
    """No true group difference: the permutation p-value of the sex underdiagnosis gap rejects at
    about alpha. A known truth: the interval of the overall underdiagnosis rate covers it."""
    reps, hits, covered = 40, 0, 0
    for i in range(reps):
        test = frame(n=240, n_pat=120, seed=100 + i)
        r = infer([test], [frame(seed=999)], opts(n_boot=60, n_perm=60, n_bins=64), ["t"])
        hits += r.metrics["underdiagnosis_gap/sex/p_value"] <= 0.2
        # the truth: an image with a finding has a No Finding score ~ U(0, 0.65), so the rate at
        # the (validation) threshold t is P(score >= t) = 1 - t / 0.65
        t = r.meta["thresholds"]["t"]["No Finding"]
        truth = max(0.0, 1 - t / 0.65)
        lo, hi = (r.metrics[f"underdiagnosis/{b}"] for b in ("ci_low", "ci_high"))
        covered += lo <= truth <= hi
    assert 0.05 <= hits / reps <= 0.4  # nominal 0.2; 40 repetitions: sd 0.063
    assert covered / reps >= 0.8  # nominal 0.95


def test_planted_underdiagnosis_is_detected():
    test = frame(n=400, n_pat=150, seed=7, sex_effect=0.3)
    r = infer([test], [frame(seed=8)], opts(n_boot=50, n_perm=200, n_bins=64), ["t"])
    assert r.metrics["underdiagnosis/sex/F"] > r.metrics["underdiagnosis/sex/M"]
    assert r.metrics["underdiagnosis_gap/sex/p_value"] < 0.01
    assert r.metrics["underdiagnosis_gap/sex/significant"] == 1.0
    assert r.metrics["underdiagnosis_gap/sex/excess"] > 0
    lo, hi = r.metrics["underdiagnosis_gap/sex/ci_low"], r.metrics["underdiagnosis_gap/sex/ci_high"]
    assert lo <= r.metrics["underdiagnosis_gap/sex"] <= hi
    # FNR gaps share the TPR gaps' adjusted p-values; families adjust separately
    k = "Atelectasis"
    assert r.metrics[f"fnr_gap/sex/{k}/p_adjusted"] == r.metrics[f"tpr_gap/sex/{k}/p_adjusted"]
    assert r.metrics[f"tpr_gap/sex/{k}/p_adjusted"] >= r.metrics[f"tpr_gap/sex/{k}/p_value"]


def test_seeds_combine_and_deterministic_runs_count_once():
    test, val = frame(seed=9), frame(seed=10)
    one = infer([test], [val], opts(n_boot=30), ["a"])
    same = infer([test, test.copy()], [val, val.copy()], opts(n_boot=30), ["a", "b"])
    assert same.metrics["n_runs"] == 1 and same.metrics["n_seeds"] == 2
    assert same.metrics["auroc_macro"] == one.metrics["auroc_macro"]
    other = test.copy()
    other["prob_Effusion"] = np.clip(other["prob_Effusion"] * 0.9 + 0.05, 0, 1)
    two = infer([test, other], [val, val], opts(n_boot=30), ["a", "b"])
    assert two.metrics["n_runs"] == 2 and "seed_sd/auroc/Effusion" in two.metrics
    assert two.metrics["auroc/Effusion"] == pytest.approx(
        (roc_auc_score(test["y_Effusion"], test["prob_Effusion"])
         + roc_auc_score(other["y_Effusion"], other["prob_Effusion"])) / 2
    )  # fmt: skip


# ---------------------------------------------------------------- evaluate stage and report


def _params(tmp: Path, classes=CLASSES) -> Path:
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    raw["data"]["task"] = "multilabel"
    raw["data"]["classes"] = list(classes)
    raw["models"], raw["methods"], raw["seeds"] = ["toy"], ["mlp", "linear_probe"], [77]
    raw["metrics"].update(n_boot=20, n_perm=20)
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{tmp}/mlruns/mlflow.db"
    f = tmp / "params.yaml"
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    return f


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    from fairxray import paths
    from fairxray.metrics.predictions import write_predictions

    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path)
    for i, method in enumerate(("mlp", "linear_probe")):
        for split, seed in (("test", 20 + i), ("val", 30 + i)):
            write_predictions(
                frame(seed=seed), paths.prediction_file("toy", method, 77, split), CLASSES, SENS,
                task="multilabel",
            )  # fmt: skip
    return params


def test_evaluate_stage_writes_multilabel_files(pipeline, capsys):
    from fairxray.stages.evaluate import main

    assert main(["--model", "toy", "--method", "mlp", "--params", str(pipeline)]) == 0
    assert "auroc_macro" in capsys.readouterr().out
    seed = Path("metrics/toy/mlp/seed77")
    m = json.loads((seed / "metrics.json").read_text())
    for key in ("auroc/Atelectasis", "auroc_gap/sex/Atelectasis", "tpr_gap/age_group/Effusion",
                "underdiagnosis/sex/F", "underdiagnosis_gap/age_group&sex",
                "underdiagnosis_gap/sex/p_adjusted", "threshold/No Finding"):  # fmt: skip
        assert key in m, key
    meta = json.loads((seed / "evaluation.json").read_text())
    assert meta["label"].startswith("DEMO") and meta["task"] == "multilabel"
    assert set(meta["thresholds"][str(Path("predictions/toy/mlp/seed77/test.parquet"))]) == set(
        CLASSES
    )
    assert (seed / "underdiagnosis.png").stat().st_size > 1000
    bg = pd.read_csv(seed / "by_group.csv")
    assert bg["label"].str.startswith("DEMO").all()
    assert {"n_denominator", "n_patients"} <= set(bg.columns)
    assert (
        json.loads(Path("metrics/toy/mlp/cell.json").read_text())["auroc_macro"] == m["auroc_macro"]
    )


def test_evaluate_needs_validation_predictions(pipeline, tmp_path):
    from fairxray.errors import UserError
    from fairxray.stages.evaluate import main

    Path("predictions/toy/mlp/seed77/val.parquet").unlink()
    with pytest.raises(UserError, match="val.parquet: validation predictions not found"):
        main(["--model", "toy", "--method", "mlp", "--params", str(pipeline)])


def test_report_renders_the_multilabel_section(pipeline):
    from fairxray.stages.evaluate import main as evaluate
    from fairxray.stages.report import main as report

    for method in ("mlp", "linear_probe"):
        assert evaluate(["--model", "toy", "--method", method, "--params", str(pipeline)]) == 0
    assert report(["--params", str(pipeline)]) == 0
    md = Path("reports/report.md").read_text()
    assert "Per-label table" in md and "Underdiagnosis" in md
    labels = pd.read_csv("reports/multilabel_labels.csv")
    assert (
        set(labels["label_name"]) == set(CLASSES) and labels["label"].str.startswith("DEMO").all()
    )
    under = pd.read_csv("reports/underdiagnosis.csv")
    assert {"age_group", "sex", "age_group&sex"} <= set(under["attribute"])
    cell = json.loads(Path("metrics/toy/mlp/cell.json").read_text())
    row = under[
        (under["method"] == "mlp") & (under["attribute"] == "sex") & (under["group"] == "F")
    ]
    assert row["value"].iloc[0] == pytest.approx(cell["underdiagnosis/sex/F"])
    html = Path("reports/report.html").read_text()
    assert 'id="multilabel-labels"' in html and 'id="underdiagnosis"' in html
    assert Path("reports/figures/underdiagnosis.png").stat().st_size > 1000
    summary = json.loads(Path("reports/summary.json").read_text())
    cell_summary = summary["toy/mlp"]
    assert 8 <= len(cell_summary) <= 12
    assert cell_summary["auroc_macro"] == pytest.approx(cell["auroc_macro"], abs=1e-4)
    assert "underdiagnosis_gap/age_group&sex" in cell_summary


def test_headline_names_and_compare_under_multilabel():
    from fairxray.metrics.headline import HEADLINE_ML, TITLES_ML, task_of
    from fairxray.track import compare
    from fairxray.track import headline as th

    assert set(TITLES_ML) == set(HEADLINE_ML) and 8 <= len(HEADLINE_ML) <= 11
    m = {k: 0.1 * i for i, k in enumerate(HEADLINE_ML)}
    m["underdiagnosis_gap/sex/p_adjusted"] = 0.02
    assert task_of(m) == "multilabel" and task_of({"accuracy": 0.5, "auroc_macro": 0.7}) == (
        "multiclass"
    )
    shown = th.headline_metrics([m])
    assert shown["1.auroc_macro"] == 0.0
    assert shown["4.underdiagnosis_gap/sex/p_adjusted"] == 0.02
    assert th.mlflow_name("auroc_macro") == "3.auroc_macro"  # multi-class numbering unchanged
    exp_show = [{"rev": "workspace", "data": {"metrics": {compare.SUMMARY: {"data": {
        "label": "DEMO", "toy/mlp": {"n_seeds": 1, **m}}}}}}]  # fmt: skip
    rows = compare.dvc_rows(exp_show)
    text = compare.render(rows, markdown=True)
    assert "underdiag. gap sex" in text and "0.300" in text


def test_track_logs_the_multilabel_headline(pipeline, tmp_path):
    """track on evaluate's multilabel outputs (a stand-in training config, no ONNX export): the
    parent run carries the multi-label headline names."""
    import yaml

    from fairxray import paths
    from fairxray.config import load_params
    from fairxray.stages.evaluate import main as evaluate
    from fairxray.track.runs import client, track

    assert evaluate(["--model", "toy", "--method", "mlp", "--params", str(pipeline)]) == 0
    cfg = paths.seed_dir("toy", "mlp", 77) / "config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(yaml.safe_dump({"protocol": "nih-official", "train": {"epochs": 1}}))
    report = paths.onnx("toy", "mlp").with_name("onnx.json")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"exported": False, "reason": "test"}))
    p = load_params(pipeline)
    manifest = paths.splits(p.data.protocol) / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    out = track(p, "toy", "mlp", tracking_uri=uri, log=lambda _m: None)
    parent = client(uri).get_run(out["parent_run_id"]).data.metrics
    m = json.loads(Path("metrics/toy/mlp/seed77/metrics.json").read_text())
    assert parent["1.auroc_macro"] == pytest.approx(m["auroc_macro"])
    assert parent["4.underdiagnosis_gap/sex"] == pytest.approx(m["underdiagnosis_gap/sex"])
    assert "4.underdiagnosis_gap/sex/p_adjusted" in parent
    seed = client(uri).get_run(out["seed_runs"]["77"]).data.metrics
    assert "underdiagnosis_gap/age_group_x_sex" in seed and "group.sex.F.underdiagnosis" in seed


def test_single_file_evaluate_and_bad_validation_input(pipeline, tmp_path):
    from fairxray.errors import UserError
    from fairxray.stages.evaluate import main

    pred = Path("predictions/toy/mlp/seed77/test.parquet")
    assert main([str(pred), "--out", str(tmp_path / "one"), "--params", str(pipeline)]) == 0
    m = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert "underdiagnosis_gap/sex" in m and "accuracy" not in m
    val = pd.read_parquet(pred.with_name("val.parquet"))
    val["y_Effusion"] = 2.0
    val.to_parquet(pred.with_name("val.parquet"), index=False)
    with pytest.raises(UserError, match=r"val.parquet: row 0 .*'y_Effusion' is 2"):
        main([str(pred), "--out", str(tmp_path / "two"), "--params", str(pipeline)])
    assert not (tmp_path / "two").exists()


def test_labels_without_positives_give_nan_and_one_warning():
    test, val = frame(seed=11), frame(seed=12)
    test.loc[test["sex"] == "F", "y_Effusion"] = 0.0  # no positive Effusion among F in test
    val["y_Atelectasis"] = 0.0  # no positive in validation: no threshold
    r = infer([test], [val], opts(), ["t"])
    assert np.isnan(r.metrics["threshold/Atelectasis"]) and np.isnan(r.metrics["tpr/Atelectasis"])
    assert np.isnan(r.metrics["tpr_gap/sex/Effusion"]) and np.isfinite(
        r.metrics["fpr_gap/sex/Effusion"]
    )
    assert any("Atelectasis: no positive validation image" in w for w in r.warnings)
    assert len([w for w in r.warnings if "undefined (no positive" in w]) == 1


def test_sensitivity_rule_reaches_the_target_on_validation():
    test, val = frame(seed=13), frame(seed=14)
    r = infer([test], [val], opts(threshold_rule="sensitivity", target_sensitivity=0.9), ["t"])
    for c in CLASSES:
        t = r.meta["thresholds"]["t"][c]
        y, p = val["y_" + c.replace(" ", "_")], val[f"prob_{c}"]
        assert np.mean(p[y == 1] >= t) >= 0.9
        assert np.mean(p[y == 1] > t) < 0.9  # the highest such threshold
    assert r.meta["threshold_rule"] == "sensitivity"


def test_permutation_statistics_equal_the_reassigned_table():
    """A permutation replicate's statistics equal the metrics of the table whose patients carry
    the assigned groups (every image of a patient in its patient's new group)."""
    from fairxray.metrics.multilabel_inference import _Cell, arrays

    test, val = frame(n=200, n_pat=50, seed=15), frame(seed=16)
    o = opts(n_bins=4096, min_group_size=1)
    Y, P = arrays(test, o, "t")
    t = ml.choose_thresholds(*arrays(val, o, "v"), "max_f1")
    cell = _Cell(test, [(Y, P, t)], o)
    rng = np.random.default_rng(3)
    new_sex = rng.integers(0, 2, cell.P)  # a group code per patient
    st = cell.perm_stats(0, {a: new_sex[None, :] for a in cell.groupings})["sex"]
    row_group = new_sex[cell.codes]
    for g in (0, 1):
        mk = row_group == g
        for j in range(len(CLASSES)):
            assert st["auroc"][0, g, j] == pytest.approx(ml.auroc(Y[mk, j], P[mk, j]), abs=1e-12)
            assert st["tpr"][0, g, j] == pytest.approx(ml.rates(Y[mk, j], P[mk, j] >= t[j])["tpr"])
            assert st["fpr"][0, g, j] == pytest.approx(ml.rates(Y[mk, j], P[mk, j] >= t[j])["fpr"])


def test_saved_mlflow_view_follows_the_task():
    from fairxray.track import headline as th

    ml_cols = th.view_state("multilabel")["selectedColumns"]
    assert "metrics.`3.underdiagnosis_gap/age_group/p_adjusted`" in ml_cols
    assert "metrics.`1.accuracy`" in th.view_state()["selectedColumns"]
    assert "underdiag. gap sex" in th.experiment_tags("paper", "multilabel")[th.NOTE]
