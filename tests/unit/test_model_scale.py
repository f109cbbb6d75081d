"""`model_scale: tiny`: every registered family builds its tiny random configuration, and the
embed and train stages run on it in-process (no dvc), writing contract-valid outputs that say
they came from a tiny model. The slow test runs the real `fairxray demo` on one new family."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _trainkit import REPO, write_project

from fairxray import paths
from fairxray.config import ConfigError, load_params, parse_params
from fairxray.errors import UserError
from fairxray.models import create, get_spec, list_models

SEED = 77
# A "tiny" model is small: this bounds every family's whole tiny build (the text embedding
# tables keep the full vocabularies; BioViL's ResNet keeps ResNet-50's channel plan).
MAX_TINY_PARAMS = 8_000_000


def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    path = write_project(root, per_class=(4, 2, 2), train_overrides={"epochs": 2})
    return root, path


@pytest.mark.parametrize("name", list_models())
def test_every_model_embeds_zero_shots_and_probes_at_tiny_scale(name, project, monkeypatch):
    from fairxray.adapt.store import embed, read_embeddings
    from fairxray.adapt.train import train
    from fairxray.data.splits import load_splits
    from fairxray.metrics.predictions import prob_columns, read_predictions

    root, path = project
    monkeypatch.chdir(root)
    p = dataclasses.replace(load_params(path), models=(name,), model_scale="tiny")
    tiny = get_spec(name, "tiny")
    assert tiny.scale == "tiny" and "TINY" in tiny.notes and get_spec(name).scale == "full"
    model = create(name, None, "tiny")
    assert model.spec == tiny and tiny.image.size <= 64
    assert sum(t.numel() for t in model.parameters()) < MAX_TINY_PARAMS
    x = model.preprocess(torch.zeros(2, 40, 48, dtype=torch.uint8))
    assert x.shape[-2:] == (tiny.image.size, tiny.image.size)

    man = embed(p, name)
    assert man["model_scale"] == "tiny" and man["embed_dim"] == tiny.embed_dim
    assert json.loads((paths.embeddings(name) / "manifest.json").read_text())["model_scale"] == (
        "tiny"
    )
    frames = load_splits(p.data.protocol)
    feats = read_embeddings(paths.embeddings(name), "train", frames["train"]["image_id"])
    assert feats.shape == (len(frames["train"]), tiny.embed_dim) and np.isfinite(feats).all()

    methods = ["linear_probe"] + (["zero_shot"] if tiny.text_tower else [])
    for method in methods:
        train(p, name, method, [SEED], log=quiet)
        cfg = yaml.safe_load((paths.seed_dir(name, method, SEED) / "config.yaml").read_text())
        assert cfg["model_scale"] == "tiny"
        for split in ("val", "test"):
            df = read_predictions(
                paths.prediction_file(name, method, SEED, split), p.data.classes, p.metrics.sensitive
            )  # validates the predictions contract
            probs = df[prob_columns(p.data.classes)].to_numpy()
            assert len(df) == len(frames[split]) and np.isfinite(probs).all()
            np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    if not tiny.text_tower:
        with pytest.raises(UserError, match="image-only"):
            train(p, name, "zero_shot", [SEED], log=quiet)


def test_tiny_builds_are_random_and_refuse_weights(tmp_path):
    with pytest.raises(UserError, match="model_scale: tiny builds random weights only"):
        create("chexzero", tmp_path, "tiny")
    with pytest.raises(UserError, match="model_scale: must be one of"):
        create("toy", None, "huge")
    with pytest.raises(UserError, match="model_scale: must be one of"):
        get_spec("toy", "huge")
    # Full scale is unchanged by the tiny machinery: same spec object, the published size.
    assert get_spec("rad-dino", "full") is get_spec("rad-dino")
    assert get_spec("rad-dino").image.size == 518 and get_spec("rad-dino", "tiny").image.size == 32
    # pre_size (GLoRIA: 256 -> crop 224) scales with the image.
    g = get_spec("gloria", "tiny").image
    assert g.pre_size == round(256 * g.size / 224) and g.pre_size >= g.size


def _raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_config_model_scale_is_checked():
    assert parse_params(_raw()).model_scale == "full"
    raw = _raw()
    raw["model_scale"] = "tiny"
    assert parse_params(raw).model_scale == "tiny"
    raw["model_scale"] = "small"
    with pytest.raises(ConfigError, match="'model_scale' must be one of"):
        parse_params(raw)
    raw = _raw()
    raw.update(model_scale="tiny")
    raw["data"]["weights_dir"] = "/weights"
    with pytest.raises(ConfigError, match="demo only"):
        parse_params(raw)
    raw = _raw()
    raw.update(model_scale="tiny", profile="paper")
    raw["data"].update(weights_dir="/weights", images_dir="/images")
    with pytest.raises(ConfigError, match="demo only"):
        parse_params(raw)


@pytest.mark.slow
@pytest.mark.heavy  # a whole demo graph; the default suite runs every tiny build in-process
def test_demo_runs_a_new_family_at_tiny_scale(tmp_path):
    """`fairxray demo` with MedSigLIP (448 px, 880M parameters at full size) at tiny scale."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    sets = [
        "models=[medsiglip]",
        "model_scale=tiny",
        "methods=[zero_shot,linear_probe]",
        "mitigations=[]",
        "images.size=32",
        "metrics.n_boot=20",
        "metrics.n_perm=20",
        "data.protocols=[nih6x200-clean]",
        "data.protocol=nih6x200-clean",
    ]
    cmd = [sys.executable, "-m", "fairxray.cli", "demo", "--out", str(tmp_path / "out")]
    for s in sets:
        cmd += ["--set", s]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    reports = list(Path(tmp_path / "out").rglob("reports/report.html"))
    assert reports, "no report written"
    assert "medsiglip" in reports[0].read_text()
    manifests = list(Path(tmp_path / "out").rglob("embeddings/medsiglip/manifest.json"))
    assert manifests and json.loads(manifests[0].read_text())["model_scale"] == "tiny"
