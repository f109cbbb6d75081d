"""CheXpert and MIMIC-CXR: prepare, validation and leakage on fixture tables written in the
upstream formats (column names, codes, uncertain values as the releases ship them)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairxray.config import CheXpertParams, MimicParams, load_params
from fairxray.data import chexpert, mimic, registry, splits, tables
from fairxray.errors import UserError
from fairxray.metrics.evaluate import Settings, evaluate_frame
from fairxray.metrics.predictions import prob_columns

ROOT = Path(__file__).resolve().parents[2]
LABELS = chexpert.LABELS
RACES = ["White", "Black or African American", "Asian", "Other", "Unknown", "White, non-Hispanic"]


def base_params(**data):
    p = load_params(ROOT / "params.yaml")
    return dataclasses.replace(p, data=dataclasses.replace(p.data, **data))


# ---- CheXpert fixture ------------------------------------------------------------------------


def chexpert_rows(split: str, first: int, n_patients: int, rng) -> list[dict]:
    rows = []
    for k in range(first, first + n_patients):
        for study in (1, 2):
            for view, fl, appa in ((1, "frontal", "AP" if k % 2 else "PA"), (2, "lateral", "LL")):
                if split == "valid" and study == 2:
                    continue
                row = {
                    "Path": f"CheXpert-v1.0-small/{split}/patient{k:05d}/study{study}/view{view}_{fl}.jpg",
                    "Sex": "Female" if k % 3 else "Male",
                    "Age": str(20 + (k * 7) % 70),
                    "Frontal/Lateral": fl.capitalize(),
                    "AP/PA": appa,
                }
                codes = ["1.0", "0.0", "-1.0", ""] if split == "train" else ["1.0", "0.0"]
                for lab in LABELS:
                    row[lab] = codes[rng.integers(len(codes))]
                rows.append(row)
    return rows


def write_chexpert(tmp: Path, n_train=40, n_valid=6, seed=0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    root = tmp / "CheXpert-v1.0-small"
    root.mkdir(parents=True)
    cols = list(chexpert.REQUIRED)
    pd.DataFrame(chexpert_rows("train", 1, n_train, rng), columns=cols).to_csv(
        root / "train.csv", index=False
    )
    first_valid = 64541  # the released valid patients follow the train ids
    pd.DataFrame(chexpert_rows("valid", first_valid, n_valid, rng), columns=cols).to_csv(
        root / "valid.csv", index=False
    )
    ids = [*range(1, n_train + 1), *range(first_valid, first_valid + n_valid)]
    demo = pd.DataFrame(
        {
            "PATIENT": [f"patient{k:05d}" for k in ids],
            "GENDER": ["Female" if k % 3 else "Male" for k in ids],
            "AGE_AT_CXR": [str(20 + (k * 7) % 70) for k in ids],
            "PRIMARY_RACE": [RACES[k % len(RACES)] for k in ids],
            "ETHNICITY": ["Non-Hispanic/Non-Latino" if k % 4 else "Hispanic/Latino" for k in ids],
        }
    )
    demo.to_csv(tmp / "CHEXPERT DEMO.csv", index=False)
    return root, tmp / "CHEXPERT DEMO.csv"


def chexpert_params(root: Path, demo: Path | None, **kw):
    cx = CheXpertParams(
        root=str(root),
        demo_table=None if demo is None else str(demo),
        uncertain=kw.pop("uncertain", "ones"),
        frontal_only=True,
        val_fraction=0.2,
        test_fraction=0.25,
    )
    return base_params(chexpert=dataclasses.replace(cx, **kw))


@pytest.fixture
def cx(tmp_path):
    return write_chexpert(tmp_path)


@pytest.mark.parametrize("protocol", chexpert.PROTOCOLS)
def test_chexpert_prepare_is_patient_disjoint_and_counts_exclusions(tmp_path, cx, protocol):
    root, demo = cx
    m = splits.prepare(chexpert_params(root, demo), protocol, tmp_path / "out")
    frames = {
        s: pd.read_parquet(tmp_path / "out" / f"{s}.parquet") for s in ("train", "val", "test")
    }
    assert all(v == 0 for v in m["leakage"]["shared_patients"].values())
    assert m["leakage"]["repeated_image_ids"] == 0
    # 40 train patients x 2 frontal + 6 valid x 1 frontal; every lateral dropped and counted.
    assert sum(m["rows"].values()) == 86
    assert m["metadata"]["excluded"]["lateral"] == 86
    assert set(m["metadata"]["files"]) == {"train.csv", "valid.csv", "CHEXPERT DEMO.csv"}
    allrows = pd.concat(frames.values())
    assert set(allrows["view"]) == {"AP", "PA"}
    assert set(allrows["race"]) == {"White", "Black", "Asian", "Other", "Unknown"}
    if protocol == "chexpert-official":
        assert set(frames["test"]["patient_id"]) == {f"patient{k:05d}" for k in range(64541, 64547)}
        assert (frames["test"]["path"].str.contains("/valid/")).all()
    cols = {tables.label_column(n) for n in LABELS}
    assert cols <= set(frames["train"].columns)
    assert m["cells"] and {"split", "age_group", "sex", "race", "n"} <= set(m["cells"][0])


def test_chexpert_race_and_sex_map_hand_checked(tmp_path, cx):
    root, demo = cx
    df = chexpert.read(chexpert_params(root, demo)).frame.set_index("patient_id")
    # patient k has race RACES[k % 6]: 1 Black, 2 Asian, 3 Other, 4 Unknown, 5 White (prefix), 6 White
    want = {1: "Black", 2: "Asian", 3: "Other", 4: "Unknown", 5: "White", 6: "White"}
    for k, race in want.items():
        rows = df.loc[[f"patient{k:05d}"]]
        assert set(rows["race"]) == {race}
        assert set(rows["sex"]) == {"F" if k % 3 else "M"}
        assert set(rows["ethnicity"]) == {"Non-Hispanic/Non-Latino" if k % 4 else "Hispanic/Latino"}


@pytest.mark.parametrize("policy, uncertain", [("ones", 1.0), ("zeros", 0.0), ("ignore", None)])
def test_chexpert_uncertain_policy(tmp_path, cx, policy, uncertain):
    root, demo = cx
    raw = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    df = chexpert.read(chexpert_params(root, demo, uncertain=policy)).frame.set_index("image_id")
    raw = raw[raw["Frontal/Lateral"] == "Frontal"].set_index("Path")
    for lab in LABELS:
        got = df.loc[raw.index, tables.label_column(lab)]
        code = raw[lab]
        assert (got[code == "1.0"] == 1.0).all() and (got[code == "0.0"] == 0.0).all()
        assert (got[code == ""] == 0.0).all()  # blank = not mentioned = negative
        if uncertain is None:
            assert got[code == "-1.0"].isna().all()
        else:
            assert (got[code == "-1.0"] == uncertain).all()
    # `label` lists the positive findings, uncertain ones only under U-ones.
    first = raw.index[0]
    pos = [
        lab
        for lab in LABELS
        if raw.loc[first, lab] == "1.0" or (policy == "ones" and raw.loc[first, lab] == "-1.0")
    ]
    assert df.loc[first, "label"] == ("|".join(pos) or "No Finding")


def test_chexpert_without_demo_has_unknown_race(tmp_path, cx):
    root, _ = cx
    df = chexpert.read(chexpert_params(root, None)).frame
    assert set(df["race"]) == {"Unknown"} and set(df["ethnicity"]) == {"Unknown"}


def _edit_csv(path: Path, row: int, col: str, value: str) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[row, col] = value
    df.to_csv(path, index=False)


CHEXPERT_ERRORS = [
    ("train.csv", 0, "Path", "images/patient00001.jpg", "row 2, column 'Path'"),
    (
        "train.csv",
        3,
        "Path",
        "CheXpert-v1.0-small/valid/patient00001/study1/view1_frontal.jpg",
        "is not under train/",
    ),
    (
        "train.csv",
        2,
        "Path",
        "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
        "duplicate",
    ),
    ("train.csv", 1, "Sex", "X", "row 3, column 'Sex'"),
    ("train.csv", 4, "Age", "forty", "row 6, column 'Age'"),
    ("train.csv", 4, "Age", "130", "outside 0-120"),
    ("train.csv", 0, "Frontal/Lateral", "Oblique", "column 'Frontal/Lateral'"),
    ("train.csv", 0, "AP/PA", "XX", "column 'AP/PA'"),
    ("train.csv", 0, "AP/PA", "", "a Frontal image needs AP or PA"),
    ("train.csv", 1, "AP/PA", "PA", "a Lateral image cannot be"),
    ("train.csv", 5, "Edema", "2.0", "row 7, column 'Edema'"),
    ("valid.csv", 0, "Cardiomegaly", "yes", "valid.csv"),
    ("CHEXPERT DEMO.csv", 0, "PATIENT", "p1", "column 'PATIENT'"),
    ("CHEXPERT DEMO.csv", 1, "PATIENT", "patient00001", "duplicate"),
]


@pytest.mark.parametrize("fname, row, col, value, message", CHEXPERT_ERRORS)
def test_chexpert_validation_errors_name_file_row_column(
    tmp_path, cx, fname, row, col, value, message
):
    root, demo = cx
    path = demo if fname.startswith("CHEXPERT") else root / fname
    _edit_csv(path, row, col, value)
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        splits.prepare(chexpert_params(root, demo), "chexpert-patient", out)
    assert message in str(err.value) and str(path) in str(err.value)
    assert not out.exists() and not out.with_name("out.tmp").exists()


def test_chexpert_file_level_errors(tmp_path, cx):
    root, demo = cx
    p = chexpert_params(root, demo)
    original = (root / "valid.csv").read_text()
    df = pd.read_csv(root / "valid.csv", dtype=str, keep_default_na=False)
    df.drop(columns=["Edema"]).to_csv(root / "valid.csv", index=False)
    with pytest.raises(UserError, match="missing required column 'Edema'"):
        chexpert.read(p)
    # a train patient also in valid.csv
    df["Path"] = df["Path"].str.replace("patient64541", "patient00001")
    df.to_csv(root / "valid.csv", index=False)
    with pytest.raises(UserError, match="in both train.csv and valid.csv"):
        chexpert.read(p)
    (root / "valid.csv").write_text(original)
    cases = [
        (
            dataclasses.replace(p.data.chexpert, demo_table=str(tmp_path / "x.xlsx")),
            "save it as CSV",
        ),
        (dataclasses.replace(p.data.chexpert, root=str(tmp_path / "nowhere")), "not found"),
        (dataclasses.replace(p.data.chexpert, root=None), "data.chexpert.root: not set"),
        (dataclasses.replace(p.data.chexpert, uncertain="half"), "not one of ones, zeros, ignore"),
    ]
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    for cfg, message in cases:
        with pytest.raises(UserError, match=message):
            chexpert.read(dataclasses.replace(p, data=dataclasses.replace(p.data, chexpert=cfg)))


def test_chexpert_demo_missing_patient_and_empty_file(tmp_path, cx):
    root, demo = cx
    d = pd.read_csv(demo, dtype=str, keep_default_na=False)
    d.iloc[1:].to_csv(demo, index=False)
    with pytest.raises(
        UserError, match=r"1 patient\(s\) of the metadata have no row.*patient00001"
    ):
        chexpert.read(chexpert_params(root, demo))
    (root / "train.csv").write_text("")
    with pytest.raises(UserError, match="empty file"):
        chexpert.read(chexpert_params(root, demo))


def test_chexpert_unknown_sex_and_old_age_are_counted_not_kept(tmp_path, cx):
    root, demo = cx
    _edit_csv(root / "train.csv", 0, "Sex", "Unknown")
    _edit_csv(root / "train.csv", 2, "Age", "105")  # outside age_bins [0, 60, 100)
    loaded = chexpert.read(chexpert_params(root, demo))
    assert loaded.source["excluded"]["sex_unknown"] == 1
    assert loaded.source["excluded"]["age_outside_bins"] == 1
    assert len(loaded.frame) == 86 - 2


# ---- MIMIC fixture ---------------------------------------------------------------------------


def write_mimic(tmp: Path, n=30, seed=0) -> tuple[Path, Path]:
    """n subjects, 2 studies each, one PA/AP image + one LATERAL per study; gzipped as shipped."""
    rng = np.random.default_rng(seed)
    root, iv = tmp / "mimic-cxr-jpg", tmp / "mimiciv" / "hosp"
    root.mkdir(parents=True)
    iv.mkdir(parents=True)
    meta, lab, split, pats, adm = [], [], [], [], []
    for k in range(n):
        sid = 10000000 + k * 1111
        which = ("train", "validate", "test")[k % 3] if k >= 3 else ("train", "validate", "test")[k]
        pats.append(
            {
                "subject_id": sid,
                "gender": "F" if k % 2 else "M",
                "anchor_age": 30 + k,
                "anchor_year": 2150,
                "anchor_year_group": "2011 - 2013",
                "dod": "",
            }
        )
        races = [
            ["WHITE", "WHITE - RUSSIAN"],
            ["BLACK/AFRICAN AMERICAN"],
            ["ASIAN - CHINESE", "UNKNOWN"],
            ["WHITE", "ASIAN"],
            ["UNABLE TO OBTAIN"],
            ["HISPANIC/LATINO - PUERTO RICAN"],
            ["AMERICAN INDIAN/ALASKA NATIVE"],
        ][k % 7]
        for j, race in enumerate(races):
            adm.append(
                {
                    "subject_id": sid,
                    "hadm_id": 20000000 + 10 * k + j,
                    "admittime": f"215{j}-01-0{j + 1} 10:00:00",
                    "insurance": ["Medicare", "Medicaid", "Other"][(k + j) % 3],
                    "race": race,
                }
            )
        for s in range(2):
            study = 50000000 + k * 10 + s
            lab.append(
                {
                    "subject_id": sid,
                    "study_id": study,
                    **{c: ["1.0", "0.0", "-1.0", ""][rng.integers(4)] for c in sorted(LABELS)},
                }
            )
            for d, view in enumerate(("PA" if k % 2 else "AP", "LATERAL")):
                dicom = f"{k:04d}{s}{d}-a1b2c3d4-e5f6a7b8-c9d0e1f2-0a1b2c3d"
                meta.append(
                    {
                        "dicom_id": dicom,
                        "subject_id": sid,
                        "study_id": study,
                        "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
                        "ViewPosition": view,
                        "Rows": 3056,
                        "Columns": 2544,
                        "StudyDate": f"{2150 + s}0{s + 1}15",
                        "StudyTime": "101010.000",
                    }
                )
                split.append(
                    {"dicom_id": dicom, "study_id": study, "subject_id": sid, "split": which}
                )
    for name, rows, folder in (
        (mimic.META_FILE, meta, root),
        (mimic.LABEL_FILE, lab, root),
        (mimic.SPLIT_FILE, split, root),
        ("patients.csv", pats, iv),
        ("admissions.csv", adm, iv),
    ):
        with gzip.open(folder / f"{name}.gz", "wt") as fh:
            pd.DataFrame(rows).to_csv(fh, index=False)
    return root, iv


def mimic_params(root: Path, iv: Path, **kw):
    m = MimicParams(root=str(root), mimic_iv_dir=str(iv), uncertain="ones", views=("PA", "AP"))
    return base_params(mimic=dataclasses.replace(m, **kw))


@pytest.fixture
def mx(tmp_path):
    return write_mimic(tmp_path)


def test_mimic_prepare_official_split_sensitive_columns(tmp_path, mx):
    root, iv = mx
    m = splits.prepare(mimic_params(root, iv), "mimic-official", tmp_path / "out")
    frames = {
        s: pd.read_parquet(tmp_path / "out" / f"{s}.parquet") for s in ("train", "val", "test")
    }
    assert all(v == 0 for v in m["leakage"]["shared_patients"].values())
    assert m["rows"] == {"train": 20, "val": 20, "test": 20}  # 10 subjects x 2 frontal studies each
    assert m["metadata"]["excluded"]["view"] == 60  # laterals
    assert json.loads(json.dumps(m))  # JSON-clean
    df = pd.concat(frames.values()).set_index("patient_id")
    want = {
        0: "White",
        1: "Black",
        2: "Asian",
        3: "Multiple",
        4: "Unknown",
        5: "Hispanic",
        6: "Other",
    }
    for k, race in want.items():
        assert set(df.loc[[str(10000000 + k * 1111)], "race"]) == {race}
    # insurance of the latest admission; age = anchor_age + study year - anchor_year
    k = 3
    rows = df.loc[[str(10000000 + k * 1111)]].sort_values("study_id")
    assert set(rows["insurance"]) == {["Medicare", "Medicaid", "Other"][(k + 1) % 3]}
    assert rows["age"].tolist() == [30 + k, 30 + k + 1]
    assert set(df["sex"]) == {"M", "F"} and set(df["view"]) == {"PA", "AP"}
    assert df["path"].iloc[0].startswith("files/p10/p10000000/s50000000/")


def test_mimic_uncertain_ignore_gives_nan(tmp_path, mx):
    root, iv = mx
    df = mimic.read(mimic_params(root, iv, uncertain="ignore")).frame
    lab = pd.read_csv(root / f"{mimic.LABEL_FILE}.gz", dtype=str, keep_default_na=False).set_index(
        "study_id"
    )
    for c in LABELS:
        code = lab.loc[df["study_id"].astype(str), c].to_numpy()
        got = df[tables.label_column(c)].to_numpy()
        assert np.isnan(got[code == "-1.0"]).all() and (got[code == ""] == 0).all()


def _edit_gz(path: Path, row: int, col: str, value: str) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if row < 0:
        df = df.drop(columns=[col])
    else:
        df.loc[row, col] = value
    with gzip.open(path, "wt") as fh:
        df.to_csv(fh, index=False)


MIMIC_ERRORS = [
    (mimic.META_FILE, 0, "subject_id", "p10", "row 2, column 'subject_id'"),
    (mimic.META_FILE, 1, "dicom_id", "000000-a1b2c3d4-e5f6a7b8-c9d0e1f2-0a1b2c3d", "duplicate"),
    (mimic.META_FILE, 2, "StudyDate", "2150-01-15", "row 4, column 'StudyDate'"),
    (mimic.META_FILE, -1, "ViewPosition", "", "missing required column 'ViewPosition'"),
    (mimic.LABEL_FILE, 0, "Edema", "uncertain", "row 2, column 'Edema'"),
    (mimic.LABEL_FILE, 1, "study_id", "50000000", "duplicate"),
    (mimic.SPLIT_FILE, 0, "split", "val", "row 2, column 'split'"),
    (mimic.SPLIT_FILE, 0, "split", "test", "more than one split"),
    (mimic.SPLIT_FILE, 0, "dicom_id", "not-in-metadata", "missing from it"),
    (mimic.SPLIT_FILE, 0, "study_id", "50000009", "differ from the metadata"),
    ("patients.csv", 0, "gender", "Male", "row 2, column 'gender'"),
    ("patients.csv", 0, "anchor_age", "-3", "outside 0-120"),
    ("patients.csv", 1, "subject_id", "10000000", "duplicate"),
    ("admissions.csv", 0, "admittime", "soon", "column 'admittime'"),
    ("admissions.csv", -1, "insurance", "", "missing required column 'insurance'"),
    ("admissions.csv", -1, "race", "", "missing required column 'race'"),
]


@pytest.mark.parametrize("fname, row, col, value, message", MIMIC_ERRORS)
def test_mimic_validation_errors_name_file_row_column(
    tmp_path, mx, fname, row, col, value, message
):
    root, iv = mx
    path = (iv if fname in ("patients.csv", "admissions.csv") else root) / f"{fname}.gz"
    _edit_gz(path, row, col, value)
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        splits.prepare(mimic_params(root, iv), "mimic-official", out)
    assert message in str(err.value) and str(path) in str(err.value)
    assert not out.exists()


def test_mimic_file_level_errors_and_exclusions(tmp_path, mx):
    root, iv = mx
    p = mimic_params(root, iv)
    # MIMIC-IV 1.0 names the race column `ethnicity`: read as race.
    adm = pd.read_csv(iv / "admissions.csv.gz", dtype=str, keep_default_na=False)
    with gzip.open(iv / "admissions.csv.gz", "wt") as fh:
        adm.rename(columns={"race": "ethnicity"}).to_csv(fh, index=False)
    assert set(mimic.read(p).frame["race"]) >= {"White", "Black"}
    # A subject absent from patients and a study without labels are dropped and counted.
    pats = pd.read_csv(iv / "patients.csv.gz", dtype=str, keep_default_na=False)
    with gzip.open(iv / "patients.csv.gz", "wt") as fh:
        pats.iloc[1:].to_csv(fh, index=False)
    lab = pd.read_csv(root / f"{mimic.LABEL_FILE}.gz", dtype=str, keep_default_na=False)
    with gzip.open(root / f"{mimic.LABEL_FILE}.gz", "wt") as fh:
        lab[lab["study_id"] != "50000011"].to_csv(fh, index=False)
    ex = mimic.read(p).source["excluded"]
    assert ex["no_patient"] == 2 - 0 and ex["no_labels"] == 1
    (root / f"{mimic.SPLIT_FILE}.gz").unlink()
    with pytest.raises(UserError, match="split table not found"):
        mimic.read(p)
    with pytest.raises(UserError, match="data.mimic.root and data.mimic.mimic_iv_dir"):
        mimic.read(mimic_params(root, iv, mimic_iv_dir=None))


# ---- registry and race in the metrics --------------------------------------------------------


def test_registry_dispatches_every_protocol():
    assert registry.list_datasets() == ["chexpert", "mimic", "nih"]
    for proto in ("nih6x200-paper", "nih6x200-clean", "nih-official"):
        assert registry.for_protocol(proto).name == "nih"
    assert registry.for_protocol("mimic-official").sensitive == (
        "age_group",
        "sex",
        "race",
        "insurance",
    )
    assert "race" in registry.get_dataset("chexpert").sensitive
    with pytest.raises(UserError, match="unknown protocol 'nope'; known: chexpert-patient"):
        registry.for_protocol("nope")
    with pytest.raises(ValueError, match="belongs to nih"):
        registry.register(
            dataclasses.replace(
                registry.get_dataset("mimic"), name="x", protocols=("nih-official",)
            )
        )


def test_race_small_group_gives_nan_and_warning_in_metrics():
    rng = np.random.default_rng(0)
    n = 240
    race = np.array(["White"] * 150 + ["Black"] * 60 + ["Asian"] * 27 + ["Other"] * 3)
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, 0.2, n), 0.01, 0.99)
    df = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "label_idx": y,
        }
    )
    df[prob_columns(("No Finding", "Finding"))[0]] = 1 - p1
    df[prob_columns(("No Finding", "Finding"))[1]] = p1
    df["race"] = race
    ev = evaluate_frame(
        df,
        Settings(
            classes=("No Finding", "Finding"), sensitive=("race",), n_boot=0, min_group_size=5
        ),
    )
    assert ev.metrics["n/race/Other"] == 3
    row = ev.by_group.query("metric == 'macro_f1' and group == 'Other'")
    assert row["value"].isna().all()
    assert math.isfinite(
        ev.by_group.query("metric == 'macro_f1' and group == 'White'")["value"].iloc[0]
    )
    assert any("Other" in w for w in ev.warnings)


def test_params_validate_the_dataset_sections():
    import yaml

    from fairxray.config import ConfigError, parse_params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = parse_params(raw)
    assert p.data.chexpert.uncertain == "ones" and p.data.race.other == "Other"
    assert p.data.race.groups["White"] == ("white",)
    raw["data"]["mimic"]["uncertain"] = "maybe"
    with pytest.raises(ConfigError, match="'data.mimic.uncertain' must be ones, zeros or ignore"):
        parse_params(raw)
    raw["data"]["mimic"]["uncertain"] = "ones"
    raw["data"]["chexpert"]["typo"] = 1
    with pytest.raises(ConfigError, match="unknown key 'data.chexpert.typo'"):
        parse_params(raw)
    del raw["data"]["chexpert"]  # optional sections: a params file without them still loads
    assert parse_params(raw).data.chexpert is None


def test_remaining_mimic_consistency_errors(tmp_path, mx):
    root, iv = mx
    p = mimic_params(root, iv)
    lab = root / f"{mimic.LABEL_FILE}.gz"
    original = lab.read_bytes()
    _edit_gz(lab, 0, "subject_id", "10001111")  # study 50000000 now claims another subject
    with pytest.raises(UserError, match="study 50000000 belongs to another subject"):
        mimic.read(p)
    lab.write_bytes(original)
    split = root / f"{mimic.SPLIT_FILE}.gz"
    df = pd.read_csv(split, dtype=str, keep_default_na=False)
    extra = df.iloc[[0]].assign(dicom_id="ffff-extra")
    with gzip.open(split, "wt") as fh:
        pd.concat([df, extra]).to_csv(fh, index=False)
    with pytest.raises(UserError, match=r"1 image\(s\) not in the metadata, e.g. \['ffff-extra'\]"):
        mimic.read(p)
    with gzip.open(split, "wt") as fh:
        df.to_csv(fh, index=False)
    only_lateral = mimic_params(root, iv, views=("LATERAL",))
    meta = mimic.read(only_lateral).frame
    assert set(meta["view"]) == {"LATERAL"}
    with pytest.raises(UserError, match="no usable images in split"):
        mimic.make_splits(only_lateral, "mimic-official", meta.iloc[:0])


def test_table_level_errors(tmp_path):
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError, match="not a readable CSV"):
        tables.read_table(bad, "x", ["a"])
    header = tmp_path / "header.csv"
    header.write_text("a,b\n")
    with pytest.raises(UserError, match="no data rows"):
        tables.read_table(header, "x", ["a"])
    with pytest.raises(UserError, match="data.race: not set"):
        tables.race_group(pd.Series(["White"]), None)
    two = pd.DataFrame({"patient_id": ["a", "a", "b"]})
    with pytest.raises(UserError, match="too few"):
        tables.patient_split(two, 0.3, 0.3, 0)
    with pytest.raises(UserError, match="sum to less than 1"):
        tables.patient_split(two, 0.6, 0.6, 0)
    with pytest.raises(UserError, match="too few to hold out"):
        tables.carve(pd.DataFrame({"patient_id": ["a"]}), 0.5, 0)


def test_patient_split_is_seeded_sorted_and_sized():
    df = pd.DataFrame({"patient_id": [f"p{i:03d}" for i in range(100) for _ in range(2)]})
    a = tables.patient_split(df, 0.1, 0.2, 7)
    b = tables.patient_split(df.iloc[::-1].reset_index(drop=True), 0.1, 0.2, 7)
    assert {k: v["patient_id"].nunique() for k, v in a.items()} == {
        "train": 70,
        "val": 10,
        "test": 20,
    }
    for k in a:  # file order does not matter
        assert set(a[k]["patient_id"]) == set(b[k]["patient_id"])
    assert not set(a["train"]["patient_id"]) & set(a["test"]["patient_id"])
