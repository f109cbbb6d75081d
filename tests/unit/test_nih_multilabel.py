"""The multi-label data side: ``nih-demo-official`` on the real NIH metadata (torchxrayvision's
copy, 112,120 rows), the official protocols' ``y_<Label>`` targets and ``label_idx``, the
``data.demo_official_images`` cap, and the multi-label synthetic images with their planted
underdiagnosis gap. References are recomputed from the raw CSV columns, not from fairxray."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from fairxray import cli
from fairxray.config import ConfigError, ImagesParams, SyntheticParams, load_params, parse_params
from fairxray.data import images as images_mod
from fairxray.data import nih, synthetic
from fairxray.data.cache import ImageCache
from fairxray.errors import UserError

REPO = Path(__file__).resolve().parents[2]
BINS = (0, 60, 100)
FIFTEEN = nih.TARGETS  # the 14 findings in NIH's alphabetical order, then No Finding
SYN = SyntheticParams(
    signal=0.3, noise=0.2, age_signal_scale=(1.0, 0.45), sex_signal_scale={"M": 1.0, "F": 1.0}
)
CLEAN = dataclasses.replace(SYN, noise=0.0, signal=0.1)  # no noise, no clipping at 0/255


@pytest.fixture(scope="module")
def meta():
    return nih.read_metadata(nih.bundled_metadata())


@pytest.fixture(scope="module")
def raw():
    """The CSV as shipped, read without fairxray: Image Index -> its Finding Labels list."""
    df = pd.read_csv(nih.bundled_metadata())
    return df.set_index("Image Index")


@pytest.fixture(scope="module")
def full(meta):
    return nih.protocol_demo_official(meta, BINS, 0.1, 42, FIFTEEN, None)


@pytest.fixture(scope="module")
def small(meta):
    return nih.protocol_demo_official(meta, BINS, 0.1, 42, FIFTEEN, 3000)


def _patients(splits):
    return {k: set(v["patient_id"]) for k, v in splits.items()}


# ---- the full-scale draw ---------------------------------------------------------------------


def test_full_draw_has_the_official_proportions(meta, full):
    splits, rec = full
    n = {k: len(v) for k, v in splits.items()}
    assert sum(n.values()) == len(meta) == 112_120  # every image once
    assert pd.concat(splits.values())["image_id"].is_unique
    # NIH: 86,524 train_val / 25,596 test; the cut falls between whole patients.
    assert abs(n["test"] - 25_596) <= 100
    assert abs(n["train"] + n["val"] - 86_524) <= 100
    assert rec["test_share"] == pytest.approx(25_596 / 112_120, abs=1e-3)
    assert rec["test_share"] == round(n["test"] / 112_120, 6)
    tv_patients = len(_patients(splits)["train"] | _patients(splits)["val"])
    assert len(_patients(splits)["val"]) == round(
        0.1 * tv_patients
    )  # whole patients, as nih-official
    assert rec["demo_official_images"] is None and rec["images"] == 112_120
    assert "DEMO protocol" in rec["note"]


@pytest.mark.parametrize("which", ["full", "small"])
def test_no_patient_in_two_splits_and_whole_patients_only(meta, which, request):
    splits, _ = request.getfixturevalue(which)
    p = _patients(splits)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not p[a] & p[b], f"{a}/{b} share patients"
    # Every image of a drawn patient is in the patient's split (patients are never cut).
    drawn = pd.concat(splits.values())
    per_patient = meta[meta["patient_id"].isin(drawn["patient_id"])].groupby("patient_id").size()
    assert (drawn.groupby("patient_id").size() == per_patient).all()


def test_draw_is_deterministic_and_seeded(meta, small):
    again, rec = nih.protocol_demo_official(meta, BINS, 0.1, 42, FIFTEEN, 3000)
    for k in ("train", "val", "test"):
        pd.testing.assert_frame_equal(small[0][k], again[k])
    assert rec == small[1]
    other, _ = nih.protocol_demo_official(meta, BINS, 0.1, 7, FIFTEEN, 3000)
    assert _patients(other)["test"] != _patients(small[0])["test"]


def test_cap_keeps_the_proportions_and_every_label_in_every_split(small):
    splits, rec = small
    n = {k: len(v) for k, v in splits.items()}
    total = sum(n.values())
    assert (
        abs(total - 3000) <= 60 and rec["images"] == total and rec["demo_official_images"] == 3000
    )
    assert n["test"] / total == pytest.approx(nih.OFFICIAL_TEST_SHARE, abs=0.01)
    tv = len(_patients(splits)["train"] | _patients(splits)["val"])
    assert len(_patients(splits)["val"]) == round(0.1 * tv)
    for name, df in splits.items():
        for c in FIFTEEN:
            col = df["y_" + c.replace(" ", "_")]
            assert 0 < col.sum() < len(df), f"{name} lacks a positive or a negative of {c}"
    assert rec["draw"] >= 0  # the draw used is recorded (earlier ones missed a rare label)


def test_too_small_a_cap_is_one_clear_error(meta, monkeypatch):
    monkeypatch.setattr(nih, "DEMO_MAX_DRAWS", 3)
    with pytest.raises(UserError) as exc:
        nih.protocol_demo_official(meta, BINS, 0.1, 42, FIFTEEN, 40)
    msg = str(exc.value)
    assert "\n" not in msg and "raise data.demo_official_images" in msg and "none of 3 draws" in msg


def test_rows_outside_the_age_bins_are_left_out_and_counted(meta):
    splits, rec = nih.protocol_demo_official(meta, (18, 60, 100), 0.1, 1, FIFTEEN, 20_000)
    minors = int((meta["age"] < 18).sum())
    assert minors > 0 and rec["left_out_outside_age_bins"] == minors
    assert all(df["age_group"].notna().all() for df in splits.values())


# ---- the targets: y_<Label> and label_idx, checked against the raw CSV ------------------------


def test_targets_equal_the_raw_finding_labels(small, raw):
    for df in small[0].values():
        truth = raw.loc[df["image_id"], "Finding Labels"].str.split("|").to_numpy()
        for c in FIFTEEN:
            want = np.array([float(c in labels) for labels in truth])
            got = df["y_" + c.replace(" ", "_")].to_numpy()
            assert got.dtype == np.float64 and np.array_equal(got, want), c
        assert list(df["label"]) == list(raw.loc[df["image_id"], "Finding Labels"])


def test_label_idx_indexes_data_classes(meta, raw):
    classes = ("No Finding", "Effusion", "Hernia")  # a subset, in an order of their own
    splits, _ = nih.protocol_demo_official(meta, BINS, 0.1, 42, classes, 6000)
    df = pd.concat(splits.values())
    labels = raw.loc[df["image_id"], "Finding Labels"].to_numpy()
    want = [classes.index(v) if v in classes else -1 for v in labels]  # "A|B" is never in classes
    assert list(df["label_idx"]) == want
    assert {-1, 0, 1} <= set(df["label_idx"])
    # The split itself does not depend on data.classes: only label_idx does.
    same, _ = nih.protocol_demo_official(meta, BINS, 0.1, 42, FIFTEEN, 6000)
    assert list(same["test"]["image_id"]) == list(splits["test"]["image_id"])


def test_nih_official_label_idx_and_targets(meta, raw, tmp_path):
    ids = meta["image_id"].iloc[:400]
    (tmp_path / "train_val_list.txt").write_text("\n".join(ids[:300]))
    (tmp_path / "test_list.txt").write_text("\n".join(ids[300:]))
    s = nih.protocol_official(meta, tmp_path, BINS, 0.1, 0, FIFTEEN)
    df = pd.concat(s.values())
    labels = raw.loc[df["image_id"], "Finding Labels"].to_numpy()
    assert list(df["label_idx"]) == [FIFTEEN.index(v) if v in FIFTEEN else -1 for v in labels]
    assert (df.loc[df["label"] == "No Finding", "label_idx"] == 14).all()
    assert df["y_No_Finding"].sum() == (labels == "No Finding").sum()


# ---- the prepare stage: manifest, params, the 6x200 protocols untouched -----------------------


def yaml_params(tmp_path, name="params.yaml", **data):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(data)
    out = tmp_path / name
    out.write_text(yaml.safe_dump(raw))
    return out


def test_prepare_demo_protocol_writes_a_demo_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = yaml_params(
        tmp_path,
        protocols=["nih-demo-official"],
        protocol="nih-demo-official",
        classes=list(FIFTEEN),
        task="multilabel",
        demo_official_images=3000,
    )
    assert cli.main(["prepare", "--protocol", "nih-demo-official", "--params", str(params)]) == 0
    folder = tmp_path / "data" / "splits" / "nih-demo-official"
    man = json.loads((folder / "manifest.json").read_text())
    assert man["demo"]["note"].startswith("DEMO protocol") and man["demo"]["images"] == 3000
    assert sum(man["rows"].values()) == 3000
    assert all(man["leakage"]["shared_patients"][k] == 0 for k in man["leakage"]["shared_patients"])
    assert "demo_official_images" not in man["params"]  # recorded in its own section
    # Manifest cells: positives per split x group x target, consistent with the files.
    test = pd.read_parquet(folder / "test.parquet")
    cells = [c for c in man["cells"] if c["split"] == "test" and c["target"] == "Effusion"]
    assert sum(c["positives"] for c in cells) == test["y_Effusion"].sum()
    assert sum(c["n"] for c in cells) == len(test)


def test_the_cap_is_left_out_of_the_other_protocols_manifest_params(tmp_path):
    # prepare writes split_params(p) as the manifest's params: a key the 6x200 protocols do not
    # read must not change their manifest (the data identity of every run on them).
    from fairxray.data.splits import NIH, SPLIT_PARAMS

    got = [
        NIH.split_params(load_params(yaml_params(tmp_path, demo_official_images=c)))
        for c in (None, 3000)
    ]
    assert got[0] == got[1] and "demo_official_images" not in got[0]
    assert "demo_official_images" in SPLIT_PARAMS


def test_misspelled_class_fails_for_the_official_protocols(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    csv = tmp_path / "meta.csv"
    csv.write_text(
        "Image Index,Finding Labels,Patient ID,Patient Age,Patient Gender,View Position\n"
        "00000001_000.png,Cardiomegaly|Hernia,1,57,M,PA\n00000002_000.png,No Finding,2,81,F,AP\n"
    )
    classes = ["Cardiomegaly", "Hernia", "No finding"]
    params = yaml_params(
        tmp_path,
        metadata=str(csv),
        protocols=["nih-demo-official"],
        protocol="nih-demo-official",
        classes=classes,
    )
    assert cli.main(["prepare", "--protocol", "nih-demo-official", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "'data.classes' has 'No finding', not a label of" in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "value, message",
    [
        (0, "'data.demo_official_images' must be null (all images) or at least 500, got 0"),
        (120, "must be null (all images) or at least 500, got 120"),
        ("3000", "'data.demo_official_images' must be an integer, got '3000'"),
        (True, "'data.demo_official_images' must be an integer, got True"),
    ],
)
def test_bad_cap_is_rejected_with_one_line(value, message):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["demo_official_images"] = value
    with pytest.raises(ConfigError) as exc:
        parse_params(raw, "p.yaml")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_shipped_params_list_the_cap_everywhere():
    assert load_params(REPO / "params.yaml").data.demo_official_images is None
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert "data.demo_official_images" in dvc["stages"]["prepare"]["do"]["params"]


# ---- multi-label synthetic images -------------------------------------------------------------


def _shape(name, size=32):
    y, x = synthetic._grid(size)
    return np.abs(synthetic.FINDING_SHAPES[name](y, x))


def test_every_nih_finding_has_a_pattern():
    assert set(synthetic.FINDING_SHAPES) == set(nih.NIH_LABELS)
    with pytest.raises(ValueError, match="no synthetic pattern for No Finding"):
        synthetic.render_findings("00000001_000.png", ("No Finding",), 0, "M", 32, SYN)


@pytest.mark.parametrize("finding", nih.NIH_LABELS)
def test_a_finding_changes_the_image_where_its_pattern_is(finding):
    iid = "00000042_001.png"
    base = synthetic.render_findings(iid, (), 0, "M", 32, SYN).astype(int)
    with_it = synthetic.render_findings(iid, (finding,), 0, "M", 32, SYN).astype(int)
    diff = np.abs(with_it - base)
    # Same background and noise: the change is the pattern's. Nearly all of it lies on the
    # pattern (within the jitter of +-0.05, about one pixel at 32 px; outside, a Gaussian tail
    # can only flip a rounding), and the pattern's core changes.
    shape = _shape(finding)
    near = np.maximum.reduce(
        [np.roll(shape, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    )
    on = near > 0.02 * shape.max()
    assert diff.sum() >= 20 and diff[on].sum() >= 0.99 * diff.sum()
    assert diff[~on].max(initial=0) <= 1
    core = shape > 0.6 * shape.max()
    assert (diff[core] > 0).mean() > 0.5
    # Another finding's presence does not move this one: adding it to an image that has a second
    # finding changes the same pixels by the same amounts, except where the two overlap or clip.
    other = "Nodule" if finding != "Nodule" else "Mass"
    a = synthetic.render_findings(iid, (other,), 0, "M", 32, CLEAN).astype(int)
    b = synthetic.render_findings(iid, (other, finding), 0, "M", 32, CLEAN).astype(int)
    c = synthetic.render_findings(iid, (), 0, "M", 32, CLEAN).astype(int)
    d = synthetic.render_findings(iid, (finding,), 0, "M", 32, CLEAN).astype(int)
    assert np.abs((b - a) - (d - c)).max() <= 1  # uint8 rounding only


def _energy(findings, age_idx, sex, syn):
    iid = "00000007_000.png"
    with_f = synthetic.render_findings(iid, findings, age_idx, sex, 32, syn).astype(float)
    without = synthetic.render_findings(iid, (), age_idx, sex, 32, syn).astype(float)
    return np.abs(with_f - without).sum()


def test_amplitude_scales_by_group_as_configured():
    f = ("Cardiomegaly", "Effusion", "Mass")
    assert _energy(f, 1, "M", CLEAN) / _energy(f, 0, "M", CLEAN) == pytest.approx(0.45, abs=0.03)
    syn = dataclasses.replace(CLEAN, sex_signal_scale={"M": 1.0, "F": 0.6})
    assert _energy(f, 0, "F", syn) / _energy(f, 0, "M", syn) == pytest.approx(0.6, abs=0.03)
    flat = dataclasses.replace(CLEAN, age_signal_scale=(1.0, 1.0))
    assert _energy(f, 1, "M", flat) == _energy(f, 0, "M", flat)


def test_no_finding_is_the_background_and_multiclass_render_is_unchanged():
    zero = dataclasses.replace(SYN, signal=0.0)
    iid = "00000003_000.png"
    assert np.array_equal(
        synthetic.render_findings(iid, (), 1, "F", 32, SYN),
        synthetic.render_findings(iid, ("Edema", "Hernia"), 1, "F", 32, zero),
    )
    # The single-label renderer draws the same pixels as before the multi-label patterns
    # existed (a pinned digest of one image per paper class).
    import hashlib

    digest = hashlib.sha256()
    for k in range(6):
        digest.update(
            synthetic.render(f"{k:08d}_000.png", k, k % 2, "MF"[k % 2], 32, SYN).tobytes()
        )
    assert digest.hexdigest() == MULTICLASS_DIGEST


# Computed with the renderer of commit 0e0d5ea (before the multi-label patterns).
MULTICLASS_DIGEST = "b3c3878b0691a95c5f8b2b12c99e4f941399fe6861ea6ebb4bc9e6870026a95c"


def test_cache_renders_each_rows_findings(small, tmp_path):
    splits = {k: v.iloc[:40] for k, v in small[0].items()}
    im = ImagesParams(size=32, min_source_size=8, on_error="fail", workers=1, synthetic=SYN)
    man = images_mod.build_cache(
        splits, tmp_path / "c", tmp_path / "p", im, None, 15, ["0-59", "60-99"], False
    )
    assert "multi-label" in man["synthetic"]["findings"]
    cache = ImageCache.open(tmp_path / "c")
    rows = pd.concat(splits.values())
    sick = rows[rows["label"].str.contains("|", regex=False)].iloc[0]
    findings = tuple(sick["label"].split("|"))
    want = synthetic.render_findings(
        sick["image_id"], findings, ("0-59", "60-99").index(sick["age_group"]), sick["sex"], 32, SYN
    )
    assert np.array_equal(cache.get([sick["image_id"]])[0], want)
    assert synthetic.row_findings(rows.iloc[:0]) == []
    assert synthetic.row_findings(rows.drop(columns="y_Hernia")) is None


def _no_finding_fpr_gap(splits, syn):
    """Train a pixel logistic regression for No Finding; return (FPR old - FPR young, AUROC)
    on test, where FPR = share of images with findings called No Finding (threshold 0.5)."""
    from sklearn.metrics import roc_auc_score

    groups = ("0-59", "60-99")

    def pixels(df):
        found = synthetic.row_findings(df)
        return (
            np.stack(
                [
                    synthetic.render_findings(
                        r.image_id, found[i], groups.index(r.age_group), r.sex, 32, syn
                    ).ravel()
                    for i, r in enumerate(df.itertuples())
                ]
            )
            / 255.0
        )

    train, test = splits["train"], splits["test"]
    clf = LogisticRegression(C=0.05, max_iter=300).fit(pixels(train), train["y_No_Finding"])
    prob = clf.predict_proba(pixels(test))[:, 1]
    sick = test["y_No_Finding"].to_numpy() == 0
    fpr = {g: (prob[sick & (test["age_group"] == g).to_numpy()] > 0.5).mean() for g in groups}
    return fpr["60-99"] - fpr["0-59"], roc_auc_score(test["y_No_Finding"], prob)


def test_the_planted_underdiagnosis_gap_is_learned(small):
    # A classifier trained on the demo images calls more of the older group's diseased images
    # "No Finding" when their findings are fainter (age_signal_scale 0.45) than when they are not.
    planted, auc = _no_finding_fpr_gap(small[0], SYN)
    control, _ = _no_finding_fpr_gap(
        small[0], dataclasses.replace(SYN, age_signal_scale=(1.0, 1.0))
    )
    assert auc > 0.75
    assert planted > 0.05 and planted - control > 0.05


def test_resume_key_follows_the_findings(small):
    # An interrupted build is reused only for the same inputs: a changed finding is a new input.
    rows = small[0]["test"].iloc[:20].reset_index(drop=True)
    im = ImagesParams(size=32, min_source_size=8, on_error="fail", workers=1, synthetic=SYN)
    key = images_mod.resume_key(rows, None, {}, im, 15, ["0-59", "60-99"])
    flipped = rows.copy()
    flipped.loc[0, "y_Nodule"] = 1.0 - flipped.loc[0, "y_Nodule"]
    assert images_mod.resume_key(flipped, None, {}, im, 15, ["0-59", "60-99"]) != key
    assert images_mod.resume_key(rows.copy(), None, {}, im, 15, ["0-59", "60-99"]) == key
