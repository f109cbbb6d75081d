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

Nothing here resembles patient data; every output built from these images says DEMO.
"""

from __future__ import annotations

import hashlib

import numpy as np

from fairxray.config import SyntheticParams


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


def pattern(label_idx: int, n_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The class-dependent finding, signed (negative darkens), peak magnitude about 1."""
    y, x = _grid(size)
    j = rng.uniform(-0.05, 0.05, 2)
    y, x = y - j[0], x - j[1]
    patterns = (
        lambda: _gauss(y, x, 0.35, 0.38, 0.05, 0.22),  # atelectasis: plate-like band, right base
        lambda: _ellipse(y, x, 0.3, 0.08, 0.33, 0.42) - _ellipse(y, x, 0.3, 0.08, 0.22, 0.25) * 0.3,
        lambda: _gauss(y, x, -0.3, -0.4, 0.14, 0.12),  # consolidation: dense patch, left upper
        lambda: _gauss(y, x, 0.0, -0.3, 0.3, 0.14) + _gauss(y, x, 0.0, 0.3, 0.3, 0.14),  # edema
        lambda: (
            1
            / (1 + np.exp(np.clip(-(y - 0.4) / 0.04, -50, 50)))
            * (np.abs(x) > 0.12)
            * (np.abs(x) < 0.7)
        ),
        lambda: -_ellipse(y, x, -0.45, -0.4, 0.2, 0.22),  # pneumothorax: dark apex
    )
    if label_idx < len(patterns) and n_classes <= len(patterns):
        return patterns[label_idx]()
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
