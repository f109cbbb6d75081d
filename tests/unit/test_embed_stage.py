"""The `embed` and `train` stages on a tiny on-disk project: embedding cache layout, repeats
encoded once, predictions in the contract for every method, saved runs that reload, tuned files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from _trainkit import PROTOCOL, write_project

from fairxray import paths
from fairxray.adapt import store as embed_stage
from fairxray.adapt.train import load_trained
from fairxray.cli import main as cli
from fairxray.config import load_params
from fairxray.data.cache import ImageCache
from fairxray.errors import UserError
from fairxray.metrics.predictions import prob_columns, read_predictions
from fairxray.models import create

METHODS = ["zero_shot", "linear_probe", "mlp", "lora", "full_ft"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    params = write_project(tmp_path, train_overrides={"epochs": 2})
    monkeypatch.chdir(tmp_path)
    return load_params(params)


def _frames():
    return {s: pd.read_parquet(paths.split_file(PROTOCOL, s)) for s in paths.SPLITS}


def test_embed_writes_each_image_once_and_expands_repeats(project):
    assert cli(["embed", "--model", "toy"]) == 0
    folder = paths.embeddings("toy")
    man = json.loads((folder / "manifest.json").read_text())
    frames = _frames()
    union = pd.concat(frames.values())["image_id"].unique()
    assert man["complete"] and man["images_encoded"] == len(union)
    assert man["rows_per_split"] == {s: len(f) for s, f in frames.items()}
    assert not list(folder.parent.glob(".*tmp*"))
    model = create("toy").eval()
    cache = ImageCache.open(paths.images(PROTOCOL))
    for split, f in frames.items():
        with np.load(folder / f"{split}.npz") as z:
            assert len(z["image_id"]) == f["image_id"].nunique()  # stored once per split
        ids = f["image_id"].tolist()
        feats = embed_stage.read_embeddings(folder, split, ids)
        assert feats.shape == (len(f), model.spec.embed_dim)
        with torch.no_grad():
            ref = model.encode_image(
                model.preprocess(torch.from_numpy(cache.get(ids))), normalize=False
            )
        np.testing.assert_allclose(feats, ref.numpy(), rtol=1e-5, atol=1e-6)
    train_ids = frames["train"]["image_id"]
    assert train_ids.duplicated().any()  # the fixture has a repeat; it came back expanded
    with pytest.raises(UserError, match="not embedded"):
        embed_stage.read_embeddings(folder, "val", ["99999999_000.png"])


def test_train_grid_writes_contract_predictions(project, capsys):
    assert cli(["embed", "--model", "toy"]) == 0
    for method in METHODS:
        assert cli(["train", "--model", "toy", "--method", method]) == 0
    classes, sensitive = list(project.data.classes), list(project.metrics.sensitive)
    frames = _frames()
    for method in METHODS:
        for seed in project.seeds:
            cfg = yaml.safe_load((paths.seed_dir("toy", method, seed) / "config.yaml").read_text())
            assert cfg["method"] == method and cfg["seed"] == seed
            for split in ("val", "test"):
                df = read_predictions(
                    paths.prediction_file("toy", method, seed, split), classes, sensitive
                )
                f = frames[split]
                assert df["image_id"].tolist() == f["image_id"].tolist()
                assert df["label_idx"].tolist() == f["label_idx"].tolist()
                for col in sensitive:
                    assert df[col].tolist() == f[col].tolist()
            if method == "zero_shot":
                assert not (paths.seed_dir("toy", method, seed) / "weights.safetensors").exists()
                continue
            assert len(cfg["history"]) == project.train.epochs
            assert not paths.checkpoints("toy", method, seed).exists()  # cleared after success
            module, _ = load_trained(paths.seed_dir("toy", method, seed))
            test = pd.read_parquet(paths.prediction_file("toy", method, seed, "test"))
            ids = frames["test"]["image_id"].tolist()
            with torch.no_grad():
                if cfg["inputs"] == "embeddings":
                    x = torch.from_numpy(
                        embed_stage.read_embeddings(paths.embeddings("toy"), "test", ids)
                    )
                else:
                    cache = ImageCache.open(paths.images(PROTOCOL))
                    x = module.preprocess(torch.from_numpy(cache.get(ids)))
                probs = torch.softmax(module(x).double(), dim=1).numpy()
            np.testing.assert_allclose(test[prob_columns(classes)].to_numpy(), probs, atol=1e-5)
    out = capsys.readouterr().out
    assert "train: toy x lora" in out and "embed: model toy" in out


def test_zero_shot_matches_the_zoo(project):
    from fairxray.adapt import zero_shot

    assert cli(["train", "--model", "toy", "--method", "zero_shot", "--seeds", "3"]) == 0
    classes = list(project.data.classes)
    f = _frames()["test"]
    ref = zero_shot.predictions(create("toy"), ImageCache.open(paths.images(PROTOCOL)), f, classes)
    got = pd.read_parquet(paths.prediction_file("toy", "zero_shot", 3, "test"))
    np.testing.assert_allclose(got[prob_columns(classes)], ref[prob_columns(classes)], atol=1e-6)


def test_train_reads_tuned_file(project):
    assert cli(["embed", "--model", "toy"]) == 0
    tuned = paths.tuned("toy", "mlp")
    tuned.parent.mkdir(parents=True)
    tuned.write_text(yaml.safe_dump({"params": {"epochs": 1, "head_hidden": 8}}))
    assert cli(["train", "--model", "toy", "--method", "mlp"]) == 0
    cfg = yaml.safe_load((paths.seed_dir("toy", "mlp", 77) / "config.yaml").read_text())
    assert cfg["hyperparameters_from"] == str(tuned)
    assert cfg["train"]["head_hidden"] == 8 and len(cfg["history"]) == 1


def test_frozen_method_without_embeddings_is_a_user_error(project, capsys):
    assert cli(["train", "--model", "toy", "--method", "linear_probe"]) == 2
    assert "fairxray embed" in capsys.readouterr().err
    assert cli(["train", "--model", "toy", "--method", "bagging"]) == 2
