"""CheXpert (Irvin et al. 2019): metadata, validation, race from CHEXPERT DEMO, two protocols.

Upstream format (CheXpert-v1.0 and CheXpert-v1.0-small): ``train.csv`` and ``valid.csv`` with
columns ``Path`` (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``), ``Sex``
(``Male``/``Female``/``Unknown``), ``Age``, ``Frontal/Lateral``, ``AP/PA`` and the 14 labeller
findings coded ``1.0`` / ``0.0`` / ``-1.0`` (uncertain) / blank (not mentioned). The CHEXPERT
DEMO table (Stanford AIMI, an .xlsx; save it as CSV) has ``PATIENT`` (``patient00001``),
``GENDER``, ``AGE_AT_CXR``, ``PRIMARY_RACE`` and ``ETHNICITY``.

Rows kept: frontal images (``frontal_only``) of patients with a recorded sex and an age inside
``data.age_bins``; the dropped rows are counted in the manifest, never silently. Every other
irregularity is an error naming the file, row and column.

Protocols:

``chexpert-patient``
    ``train.csv`` + ``valid.csv`` pooled, whole patients split train / val / test with
    ``chexpert.val_fraction`` / ``test_fraction`` and ``data.seed`` (the official test set is
    not public with the metadata; FairMedFM and peers split patients the same way).
``chexpert-official``
    ``valid.csv`` (200 radiologist-labelled patients) is the test set; val = whole patients
    carved from ``train.csv`` with ``chexpert.val_fraction``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from fairxray.config import CheXpertParams, Params
from fairxray.data import nih, tables
from fairxray.data.registry import DatasetSpec, Loaded, register
from fairxray.errors import UserError

LABELS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
PROTOCOLS = ("chexpert-patient", "chexpert-official")
FILES = {"train": "train.csv", "valid": "valid.csv"}
REQUIRED = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *LABELS)
DEMO_REQUIRED = ("PATIENT", "PRIMARY_RACE", "ETHNICITY")
PATH_RE = re.compile(
    r"(?:^|/)(train|valid|test)/(patient\d{5})/study\d+/view\d+_(frontal|lateral)\.jpg$"
)
SEX_CODES = {"Male": "M", "Female": "F"}
SEX_UNKNOWN = "Unknown"
VIEWS = ("Frontal", "Lateral")
AP_PA = ("AP", "PA", "LL", "RL", "")
SENSITIVE = ("age_group", "sex", "race", "ethnicity")
COLUMNS = (*nih.SPLIT_COLUMNS, "path", "source", "race", "ethnicity")


def _params(p: Params) -> CheXpertParams:
    if p.data.chexpert is None or p.data.chexpert.root is None:
        raise UserError(
            "data.chexpert.root: not set; CheXpert protocols need the folder with train.csv and "
            "valid.csv (README: CheXpert)"
        )
    return p.data.chexpert


def read_csv(path: Path, split: str, uncertain: str) -> pd.DataFrame:
    """One of train.csv / valid.csv, validated; every row kept (filters come later)."""
    raw = tables.read_table(path, "CheXpert metadata", REQUIRED)
    probs = tables.Problems(path, "CheXpert metadata", len(raw))
    match = raw["Path"].str.extract(PATH_RE)
    bad_path = match[0].isna().to_numpy()
    probs.flag(
        bad_path,
        "Path",
        lambda i: (
            f"{raw['Path'].iloc[i]!r} is not a CheXpert path like "
            "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
        ),
    )
    wrong = ~bad_path & (match[0] != split).to_numpy()
    probs.flag(wrong, "Path", lambda i: f"{raw['Path'].iloc[i]!r} is not under {split}/")
    probs.duplicates(raw["Path"], "Path")
    sex = raw["Sex"]
    bad_sex = ~sex.isin([*SEX_CODES, SEX_UNKNOWN]).to_numpy()
    probs.flag(bad_sex, "Sex", lambda i: f"{sex.iloc[i]!r} is not Male, Female or Unknown")
    age = tables.integers(raw["Age"], probs, "Age", 0, nih.MAX_AGE)
    fl = raw["Frontal/Lateral"]
    probs.flag(
        ~fl.isin(VIEWS).to_numpy(),
        "Frontal/Lateral",
        lambda i: f"{fl.iloc[i]!r} is not Frontal or Lateral",
    )
    view = raw["AP/PA"]
    probs.flag(
        ~view.isin(AP_PA).to_numpy(),
        "AP/PA",
        lambda i: f"{view.iloc[i]!r} is not AP, PA, LL, RL or blank",
    )
    frontal_kind = (fl == "Frontal") & ~view.isin(("AP", "PA"))
    probs.flag(
        frontal_kind.to_numpy(),
        "AP/PA",
        lambda i: f"a Frontal image needs AP or PA, got {view.iloc[i]!r}",
    )
    kind = (fl == "Lateral") & ~view.isin(("LL", "RL", ""))
    probs.flag(kind.to_numpy(), "AP/PA", lambda i: f"a Lateral image cannot be {view.iloc[i]!r}")
    y = tables.labels(raw, LABELS, uncertain, probs)
    probs.raise_if_any()
    out = pd.DataFrame(
        {
            "image_id": raw["Path"].to_numpy(dtype=str),
            "path": raw["Path"].to_numpy(dtype=str),
            "patient_id": match[1].to_numpy(dtype=str),
            "sex": sex.map(SEX_CODES).to_numpy(dtype=object),
            "age": age.astype(int).to_numpy(),
            "frontal": (fl == "Frontal").to_numpy(),
            "view": np.where(view == "", fl, view),
            "source": split,
        }
    )
    return pd.concat([out, y.reset_index(drop=True)], axis=1)


def read_demo(path: Path) -> pd.DataFrame:
    """CHEXPERT DEMO (as CSV): one row per patient, ``patient_id, race_raw, ethnicity``."""
    raw = tables.read_table(path, "CHEXPERT DEMO table", DEMO_REQUIRED)
    probs = tables.Problems(path, "CHEXPERT DEMO table", len(raw))
    bad = ~raw["PATIENT"].str.fullmatch(r"patient\d{5}").to_numpy()
    probs.flag(bad, "PATIENT", lambda i: f"{raw['PATIENT'].iloc[i]!r} is not like patient00001")
    probs.duplicates(raw["PATIENT"], "PATIENT")
    probs.raise_if_any()
    eth = raw["ETHNICITY"].where(raw["ETHNICITY"] != "", "Unknown")
    return pd.DataFrame(
        {"patient_id": raw["PATIENT"], "race_raw": raw["PRIMARY_RACE"], "ethnicity": eth}
    )


def read(p: Params) -> Loaded:
    """train.csv + valid.csv (+ DEMO) -> the validated frame of usable images."""
    cx = _params(p)
    root = Path(cx.root)
    frames, files = [], {}
    for split, name in FILES.items():
        path = root / name
        frames.append(read_csv(path, split, cx.uncertain))
        files[name] = tables.file_record(path, len(frames[-1]))
    df = pd.concat(frames, ignore_index=True)
    both = set(df.loc[df["source"] == "train", "patient_id"]) & set(
        df.loc[df["source"] == "valid", "patient_id"]
    )
    if both:
        raise UserError(
            f"{root}: {len(both)} patient(s) in both train.csv and valid.csv, e.g. {sorted(both)[:3]}"
        )
    if cx.demo_table is not None:
        demo_path = Path(cx.demo_table)
        demo = read_demo(demo_path)
        files[demo_path.name] = tables.file_record(demo_path, len(demo))
        absent = sorted(set(df["patient_id"]) - set(demo["patient_id"]))
        if absent:
            raise UserError(
                f"{demo_path}: {len(absent)} patient(s) of the metadata have no row, e.g. {absent[:3]}"
            )
        df = df.merge(demo, on="patient_id", how="left", validate="many_to_one")
        df["race"] = tables.race_group(df.pop("race_raw"), p.data.race)
    else:
        df["race"] = "Unknown"
        df["ethnicity"] = "Unknown"
    df, excluded = _usable(df, cx.frontal_only, p.data.age_bins)
    return Loaded(df, {"files": files, "rows": int(len(df)), "excluded": excluded})


def _usable(df: pd.DataFrame, frontal_only: bool, age_bins) -> tuple[pd.DataFrame, dict]:
    excluded = {}
    if frontal_only:
        excluded["lateral"] = int((~df["frontal"]).sum())
        df = df[df["frontal"]]
    excluded["sex_unknown"] = int(df["sex"].isna().sum())
    df = df[df["sex"].notna()]
    df = df.assign(age_group=nih.age_group(df["age"], age_bins))
    excluded["age_outside_bins"] = int(df["age_group"].isna().sum())
    df = df[df["age_group"].notna()].drop(columns="frontal")
    df = df.assign(label=tables.positive_labels(df, LABELS), label_idx=-1)
    return df.reset_index(drop=True), excluded


def _columns(df: pd.DataFrame) -> pd.DataFrame:
    return df.loc[:, [*COLUMNS, *(tables.label_column(n) for n in LABELS)]].reset_index(drop=True)


def make_splits(
    p: Params, protocol: str, meta: pd.DataFrame
) -> tuple[dict[str, pd.DataFrame], dict]:
    cx = _params(p)
    if protocol == "chexpert-patient":
        splits = tables.patient_split(meta, cx.val_fraction, cx.test_fraction, p.data.seed)
    elif protocol == "chexpert-official":
        train, val = tables.carve(meta[meta["source"] == "train"], cx.val_fraction, p.data.seed)
        splits = {"train": train, "val": val, "test": meta[meta["source"] == "valid"]}
    else:
        raise UserError(f"unknown CheXpert protocol '{protocol}'; known: {', '.join(PROTOCOLS)}")
    return {k: _columns(v) for k, v in splits.items()}, {"uncertain": cx.uncertain}


def split_params(p: Params) -> dict:
    import dataclasses

    return {
        "age_bins": list(p.data.age_bins),
        "seed": p.data.seed,
        "race": dataclasses.asdict(p.data.race) if p.data.race else None,
        "chexpert": tables.portable_fields(dataclasses.asdict(_params(p)), ('root', 'demo_table')),
    }


def cells(splits: dict[str, pd.DataFrame]) -> list[dict]:
    return tables.group_counts(splits, ("age_group", "sex", "race"))


SPEC = register(
    DatasetSpec(
        name="chexpert",
        protocols=PROTOCOLS,
        sensitive=SENSITIVE,
        labels=LABELS,
        read=read,
        make_splits=make_splits,
        split_params=split_params,
        cells=cells,
    )
)
