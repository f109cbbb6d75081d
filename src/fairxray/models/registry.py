"""The model registry: one :class:`ModelSpec` per model name, the only place that knows models.

Each family module (``fairxray.models.<family>``) calls :func:`register` for its entries and
``fairxray.models`` imports every family. Callers ask here (``create``, ``get_spec``,
``list_models``, ``weights_status``) and never branch on model names.

Weights live in ``<weights_dir>/<name>/`` with the files named as upstream ships them
(``ModelSpec.weight_files``). ``create(name, None)`` builds the architecture randomly initialised
and offline (tests, the demo); ``create(name, weights_dir)`` checks the files (presence, sha256
where the upstream hash is known) and loads them strictly. ``create(name, None, scale="tiny")``
builds the family's tiny configuration (``ModelSpec.tiny``: the same upstream classes, a few narrow
layers, a small image size), random only; its ``spec`` says ``scale="tiny"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from fairxray.errors import UserError
from fairxray.models.spec import (
    MODEL_SCALES,
    ImageSpec,
    LoraSpec,
    ModelSpec,
    TinySpec,
    WeightsStatus,
)
from fairxray.models.weights import check_files

if TYPE_CHECKING:
    from fairxray.models.base import ClipModel

__all__ = [
    "ImageSpec",
    "LoraSpec",
    "MODEL_SCALES",
    "ModelSpec",
    "TinySpec",
    "WeightsStatus",
    "create",
    "get_spec",
    "list_models",
    "register",
]

_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec``; re-registering the same name with a different spec is a bug."""
    old = _REGISTRY.get(spec.name)
    if old is not None and old != spec:
        raise ValueError(f"model {spec.name!r} is already registered with a different spec")
    if spec.tiny is None:
        raise ValueError(f"{spec.name}: every model needs a tiny build (ModelSpec.tiny)")
    unknown_hash = set(spec.sha256) - set(spec.weight_files)
    if unknown_hash:
        raise ValueError(f"{spec.name}: sha256 given for files not in weight_files: {unknown_hash}")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str, scale: str = "full") -> ModelSpec:
    try:
        spec = _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"model '{name}': unknown; known models: {', '.join(sorted(_REGISTRY))}"
        ) from None
    _check_scale(scale)
    return spec.at_scale(scale)


def _check_scale(scale: str) -> None:
    if scale not in MODEL_SCALES:
        raise UserError(f"model_scale: must be one of {MODEL_SCALES}, got {scale!r}")


def weights_folder(name: str, weights_dir: str | Path) -> Path:
    return Path(weights_dir) / name


def weights_status(name: str, weights_dir: str | Path | None) -> WeightsStatus:
    """Are ``<weights_dir>/<name>/``'s files present, and do their sha256 match the manifest?"""
    spec = get_spec(name)
    if weights_dir is None:
        return WeightsStatus(name, None, False, False, ["no weights_dir configured"])
    folder = weights_folder(name, weights_dir)
    return check_files(spec, folder)


def missing_weights_message(spec: ModelSpec, status: WeightsStatus) -> str:
    return (
        f"{status.folder}: weights for model '{spec.name}' not usable "
        f"({'; '.join(status.problems)}); download from {spec.source} "
        f"(licence: {spec.license}) and place {', '.join(spec.weight_files)} there"
    )


def require_weights(names: Iterable[str], weights_dir: str | Path | None) -> None:
    """One error listing every model whose weights are missing or invalid, before any work."""
    if weights_dir is None:
        raise UserError("data.weights_dir: not set; real models need a weights folder")
    bad = []
    for n in names:
        spec = get_spec(n)
        st = weights_status(n, weights_dir)
        if not st.valid:
            bad.append(missing_weights_message(spec, st))
    if bad:
        raise UserError(" | ".join(bad))


def create(name: str, weights_dir: str | Path | None = None, scale: str = "full") -> ClipModel:
    """Build model ``name``: random and offline when ``weights_dir`` is None, else strictly
    loaded from ``<weights_dir>/<name>/`` after the files are checked. ``scale="tiny"``: the
    family's tiny random build (no weights can be loaded into it)."""
    spec = get_spec(name)
    _check_scale(scale)
    if scale == "tiny":
        if weights_dir is not None:
            raise UserError(
                f"model_scale: tiny builds random weights only; model '{name}' cannot load "
                f"{weights_dir} (unset data.weights_dir or use model_scale: full)"
            )
        return spec.tiny.build(spec.at_scale("tiny"))
    if weights_dir is None:
        return spec.build(None)
    status = weights_status(name, weights_dir)
    if not status.valid:
        raise UserError(missing_weights_message(spec, status))
    return spec.build(status.folder)
