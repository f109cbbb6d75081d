"""train.frozen_augment_views: K augmented views of each training image, encoded once by `embed`
beside the plain embeddings; linear_probe / mlp draw one view per image each epoch."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from _trainkit import PROTOCOL, fit_data, train_params, write_project

from fairxray import paths
from fairxray.adapt import store
from fairxray.adapt.fit import fit
from fairxray.cli import main as cli
from fairxray.config import load_params
from fairxray.data.cache import ImageCache
from fairxray.models import create


@pytest.fixture
def project(tmp_path, monkeypatch):
    params = write_project(tmp_path, train_overrides={"epochs": 2, "frozen_augment_views": 3})
    monkeypatch.chdir(tmp_path)
    return load_params(params)


def test_embed_caches_k_augmented_views_reproducibly(project):
    assert cli(["embed", "--model", "toy"]) == 0
    folder = paths.embeddings("toy")
    man = json.loads((folder / "manifest.json").read_text())
    assert man["frozen_augment_views"] == 3 and man["view_seconds"] >= 0
    import pandas as pd

    ids = pd.read_parquet(paths.split_file(PROTOCOL, "train"))["image_id"].tolist()
    views = store.read_views(folder, ids)
    plain = store.read_embeddings(folder, "train", ids)
    assert views.shape == (3, *plain.shape)
    assert not np.allclose(views[0], views[1]) and not np.allclose(views[0], plain)
    # The same seeded augmentation by hand: identical views.
    model = create("toy")
    cache = ImageCache.open(paths.images(PROTOCOL))
    uniq = list(dict.fromkeys(ids))
    ref = store.encode_views(model, cache, uniq, 3, project.train.augment, 7, torch.device("cpu"))
    pos = [uniq.index(i) for i in ids]
    np.testing.assert_allclose(views, ref[:, pos], rtol=1e-5, atol=1e-5)
    assert store.read_views(folder, ids[:2]).shape[:2] == (3, 2)


def test_linear_probe_trains_on_the_views():
    """Plain train features are noise, the views carry the class signal: only a probe that
    trains on the views separates the validation classes."""
    model = create("toy")
    data = fit_data(model, features=True)
    rng = np.random.default_rng(0)
    tr = data.train
    signal = np.stack([tr.features + rng.normal(0, 0.01, tr.features.shape) for _ in range(2)])
    noise = rng.normal(0, tr.features.std(), tr.features.shape).astype(np.float32)
    hp = train_params(epochs=15, lr=1e-2, selection="accuracy")
    with_views = dataclasses.replace(
        data, train=dataclasses.replace(tr, features=noise, feature_views=signal.astype(np.float32))
    )
    without = dataclasses.replace(data, train=dataclasses.replace(tr, features=noise))
    acc_views = fit("linear_probe", with_views, hp, seed=0).best_score
    acc_plain = fit("linear_probe", without, hp, seed=0).best_score
    assert acc_views > acc_plain + 0.2, (acc_views, acc_plain)
