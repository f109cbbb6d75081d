"""Weights tooling: `fairxray convert` (any pickled state dict -> safetensors, tensors-only
reader), file modes, one-line refusals, commands that work outside a checkout, local sha256 pins."""

from __future__ import annotations

import json
import os
import stat
from collections import OrderedDict

import pytest
import torch

from fairxray import cli
from fairxray.errors import UserError
from fairxray.models import create, get_spec
from fairxray.models.convert import convert_state_file
from fairxray.models.registry import weights_status
from fairxray.models.safe_pickle import read_archive
from fairxray.models.toy import save_toy
from fairxray.models.weights import PIN_FILE, read_state_file


class _Payload:
    """Anything but tensors makes torch's weights-only reader refuse the file."""

    def __init__(self) -> None:
        self.note = "not a tensor"


def _toy_pickle(folder, wrap: str | None = None):
    sd = OrderedDict(create("toy").state_dict())
    obj = {"state_dict": sd, "epoch": 3, "extra": _Payload()} if wrap else sd
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pytorch_model.bin"
    torch.save(obj, path)
    return path, sd


def test_convert_any_pickled_state_dict_with_the_safe_reader(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    path, sd = _toy_pickle(tmp_path / "w", wrap="state_dict")
    with pytest.raises(UserError) as e:
        read_state_file(path)
    msg = str(e.value)
    # One actionable line: no torch advice to unpickle, the converter named with its output.
    assert "\n" not in msg and "weights_only=False" not in msg
    assert f"fairxray convert {path}" in msg and "pytorch_model.safetensors" in msg
    monkeypatch.chdir(tmp_path)  # outside any checkout: no params.yaml needed
    os.umask(0o077)
    assert cli.main(["convert", str(path)]) == 0
    out = tmp_path / "w" / "pytorch_model.safetensors"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    got = load_file(str(out))
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    assert cli.main(["convert", str(tmp_path / "nope.bin")]) == 2


def test_loaders_read_the_converted_file_in_place_of_the_pickle(tmp_path):
    """A PubMedCLIP-style training checkpoint (state_dict + a non-tensor object) is refused by
    the weights-only reader; after `fairxray convert` the CLIP loader reads the conversion."""
    from test_models_families import CLIP_SMALL, _assert_same, _perturb, _small_clip_spec

    from fairxray.models.openclip import build_openai_clip
    from fairxray.models.weights import converted_name, weight_path

    assert converted_name("ViT-B-32.pt") == "ViT-B-32.safetensors"
    assert converted_name("vocab.txt") is None
    spec = _small_clip_spec()
    ref = _perturb(build_openai_clip(spec, CLIP_SMALL, None))
    sd = {f"visual.{k}": v for k, v in ref.vision.state_dict().items()}
    sd.update(ref.text.state_dict())
    (tmp_path / "w").mkdir()
    pickled = tmp_path / "w" / spec.weight_files[0]
    torch.save({"state_dict": sd, "optimizer": _Payload()}, pickled)
    with pytest.raises(UserError, match="fairxray convert"):
        build_openai_clip(spec, CLIP_SMALL, tmp_path / "w")
    convert_state_file(pickled)
    assert weight_path(tmp_path / "w", spec.weight_files[0]).suffix == ".safetensors"
    _assert_same(ref, build_openai_clip(spec, CLIP_SMALL, tmp_path / "w"))


def test_unknown_storage_type_is_an_error_not_uint8(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"z": torch.zeros(2, dtype=torch.complex64)}, path)
    with pytest.raises(UserError, match="ComplexFloatStorage"):
        read_archive(path)
    torch.save({"h": torch.ones(3, dtype=torch.float16)}, path)
    assert read_archive(path)["h"].dtype == torch.float16


def test_convert_gloria_and_models_work_outside_a_checkout(tmp_path, monkeypatch, capsys):
    from test_models_families import _lightning_ckpt  # noqa: PLC0415

    from fairxray.models.gloria import build_gloria

    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "params.yaml").exists()
    ckpt = tmp_path / "chexpert_resnet50.ckpt"
    from test_models_families import _small_bert

    _lightning_ckpt(build_gloria(get_spec("gloria"), _small_bert(), None), ckpt)
    os.umask(0o077)
    assert cli.main(["convert-gloria", str(ckpt), "--out", str(tmp_path / "g.safetensors")]) == 0
    assert stat.S_IMODE((tmp_path / "g.safetensors").stat().st_mode) == 0o644
    assert cli.main(["models", "--weights-dir", str(tmp_path)]) == 0
    assert cli.main(["models"]) == 0
    assert "params file not found" not in capsys.readouterr().err


def test_models_listing_says_unverified_and_pins_verify_later_runs(tmp_path, capsys):
    save_toy(create("toy"), tmp_path / "toy")
    assert cli.main(["models", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    toy = [line for line in out.splitlines() if "toy/model.safetensors" in line]
    assert toy == [
        f"{'':<15} {tmp_path / 'toy'}/model.safetensors: present, unverified (no upstream hash)"
    ]
    assert "clip-vit-b32/ViT-B-32.pt: missing" in out  # expected file names are listed
    assert cli.main(["models", "--weights-dir", str(tmp_path), "--pin", "toy"]) == 0
    pins = json.loads((tmp_path / "toy" / PIN_FILE).read_text())
    assert list(pins) == ["model.safetensors"] and len(pins["model.safetensors"]) == 64
    st = weights_status("toy", tmp_path)
    assert st.valid and st.checked == {"model.safetensors": "pinned"}
    assert "verified (local pin)" in capsys.readouterr().out
    m = create("toy")
    with torch.no_grad():
        m.vision.proj.bias.add_(1.0)
    save_toy(m, tmp_path / "toy")  # the file changed after pinning
    st = weights_status("toy", tmp_path)
    assert not st.valid and f"local pin ({PIN_FILE})" in st.problems[0]
    with pytest.raises(UserError, match="does not match the local pin"):
        create("toy", tmp_path)
