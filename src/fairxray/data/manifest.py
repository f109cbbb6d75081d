"""The data key of studies and MLflow runs: the split manifest's hash. A module of its own so
that `track` identifies the data without importing the split builders (scikit-learn)."""

from __future__ import annotations

import hashlib

from fairxray import paths
from fairxray.errors import UserError


def manifest_sha256(protocol: str) -> str:
    """sha256 of ``data/splits/<protocol>/manifest.json`` (its NIH metadata hash and split
    counts): what the studies, runs and tags identify the data by."""
    path = paths.splits(protocol) / "manifest.json"
    if not path.exists():
        raise UserError(f"{path}: no split manifest; run `fairxray prepare --protocol {protocol}`")
    return hashlib.sha256(path.read_bytes()).hexdigest()
