"""Profiles: named overlays on ``params.yaml`` (``profiles/<name>.yaml``).

``params.yaml`` is the one file DVC and every stage read. A profile overlay sets the keys that differ
between the demo and the paper's grid; :func:`apply_profile` merges it into ``params.yaml`` keeping
its comments, validates the result with the same typed loader, and writes it atomically. Equivalent
single-key changes work through ``dvc exp run -S key=value``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from fairxray.config import parse_params
from fairxray.errors import UserError

PROFILES_DIR = Path("profiles")


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 120
    # Write None as "null", as params.yaml spells it (ruamel's default is an empty value).
    y.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return y


# Mappings a profile replaces whole rather than key by key: a search space is one design, and a
# half-merged one (paper learning rates with demo head widths) would search the wrong grid.
REPLACED_WHOLE = ("tune.space",)


def _merge(base: Any, overlay: dict, where: str = "") -> None:
    for key, value in overlay.items():
        here = f"{where}.{key}" if where else key
        if key not in base:
            raise UserError(f"profile sets '{here}', which params.yaml does not have")
        if isinstance(value, dict) and isinstance(base[key], dict) and here not in REPLACED_WHOLE:
            _merge(base[key], value, here)
        else:
            base[key] = value


def set_key(raw: Any, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for k in parents:
        if k not in node:
            raise UserError(f"params.yaml has no key '{dotted}'")
        node = node[k]
    if last not in node:
        raise UserError(f"params.yaml has no key '{dotted}'")
    node[last] = value


# The path keys `fairxray profile` sets from its flags, and what each must be.
PATH_KEYS = {"data.images_dir": "folder", "data.weights_dir": "folder", "data.metadata": "file"}


def path_sets(values: dict[str, str | None]) -> dict[str, str]:
    """``{params key: absolute path}`` for the given flags; a path that does not exist (or is not
    the right kind) is an error at once, every such path in one message."""
    out, bad = {}, []
    for key, value in values.items():
        if not value:
            continue
        path = Path(value).resolve()
        kind = PATH_KEYS[key]
        ok = path.is_dir() if kind == "folder" else path.is_file()
        if not ok:
            bad.append(f"{value}: no such {kind} ({key})")
        out[key] = str(path)
    if bad:
        raise UserError("; ".join(bad))
    return out


def apply_profile(
    name: str,
    params_path: Path = Path("params.yaml"),
    sets: dict[str, Any] | None = None,
    profiles_dir: Path = PROFILES_DIR,
) -> None:
    overlay_path = profiles_dir / f"{name}.yaml"
    if not overlay_path.exists():
        known = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
        raise UserError(f"{overlay_path}: no such profile (known: {', '.join(known)})")
    y = _yaml()
    raw = y.load(params_path.read_text())
    overlay = y.load(overlay_path.read_text()) or {}
    _merge(raw, overlay)
    for key, value in (sets or {}).items():
        set_key(raw, key, value)
    buf = io.StringIO()
    y.dump(raw, buf)
    text = buf.getvalue()
    parse_params(YAML(typ="safe").load(text), f"{params_path} (after profile {name})")
    tmp = params_path.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    os.replace(tmp, params_path)
