"""The images stage for datasets whose tables name each file (CheXpert's `Path`, MIMIC-CXR-JPG's
`files/pXX/pSUBJECT/sSTUDY/DICOM.jpg`): JPG and PNG files at `data.images_dir / path`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairxray.config import load_params
from fairxray.data.cache import ImageCache
from fairxray.data.images import build_cache, decode
from fairxray.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _frames(root: Path, rows: list[tuple[str, str]]) -> dict[str, pd.DataFrame]:
    df = pd.DataFrame(
        {
            "image_id": [i for i, _ in rows],
            "path": [p for _, p in rows],
            "patient_id": [f"p{k}" for k in range(len(rows))],
            "label_idx": -1,
            "age_group": "0-59",
            "sex": "F",
        }
    )
    return {"train": df.iloc[:2], "val": df.iloc[2:3], "test": df.iloc[3:]}


def _write(root: Path, rel: str, size: int, seed: int, fmt: str) -> np.ndarray:
    px = np.random.default_rng(seed).integers(0, 256, (size, size + 8), dtype=np.uint8)
    f = root / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(px).save(f, format=fmt)
    return px


def test_files_named_by_the_path_column_are_decoded(tmp_path):
    p = load_params(REPO / "params.yaml")
    images = tmp_path / "cxr"
    rows = [
        ("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",) * 2,
        ("CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg",) * 2,
        ("d0c5", "files/p10/p10000032/s50414267/d0c5.jpg"),
        ("a1b2", "files/p11/p11000011/s51111111/a1b2.png"),
    ]
    for k, (_, rel) in enumerate(rows):
        _write(images, rel, 96, k, "PNG" if rel.endswith(".png") else "JPEG")
    m = build_cache(
        _frames(images, rows),
        tmp_path / "out",
        tmp_path / "partial",
        p.images,
        images,
        n_classes=2,
        age_groups=["0-59"],
        progress=False,
    )
    assert m["source"] == "files" and m["images"] == 4 and m["skipped"] == []
    cache = ImageCache.open(tmp_path / "out")
    for image_id, rel in rows:
        np.testing.assert_array_equal(cache.get([image_id])[0], decode(images / rel, p.images.size))
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["source"] == "files"


def test_a_missing_file_is_named_and_nothing_is_written(tmp_path):
    p = load_params(REPO / "params.yaml")
    images = tmp_path / "cxr"
    rows = [(f"id{k}", f"files/p1{k}/p1{k}000000/s5/id{k}.jpg") for k in range(4)]
    for k, (_, rel) in enumerate(rows[:3]):
        _write(images, rel, 64, k, "JPEG")
    with pytest.raises(UserError, match=r"1 image\(s\) missing or unreadable.*\n  id3: file not found"):
        build_cache(
            _frames(images, rows),
            tmp_path / "out",
            tmp_path / "partial",
            p.images,
            images,
            n_classes=2,
            age_groups=["0-59"],
            progress=False,
        )
    assert not (tmp_path / "out").exists()


def test_chexpert_trains_and_evaluates_multilabel_with_race(tmp_path, monkeypatch):
    """The CheXpert recipe end to end on fixture tables and JPGs the test writes: prepare, images
    (files at data.images_dir / Path), embed, train (multilabel, the 14 CheXpert labels), and
    evaluate with race as a sensitive attribute, underdiagnosis included."""
    import yaml
    from test_datasets_cxr import write_chexpert

    from fairxray import cli
    from fairxray.data import chexpert
    from fairxray.metrics.predictions import read_predictions

    root, demo = write_chexpert(tmp_path / "cxr", n_train=60, n_valid=10)
    for csv in ("train.csv", "valid.csv"):
        for k, rel in enumerate(pd.read_csv(root / csv)["Path"]):
            _write(tmp_path / "cxr", rel, 48, k, "JPEG")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(
        images_dir=str(tmp_path / "cxr"), protocols=["chexpert-patient"],
        protocol="chexpert-patient", task="multilabel", classes=list(chexpert.LABELS),
    )  # fmt: skip
    raw["data"]["chexpert"].update(root=str(root), demo_table=str(demo))
    raw.update(models=["toy"], methods=["zero_shot", "linear_probe"], mitigations=[])
    raw["images"]["size"] = 32
    raw["train"].update(epochs=2, selection="macro_auroc")
    raw["tune"].update(objective="macro_auroc", n_trials=0)
    raw["metrics"].update(sensitive=["age_group", "sex", "race"], n_boot=20, n_perm=20)
    raw["metrics"]["min_group_size"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    for argv in (
        ["check"],
        ["prepare", "--protocol", "chexpert-patient"],
        ["images", "--protocol", "chexpert-patient"],
        ["embed", "--model", "toy"],
        ["train", "--model", "toy", "--method", "linear_probe"],
        ["evaluate", "--model", "toy", "--method", "linear_probe"],
    ):
        assert cli.main(argv) == 0, argv
    cache = json.loads((tmp_path / "data/images/chexpert-patient/manifest.json").read_text())
    assert cache["source"] == "files" and cache["images"] > 0 and cache["skipped"] == []
    pred = read_predictions(
        tmp_path / "predictions/toy/linear_probe/seed77/test.parquet",
        chexpert.LABELS, ["age_group", "sex", "race"], task="multilabel",
    )  # fmt: skip
    assert {"y_Pleural_Effusion", "prob_Pleural Effusion"} <= set(pred.columns)
    m = json.loads((tmp_path / "metrics/toy/linear_probe/seed77/metrics.json").read_text())
    assert "auroc_macro" in m and "underdiagnosis_gap/race" in m
    assert any(k.startswith("underdiagnosis/race/") for k in m)
