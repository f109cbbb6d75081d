"""Synthetic X-ray-like images for the demo and tests: deterministic per image id.

Each image is ``background + amplitude * pattern[label] + noise`` on a 0-1 scale, then uint8:

- background: a chest-like scene (body silhouette, two darker lung fields, a bright mediastinum and
  spine, rib shadows), with small per-image shifts drawn from the image id's seed;
- pattern: one per class, placed where that finding appears on a radiograph (a plate-like band for
  atelectasis, an enlarged heart for cardiomegaly, a dense patch for consolidation, perihilar haze for
  edema, a basal fluid level for effusion, a dark apical region for pneumothorax; further classes get
  a blob at a class-specific position);
- amplitude: ``signal * age_signal_scale[age bin] * sex_signal_scale[sex]``. This is the planted,
  documented group effect: with the default ``age_signal_scale: [1.0, 0.45]`` the older group's
  disease patterns are fainter, so a classifier is less accurate for it and the fairness metrics
  downstream have a known gap to find;
- noise: Gaussian, std ``noise``.

Multi-label images (:func:`render_findings`; the ``images`` stage uses them for split rows that
carry NIH's finding columns, ``nih-demo-official`` and ``nih-official``): one pattern per NIH finding
(:data:`FINDING_SHAPES`, the six above plus emphysema, fibrosis, hernia, infiltration, mass, nodule,
pleural thickening and pneumonia, each where it appears on a radiograph), and an image carries the
sum of the patterns of every finding its metadata row lists, none for ``No Finding``, all at the
same amplitude ``signal * age_signal_scale[age bin] * sex_signal_scale[sex]``. The planted effect
is underdiagnosis: the older group's findings are fainter (default scale 0.45), so a classifier
misses them more often there and calls more of its diseased images ``No Finding``; the ``No
Finding`` false-positive rate (Seyyed-Kalantari et al., 2021) is higher in the group with the
smaller factor, by construction. Which findings an image has and its group come from the real
metadata; only the pixels are synthetic. The background, the noise and each finding's position
jitter are drawn in a fixed order from the image id's seed, so adding a finding changes the image
only where that finding's pattern is.

Nothing here resembles patient data; every output built from these images says DEMO.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fairxray.config import SyntheticParams
from fairxray.data.tables import label_column


def image_seed(image_id: str) -> int:
    return int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "little")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size) + 0.5) / size * 2 - 1
    return np.meshgrid(c, c, indexing="ij")  # y (down), x (right) in [-1, 1]


def _ellipse(y, x, cy, cx, ry, rx, soft=0.08):
    d = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
    return 1 / (1 + np.exp(np.clip((d - 1) / soft, -50, 50)))


def _gauss(y, x, cy, cx, sy, sx):
    return np.exp(-(((y - cy) / sy) ** 2 + ((x - cx) / sx) ** 2) / 2)


def background(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Chest-like scene and a mask of the lung fields, both ``[size, size]`` in 0-1."""
    y, x = _grid(size)
    dy, dx = rng.uniform(-0.04, 0.04, 2)
    y, x = y - dy, x - dx
    body = _ellipse(y, x, 0.1, 0, 1.05, 0.85)
    lungs = _ellipse(y, x, -0.05, -0.38, 0.62, 0.26) + _ellipse(y, x, -0.05, 0.38, 0.62, 0.26)
    ribs = 0.5 + 0.5 * np.sin(y * rng.uniform(15, 18) + 0.6 * np.abs(x) * 6)
    spine = _gauss(y, x, 0, 0, 2.0, 0.07)
    img = 0.12 + 0.5 * body - 0.28 * lungs + 0.06 * ribs * lungs + 0.25 * spine * body
    return np.clip(img, 0, 1), np.clip(lungs, 0, 1)


def _effusion(y, x):
    return (
        1
        / (1 + np.exp(np.clip(-(y - 0.4) / 0.04, -50, 50)))
        * (np.abs(x) > 0.12)
        * (np.abs(x) < 0.7)
    )


# One shape per NIH finding on the jittered grid (y down, x right, [-1, 1]), signed, peak about 1.
# The first six are the 6x200 classes' patterns (pattern() below draws them in this order).
FINDING_SHAPES = {
    "Atelectasis": lambda y, x: _gauss(y, x, 0.35, 0.38, 0.05, 0.22),  # plate-like band, right base
    "Cardiomegaly": lambda y, x: (  # enlarged heart
        _ellipse(y, x, 0.3, 0.08, 0.33, 0.42) - _ellipse(y, x, 0.3, 0.08, 0.22, 0.25) * 0.3
    ),
    "Consolidation": lambda y, x: _gauss(y, x, -0.3, -0.4, 0.14, 0.12),  # dense patch, left upper
    "Edema": lambda y, x: (  # perihilar haze, both sides
        _gauss(y, x, 0.0, -0.3, 0.3, 0.14) + _gauss(y, x, 0.0, 0.3, 0.3, 0.14)
    ),
    "Effusion": _effusion,  # basal fluid level, both sides
    "Pneumothorax": lambda y, x: -_ellipse(y, x, -0.45, -0.4, 0.2, 0.22),  # dark apex
    # emphysema: hyperlucent (darker) upper lungs, both sides
    "Emphysema": lambda y, x: (
        -0.7 * (_gauss(y, x, -0.25, -0.4, 0.22, 0.13) + _gauss(y, x, -0.25, 0.4, 0.22, 0.13))
    ),
    "Fibrosis": lambda y, x: (  # reticular texture, right mid zone
        (0.5 + 0.5 * np.sin(y * 24) * np.sin(x * 24)) * _gauss(y, x, 0.05, 0.45, 0.16, 0.12)
    ),
    "Hernia": lambda y, x: _ellipse(y, x, 0.62, -0.05, 0.1, 0.16),  # hiatal: low midline density
    "Infiltration": lambda y, x: (  # patchy haze, left mid zone
        _gauss(y, x, 0.1, -0.45, 0.08, 0.06) + _gauss(y, x, 0.22, -0.33, 0.07, 0.07) * 0.8
    ),
    "Mass": lambda y, x: _ellipse(y, x, -0.2, 0.5, 0.13, 0.13),  # large round opacity, right upper
    "Nodule": lambda y, x: _gauss(y, x, -0.55, 0.25, 0.07, 0.07),  # small round opacity, right apex
    "Pleural_Thickening": lambda y, x: (  # bright rim along both lateral chest walls
        _gauss(y, x, -0.2, -0.7, 0.3, 0.05) + _gauss(y, x, -0.2, 0.7, 0.3, 0.05)
    ),
    "Pneumonia": lambda y, x: _gauss(y, x, 0.3, -0.45, 0.12, 0.13),  # patch, left lower
}
PAPER_SHAPES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumothorax")


def pattern(label_idx: int, n_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The class-dependent finding, signed (negative darkens), peak magnitude about 1."""
    y, x = _grid(size)
    j = rng.uniform(-0.05, 0.05, 2)
    y, x = y - j[0], x - j[1]
    if label_idx < len(PAPER_SHAPES) and n_classes <= len(PAPER_SHAPES):
        return FINDING_SHAPES[PAPER_SHAPES[label_idx]](y, x)
    angle = 2 * np.pi * label_idx / max(n_classes, 1)
    return _gauss(y, x, 0.45 * np.sin(angle), 0.45 * np.cos(angle), 0.12, 0.12)


def amplitude(age_idx: int, sex: str, syn: SyntheticParams) -> float:
    return syn.signal * syn.age_signal_scale[age_idx] * syn.sex_signal_scale.get(sex, 1.0)


def render(
    image_id: str,
    label_idx: int,
    age_idx: int,
    sex: str,
    size: int,
    syn: SyntheticParams,
    n_classes: int = 6,
) -> np.ndarray:
    """uint8 ``[size, size]`` image for one split row; same inputs, same pixels.

    ``label_idx < 0`` (no single label) renders the background only.
    """
    rng = np.random.default_rng(image_seed(image_id))
    img, _ = background(size, rng)
    shape = pattern(max(label_idx, 0), n_classes, size, rng)
    if label_idx >= 0:
        img = img + amplitude(age_idx, sex, syn) * shape
    img = img + rng.normal(0.0, syn.noise, img.shape)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def render_findings(
    image_id: str,
    findings: Sequence[str],
    age_idx: int,
    sex: str,
    size: int,
    syn: SyntheticParams,
) -> np.ndarray:
    """uint8 ``[size, size]`` multi-label image: the background plus, at one amplitude, the
    pattern of each finding in ``findings`` (NIH names; empty = No Finding), plus noise."""
    unknown = sorted(set(findings) - set(FINDING_SHAPES))
    if unknown:
        raise ValueError(f"{image_id}: no synthetic pattern for {', '.join(unknown)}")
    rng = np.random.default_rng(image_seed(image_id))
    img, _ = background(size, rng)
    noise = rng.normal(0.0, syn.noise, img.shape)
    y, x = _grid(size)
    amp = amplitude(age_idx, sex, syn)
    for name, shape in FINDING_SHAPES.items():
        # Drawn for every finding, present or not: one finding's pixels never depend on another's.
        j = rng.uniform(-0.05, 0.05, 2)
        if name in findings:
            img = img + amp * shape(y - j[0], x - j[1])
    return np.round(np.clip(img + noise, 0, 1) * 255).astype(np.uint8)


def row_findings(rows: pd.DataFrame) -> list[tuple[str, ...]] | None:
    """The positive NIH findings of each row (``y_<Finding> == 1``), or None when the rows do not
    carry every NIH finding column (the single-label 6x200 splits, CheXpert, MIMIC)."""
    if not has_findings(rows.columns):
        return None
    positive = rows[[label_column(c) for c in FINDING_SHAPES]].to_numpy() == 1
    names = list(FINDING_SHAPES)
    return [tuple(n for n, hit in zip(names, row, strict=True) if hit) for row in positive]


def has_findings(columns) -> bool:
    """Whether split rows with these columns render as multi-label images."""
    return {label_column(c) for c in FINDING_SHAPES} <= set(columns)
