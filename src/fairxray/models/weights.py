"""Weight files: presence and sha256 checks, safe reading, strict loading with clear errors.

Only safe formats are read here: safetensors, or ``torch.load(weights_only=True)`` for the plain
pickled state dicts upstream ships. Nothing that needs arbitrary unpickling (GLoRIA's Lightning
checkpoint) is read silently; ``fairxray convert-gloria`` turns it into safetensors first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from fairxray.errors import UserError
from fairxray.hashing import sha256_file
from fairxray.models.spec import ModelSpec, WeightsStatus


def check_files(spec: ModelSpec, folder: Path) -> WeightsStatus:
    problems: list[str] = []
    checked: dict[str, str] = {}
    if not folder.is_dir():
        return WeightsStatus(spec.name, folder, False, False, ["folder does not exist"])
    for fname in spec.weight_files:
        path = folder / fname
        if not path.is_file():
            checked[fname] = "missing"
            problems.append(f"missing {fname}")
            continue
        want = spec.sha256.get(fname, "")
        if not want:
            checked[fname] = "unknown-hash"
            continue
        got = sha256_file(path)
        if got != want:
            checked[fname] = "sha256-mismatch"
            problems.append(f"{fname}: sha256 {got[:12]}... does not match upstream {want[:12]}...")
        else:
            checked[fname] = "ok"
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
    except Exception as exc:  # torch raises UnpicklingError / RuntimeError with long text
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path}: cannot be read safely (weights_only=True): {first}. Files that need "
            "arbitrary unpickling are not loaded; convert them to safetensors first"
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
