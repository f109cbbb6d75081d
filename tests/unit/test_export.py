"""ONNX export: LoRA merge exactness, onnxruntime against PyTorch on real cached images at other
batch sizes than the export's, the exported model against the predictions `train` wrote (an
independent code path: encode_cache / fit's evaluation), and a parity failure that writes
nothing."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from fairxray import paths
from fairxray.config import load_params
from fairxray.errors import UserError
from fairxray.export.onnx import build_probs_model, choose_seed, export, merge_lora, ort_probs
from fairxray.metrics.predictions import prob_columns

PARITY = 8


def test_merge_lora_is_exact_and_leaves_plain_layers():
    from peft.tuners.tuners_utils import BaseTunerLayer

    from fairxray.adapt.lora import add_lora, lora_parameters
    from fairxray.models import create

    vision = add_lora(create("toy").vision, ("conv1", "conv2", "proj"), rank=4, alpha=8, dropout=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for prm in lora_parameters(vision).values():
            # peft starts lora_B at zero; a non-zero update makes the merge check meaningful.
            prm.copy_(torch.randn(prm.shape, generator=g) * 0.2)
    vision.eval()
    x = torch.randn(5, 3, 32, 32, generator=g)
    with torch.no_grad():
        before = vision(x)
        assert merge_lora(vision) == 3
        after = vision(x)
    assert not any(isinstance(m, BaseTunerLayer) for m in vision.modules())
    assert not any("lora_" in k for k in vision.state_dict())
    assert torch.allclose(before, after, atol=1e-5)
    assert not torch.allclose(before, create("toy").vision.eval()(x), atol=1e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny project with zero_shot, linear_probe and lora trained (CPU, seed 77)."""
    from _trainkit import write_project

    from fairxray.adapt.store import embed
    from fairxray.adapt.train import train

    root = tmp_path_factory.mktemp("export")
    path = write_project(root)
    old = os.getcwd()
    os.chdir(root)
    try:
        p = load_params(path)
        p = dataclasses.replace(p, export=dataclasses.replace(p.export, parity_images=PARITY))
        embed(p, "toy")
        for method in ("zero_shot", "linear_probe", "lora"):
            train(p, "toy", method, list(p.seeds), log=lambda _m: None)
    finally:
        os.chdir(old)
    return root, p


@pytest.fixture
def project(trained, monkeypatch):
    root, p = trained
    monkeypatch.chdir(root)
    return p


def _val_pixels(p, start: int, stop: int):
    from fairxray.data.cache import ImageCache
    from fairxray.data.splits import load_splits

    val = load_splits(p.data.protocol)["val"]
    ids = list(dict.fromkeys(val["image_id"].astype(str)))[start:stop]
    return ids, ImageCache.open(paths.images(p.data.protocol)).get(ids)


@pytest.mark.parametrize("method", ["lora", "linear_probe", "zero_shot"])
def test_export_matches_torch_and_train_predictions(project, method):
    import onnx

    p = project
    rep = export(p, "toy", method, log=lambda _m: None)
    out = paths.onnx("toy", method)
    onnx.checker.check_model(str(out), full_check=True)
    saved = yaml.safe_load(out.with_name("onnx.json").read_text())
    assert saved["parity"]["max_abs_diff"] <= p.export.atol and saved["seed"] == p.seeds[0]
    if method == "lora":
        assert rep["lora_layers_merged"] == 3 and rep["merge_max_abs_diff"] < 1e-5

    # Images the parity check did not use, at a batch size it did not use.
    ids, px = _val_pixels(p, PARITY, PARITY + 3)
    assert len(ids) == 3
    module, info = build_probs_model("toy", method, p.seeds[0], p.data.classes)
    x = info["preprocess"](torch.from_numpy(px)).float().numpy()
    got = ort_probs(out, x)
    assert got.shape == (3, len(p.data.classes))
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)

    # Independent reference: the val predictions `train` wrote with its own code path.
    pred = pd.read_parquet(paths.prediction_file("toy", method, p.seeds[0], "val"))
    ref = (
        pred.drop_duplicates("image_id")
        .set_index("image_id")
        .loc[ids, prob_columns(p.data.classes)]
    )
    np.testing.assert_allclose(got, ref.to_numpy(), atol=1e-5)
    assert rep["predictions_check"]["max_abs_diff"] < 1e-5


def test_parity_failure_writes_nothing(project, monkeypatch):
    import fairxray.export.onnx as ex

    out = paths.onnx("toy", "lora")
    out.unlink(missing_ok=True)
    out.with_name("onnx.json").unlink(missing_ok=True)
    real = ex.ort_probs
    monkeypatch.setattr(ex, "ort_probs", lambda path, x: real(path, x) + 1e-3)
    with pytest.raises(UserError, match="differs from PyTorch by 0.001"):
        export(project, "toy", "lora", log=lambda _m: None)
    assert not out.exists() and not out.with_name("onnx.json").exists()
    assert not list(out.parent.glob(".*tmp*"))


def test_seed_choice_is_best_validation_score(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seed, score in ((1, 0.5), (2, 0.7), (3, 0.7)):
        d = paths.seed_dir("toy", "mlp", seed)
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(
            yaml.safe_dump({"best_score": score, "selection": "macro_f1"})
        )
        d = paths.seed_dir("toy", "zero_shot", seed)
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump({"inputs": "none"}))
    assert choose_seed("toy", "mlp", [1, 2, 3])[0] == 2  # 0.7, first on ties
    assert choose_seed("toy", "mlp", [3, 1, 2])[0] == 3
    assert choose_seed("toy", "zero_shot", [3, 1, 2])[0] == 3
    with pytest.raises(UserError, match="seed9"):
        choose_seed("toy", "mlp", [9])


def test_onnx_file_embeds_no_source_paths(tmp_path):
    """The dynamo exporter records stack traces (this checkout's and torch's file paths) in node
    metadata; a moved or re-cloned project must export the same bytes, so none may remain."""
    from fairxray.config import ExportParams
    from fairxray.export.onnx import export_onnx, ort_probs

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 14 * 14, 3)

        def forward(self, image):
            return torch.softmax(self.fc(torch.relu(self.conv(image)).flatten(1)), -1)

    net = Net().eval()
    x = torch.randn(2, 1, 16, 16)
    path = tmp_path / "m.onnx"
    export_onnx(net, x, path, ExportParams(opset=18, exporter="dynamo", atol=1e-4, parity_images=2))
    raw = path.read_bytes()
    src = str(Path(__file__).resolve().parents[2]).encode()
    assert b"site-packages" not in raw and b".py" not in raw and src not in raw
    with torch.no_grad():
        expect = net(x).numpy()
    assert np.abs(ort_probs(path, x.numpy()) - expect).max() < 1e-5  # the graph is intact
