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
from ruamel.yaml.comments import CommentedMap

from fairxray.config import parse_params
from fairxray.errors import UserError

PROFILES_DIR = Path("profiles")


def _yaml() -> YAML:
    """The writer DVC uses for ``dvc exp run -S`` (``dvc.utils.serialize``: ruamel round trip,
    ``default_flow_style=False``): params.yaml is shipped in the style DVC writes, so neither an
    experiment nor ``fairxray profile`` leaves a formatting diff. That style: lists and mappings
    in block style, ``null`` written as an empty value, comments kept."""
    y = YAML()
    y.default_flow_style = False
    return y


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _block(node: Any) -> None:
    """What DVC's merge of ``-S`` values leaves: every list replaced by a plain one (written in
    block style; a comment after it stays with its key), every mapping kept, in block style."""
    if isinstance(node, CommentedMap):
        node.fa.set_block_style()
        for key, value in node.items():
            if isinstance(value, list):
                node[key] = _plain(value)
            else:
                _block(value)


def dvc_style(text: str) -> str:
    """``text`` (a params file) rewritten in DVC's style, values unchanged: a fixed point of
    both ``dvc exp run -S`` and :func:`apply_profile`. Rewritten until it no longer changes (a
    blank line after a list does not survive DVC's rewrite, so it goes in the second pass)."""
    y = _yaml()
    out = text
    for _ in range(4):
        raw = y.load(out)
        _block(raw)
        buf = io.StringIO()
        y.dump(raw, buf)
        new = _align(buf.getvalue())
        if new == out:
            break
        out = new
    if YAML(typ="safe").load(out) != YAML(typ="safe").load(text):
        raise UserError("dvc_style: the rewritten params differ in value (a ruamel bug?)")
    return out


# Mappings a profile replaces whole rather than key by key: a search space is one design, and a
# half-merged one (paper learning rates with demo head widths) would search the wrong grid.
REPLACED_WHOLE = ("tune.space",)


def _merge(base: Any, overlay: dict, where: str = "") -> None:
    """Merge like DVC's ``-S``: mappings key by key, an equal value left as it is (its spelling,
    e.g. ``1.0e-2``, kept), any other value replaced. Inside REPLACED_WHOLE a mapping also loses
    the keys the overlay does not have, and may gain new ones."""
    whole = any(where == r or where.startswith(f"{r}.") for r in REPLACED_WHOLE)
    if whole:
        for key in [k for k in base if k not in overlay]:
            del base[key]
    for key, value in overlay.items():
        here = f"{where}.{key}" if where else key
        if key not in base and not whole:
            raise UserError(f"profile sets '{here}', which params.yaml does not have")
        if key in base and isinstance(value, dict) and isinstance(base[key], dict):
            _merge(base[key], value, here)
        elif key not in base or base[key] != value:
            base[key] = value


COMMENT_COLUMN = 28  # where params.yaml's end-of-line comments start


def _align(text: str) -> str:
    """End-of-line comments at column 28 (or two spaces after a longer line): a value that
    changes length (a path, then null again) does not leave its comment elsewhere. Lines with
    quotes are left alone (a ``#`` may be inside them)."""
    out = []
    for line in text.splitlines(keepends=True):
        body, nl = line.rstrip("\n"), line[len(line.rstrip("\n")) :]
        code, sep, comment = body.partition(" #")
        if (
            sep
            and code.strip()
            and not code.lstrip().startswith("#")
            and not set("'\"#") & set(code)
        ):
            code = code.rstrip()
            pad = max(COMMENT_COLUMN - len(code), 2)
            body = f"{code}{' ' * pad}#{comment}"
        out.append(body + nl)
    return "".join(out)


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


def _overlays(name: str, profiles_dir: Path, y, seen: tuple[str, ...] = ()) -> list[dict]:
    """The overlays of profile ``name``, base first: a profile may start from another with a
    top-level ``extends: <profile>`` (nih-multilabel extends paper)."""
    path = profiles_dir / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
        raise UserError(f"{path}: no such profile (known: {', '.join(known)})")
    if name in seen:
        raise UserError(f"{path}: 'extends' loops ({' -> '.join((*seen, name))})")
    overlay = _plain(y.load(path.read_text()) or {})
    base = overlay.pop("extends", None)
    if base is None:
        return [overlay]
    return [*_overlays(str(base), profiles_dir, y, (*seen, name)), overlay]


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
    # Plain lists and mappings, as DVC merges -S values (they come out in block style); the
    # scalars keep the profile's spelling (1.0e-2 stays 1.0e-2).
    for overlay in _overlays(name, profiles_dir, y):
        _merge(raw, overlay)
    for key, value in (sets or {}).items():
        set_key(raw, key, value)
    buf = io.StringIO()
    y.dump(raw, buf)
    text = _align(buf.getvalue())
    parse_params(YAML(typ="safe").load(text), f"{params_path} (after profile {name})")
    tmp = params_path.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    os.replace(tmp, params_path)
