"""Tiny on-disk project for the training tests: split files, a uint8 image cache and params.yaml,
in the formats the `prepare` and `images` stages write (docs/architecture.md, data/cache.py).

Pixels come from the demo renderer (``fairxray.data.synthetic.render``) with a strong class
pattern, so a few epochs on a few dozen images make the loss fall.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from fairxray.adapt.fit import FitData, SplitInputs
from fairxray.config import PAPER_CLASSES, load_params
from fairxray.data import synthetic

REPO = Path(__file__).resolve().parents[2]
PROTOCOL = "nih6x200-clean"
SIZE = 32
N_CLASSES = len(PAPER_CLASSES)
GROUPS = ("0-59", "60-99")


def split_frame(split: str, per_class: int, start: int) -> pd.DataFrame:
    rows = []
    k = start
    for c, label in enumerate(PAPER_CLASSES):
        for j in range(per_class):
            age_group = GROUPS[j % 2]
            rows.append(
                {
                    "image_id": f"{k:08d}_000.png",
                    "patient_id": f"{k:08d}",
                    "label": label,
                    "label_idx": c,
                    "age": 30 if age_group == "0-59" else 70,
                    "sex": "MF"[(j // 2) % 2],
                    "age_group": age_group,
                    "view": "PA",
                }
            )
            k += 1
    return pd.DataFrame(rows)


def frames(per_class=(6, 2, 2)) -> dict[str, pd.DataFrame]:
    out, start = {}, 0
    for split, n in zip(("train", "val", "test"), per_class, strict=True):
        out[split] = split_frame(split, n, start)
        start += n * N_CLASSES
    # The paper protocol keeps repeats: one image twice in train and once more in test.
    rep = out["train"].iloc[[0]]
    out["train"] = pd.concat([out["train"], rep], ignore_index=True)
    out["test"] = pd.concat([out["test"], rep], ignore_index=True)
    return out


def render(frame: pd.DataFrame, size: int = SIZE, signal: float = 0.9) -> np.ndarray:
    syn = dataclasses.replace(
        load_params(REPO / "params.yaml").images.synthetic,
        signal=signal,
        noise=0.05,
        age_signal_scale=(1.0, 0.6),
    )
    return np.stack(
        [
            synthetic.render(
                r.image_id, int(r.label_idx), GROUPS.index(r.age_group), r.sex, size, syn
            )
            for r in frame.itertuples()
        ]
    )


def write_project(root: Path, per_class=(6, 2, 2), train_overrides: dict | None = None) -> Path:
    """Write splits, image cache and params.yaml under ``root``; return the params path."""
    fr = frames(per_class)
    sdir = root / "data" / "splits" / PROTOCOL
    sdir.mkdir(parents=True)
    for split, f in fr.items():
        f.to_parquet(sdir / f"{split}.parquet", index=False)
    (sdir / "manifest.json").write_text(json.dumps({"protocol": PROTOCOL}))
    uniq = pd.concat(fr.values()).drop_duplicates("image_id").reset_index(drop=True)
    idir = root / "data" / "images" / PROTOCOL
    idir.mkdir(parents=True)
    np.save(idir / "pixels.npy", render(uniq))
    pd.DataFrame({"image_id": uniq["image_id"], "row": np.arange(len(uniq))}).to_parquet(
        idir / "index.parquet", index=False
    )
    (idir / "manifest.json").write_text(
        json.dumps({"complete": True, "source": "synthetic", "size": SIZE, "images": len(uniq)})
    )
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["protocol"] = PROTOCOL
    raw["models"] = ["toy"]
    raw["train"].update(
        {"epochs": 3, "batch_size": 12, "lr": 3e-3, "head_hidden": 16, "device": "cpu"}
    )
    raw["train"].update(train_overrides or {})
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@functools.lru_cache(maxsize=16)
def _pixels(per_class: tuple, signal: float) -> dict[str, np.ndarray]:
    out = {split: render(f, signal=signal) for split, f in frames(per_class).items()}
    for px in out.values():
        px.flags.writeable = False  # shared between tests
    return out


def fit_data(
    model=None, per_class=(6, 2, 2), signal: float = 0.9, features: bool = False
) -> FitData:
    """In-memory FitData with pixels (and, with ``features``, the model's embeddings)."""
    import torch

    out = {}
    pixels = _pixels(tuple(per_class), signal)
    for split, f in frames(per_class).items():
        px = pixels[split]
        feats = None
        if features:
            with torch.no_grad():
                feats = model.vision(model.preprocess(torch.from_numpy(px.copy()))).numpy()
        out[split] = SplitInputs(f["label_idx"].to_numpy(np.int64), features=feats, pixels=px)
    return FitData(N_CLASSES, out["train"], out["val"], out["test"])


def train_params(**overrides):
    base = load_params(REPO / "params.yaml").train
    small = {"epochs": 3, "batch_size": 12, "lr": 3e-3, "head_hidden": 16, "device": "cpu"}
    return dataclasses.replace(base, **{**small, **overrides})
