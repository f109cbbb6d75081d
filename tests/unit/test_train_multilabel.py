"""Multi-label training (``data.task: multilabel``): the masked BCE against a hand computation and
scikit-learn, macro AUROC against scikit-learn, every method training and writing the multi-label
predictions contract, a learnable label learnt, zero-shot pos/neg probabilities against a hand
softmax, selection on validation only (with a control that would catch a leak), the config
rejections, ONNX under the sigmoid, and the multi-class path unchanged."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from _trainkit import PROTOCOL, fit_data, train_params, write_project
from sklearn.metrics import log_loss, roc_auc_score
from test_zero_shot import small_gloria  # noqa: F401  (a random-init GLoRIA, module fixture)

from fairxray import paths
from fairxray.adapt.fit import FitData, fit
from fairxray.adapt.fit.task import macro_auroc, masked_bce
from fairxray.config import PAPER_CLASSES, load_params
from fairxray.errors import UserError
from fairxray.metrics.predictions import prob_columns, read_predictions, target_columns
from fairxray.models import create

CLASSES = (*PAPER_CLASSES, "No Finding")
METHODS = ("zero_shot", "linear_probe", "mlp", "lora", "full_ft")


def targets(frame: pd.DataFrame) -> np.ndarray:
    """Multi-hot targets of a _trainkit split: the finding of the row's image pattern; the last
    pattern (class 5) stands for a normal image (``No Finding`` 1, no finding, so Pneumothorax has
    no positive and is left out of the macro AUROC); one masked entry per split."""
    n, k = len(frame), frame["label_idx"].to_numpy()
    y = np.zeros((n, len(CLASSES)))
    y[np.arange(n), np.where(k == 5, len(CLASSES) - 1, k)] = 1.0
    y[1, 2] = np.nan
    return y


def to_multilabel(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for j, col in enumerate(target_columns(CLASSES)):
        out[col] = targets(frame)[:, j]
    out["label_idx"] = -1
    return out


def write_multilabel_project(root, **train_overrides):
    """_trainkit's project with y_<Class> targets in the split files and a multi-label params."""
    path = write_project(root, train_overrides={"selection": "macro_auroc", **train_overrides})
    sdir = root / "data" / "splits" / PROTOCOL
    for split in ("train", "val", "test"):
        f = sdir / f"{split}.parquet"
        to_multilabel(pd.read_parquet(f)).to_parquet(f, index=False)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["task"] = "multilabel"
    raw["data"]["classes"] = list(CLASSES)
    raw["tune"]["objective"] = "macro_auroc"
    raw["mitigations"] = []
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def multilabel_data(model, per_class=(6, 3, 3)) -> FitData:
    data = fit_data(model, per_class=per_class, features=True)
    from _trainkit import frames

    fr = frames(per_class)
    splits = {
        s: dataclasses.replace(getattr(data, s), labels=targets(fr[s]))
        for s in ("train", "val", "test")
    }
    return FitData(len(CLASSES), splits["train"], splits["val"], splits["test"], task="multilabel")


# -- the loss and the score ---------------------------------------------------------------


def test_masked_bce_equals_hand_computation_and_ignores_masked_entries():
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, math.nan], [0.0, 1.0, 1.0]])
    loss = masked_bce(z, y)

    def bce(zz, yy):
        s = 1 / (1 + math.exp(-zz))
        return -(yy * math.log(s) + (1 - yy) * math.log(1 - s))

    observed = [(2.0, 1), (-1.0, 0), (0.0, 0), (3.0, 1), (-2.0, 1)]
    hand = sum(bce(a, b) for a, b in observed) / 5
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    # scikit-learn's log loss over the same five observed entries.
    zs, ys = zip(*observed, strict=True)
    probs = 1 / (1 + np.exp(-np.array(zs)))
    assert loss.item() == pytest.approx(log_loss(ys, probs, labels=[0, 1]), rel=1e-6)
    loss.backward()
    assert z.grad[0, 2] == 0 and (z.grad.flatten()[[0, 1, 3, 4, 5]] != 0).all()
    # A NaN target never reaches the loss: the value stays finite whatever the logit.
    z2 = z.detach().clone()
    z2[0, 2] = 1e4
    assert masked_bce(z2, y).item() == pytest.approx(hand, rel=1e-6)


def test_macro_auroc_matches_sklearn_over_observed_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(40, 3)).astype(float)
    y[:5, 0] = np.nan
    y[:, 2] = 1.0  # one class only: left out
    p = rng.random((40, 3))
    m = ~np.isnan(y[:, 0])
    ref = np.mean([roc_auc_score(y[m, 0], p[m, 0]), roc_auc_score(y[:, 1], p[:, 1])])
    assert macro_auroc(y, p) == pytest.approx(ref, abs=1e-12)
    assert math.isnan(macro_auroc(np.ones((4, 2)), rng.random((4, 2))))


def test_objective_value_under_multilabel():
    from fairxray.tune.objective import objective_value

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(30, 2)).astype(float)
    y[0, 1] = np.nan
    p = rng.uniform(0.05, 0.95, size=(30, 2))
    m = ~np.isnan(y)
    ref = -log_loss(y[m], p[m], labels=[0, 1])
    assert objective_value("neg_loss", y, p, "multilabel") == pytest.approx(ref, rel=1e-9)
    assert objective_value("macro_auroc", y, p, "multilabel") == pytest.approx(macro_auroc(y, p))


# -- fit ----------------------------------------------------------------------------------


def test_learnable_labels_reach_high_val_auroc_and_probs_are_sigmoids():
    data = multilabel_data(create("toy"))
    r = fit("mlp", data, train_params(epochs=8, lr=1e-2, selection="macro_auroc"), seed=5)
    y = data.val.labels
    assert r.val_probs.shape == y.shape and r.val_probs.dtype == np.float64
    assert not np.allclose(r.val_probs.sum(1), 1.0)  # independent labels, no softmax
    assert r.best_score == pytest.approx(macro_auroc(y, r.val_probs))
    per_label = [
        roc_auc_score(y[~np.isnan(y[:, j]), j], r.val_probs[~np.isnan(y[:, j]), j])
        for j in range(len(CLASSES))
        if CLASSES[j] != "Pneumothorax"
    ]
    assert np.mean(per_label) > 0.85 and min(per_label) > 0.6
    # The val loss in the history is the masked BCE of the selected epoch's sigmoids.
    best = r.history[r.best_epoch - 1]
    m = ~np.isnan(y)
    assert best["val_loss"] == pytest.approx(
        log_loss(y[m], r.val_probs[m], labels=[0, 1]), rel=1e-4
    )


def _scrambled(split):
    y = split.labels.copy()
    return dataclasses.replace(split, labels=np.where(np.isnan(y), np.nan, 1.0 - y))


def test_selection_ignores_test_targets_and_the_check_has_power():
    data = multilabel_data(create("toy"))
    hp = train_params(epochs=6, lr=1e-2, selection="neg_loss")
    a = fit("mlp", data, hp, seed=3)
    scores = [h["val_score"] for h in a.history]
    assert len(set(np.round(scores, 9))) == len(scores)  # informative: epochs differ
    b = fit("mlp", dataclasses.replace(data, test=_scrambled(data.test)), hp, seed=3)
    assert a.best_epoch == b.best_epoch and scores == [h["val_score"] for h in b.history]
    assert np.array_equal(a.val_probs, b.val_probs) and np.array_equal(a.test_probs, b.test_probs)
    # Control: selecting on the test split (passed as val) is caught by the same comparison.
    c = fit("mlp", dataclasses.replace(data, val=data.test), hp, seed=3)
    d = fit("mlp", dataclasses.replace(data, val=_scrambled(data.test)), hp, seed=3)
    assert [h["val_score"] for h in c.history] != [h["val_score"] for h in d.history]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"selection": "accuracy"}, "'train.selection' 'accuracy' is not valid with data.task"),
        ({"selection": "macro_f1"}, "'train.selection' 'macro_f1' is not valid with data.task"),
        ({"class_balanced": True}, "'train.class_balanced'"),
    ],
)
def test_fit_rejects_multiclass_settings_under_multilabel(change, needle):
    data = multilabel_data(create("toy"), per_class=(2, 1, 1))
    with pytest.raises(UserError, match=needle.replace("(", r"\(")):
        fit("mlp", data, train_params(**{"selection": "macro_auroc", **change}), seed=0)


def test_macro_auroc_is_rejected_under_multiclass():
    data = fit_data(create("toy"), per_class=(2, 1, 1), features=True)
    with pytest.raises(UserError, match="'train.selection' 'macro_auroc' is not valid"):
        fit("mlp", data, train_params(selection="macro_auroc"), seed=0)


def test_multiclass_fit_still_softmax_and_cross_entropy():
    data = fit_data(create("toy"), per_class=(6, 3, 3), features=True)
    r = fit("mlp", data, train_params(epochs=3, selection="neg_loss"), seed=2)
    np.testing.assert_allclose(r.val_probs.sum(1), 1.0, atol=1e-12)
    best = r.history[r.best_epoch - 1]
    ce = log_loss(data.val.labels, r.val_probs, labels=list(range(6)))
    assert best["val_loss"] == pytest.approx(ce, rel=1e-4)
    assert r.best_score == pytest.approx(-best["val_loss"])


# -- zero-shot ----------------------------------------------------------------------------


def test_zero_shot_pos_neg_prompts_and_hand_softmax(tmp_path):
    from test_zero_shot import make_cache

    from fairxray.adapt.zero_shot import PROMPT_SCHEMES, label_prompts, predictions

    model = create("toy")  # random-init
    pr = label_prompts(model.spec, CLASSES)
    (template,) = PROMPT_SCHEMES[model.spec.prompt_style]
    assert pr["Effusion|pos"] == [template.format("pleural effusion")]
    assert pr["Effusion|neg"] == [template.format("no pleural effusion")]
    assert pr["No Finding|pos"] == [template.format("no acute cardiopulmonary findings")]
    assert pr["No Finding|neg"] == [template.format("acute cardiopulmonary findings")]

    cache = make_cache(tmp_path / "img", n=5, size=40)
    ids = [f"{i:08d}_000.png" for i in (3, 0, 4)]
    split = to_multilabel(
        pd.DataFrame(
            {
                "image_id": ids,
                "patient_id": [i[:8] for i in ids],
                "label_idx": [0, 4, 5],
                "age_group": ["0-59", "60-99", "0-59"],
                "sex": ["F", "M", "F"],
            }
        )
    )
    out = predictions(model, cache, split, CLASSES, batch_size=2, task="multilabel")
    read_predictions_frame_ok(out)

    # Hand reference: normalised image embedding, each prompt set's normalised mean embedding,
    # exp(s cos_pos) / (exp(s cos_pos) + exp(s cos_neg)).
    with torch.no_grad():
        img = F.normalize(model.vision(model.preprocess(torch.from_numpy(cache.get(ids)))), dim=-1)

        def emb(prompts):
            return F.normalize(model.encode_text(prompts, normalize=True).mean(0), dim=-1)

        s = model.logit_scale()
        for c in CLASSES:
            cp = (img @ emb(pr[f"{c}|pos"])).double().numpy()
            cn = (img @ emb(pr[f"{c}|neg"])).double().numpy()
            ref = np.exp(s * cp) / (np.exp(s * cp) + np.exp(s * cn))
            np.testing.assert_allclose(out[f"prob_{c}"], ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out[target_columns(CLASSES)], split[target_columns(CLASSES)])


def read_predictions_frame_ok(df):
    from fairxray.metrics.predictions import validate_predictions

    validate_predictions(df, CLASSES, ("age_group", "sex"), "zero-shot", task="multilabel")


# -- the train stage: every method, the contract, check, export ----------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from fairxray.adapt.store import embed
    from fairxray.adapt.train import train

    root = tmp_path_factory.mktemp("multilabel")
    path = write_multilabel_project(root)
    old = os.getcwd()
    os.chdir(root)
    try:
        p = load_params(path)
        p = dataclasses.replace(p, export=dataclasses.replace(p.export, parity_images=8))
        embed(p, "toy")
        for method in METHODS:
            train(p, "toy", method, list(p.seeds), log=lambda _m: None)
    finally:
        os.chdir(old)
    return root, p


@pytest.fixture
def project(trained, monkeypatch):
    root, p = trained
    monkeypatch.chdir(root)
    return p


@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_the_multilabel_contract(project, method):
    from fairxray.data.splits import load_splits

    p = project
    frames = load_splits(p.data.protocol)
    for seed in p.seeds:
        for split in ("val", "test"):
            f = paths.prediction_file("toy", method, seed, split)
            df = read_predictions(f, CLASSES, p.metrics.sensitive, task="multilabel")
            probs = df[prob_columns(CLASSES)].to_numpy()
            assert not np.allclose(probs.sum(1), 1.0)
            got = df[target_columns(CLASSES)].to_numpy()
            want = frames[split][target_columns(CLASSES)].to_numpy()
            np.testing.assert_array_equal(got, want)  # NaN where masked, in the same rows
            assert np.isnan(got).sum() == 1
    cfg = yaml.safe_load((paths.seed_dir("toy", method, p.seeds[0]) / "config.yaml").read_text())
    if method != "zero_shot":
        assert cfg["selection"] == "macro_auroc" and np.isfinite(cfg["best_score"])


def test_check_accepts_the_multilabel_project_and_names_each_problem(project):
    from fairxray.check import check_task_params, require_valid

    p = project
    require_valid(p)
    bad = dataclasses.replace(
        p,
        train=dataclasses.replace(p.train, selection="accuracy", class_balanced=True),
        tune=dataclasses.replace(p.tune, objective="macro_f1"),
        mitigations=("group_dro",),
    )
    problems = check_task_params(bad)
    assert len(problems) == 4
    assert problems[0].startswith("'train.selection' 'accuracy' is not valid with data.task")
    assert problems[1].startswith("'train.class_balanced'")
    assert problems[2].startswith("'tune.objective' 'macro_f1' is not valid with data.task")
    assert problems[3].startswith("'mitigations' ['group_dro']") and "multilabel" in problems[3]
    with pytest.raises(UserError, match=r"4 problem\(s\) found"):
        require_valid(bad)
    # Multiclass with macro_auroc is refused too.
    mc = dataclasses.replace(
        p,
        data=dataclasses.replace(p.data, task="multiclass"),
        train=dataclasses.replace(p.train, selection="macro_auroc"),
        tune=dataclasses.replace(p.tune, objective="neg_loss"),
    )
    (problem,) = check_task_params(mc)
    assert "'train.selection' 'macro_auroc' is not valid with data.task multiclass" in problem


def test_check_refuses_a_protocol_without_targets(tmp_path, monkeypatch):
    from fairxray.check import check_task_params

    monkeypatch.chdir(tmp_path)
    path = write_project(tmp_path, train_overrides={"selection": "macro_auroc"})  # no y_ columns
    raw = yaml.safe_load(path.read_text())
    raw["data"].update(task="multilabel", classes=list(CLASSES))
    raw["tune"]["objective"] = "neg_loss"
    raw["mitigations"] = []
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    (problem,) = check_task_params(load_params(path))
    assert "y_Atelectasis" in problem and "train.parquet" in problem and "multilabel" in problem


def test_post_mitigation_refused_under_multilabel(project):
    from fairxray.adapt.train import train

    with pytest.raises(UserError, match="multi-class only"):
        train(project, "toy", "mlp+group_threshold", list(project.seeds), log=lambda _m: None)


@pytest.mark.parametrize("method", ["linear_probe", "zero_shot"])
def test_onnx_export_uses_the_sigmoid(project, method):
    from fairxray.export.onnx import export, ort_probs

    p = project
    rep = export(p, "toy", method, log=lambda _m: None)
    assert rep["parity"]["passed"] and rep["predictions_check"]["max_abs_diff"] < 1e-5
    from fairxray.export.onnx import build_probs_model, parity_pixels

    _, info = build_probs_model("toy", method, p.seeds[0], p.data.classes, "multilabel")
    _, px = parity_pixels(p, 4)
    got = ort_probs(paths.onnx("toy", method), info["preprocess"](torch.from_numpy(px)).numpy())
    assert got.shape == (4, len(CLASSES)) and not np.allclose(got.sum(1), 1.0)


def test_tune_objective_is_the_validation_macro_auroc(project):
    from fairxray.tune.objective import load_tune_data
    from fairxray.tune.space import apply_overrides
    from fairxray.tune.study import tune

    p = project
    tp = dataclasses.replace(
        p.tune,
        n_trials=2,
        startup_trials=2,
        space={"mlp": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}},
    )
    content = tune(dataclasses.replace(p, tune=tp), "toy", "mlp", log=lambda _m: None)
    trials = content["study"]["trials"]
    assert len(trials) == 2 and len({t["values"][0] for t in trials}) == 2
    # Each trial's value is the macro AUROC (recomputed with scikit-learn) of a refit with its
    # parameters on the validation targets; the test split is not loaded.
    data = load_tune_data(p, "toy", "mlp").fit_data
    assert data.test is None
    for t in trials:
        r = fit("mlp", data, apply_overrides(p.train, t["params"]), seed=p.seeds[0])
        y = data.val.labels
        ref = np.mean(
            [
                roc_auc_score(y[~np.isnan(y[:, j]), j], r.val_probs[~np.isnan(y[:, j]), j])
                for j in range(y.shape[1])
                if len(np.unique(y[~np.isnan(y[:, j]), j])) == 2
            ]
        )
        assert t["values"][0] == pytest.approx(ref, abs=1e-12)


def test_zero_shot_pairs_use_the_models_own_rule(tmp_path, small_gloria):  # noqa: F811
    """GLoRIA's rule (local + global, standardised per prompt set): each label's probability is
    the pair softmax of its positive set's scores (the multi-class path's class scores) and its
    negative set's, each set scored on its own."""
    from test_zero_shot import make_cache

    from fairxray.adapt.zero_shot import PROMPT_SCHEMES, class_logits, predictions

    m = small_gloria
    m.vision.input_size = 64  # a 4 x 4 region grid: the same computation, fast
    cache = make_cache(tmp_path / "img", n=4, size=32)
    ids = [f"{i:08d}_000.png" for i in range(4)]
    labels = ("Edema", "No Finding")
    split = pd.DataFrame(
        {
            "image_id": ids,
            "patient_id": [i[:8] for i in ids],
            "label_idx": [-1] * 4,
            "y_Edema": [1.0, 0.0, np.nan, 0.0],
            "y_No_Finding": [0.0, 1.0, 0.0, 1.0],
            "age_group": ["0-59"] * 4,
            "sex": ["F", "M", "F", "M"],
        }
    )
    out = predictions(m, cache, split, labels, batch_size=3, task="multilabel")
    rule = "gloria_local_global"
    pos = class_logits(m, cache, ids, labels, rule).double().numpy()
    templates = PROMPT_SCHEMES[m.spec.prompt_style]
    negatives = {
        "Edema": [t.format("no pulmonary edema") for t in templates],
        "No Finding": [t.format("acute cardiopulmonary findings") for t in templates],
    }
    neg = class_logits(m, cache, ids, labels, rule, prompts=negatives).double().numpy()
    ref = np.exp(pos) / (np.exp(pos) + np.exp(neg))
    # float32 scores of other batch sizes (3 there, one batch here): ~1e-6 apart.
    np.testing.assert_allclose(out[prob_columns(labels)].to_numpy(), ref, rtol=0, atol=2e-5)
    assert not np.allclose(out[prob_columns(labels)].to_numpy(), 1 / (1 + np.exp(-pos)), atol=1e-3)
