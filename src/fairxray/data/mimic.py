"""MIMIC-CXR-JPG 2.0.0 joined with MIMIC-IV: metadata, validation, the official split.

Upstream tables (PhysioNet, credentialed access):

- ``mimic-cxr-2.0.0-metadata.csv.gz``: ``dicom_id, subject_id, study_id, ViewPosition,
  StudyDate`` (``YYYYMMDD``, date-shifted like the MIMIC-IV anchor year), ...
- ``mimic-cxr-2.0.0-chexpert.csv.gz``: ``subject_id, study_id`` and the 14 CheXpert-labeller
  findings coded ``1.0`` / ``0.0`` / ``-1.0`` (uncertain) / blank, one row per study.
- ``mimic-cxr-2.0.0-split.csv.gz``: ``dicom_id, study_id, subject_id, split``
  (``train`` / ``validate`` / ``test``): the official, patient-disjoint split.
- MIMIC-IV ``hosp/patients.csv.gz``: ``subject_id, gender`` (M/F), ``anchor_age``,
  ``anchor_year``; ``hosp/admissions.csv.gz``: ``subject_id, admittime, insurance, race``
  (MIMIC-IV 1.0 calls the race column ``ethnicity``; it is read as race).

Sensitive attributes per image: ``age`` = anchor_age + (study year - anchor_year) (both years
are on the same shifted scale), its ``age_group``; ``sex`` = gender; ``race``: a patient's
admissions mapped to the configured groups (``data.race``), "Unknown" values ignored; one group
left -> that group, none -> ``Unknown``, several -> ``Multiple``; ``insurance``: of the patient's
latest admission (``Unknown`` without one). Rows kept: ``mimic.views``, a study with labels, a
patient in ``patients``, an age inside ``data.age_bins``; dropped rows are counted in the manifest.

Protocol ``mimic-official``: the split table, ``validate`` -> val.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairxray.config import MimicParams, Params
from fairxray.data import nih, tables
from fairxray.data.chexpert import LABELS
from fairxray.data.registry import DatasetSpec, Loaded, register
from fairxray.errors import UserError

PROTOCOLS = ("mimic-official",)
CXR = "mimic-cxr-2.0.0-"
META_FILE, LABEL_FILE, SPLIT_FILE = (f"{CXR}metadata.csv", f"{CXR}chexpert.csv", f"{CXR}split.csv")
META_REQUIRED = ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate")
LABEL_REQUIRED = ("subject_id", "study_id", *LABELS)
SPLIT_REQUIRED = ("dicom_id", "study_id", "subject_id", "split")
PATIENTS_REQUIRED = ("subject_id", "gender", "anchor_age", "anchor_year")
ADMISSIONS_REQUIRED = ("subject_id", "admittime", "insurance")
SPLITS = {"train": "train", "validate": "val", "test": "test"}
SENSITIVE = ("age_group", "sex", "race", "insurance")
COLUMNS = (*nih.SPLIT_COLUMNS, "path", "study_id", "race", "insurance")


def _params(p: Params) -> MimicParams:
    m = p.data.mimic
    if m is None or m.root is None or m.mimic_iv_dir is None:
        raise UserError(
            "data.mimic.root and data.mimic.mimic_iv_dir: both needed for MIMIC-CXR protocols "
            "(README: MIMIC-CXR-JPG)"
        )
    return m


def _ids(raw: pd.DataFrame, probs: tables.Problems, cols) -> dict[str, pd.Series]:
    return {c: tables.integers(raw[c], probs, c, 0) for c in cols}


def read_metadata(path: Path) -> pd.DataFrame:
    raw = tables.read_table(path, "MIMIC-CXR metadata", META_REQUIRED)
    probs = tables.Problems(path, "MIMIC-CXR metadata", len(raw))
    probs.flag((raw["dicom_id"] == "").to_numpy(), "dicom_id", lambda i: "empty dicom_id")
    probs.duplicates(raw["dicom_id"], "dicom_id")
    ids = _ids(raw, probs, ("subject_id", "study_id"))
    date = pd.to_datetime(raw["StudyDate"], format="%Y%m%d", errors="coerce")
    probs.flag(
        date.isna().to_numpy(),
        "StudyDate",
        lambda i: f"{raw['StudyDate'].iloc[i]!r} is not a YYYYMMDD date",
    )
    probs.raise_if_any()
    return pd.DataFrame(
        {
            "image_id": raw["dicom_id"],
            "subject_id": ids["subject_id"].astype(int),
            "study_id": ids["study_id"].astype(int),
            "view": raw["ViewPosition"],
            "study_year": date.dt.year.astype(int),
        }
    )


def read_labels(path: Path, uncertain: str) -> pd.DataFrame:
    raw = tables.read_table(path, "MIMIC-CXR chexpert labels", LABEL_REQUIRED)
    probs = tables.Problems(path, "MIMIC-CXR chexpert labels", len(raw))
    ids = _ids(raw, probs, ("subject_id", "study_id"))
    probs.duplicates(raw["study_id"], "study_id")
    y = tables.labels(raw, LABELS, uncertain, probs)
    probs.raise_if_any()
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "study_id": ids["study_id"].astype(int),
                    "label_subject": ids["subject_id"].astype(int),
                }
            ),
            y,
        ],
        axis=1,
    )


def read_split(path: Path) -> pd.DataFrame:
    raw = tables.read_table(path, "MIMIC-CXR split table", SPLIT_REQUIRED)
    probs = tables.Problems(path, "MIMIC-CXR split table", len(raw))
    probs.duplicates(raw["dicom_id"], "dicom_id")
    ids = _ids(raw, probs, ("subject_id", "study_id"))
    bad = ~raw["split"].isin(list(SPLITS)).to_numpy()
    probs.flag(bad, "split", lambda i: f"{raw['split'].iloc[i]!r} is not train, validate or test")
    probs.raise_if_any()
    split = pd.DataFrame(
        {
            "image_id": raw["dicom_id"],
            "split_subject": ids["subject_id"].astype(int),
            "split_study": ids["study_id"].astype(int),
            "split": raw["split"].map(SPLITS),
        }
    )
    many = split.groupby("split_subject")["split"].nunique()
    if (many > 1).any():
        who = many[many > 1].index[:3].tolist()
        raise UserError(
            f"{path}: {int((many > 1).sum())} subject(s) in more than one split, e.g. {who}; the "
            "official split is patient-disjoint"
        )
    return split


def read_patients(path: Path) -> pd.DataFrame:
    raw = tables.read_table(path, "MIMIC-IV patients table", PATIENTS_REQUIRED)
    probs = tables.Problems(path, "MIMIC-IV patients table", len(raw))
    sid = tables.integers(raw["subject_id"], probs, "subject_id", 0)
    probs.duplicates(raw["subject_id"], "subject_id")
    probs.flag(
        ~raw["gender"].isin(nih.SEXES).to_numpy(),
        "gender",
        lambda i: f"{raw['gender'].iloc[i]!r} is not M or F",
    )
    age = tables.integers(raw["anchor_age"], probs, "anchor_age", 0, nih.MAX_AGE)
    year = tables.integers(raw["anchor_year"], probs, "anchor_year", 1900, 2300)
    probs.raise_if_any()
    return pd.DataFrame(
        {
            "subject_id": sid.astype(int),
            "sex": raw["gender"],
            "anchor_age": age.astype(int),
            "anchor_year": year.astype(int),
        }
    )


def read_admissions(path: Path, race) -> pd.DataFrame:
    """Per subject: ``race`` (see the module docstring) and the latest admission's ``insurance``."""
    raw = tables.read_table(path, "MIMIC-IV admissions table", ADMISSIONS_REQUIRED)
    race_col = (
        "race" if "race" in raw.columns else "ethnicity" if "ethnicity" in raw.columns else None
    )
    if race_col is None:
        raise tables.TableError(
            path,
            "MIMIC-IV admissions table",
            ["missing required column 'race' (or 'ethnicity', MIMIC-IV 1.0)"],
        )
    probs = tables.Problems(path, "MIMIC-IV admissions table", len(raw))
    sid = tables.integers(raw["subject_id"], probs, "subject_id", 0)
    when = pd.to_datetime(raw["admittime"], errors="coerce", format="mixed")
    probs.flag(
        when.isna().to_numpy(),
        "admittime",
        lambda i: f"{raw['admittime'].iloc[i]!r} is not a date-time",
    )
    probs.raise_if_any()
    adm = pd.DataFrame(
        {
            "subject_id": sid.astype(int),
            "when": when,
            "insurance": raw["insurance"].where(raw["insurance"] != "", "Unknown"),
            "group": tables.race_group(raw[race_col], race),
        }
    )
    known = (
        adm[adm["group"] != "Unknown"]
        .groupby("subject_id")["group"]
        .agg(lambda g: g.iloc[0] if g.nunique() == 1 else "Multiple")
    )
    latest = adm.sort_values(["subject_id", "when"]).groupby("subject_id")["insurance"].last()
    out = pd.DataFrame({"insurance": latest})
    out["race"] = known.reindex(out.index).fillna("Unknown")
    out = out.rename_axis("subject_id").reset_index()
    out.attrs["file_rows"] = len(raw)
    return out


def read(p: Params) -> Loaded:
    m = _params(p)
    root, iv = Path(m.root), Path(m.mimic_iv_dir)
    paths = {
        "metadata": tables.find_file(root, META_FILE, "MIMIC-CXR metadata"),
        "chexpert": tables.find_file(root, LABEL_FILE, "MIMIC-CXR chexpert labels"),
        "split": tables.find_file(root, SPLIT_FILE, "MIMIC-CXR split table"),
        "patients": tables.find_file(iv, "patients.csv", "MIMIC-IV patients table"),
        "admissions": tables.find_file(iv, "admissions.csv", "MIMIC-IV admissions table"),
    }
    meta = read_metadata(paths["metadata"])
    labels = read_labels(paths["chexpert"], m.uncertain)
    split = read_split(paths["split"])
    patients = read_patients(paths["patients"])
    adm = read_admissions(paths["admissions"], p.data.race)
    sizes = {
        "metadata": meta,
        "chexpert": labels,
        "split": split,
        "patients": patients,
        "admissions": adm,
    }
    _check_split(meta, split, paths["split"])
    df = meta.merge(split[["image_id", "split"]], on="image_id", how="left", validate="one_to_one")
    df, excluded = _joined(df, labels, patients, adm, m.views, p.data.age_bins, paths["chexpert"])
    files = {
        k: tables.file_record(v, sizes[k].attrs.get("file_rows", len(sizes[k])))
        for k, v in paths.items()
    }
    return Loaded(df, {"files": files, "rows": int(len(df)), "excluded": excluded})


def _check_split(meta: pd.DataFrame, split: pd.DataFrame, path: Path) -> None:
    """Every image in the split table, with the same subject and study as in the metadata."""
    j = meta.merge(split, on="image_id", how="outer", indicator=True)
    absent = j.loc[j["_merge"] == "left_only", "image_id"].tolist()
    extra = j.loc[j["_merge"] == "right_only", "image_id"].tolist()
    both = j[j["_merge"] == "both"]
    differ = both.loc[
        (both["subject_id"] != both["split_subject"]) | (both["study_id"] != both["split_study"]),
        "image_id",
    ].tolist()
    for what, ids in (
        ("metadata image(s) missing from it", absent),
        ("image(s) not in the metadata", extra),
        ("image(s) whose subject_id/study_id differ from the metadata", differ),
    ):
        if ids:
            raise UserError(f"{path}: {len(ids)} {what}, e.g. {ids[:3]}")


def _joined(df, labels, patients, adm, views, age_bins, label_path) -> tuple[pd.DataFrame, dict]:
    excluded = {"view": int((~df["view"].isin(views)).sum())}
    df = df[df["view"].isin(views)]
    df = df.merge(labels, on="study_id", how="left", validate="many_to_one")
    no_label = df["label_subject"].isna()
    excluded["no_labels"] = int(no_label.sum())
    df = df[~no_label]
    wrong = df["label_subject"] != df["subject_id"]
    if wrong.any():
        s = df.loc[wrong, "study_id"].iloc[0]
        raise UserError(f"{label_path}: study {s} belongs to another subject than in the metadata")
    df = df.merge(patients, on="subject_id", how="left", validate="many_to_one")
    excluded["no_patient"] = int(df["sex"].isna().sum())
    df = df[df["sex"].notna()]
    df = df.merge(adm, on="subject_id", how="left", validate="many_to_one")
    df["race"] = df["race"].fillna("Unknown")
    df["insurance"] = df["insurance"].fillna("Unknown")
    age = df["anchor_age"] + df["study_year"] - df["anchor_year"]
    df = df.assign(age=age.astype(int), age_group=nih.age_group(age, age_bins))
    excluded["age_outside_bins"] = int(df["age_group"].isna().sum())
    df = df[df["age_group"].notna()]
    sid = df["subject_id"].astype(str)
    df = df.assign(
        patient_id=sid,
        path="files/p"
        + sid.str[:2]
        + "/p"
        + sid
        + "/s"
        + df["study_id"].astype(str)
        + "/"
        + df["image_id"]
        + ".jpg",
        label=tables.positive_labels(df, LABELS),
        label_idx=-1,
    )
    return df.reset_index(drop=True), excluded


def make_splits(
    p: Params, protocol: str, meta: pd.DataFrame
) -> tuple[dict[str, pd.DataFrame], dict]:
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown MIMIC protocol '{protocol}'; known: {', '.join(PROTOCOLS)}")
    cols = [*COLUMNS, *(tables.label_column(n) for n in LABELS)]
    splits = {
        s: meta.loc[meta["split"] == s, cols].reset_index(drop=True)
        for s in ("train", "val", "test")
    }
    empty = [s for s, df in splits.items() if df.empty]
    if empty:
        raise UserError(f"mimic-official: no usable images in split(s) {empty} after the filters")
    return splits, {"uncertain": _params(p).uncertain}


def split_params(p: Params) -> dict:
    import dataclasses

    return {
        "age_bins": list(p.data.age_bins),
        "race": dataclasses.asdict(p.data.race) if p.data.race else None,
        "mimic": tables.portable_fields(dataclasses.asdict(_params(p)), ('root', 'mimic_iv_dir')),
    }


def cells(splits: dict[str, pd.DataFrame]) -> list[dict]:
    return tables.group_counts(splits, ("age_group", "sex", "race"))


SPEC = register(
    DatasetSpec(
        name="mimic",
        protocols=PROTOCOLS,
        sensitive=SENSITIVE,
        labels=LABELS,
        read=read,
        make_splits=make_splits,
        split_params=split_params,
        cells=cells,
    )
)
