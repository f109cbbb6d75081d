"""The dataset registry: one :class:`DatasetSpec` per dataset, found by protocol name.

Each dataset module (``fairxray.data.<dataset>``) ends with ``register(DatasetSpec(...))``;
``fairxray.data.splits`` imports every dataset module and registers NIH itself (its protocol
dispatch lives there). ``prepare`` asks :func:`for_protocol` and never branches on dataset names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from fairxray.errors import UserError

if TYPE_CHECKING:
    from fairxray.config import Params


@dataclass(frozen=True)
class Loaded:
    """Validated metadata: one row per usable image, and what the manifest records of the source."""

    frame: pd.DataFrame
    source: dict[str, Any]  # file paths, sha256, row counts, exclusions


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # "nih", "chexpert", "mimic"
    protocols: tuple[str, ...]  # names accepted by `fairxray prepare --protocol`
    sensitive: tuple[str, ...]  # split columns usable as metrics.sensitive
    labels: tuple[str, ...]  # the dataset's findings (multi-hot ``y_<label>`` columns)
    # Params -> validated metadata; raises UserError naming file/row/column before any output.
    read: Callable[[Params], Loaded]
    # (params, protocol, metadata frame) -> ({split: frame}, protocol-specific manifest part)
    make_splits: Callable[[Params, str, pd.DataFrame], tuple[dict[str, pd.DataFrame], dict]]
    # params -> the data params the splits depend on (recorded in the manifest)
    split_params: Callable[[Params], dict[str, Any]]
    # splits -> per-cell counts for the manifest
    cells: Callable[[dict[str, pd.DataFrame]], list[dict]]


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    old = _REGISTRY.get(spec.name)
    if old is not None and old != spec:
        raise ValueError(f"dataset {spec.name!r} is already registered with a different spec")
    taken = {p: d.name for d in _REGISTRY.values() if d.name != spec.name for p in d.protocols}
    clash = [p for p in spec.protocols if p in taken]
    if clash:
        raise ValueError(
            f"dataset {spec.name!r}: protocol {clash[0]!r} belongs to {taken[clash[0]]}"
        )
    _REGISTRY[spec.name] = spec
    return spec


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def get_dataset(name: str) -> DatasetSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"dataset '{name}': unknown; known: {', '.join(sorted(_REGISTRY))}"
        ) from None


def all_protocols() -> list[str]:
    return [p for name in sorted(_REGISTRY) for p in _REGISTRY[name].protocols]


def for_protocol(protocol: str) -> DatasetSpec:
    for spec in _REGISTRY.values():
        if protocol in spec.protocols:
            return spec
    raise UserError(f"unknown protocol '{protocol}'; known: {', '.join(all_protocols())}")
