"""The weights inventory (``fairxray models``): one record per registered model with the state
of its folder, the text listing, and local sha256 pins."""

from __future__ import annotations

from pathlib import Path

from fairxray.errors import UserError
from fairxray.models.registry import get_spec, list_models, weights_folder, weights_status
from fairxray.models.weights import pin_files

# checked[file] -> what the listing says; "unknown-hash" is usable but nobody vouches for it.
STATES = {
    "ok": "verified (upstream sha256)",
    "pinned": "verified (local pin)",
    "unknown-hash": "present, unverified (no upstream hash)",
    "missing": "missing",
    "sha256-mismatch": "sha256 MISMATCH",
}


def params_weights_dir(params: str | None) -> str | None:
    """``data.weights_dir`` of ``params`` (default ``params.yaml`` when it exists; outside a
    checkout there is none and the listing shows random-init only)."""
    from fairxray.config import load_params

    if params is None:
        if not Path("params.yaml").is_file():
            return None
        params = "params.yaml"
    return load_params(params).data.weights_dir


def _lora(s) -> dict | str | list:
    if s.lora is None:
        return s.lora_targets if isinstance(s.lora_targets, str) else list(s.lora_targets)
    t = s.lora.targets
    return {
        "targets": t if isinstance(t, str) else list(t),
        "parameters": list(s.lora.parameters),
        "rank": s.lora.rank,
        "scale": s.lora.scale,
        "source": s.lora.source,
    }


def _tiny(s) -> dict:
    """What ``model_scale: tiny`` builds for this model (random only, demo and tests)."""
    t = s.at_scale("tiny")
    return {"config": s.tiny.config, "image_size": t.image.size, "embed_dim": t.embed_dim}


def inventory(weights_dir: str | None) -> list[dict]:
    """One record per registered model, with the state of ``<weights_dir>/<model>/``."""
    out = []
    for name in list_models():
        s = get_spec(name)
        st = weights_status(name, weights_dir)
        out.append(
            {
                "name": name,
                "family": s.family,
                "source": s.source,
                "license": s.license,
                "weight_files": list(s.weight_files),
                "sha256_known": sorted(f for f, h in s.sha256.items() if h),
                "folder": str(st.folder) if st.folder is not None else None,
                "present": st.present,
                "valid": st.valid,
                "checked": st.checked,
                "problems": st.problems,
                "embed_dim": s.embed_dim,
                "feature_dim": s.feature_dim,
                "image_size": s.image.size,
                "in_channels": s.image.in_channels,
                "prompt_style": s.prompt_style,
                "lora": _lora(s),
                "zero_shot": s.text_tower,  # False: image-only, no zero_shot method
                "notes": s.notes,
                "tiny": _tiny(s),
            }
        )
    return out


def _state(r: dict) -> str:
    if not r["present"]:
        return "missing"
    if not r["valid"]:
        return "INVALID"
    if all(v in ("ok", "pinned") for v in r["checked"].values()):
        return "verified"
    return "present, unverified"


def format_inventory(weights_dir: str | None, rows: list[dict]) -> str:
    lines = [f"weights_dir: {weights_dir or '(not set: random init only)'}"]
    for r in rows:
        state = _state(r) if weights_dir else "-"
        lines.append(
            f"{r['name']:<15} {r['family']:<16} {state:<20} dim {r['embed_dim']:<4} {r['license']}"
        )
        folder = r["folder"] or f"<weights_dir>/{r['name']}"
        for f in r["weight_files"]:
            what = STATES.get(r["checked"].get(f, ""), "expected")
            lines.append(f"{'':<15} {folder}/{f}: {what}")
        lines.append(f"{'':<15} source: {r['source']}")
        lines.extend(f"{'':<15} ! {prob}" for prob in r["problems"])
    return "\n".join(lines)


def pin(weights_dir: str | None, names: list[str]) -> list[Path]:
    """Write the local sha256 pin file of each named model (all models with a folder if none)."""
    if weights_dir is None:
        raise UserError("--pin: no weights folder (give --weights-dir or set data.weights_dir)")
    todo = names or [n for n in list_models() if weights_folder(n, weights_dir).is_dir()]
    return [pin_files(get_spec(n), weights_folder(n, weights_dir)) for n in todo]
