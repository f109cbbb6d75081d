"""The image-cache build at scale: resume after a stop or a SIGKILL gives the same bytes as one
uninterrupted build and redoes no committed chunk; a crash never publishes a half cache; 16-bit
and RGBA PNGs decode to the values an independent formula gives, through the worker pool; and
benchmarks/image_cache.py runs at a tiny size and reports a resume without rework."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairxray.config import ImagesParams, SyntheticParams
from fairxray.data import images as images_mod
from fairxray.data.cache import INDEX, MANIFEST, PIXELS, ImageCache
from fairxray.errors import UserError

SYN = SyntheticParams(signal=0.3, noise=0.1, age_signal_scale=(1.0, 0.5), sex_signal_scale={})
AGES = ["0-59", "60-99"]
FILES = (PIXELS, INDEX, MANIFEST)


def _params(workers=2, on_error="fail", size=16):
    return ImagesParams(
        size=size, min_source_size=8, on_error=on_error, workers=workers, synthetic=SYN
    )


def _splits(ids):
    n = len(ids)
    df = pd.DataFrame(
        {
            "image_id": ids,
            "patient_id": [i[:8] for i in ids],
            "label_idx": [i % 6 for i in range(n)],
            "age_group": [AGES[i % 2] for i in range(n)],
            "sex": ["M" if i % 3 else "F" for i in range(n)],
        }
    )
    return {
        "train": df.iloc[: n // 2],
        "val": df.iloc[n // 2 : 3 * n // 4],
        "test": df.iloc[3 * n // 4 :],
    }


def _folder(root: Path, n: int, side: int = 32) -> list[str]:
    """``n`` PNGs in NIH's nested layout: 8-bit, with every fifth 16-bit and every seventh RGBA."""
    rng = np.random.default_rng(0)
    ids = [f"{k:08d}_000.png" for k in range(n)]
    for k, v in enumerate(ids):
        path = root / f"images_{k % 3 + 1:03d}" / "images" / v
        path.parent.mkdir(parents=True, exist_ok=True)
        if k % 5 == 0:
            Image.fromarray(rng.integers(0, 65536, (side, side), dtype=np.uint16)).save(path)
        elif k % 7 == 0:
            Image.fromarray(rng.integers(0, 256, (side, side, 4), dtype=np.uint8), "RGBA").save(
                path
            )
        else:
            Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8), "L").save(path)
    return ids


def _build(splits, tmp, name, images_dir, params, on_commit=None):
    return images_mod.build_cache(
        splits, tmp / name, tmp / f"{name}.partial", params, images_dir, 6, AGES, False, on_commit
    )


def _bytes(folder: Path) -> dict[str, bytes]:
    return {f: (folder / f).read_bytes() for f in FILES}


class Stop(Exception):
    pass


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_a_stop_is_byte_identical_and_redoes_no_committed_chunk(
    tmp_path, monkeypatch, workers
):
    monkeypatch.setattr(images_mod, "CHUNK", 3)
    ids = _folder(tmp_path / "nih", 30)
    splits = _splits(ids)
    _build(splits, tmp_path, "fresh", tmp_path / "nih", _params(workers))

    stopped_at = []

    def stop_after_two(done, made):
        if len(stopped_at) == 1:
            raise Stop
        stopped_at.append(done)

    with pytest.raises(Stop):
        _build(splits, tmp_path, "c", tmp_path / "nih", _params(workers), stop_after_two)
    assert not (tmp_path / "c").exists()  # nothing published
    done = np.load(tmp_path / "c.partial" / "done.npy")
    assert 0 < done.sum() < len(ids)
    # What survives the stop is exactly what the commits reported, and it is kept.
    k = int(done.sum())
    log = []
    _build(
        splits, tmp_path, "c", tmp_path / "nih", _params(workers), lambda d, m: log.append((d, m))
    )
    assert log[-1] == (len(ids), len(ids) - k)  # only the rows not committed were decoded
    assert _bytes(tmp_path / "c") == _bytes(tmp_path / "fresh")
    assert not (tmp_path / "c.partial").exists()


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pandas as pd
    from fairxray.config import ImagesParams, SyntheticParams
    from fairxray.data import images
    images.CHUNK = 2
    tmp = Path(sys.argv[1])
    ids = sorted(p.name for p in (tmp / "nih").rglob("*.png"))
    df = pd.DataFrame({"image_id": ids, "label_idx": 0, "age_group": "0-59", "sex": "M"})
    syn = SyntheticParams(0.3, 0.1, (1.0, 0.5), {})
    p = ImagesParams(size=16, min_source_size=8, on_error="fail", workers=2, synthetic=syn)

    def hang(done, made):
        if done >= 6:
            print(done, flush=True)
            time.sleep(600)

    images.build_cache({"train": df}, tmp / "c", tmp / "c.partial", p, tmp / "nih", 6,
                       ["0-59", "60-99"], False, hang)
    """
)


def test_sigkill_mid_build_publishes_nothing_and_the_resume_matches(tmp_path):
    ids = _folder(tmp_path / "nih", 24)
    env = {**os.environ, "PYTHONPATH": str(Path(images_mod.__file__).parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        line = child.stdout.readline()
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the builder and its decode workers, mid-build
        child.wait()
    k = int(line)
    assert 6 <= k < len(ids)
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.tmp").exists()
    assert int(np.load(tmp_path / "c.partial" / "done.npy").sum()) >= k
    df = pd.DataFrame({"image_id": ids, "label_idx": 0, "age_group": "0-59", "sex": "M"})
    log = []
    _build({"train": df}, tmp_path, "c", tmp_path / "nih", _params(), lambda d, m: log.append(m))
    _build({"train": df}, tmp_path, "fresh", tmp_path / "nih", _params())
    assert log[-1] <= len(ids) - k
    assert _bytes(tmp_path / "c") == _bytes(tmp_path / "fresh")


def test_a_crash_while_publishing_leaves_the_previous_cache_whole(tmp_path, monkeypatch):
    ids = _folder(tmp_path / "nih", 8)
    splits = _splits(ids)
    _build(splits, tmp_path, "c", tmp_path / "nih", _params())
    before = _bytes(tmp_path / "c")
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(next((tmp_path / "nih").rglob(ids[1])))
    real = images_mod._atomic_write

    def crash_on_manifest(path, data):
        if path.name == MANIFEST:
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(images_mod, "_atomic_write", crash_on_manifest)
    with pytest.raises(OSError, match="disk full"):
        _build(splits, tmp_path, "c", tmp_path / "nih", _params())
    assert _bytes(tmp_path / "c") == before  # the old cache, untouched
    with pytest.raises(UserError, match="no complete image cache"):
        ImageCache.open(tmp_path / "c.tmp")  # the half-assembled one is not a cache
    monkeypatch.setattr(images_mod, "_atomic_write", real)
    _build(splits, tmp_path, "c", tmp_path / "nih", _params())
    assert int(ImageCache.open(tmp_path / "c").get([ids[1]]).max()) == 0
    assert not (tmp_path / "c.tmp").exists() and not (tmp_path / "c.old").exists()


def test_16_bit_and_rgba_pngs_decode_to_independent_references(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "nih" / "images_001" / "images"
    root.mkdir(parents=True)
    deep = rng.integers(0, 65536, (32, 32), dtype=np.uint16)
    Image.fromarray(deep).save(root / "00000001_000.png")
    rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "00000002_000.png")
    with Image.open(root / "00000001_000.png") as a, Image.open(root / "00000002_000.png") as b:
        assert a.mode.startswith("I;16") and b.mode == "RGBA"  # really 16-bit / 4-channel files
    ids = ["00000001_000.png", "00000002_000.png", "00000003_000.png"]
    Image.fromarray(rgba[..., :3].copy(), "RGB").save(root / ids[2])
    df = pd.DataFrame({"image_id": ids, "label_idx": 0, "age_group": "0-59", "sex": "M"})
    _build({"train": df}, tmp_path, "c", tmp_path / "nih", _params(size=16))
    cache = ImageCache.open(tmp_path / "c")

    def halve(a):  # 32 -> 16 px is a 2x2 area average
        return a.reshape(16, 2, 16, 2).mean(axis=(1, 3))

    # 16-bit: linear rescale 0-65535 -> 0-255 (not clipped at 255).
    assert np.abs(cache.get([ids[0]])[0] - halve(deep / 65535.0 * 255.0)).max() <= 1
    # RGBA: ITU-R 601 luma of the colour channels; alpha carries no X-ray intensity.
    luma = rgba[..., :3].astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(cache.get([ids[1]])[0] - halve(luma)).max() <= 1
    assert np.array_equal(cache.get([ids[1]]), cache.get([ids[2]]))


def test_skip_mode_copies_the_kept_rows_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(images_mod, "COPY_ROWS", 2)
    ids = _folder(tmp_path / "nih", 9)
    next((tmp_path / "nih").rglob(ids[4])).unlink()
    splits = _splits(ids)
    _build(splits, tmp_path, "all", tmp_path / "nih", _params(on_error="skip"))
    cache = ImageCache.open(tmp_path / "all")
    keep = [v for v in ids if v != ids[4]]
    assert sorted(cache.rows) == keep and cache.pixels.shape == (8, 16, 16)
    for v in keep:
        ref = images_mod.decode(next((tmp_path / "nih").rglob(v)), 16)
        assert np.array_equal(cache.get([v])[0], ref)


def test_16_bit_scaling_rounds_every_value_as_float_rounding_does(tmp_path):
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)  # every 16-bit value once
    path = tmp_path / "00000001_000.png"
    Image.fromarray(values).save(path)
    got = images_mod.decode(path, 256)
    assert np.array_equal(got, np.round(values / 65535.0 * 255.0).astype(np.uint8))


def test_the_image_cache_benchmark_runs_and_reports_a_resume_without_rework(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location(
        "bench_image_cache", Path(__file__).resolve().parents[2] / "benchmarks" / "image_cache.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(images_mod, "CHUNK", 4)
    # 12 chunks on 2 workers, at most 4 in flight: the first commit holds at most 16 images.
    args = [
        "--n",
        "48",
        "--size",
        "32",
        "--distinct",
        "4",
        "--share-16bit",
        "0.25",
        "--workers",
        "2",
    ]
    assert bench.main([*args, "--stop-after", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_images"] == 48 and r["chunk"] == 4 and r["cores"] == 2
    ideal = r["decode_per_core_images_per_s"] * r["cores"]
    assert r["efficiency"] == pytest.approx(r["build_images_per_s"] / ideal, abs=2e-3)
    res = r["resume"]
    assert res["stopped_after_commits"] == 1 and 0 < res["images_done_at_stop"] <= 16
    assert res["resumed_images_decoded"] == 48 - res["images_done_at_stop"]
    assert res["rework_images"] == 0 and res["identical"] is True
