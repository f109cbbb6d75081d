"""Convert GLoRIA's Lightning checkpoint (chexpert_resnet50.ckpt) into the safetensors file the
registry loads, through the tensors-only reader unless the user trusts the pickle."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from fairxray.errors import UserError

OUT_NAME = "gloria_resnet50.safetensors"
PREFIX = "gloria."

_WARNING = (
    "WARNING: --trust-pickle runs torch.load(weights_only=False) on {path}. Unpickling can "
    "execute arbitrary code from the file. Only do this for a file you downloaded yourself from "
    "the official GLoRIA link; it also needs omegaconf (and maybe pytorch_lightning) importable."
)


def read_lightning_state_dict(path: Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """``checkpoint['state_dict']``. By default through the allow-list reader (tensors only,
    every other object an inert stub); with ``trust_pickle`` by ``torch.load`` unrestricted."""
    if trust_pickle:
        print(_WARNING.format(path=path), file=sys.stderr)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    else:
        from fairxray.models.safe_pickle import read_archive

        ckpt = read_archive(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"{path}: not a Lightning checkpoint (no 'state_dict' mapping)")
    sd = ckpt["state_dict"]
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: state_dict entry '{bad[0]}' is not a tensor")
    return dict(sd)


def convert(src: str | Path, dst: str | Path, trust_pickle: bool = False) -> Path:
    """Write ``dst`` (safetensors, keys with ``gloria.`` stripped), atomically."""
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise UserError(f"{src}: checkpoint not found")
    sd = read_lightning_state_dict(src, trust_pickle)
    out = {}
    for k, v in sd.items():
        key = k[len(PREFIX) :] if k.startswith(PREFIX) else k
        out[key] = v.detach().clone().contiguous()  # safetensors refuses shared storage
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    save_file(
        out, str(tmp), metadata={"source": src.name, "converted_by": "fairxray convert-gloria"}
    )
    os.replace(tmp, dst)
    return dst
