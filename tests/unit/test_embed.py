"""encode_cache: order, repeats, batching and preprocessing equal a direct encode."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from fairxray.adapt.store import encode_cache
from fairxray.data.cache import ImageCache
from fairxray.errors import UserError
from fairxray.models import create


def make_cache(path, n=7, size=48, seed=0) -> ImageCache:
    """A complete image cache in the documented layout (data/cache.py)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    np.save(path / "pixels.npy", pixels)
    # Rows deliberately not in id order, so id -> row mapping matters.
    ids = [f"{i:08d}_000.png" for i in range(n)]
    rows = rng.permutation(n)
    pd.DataFrame({"image_id": ids, "row": rows}).to_parquet(path / "index.parquet")
    (path / "manifest.json").write_text(
        json.dumps({"size": size, "source": "synthetic", "complete": True})
    )
    return ImageCache.open(path)


@pytest.fixture
def cache(tmp_path):
    return make_cache(tmp_path / "images")


def test_encode_cache_matches_direct_encoding(cache):
    model = create("toy")
    ids = ["00000003_000.png", "00000000_000.png", "00000003_000.png", "00000006_000.png"]
    px = torch.from_numpy(cache.get(ids))
    with torch.no_grad():
        expected = model.encode_image(model.preprocess(px)).numpy()
    for bs in (1, 2, 100):
        got = encode_cache(model, cache, ids, batch_size=bs)
        assert got.dtype == np.float32 and got.shape == (4, model.spec.embed_dim)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[0], got[2])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    raw = encode_cache(model, cache, ids, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_encode_cache_restores_mode_and_rejects_unknown_ids(cache):
    model = create("toy").train()
    encode_cache(model, cache, ["00000001_000.png"])
    assert model.training
    with pytest.raises(UserError, match="not in the cache"):
        encode_cache(model, cache, ["00000001_000.png", "nope.png"])


def test_encode_cache_empty(cache):
    model = create("toy")
    out = encode_cache(model, cache, [])
    assert out.shape == (0, model.spec.embed_dim)
