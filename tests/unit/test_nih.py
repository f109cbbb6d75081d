"""NIH metadata validation and the three split protocols, on the real metadata from the
torchxrayvision wheel (112,120 rows) and on small hand-made files."""

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from fairxray.config import load_params
from fairxray.data import nih
from fairxray.data.splits import design, prepare
from fairxray.errors import UserError
from fairxray.hashing import sha256_file
from fairxray.stages import prepare as prepare_stage

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumothorax")
DESIGN = nih.Design(CLASSES, (0, 60, 100), 50, 5, 10, 42)


@pytest.fixture(scope="module")
def meta():
    return nih.read_metadata(nih.bundled_metadata())


@pytest.fixture(scope="module")
def paper(meta):
    return nih.protocol_paper(meta, DESIGN)


@pytest.fixture(scope="module")
def clean(meta):
    return nih.protocol_clean(meta, DESIGN)


def notebook_reference(csv: Path) -> dict[str, set[tuple[str, int]]]:
    """The authors' nih6x200 notebook re-derived from the notebook's procedure directly on the raw CSV
    columns (no fairxray code): returns (image id, occurrence) multisets per split."""
    df = pd.read_csv(csv)
    labels = df["Finding Labels"].str.split("|")
    df = df[(labels.str.len() == 1) & df["Finding Labels"].isin(CLASSES)].copy()
    df["age_group"] = pd.cut(df["Patient Age"], bins=[0, 60, 100], right=False)
    groups = list(df["age_group"].cat.categories)
    parts = []
    for disease in CLASSES:
        for g in groups:
            for sex in ("M", "F"):
                cell = df[
                    (df["Finding Labels"] == disease)
                    & (df["age_group"] == g)
                    & (df["Patient Gender"] == sex)
                ].copy()
                cell["pid"] = cell["Image Index"].str.split("_").str[0]
                cell = cell.drop_duplicates(subset="pid")
                parts.append(cell.sample(n=50, random_state=42, replace=len(cell) < 50))
    data = pd.concat(parts)
    out = {"train": [], "val": [], "test": []}
    for _, grp in data.groupby(["age_group", "Patient Gender", "Finding Labels"], observed=True):
        tr, rest = train_test_split(grp, test_size=15, random_state=42)
        va, te = train_test_split(rest, test_size=10, random_state=42)
        out["train"] += list(tr["Image Index"])
        out["val"] += list(va["Image Index"])
        out["test"] += list(te["Image Index"])
    return {k: _multiset(v) for k, v in out.items()}


def _multiset(ids) -> set[tuple[str, int]]:
    seen: dict[str, int] = {}
    out = set()
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
        out.add((i, seen[i]))
    return out


def test_bundled_metadata_is_the_full_nih_file(meta):
    assert len(meta) == 112_120
    assert meta["patient_id"].nunique() == 30_805
    assert meta["age"].between(0, 95).all()


def test_paper_protocol_matches_the_notebook(paper):
    ref = notebook_reference(nih.bundled_metadata())
    for split in ("train", "val", "test"):
        assert _multiset(paper[split]["image_id"]) == ref[split], split


def test_paper_protocol_counts_per_cell(paper):
    for split, n in (("train", 35), ("val", 5), ("test", 10)):
        counts = paper[split].groupby(["label", "age_group", "sex"]).size()
        assert len(counts) == 24 and (counts == n).all(), split
    assert {k: len(v) for k, v in paper.items()} == {"train": 840, "val": 120, "test": 240}


def test_paper_protocol_leakage_numbers(paper):
    # Measured on the real metadata (measured once on the bundled table): the authors' sampling with replacement
    # and patients spanning cells leak images and patients across splits.
    leak = nih.leakage(paper)
    assert leak["repeated_image_ids"] == 29
    assert leak["distinct_images"]["train"] == 818 and leak["distinct_images"]["test"] == 239
    assert leak["shared_images"]["train-test"] == 9
    assert leak["shared_patients"]["train-test"] == 23


def test_paper_protocol_is_deterministic(meta, paper):
    again = nih.protocol_paper(meta, DESIGN)
    for k in paper:
        pd.testing.assert_frame_equal(paper[k], again[k])


def test_split_columns_and_groups(paper):
    for df in paper.values():
        assert tuple(df.columns) == nih.SPLIT_COLUMNS
        assert set(df["age_group"]) == {"0-59", "60-99"}
        assert set(df["sex"]) == {"M", "F"}
        assert (df["label"].map(CLASSES.index) == df["label_idx"]).all()
        assert (df["age"] < 60).eq(df["age_group"] == "0-59").all()
        assert (df["image_id"].str[:8] == df["patient_id"]).all()


def test_clean_protocol_has_no_leakage(clean):
    splits, shortfall = clean
    leak = nih.leakage(splits)
    assert leak["repeated_image_ids"] == 0
    assert all(v == 0 for v in leak["shared_images"].values())
    assert all(v == 0 for v in leak["shared_patients"].values())
    allrows = pd.concat(splits.values())
    assert allrows["patient_id"].is_unique  # each patient used once in the whole protocol


def test_clean_protocol_shortfall_comes_out_of_train(clean):
    splits, shortfall = clean
    short = {(r["label"], r["age_group"], r["sex"]): r for r in shortfall if r["shortfall"]}
    # The two cells with fewer than 50 patients (44 and 34, measured on the bundled table).
    assert {k: v["eligible_patients"] for k, v in short.items()} == {
        ("Edema", "60-99", "M"): 44,
        ("Edema", "60-99", "F"): 34,
    }
    for split, n in (("val", 5), ("test", 10)):
        counts = splits[split].groupby(["label", "age_group", "sex"]).size()
        assert len(counts) == 24 and (counts == n).all()
    train = splits["train"].groupby(["label", "age_group", "sex"]).size()
    for cell, n in train.items():
        assert n == 35 - (short[cell]["shortfall"] if cell in short else 0)


def test_clean_protocol_deterministic_and_seed_sensitive(meta, clean):
    again, _ = nih.protocol_clean(meta, DESIGN)
    pd.testing.assert_frame_equal(clean[0]["test"], again["test"])
    other, _ = nih.protocol_clean(meta, nih.Design(CLASSES, (0, 60, 100), 50, 5, 10, 7))
    assert set(other["test"]["image_id"]) != set(clean[0]["test"]["image_id"])


def test_more_than_two_age_groups(meta):
    d = nih.Design(CLASSES[:2], (0, 40, 60, 100), 20, 2, 4, 1)
    splits, _ = nih.protocol_clean(meta, d)
    assert set(splits["test"]["age_group"]) == {"0-39", "40-59", "60-99"}


def test_official_protocol_is_patient_disjoint(meta, tmp_path):
    rng = np.random.default_rng(0)
    patients = rng.choice(meta["patient_id"].unique(), 60, replace=False)
    rows = meta[meta["patient_id"].isin(patients)]
    test_p = set(patients[:15])
    (tmp_path / "train_val_list.txt").write_text(
        "\n".join(rows[~rows["patient_id"].isin(test_p)]["image_id"])
    )
    (tmp_path / "test_list.txt").write_text(
        "\n".join(rows[rows["patient_id"].isin(test_p)]["image_id"])
    )
    s = nih.protocol_official(meta, tmp_path, (0, 60, 100), 0.2, 42, nih.TARGETS)
    assert len(s["train"]) + len(s["val"]) + len(s["test"]) == len(rows)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(s[a]["patient_id"]) & set(s[b]["patient_id"])
    assert s["val"]["patient_id"].nunique() == 9  # round(0.2 * 45 train_val patients)
    labels = [c for c in s["test"].columns if c.startswith("y_")]
    assert len(labels) == 15 and labels[-1] == "y_No_Finding"  # 14 findings + No Finding
    multi = s["train"]["label"].str.contains("|", regex=False)
    assert (s["train"].loc[multi, "label_idx"] == -1).all()
    assert (
        s["train"][labels].sum(axis=1) == s["train"]["label"].str.split("|").map(len)
    ).all()


def test_official_protocol_rejects_unknown_ids(meta, tmp_path):
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n99999999_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000002_000.png\n")
    with pytest.raises(
        UserError, match=r"train_val_list\.txt: 1 image id\(s\) not in the metadata"
    ):
        nih.protocol_official(meta, tmp_path, (0, 60, 100), 0.1, 0, nih.TARGETS)


# --- metadata validation: one test per kind of bad input --------------------------------------

HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
)
GOOD = [
    "00000001_000.png,Cardiomegaly,0,1,57,M,PA",
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA",
    "00000002_000.png,No Finding,0,2,81,F,AP",
]


def write_csv(tmp_path, rows, header=HEADER, gz=False) -> Path:
    text = header + "\n".join(rows) + "\n"
    if gz:
        p = tmp_path / "meta.csv.gz"
        p.write_bytes(gzip.compress(text.encode()))
    else:
        p = tmp_path / "meta.csv"
        p.write_text(text)
    return p


def test_good_metadata_plain_and_gzip(tmp_path):
    for gz in (False, True):
        m = nih.read_metadata(write_csv(tmp_path, GOOD, gz=gz))
        assert list(m["image_id"]) == ["00000001_000.png", "00000001_001.png", "00000002_000.png"]
        assert list(m["row"]) == [2, 3, 4]


@pytest.mark.parametrize(
    "row,pattern",
    [
        (
            "00000003_000.png,Edema,0,3,sixty,F,PA",
            r"row 5, column 'Patient Age': 'sixty' is not an integer age",
        ),
        (
            "00000003_000.png,Edema,0,3,412,F,PA",
            r"row 5, column 'Patient Age': 412 is outside 0-120 years",
        ),
        (
            "00000003_000.png,Edema,0,3,41,X,PA",
            r"row 5, column 'Patient Gender': 'X' is not a sex code",
        ),
        (
            "3_0.png,Edema,0,3,41,F,PA",
            r"row 5, column 'Image Index': '3_0.png' is not an NIH image id",
        ),
        (
            "00000001_000.png,Edema,0,1,41,M,PA",
            r"row 5, column 'Image Index': duplicate image id 00000001_000.png \(first on row 2\)",
        ),
        (
            "00000003_000.png,Edema,0,4,41,F,PA",
            r"row 5, column 'Patient ID': 4 differs from the patient in image id",
        ),
        (
            "00000003_000.png,Edema|Flu,0,3,41,F,PA",
            r"row 5, column 'Finding Labels': 'Edema\|Flu' has labels outside",
        ),
        (
            "00000003_000.png,Edema,0,abc,41,F,PA",
            r"row 5, column 'Patient ID': 'abc' is not a non-negative integer",
        ),
        ("00000003_000.png,Edema,0,3,41,F,", r"row 5, column 'View Position': empty view position"),
    ],
)
def test_bad_rows_are_named(tmp_path, row, pattern):
    with pytest.raises(nih.MetadataError, match=pattern):
        nih.read_metadata(write_csv(tmp_path, GOOD + [row]))


def test_missing_column(tmp_path):
    header = HEADER.replace("Patient Gender,", "")
    rows = [",".join(r.split(",")[:5] + r.split(",")[6:]) for r in GOOD]
    with pytest.raises(nih.MetadataError, match="missing required column 'Patient Gender'"):
        nih.read_metadata(write_csv(tmp_path, rows, header=header))


def test_all_problems_reported_at_once(tmp_path):
    bad = GOOD + ["00000003_000.png,Edema,0,3,-4,F,PA", "00000004_000.png,Edema,0,4,50,W,PA"]
    with pytest.raises(nih.MetadataError) as exc:
        nih.read_metadata(write_csv(tmp_path, bad))
    assert len(exc.value.problems) == 2
    assert "row 5" in exc.value.problems[0] and "row 6" in exc.value.problems[1]


def test_not_a_csv(tmp_path):
    p = tmp_path / "meta.csv.gz"
    p.write_bytes(b"\x00\x01 not gzip")
    with pytest.raises(UserError, match=r"meta\.csv\.gz: not a readable CSV"):
        nih.read_metadata(p)
    with pytest.raises(UserError, match="not found"):
        nih.read_metadata(tmp_path / "absent.csv")


def test_prepare_cli_bad_metadata_exits_nonzero_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from fairxray import cli

    csv = write_csv(tmp_path, GOOD + ["00000003_000.png,Edema,0,3,41,Q,PA"])
    params = yaml_params(tmp_path, metadata=str(csv))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["prepare", "--protocol", "nih6x200-clean", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "row 5, column 'Patient Gender'" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()


def yaml_params(tmp_path, **data):
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(data)
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(raw))
    return out


def test_prepare_writes_splits_and_manifest(tmp_path, monkeypatch):
    params = yaml_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert prepare_stage.main(["--protocol", "nih6x200-paper", "--params", str(params)]) == 0
    folder = tmp_path / "data" / "splits" / "nih6x200-paper"
    man = json.loads((folder / "manifest.json").read_text())
    assert man["metadata"]["sha256"] == sha256_file(nih.bundled_metadata())
    assert man["leakage"]["repeated_image_ids"] == 29
    assert man["rows"] == {"train": 840, "val": 120, "test": 240}
    assert sum(c["n"] for c in man["cells"] if c["split"] == "test") == 240
    assert pd.read_parquet(folder / "test.parquet").shape[0] == 240
    assert not list((tmp_path / "data" / "splits").glob("*.tmp"))


def test_design_from_params():
    p = load_params(REPO / "params.yaml")
    assert design(p) == nih.Design(p.data.classes, p.data.age_bins, 50, 5, 10, 42)
    with pytest.raises(UserError, match="unknown protocol"):
        prepare(p, "nih-everything")


# --- prepare refuses what it cannot split (no silent phantom classes or empty splits) --------


def test_misspelled_class_is_an_error_naming_the_params_file(tmp_path, monkeypatch, capsys):
    from fairxray import cli

    classes = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumothorx"]
    params = yaml_params(tmp_path, classes=classes)
    other = params.rename(tmp_path / "other.yaml")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["prepare", "--protocol", "nih6x200-clean", "--params", str(other)]) == 2
    err = capsys.readouterr().err
    assert "other.yaml: 'data.classes' has 'Pneumothorx', not a label of" in err
    assert "Traceback" not in err and not (tmp_path / "data").exists()


def test_tiny_metadata_fails_in_prepare(tmp_path, monkeypatch, capsys):
    from fairxray import cli

    classes = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumothorax"]
    rows = [
        f"{k:08d}_000.png,{c},0,{k},{40 + k},{'MF'[k % 2]},PA" for k, c in enumerate(classes, 1)
    ]
    csv = write_csv(tmp_path, rows)  # 6 rows: one image per class, nowhere near a split
    params = yaml_params(tmp_path, metadata=str(csv))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["prepare", "--protocol", "nih6x200-clean", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "meta.csv: too few rows for protocol nih6x200-clean" in err
    assert "train is empty" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()


def test_split_manifest_has_no_absolute_path(tmp_path, monkeypatch):
    import shutil

    csv = tmp_path / "elsewhere" / "Data_Entry_2017_v2020.csv.gz"
    csv.parent.mkdir()
    shutil.copyfile(nih.bundled_metadata(), csv)
    hashes = []
    for root in ("a", "b"):  # the same project checked out in two places
        proj = tmp_path / root
        proj.mkdir()
        monkeypatch.chdir(proj)
        shutil.copyfile(csv, proj / csv.name)
        # An absolute path, as `fairxray profile paper --metadata` writes it.
        params = yaml_params(proj, metadata=str(proj / csv.name))
        prepare(load_params(params), "nih6x200-clean")
        text = (proj / "data" / "splits" / "nih6x200-clean" / "manifest.json").read_text()
        assert str(tmp_path) not in text
        hashes.append(hashlib.sha256(text.encode()).hexdigest())
    assert hashes[0] == hashes[1]
