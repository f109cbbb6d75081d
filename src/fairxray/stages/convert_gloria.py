"""Convert GLoRIA's Lightning checkpoint (chexpert_resnet50.ckpt) into the safetensors file the registry loads."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from fairxray.config import load_params
from fairxray.errors import UserError

OUT_NAME = "gloria_resnet50.safetensors"
PREFIX = "gloria."

_WARNING = (
    "WARNING: --trust-pickle runs torch.load(weights_only=False) on {path}. Unpickling can "
    "execute arbitrary code from the file. Only do this for a file you downloaded yourself from "
    "the official GLoRIA link; it also needs omegaconf (and maybe pytorch_lightning) importable."
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairxray convert-gloria", description=__doc__)
    p.add_argument("checkpoint", help="path to chexpert_resnet50.ckpt")
    p.add_argument("--params", default="params.yaml")
    p.add_argument(
        "--out", default=None, help=f"output file (default <data.weights_dir>/gloria/{OUT_NAME})"
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="fall back to full unpickling (unsafe) when the safe reader cannot parse the file",
    )
    return p


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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    p = load_params(args.params)
    if args.out is not None:
        dst = Path(args.out)
    elif p.data.weights_dir is not None:
        dst = Path(p.data.weights_dir) / "gloria" / OUT_NAME
    else:
        raise UserError("--out not given and data.weights_dir not set: nowhere to write")
    written = convert(args.checkpoint, dst, args.trust_pickle)
    print(f"wrote {written}")
    return 0
