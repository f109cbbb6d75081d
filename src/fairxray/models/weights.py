"""Weight files: presence and sha256 checks, safe reading, strict loading with clear errors.

Only safe formats are read here: safetensors, or ``torch.load(weights_only=True)`` for the plain
pickled state dicts upstream ships. Nothing that needs arbitrary unpickling (GLoRIA's Lightning
checkpoint) is read silently; ``fairxray convert-gloria`` / ``fairxray convert`` turn a pickle into
safetensors once, with the tensors-only reader. A converted ``<stem>.safetensors`` beside an
expected pickle (``pytorch_model.bin`` -> ``pytorch_model.safetensors``) is used in its place.

Hashes: where upstream publishes a sha256 (OpenAI CLIP) it is checked. Elsewhere a user can pin
what they have (``fairxray models --pin``): ``<folder>/fairxray-sha256.json`` records the sha256
of each file, and every later check compares against it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from fairxray.errors import UserError
from fairxray.hashing import sha256_file
from fairxray.models.spec import ModelSpec, WeightsStatus

PIN_FILE = "fairxray-sha256.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def converted_name(fname: str) -> str | None:
    """The safetensors name ``fairxray convert`` gives a pickled weights file (None otherwise)."""
    p = Path(fname)
    return p.with_suffix(".safetensors").name if p.suffix in _PICKLE_SUFFIXES else None


def weight_path(folder: str | Path, fname: str) -> Path:
    """The file a loader reads for expected ``fname``: its safetensors conversion when present."""
    folder = Path(folder)
    conv = converted_name(fname)
    if conv is not None and (folder / conv).is_file():
        return folder / conv
    return folder / fname


def read_pins(folder: Path) -> dict[str, str]:
    path = folder / PIN_FILE
    if not path.is_file():
        return {}
    try:
        pins = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable sha256 pin file ({exc})") from None
    if not isinstance(pins, dict) or not all(isinstance(v, str) for v in pins.values()):
        raise UserError(f"{path}: must map file names to sha256 hex strings")
    return pins


def pin_files(spec: ModelSpec, folder: Path) -> Path:
    """Write ``<folder>/fairxray-sha256.json``: the sha256 of every expected file present."""
    names = [weight_path(folder, f).name for f in spec.weight_files]
    pins = {n: sha256_file(folder / n) for n in names if (folder / n).is_file()}
    if not pins:
        raise UserError(f"{folder}: no weight files of model '{spec.name}' to pin")
    out = folder / PIN_FILE
    try:
        out.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise UserError(f"{out}: cannot write the pin file ({exc.strerror})") from None
    return out


def check_files(spec: ModelSpec, folder: Path) -> WeightsStatus:
    """``checked[file]``: "ok" (upstream sha256), "pinned" (matches the local pin file),
    "unknown-hash" (present, unverified), "missing" or "sha256-mismatch"."""
    problems: list[str] = []
    checked: dict[str, str] = {}
    if not folder.is_dir():
        missing = dict.fromkeys(spec.weight_files, "missing")
        return WeightsStatus(spec.name, folder, False, False, ["folder does not exist"], missing)
    pins = read_pins(folder)
    for fname in spec.weight_files:
        path = weight_path(folder, fname)
        if not path.is_file():
            checked[fname] = "missing"
            problems.append(f"missing {fname}")
            continue
        # The upstream hash is of the upstream file, not of a conversion.
        want = spec.sha256.get(fname, "") if path.name == fname else ""
        source = "upstream"
        if not want and path.name in pins:
            want, source = pins[path.name], f"the local pin ({PIN_FILE})"
        if not want:
            checked[fname] = "unknown-hash"
            continue
        got = sha256_file(path)
        if got != want:
            checked[fname] = "sha256-mismatch"
            problems.append(
                f"{path.name}: sha256 {got[:12]}... does not match {source} {want[:12]}..."
            )
        else:
            checked[fname] = "ok" if source == "upstream" else "pinned"
    present = all(v != "missing" for v in checked.values())
    return WeightsStatus(spec.name, folder, present, present and not problems, problems, checked)


def read_state_file(path: str | Path) -> dict:
    """A state dict (or upstream wrapper dict) from safetensors or a weights-only pickle."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch's text advises weights_only=False: the one thing not to do here
        conv = converted_name(path.name) or f"{path.stem}.safetensors"
        raise UserError(
            f"{path}: holds more than tensors, so it is not loaded; make a safetensors copy "
            f"once with `fairxray convert {path}` (writes {path.with_name(conv)}, used instead)"
        ) from None


def strict_load(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    strip_prefixes: Iterable[str] = (),
    drop: Callable[[str], bool] | None = None,
    rename: Callable[[str], str] | None = None,
) -> None:
    """Map upstream keys onto ``module`` and load them; any missing or unexpected key is an error.

    ``strip_prefixes`` are removed from key starts (first match), ``drop`` discards stale buffers
    (e.g. BERT ``position_ids``) and ``rename`` maps legacy names (e.g. Swin 4.x -> 5.x).
    Tensors are cast to the parameter dtype (OpenAI ships fp16) by ``load_state_dict``'s copy.
    """
    prefixes = tuple(strip_prefixes)
    mapped: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p) :]
                break
        if drop is not None and drop(k):
            continue
        if rename is not None:
            k = rename(k)
        if k in mapped:
            raise UserError(f"{source}: two checkpoint keys map to '{k}'")
        mapped[k] = v
    own = module.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    if missing or unexpected:
        raise UserError(
            f"{source}: checkpoint does not match the {type(module).__name__} architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]})"
        )
    bad_shape = [k for k, v in mapped.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad_shape:
        k = bad_shape[0]
        raise UserError(
            f"{source}: {len(bad_shape)} tensor(s) with the wrong shape, e.g. '{k}' "
            f"{tuple(mapped[k].shape)} vs {tuple(own[k].shape)}"
        )
    module.load_state_dict(mapped, strict=True)
