"""Pickled weights -> safetensors, once, through the tensors-only reader (:mod:`safe_pickle`).

``convert`` (``fairxray convert-gloria``): GLoRIA's Lightning checkpoint (chexpert_resnet50.ckpt)
-> the file the GLoRIA loader reads. ``convert_state_file`` (``fairxray convert``): any pickled
state dict (plain, ``{'state_dict': ...}``/``{'model': ...}`` wrapped, or a TorchScript archive)
-> ``<stem>.safetensors`` beside it, which the loaders then read in place of the pickle.
Files are written atomically with mode 0644: the Docker image (uid 1000) must be able to read a
file another uid converted into its read-only ``/weights``.
"""

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
    """Write ``dst`` (safetensors, keys with ``gloria.`` stripped), atomically, mode 0644."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise UserError(f"{src}: checkpoint not found")
    sd = read_lightning_state_dict(src, trust_pickle)
    out = {}
    for k, v in sd.items():
        key = k[len(PREFIX) :] if k.startswith(PREFIX) else k
        out[key] = v.detach().clone().contiguous()  # safetensors refuses shared storage
    return write_safetensors(
        out, dst, {"source": src.name, "converted_by": "fairxray convert-gloria"}
    )


FILE_MODE = 0o644


def write_safetensors(tensors: dict[str, torch.Tensor], dst: Path, metadata: dict) -> Path:
    """Atomic write (temp file, then rename) with mode 0644 whatever the umask."""
    from safetensors.torch import save_file

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, dst)
    return dst


_WRAPPERS = ("state_dict", "model", "module")


def _find_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict) and not isinstance(obj.get(key), torch.Tensor):
                inner = obj[key]
                if inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                    return dict(inner)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    raise UserError(
        f"{path}: no state dict found (a mapping of names to tensors, at the top or under "
        f"one of {_WRAPPERS})"
    )


def convert_state_file(src: str | Path, dst: str | Path | None = None) -> tuple[Path, int]:
    """Any pickled state-dict file -> safetensors (default ``<stem>.safetensors`` beside it).
    Returns the file written and the number of tensors."""
    from fairxray.models.safe_pickle import Stub, jit_state_dict, read_archive
    from fairxray.models.weights import converted_name

    src = Path(src)
    if not src.is_file():
        raise UserError(f"{src}: file not found")
    if dst is None:
        dst = src.with_name(converted_name(src.name) or f"{src.stem}.safetensors")
    dst = Path(dst)
    if dst.resolve() == src.resolve():
        raise UserError(f"{dst}: the output would overwrite the input")
    obj = read_archive(src)
    sd = jit_state_dict(src) if isinstance(obj, Stub) else _find_state_dict(obj, src)
    # safetensors refuses shared storage; non-float buffers (ints) are kept as they are.
    out = {k: v.detach().clone().contiguous() for k, v in sd.items()}
    meta = {"source": src.name, "converted_by": "fairxray convert"}
    return write_safetensors(out, dst, meta), len(out)
