"""The uint8 image cache: what the `images` stage writes and everything downstream reads.

Layout of ``data/images/<protocol>/``:

- ``pixels.npy``   uint8 array ``[N, size, size]`` (grayscale, as NIH stores it), memory-mappable;
- ``index.parquet`` columns ``image_id`` and ``row`` (row of ``pixels.npy``);
- ``manifest.json`` ``size``, ``source`` ("nih" or "synthetic"), counts, skipped files, and
  ``complete: true``. It is written last, atomically: a folder without it is not a cache.

Models turn these pixels into their own input (size, channels, normalisation) on the fly, so one
cache serves every model; it is built at the largest size any model needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fairxray.errors import UserError

PIXELS = "pixels.npy"
INDEX = "index.parquet"
MANIFEST = "manifest.json"


def skipped_ids(manifest: dict) -> set[str]:
    """The ids a cache manifest lists as skipped (missing or corrupt files)."""
    return {s["image_id"] for s in manifest.get("skipped", [])}


def read_skipped(path: str | Path) -> set[str]:
    """Skipped ids of the cache in ``path`` without opening its pixels; empty if none is built."""
    man = Path(path) / MANIFEST
    return skipped_ids(json.loads(man.read_text())) if man.exists() else set()


@dataclass
class ImageCache:
    path: Path
    pixels: np.ndarray  # uint8 [N, size, size], memory-mapped read-only
    rows: dict[str, int]
    manifest: dict

    @classmethod
    def open(cls, path: str | Path) -> ImageCache:
        path = Path(path)
        man = path / MANIFEST
        if not man.exists():
            raise UserError(
                f"{path}: no complete image cache here (missing {MANIFEST}); run `fairxray images`"
            )
        manifest = json.loads(man.read_text())
        if not manifest.get("complete"):
            raise UserError(f"{man}: image cache is marked incomplete")
        pixels = np.load(path / PIXELS, mmap_mode="r")
        index = pd.read_parquet(path / INDEX)
        rows = dict(zip(index["image_id"].astype(str), index["row"].astype(int), strict=True))
        if pixels.ndim != 3 or pixels.dtype != np.uint8 or len(rows) != pixels.shape[0]:
            raise UserError(f"{path / PIXELS}: expected uint8 [N, S, S] with N = {len(rows)} rows")
        return cls(path, pixels, rows, manifest)

    @property
    def size(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def is_synthetic(self) -> bool:
        return self.manifest.get("source") == "synthetic"

    @property
    def skipped(self) -> set[str]:
        """Image ids left out under ``images.on_error: skip`` (missing or corrupt files)."""
        return skipped_ids(self.manifest)

    def present(self, image_ids) -> np.ndarray:
        """Boolean mask: which ``image_ids`` have pixels (callers drop skipped images' rows)."""
        return np.fromiter((str(i) in self.rows for i in image_ids), dtype=bool)

    def rows_for(self, image_ids) -> np.ndarray:
        """Row numbers for ``image_ids`` (repeats allowed); a clear error names absent ids."""
        ids = [str(i) for i in image_ids]
        missing = [i for i in ids if i not in self.rows]
        if missing:
            raise UserError(
                f"{self.path}: {len(missing)} image id(s) not in the cache, e.g. {missing[:3]}"
            )
        return np.fromiter((self.rows[i] for i in ids), dtype=np.int64, count=len(ids))

    def get(self, image_ids) -> np.ndarray:
        """uint8 ``[B, size, size]`` for ``image_ids``, in that order."""
        return np.asarray(self.pixels[self.rows_for(image_ids)])
