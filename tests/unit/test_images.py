"""Synthetic demo images and the uint8 image cache (real mode on PNGs the test writes)."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairxray.config import ImagesParams, SyntheticParams
from fairxray.data import images as images_mod
from fairxray.data import synthetic
from fairxray.data.cache import ImageCache
from fairxray.errors import UserError

SYN = SyntheticParams(
    signal=0.3, noise=0.1, age_signal_scale=(1.0, 0.45), sex_signal_scale={"M": 1.0, "F": 1.0}
)
CLEAN = dataclasses.replace(SYN, noise=0.0)


def test_render_is_deterministic_per_image_id():
    a = synthetic.render("00000001_000.png", 2, 0, "M", 32, SYN)
    b = synthetic.render("00000001_000.png", 2, 0, "M", 32, SYN)
    c = synthetic.render("00000002_000.png", 2, 0, "M", 32, SYN)
    assert a.dtype == np.uint8 and a.shape == (32, 32)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def _pattern_energy(label, age_idx, sex="M", n=12, syn=CLEAN):
    """Mean absolute difference from the same image rendered with no signal (same background)."""
    zero = dataclasses.replace(syn, signal=0.0)
    diffs = [
        np.abs(
            synthetic.render(f"{k:08d}_000.png", label, age_idx, sex, 48, syn).astype(float)
            - synthetic.render(f"{k:08d}_000.png", label, age_idx, sex, 48, zero)
        ).mean()
        for k in range(n)
    ]
    return float(np.mean(diffs))


def _nearest_template_accuracy(age_idx):
    """Accuracy of a nearest-class-mean classifier (templates from young renders) on other images."""
    templates = [
        np.mean(
            [
                synthetic.render(f"{k:08d}_000.png", c, 0, "M", 32, SYN).astype(float)
                for k in range(20)
            ],
            axis=0,
        )
        for c in range(6)
    ]
    hits = [
        np.argmin(
            [
                ((synthetic.render(f"{k:08d}_000.png", c, age_idx, "F", 32, SYN) - t) ** 2).sum()
                for t in templates
            ]
        )
        == c
        for c in range(6)
        for k in range(100, 130)
    ]
    return float(np.mean(hits))


def test_class_dependent_patterns_and_planted_gap():
    # The class is recoverable from the pixels for the young group, and markedly less so for the
    # older group whose patterns are fainter (age_signal_scale 0.45) under the same noise.
    young, old = _nearest_template_accuracy(0), _nearest_template_accuracy(1)
    assert young >= 0.95
    assert old <= young - 0.2


def test_planted_age_effect_scales_the_pattern():
    young, old = _pattern_energy(1, 0), _pattern_energy(1, 1)
    # age_signal_scale [1.0, 0.45]: the older group's pattern is 0.45 times as strong (up to uint8
    # rounding and clipping at 0/255).
    assert old / young == pytest.approx(0.45, abs=0.05)


def test_sex_effect_is_parameterised():
    syn = dataclasses.replace(CLEAN, sex_signal_scale={"M": 1.0, "F": 0.5})
    ratio = _pattern_energy(4, 0, "F", syn=syn) / _pattern_energy(4, 0, "M", syn=syn)
    assert ratio == pytest.approx(0.5, abs=0.06)


def test_no_label_renders_background_only():
    zero = dataclasses.replace(CLEAN, signal=0.0)
    assert np.array_equal(
        synthetic.render("00000009_000.png", -1, 0, "F", 32, CLEAN),
        synthetic.render("00000009_000.png", 3, 0, "F", 32, zero),
    )


def split_rows(ids, labels=None):
    n = len(ids)
    return pd.DataFrame(
        {
            "image_id": ids,
            "patient_id": [i[:8] for i in ids],
            "label": "Edema",
            "label_idx": labels if labels is not None else [i % 6 for i in range(n)],
            "age": [40 + 10 * (i % 3) for i in range(n)],
            "sex": ["M" if i % 2 else "F" for i in range(n)],
            "age_group": ["0-59" if 40 + 10 * (i % 3) < 60 else "60-99" for i in range(n)],
            "view": "PA",
        }
    )


def params(size=16, on_error="fail", workers=1, min_source_size=8, synthetic=SYN):
    return ImagesParams(
        size=size,
        min_source_size=min_source_size,
        on_error=on_error,
        workers=workers,
        synthetic=synthetic,
    )


def test_synthetic_cache_covers_exactly_the_split_rows(tmp_path):
    ids = [f"{k:08d}_000.png" for k in range(10)]
    splits = {
        "train": split_rows(ids[:6]),
        "val": split_rows(ids[6:8]),
        "test": split_rows(ids[8:] + ids[:1]),
    }
    man = images_mod.build_cache(
        splits, tmp_path / "c", tmp_path / "p", params(), None, 6, ["0-59", "60-99"], False
    )
    cache = ImageCache.open(tmp_path / "c")
    assert man["source"] == "synthetic" and cache.is_synthetic and cache.size == 16
    assert sorted(cache.rows) == ids  # the repeated id is stored once
    r = splits["train"].iloc[3]
    expect = synthetic.render(
        r.image_id, int(r.label_idx), 0 if r.age_group == "0-59" else 1, r.sex, 16, SYN
    )
    assert np.array_equal(cache.get([r.image_id])[0], expect)
    assert not (tmp_path / "p").exists()  # work area removed once published


def write_png(path, seed, size=(96, 96), mode="L"):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0]) + ((3,) if mode == "RGB" else ()), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)
    return arr


@pytest.fixture
def nih_folder(tmp_path):
    root = tmp_path / "nih"
    ids = [f"{k:08d}_000.png" for k in range(1, 7)]
    write_png(root / "images_001" / "images" / ids[0], 1)
    write_png(root / "images_001" / "images" / ids[1], 2)
    write_png(root / "images_002" / "images" / ids[2], 3, mode="RGB")
    write_png(root / ids[3], 4, size=(120, 80))  # flat layout, non-square
    (root / "images_002" / "images" / ids[4]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupt
    # ids[5] is missing
    return root, ids


def test_real_cache_fails_listing_every_bad_file(tmp_path, nih_folder):
    root, ids = nih_folder
    splits = {
        "train": split_rows(ids[:4]),
        "val": split_rows(ids[4:5]),
        "test": split_rows(ids[5:]),
    }
    with pytest.raises(UserError) as exc:
        images_mod.build_cache(
            splits, tmp_path / "c", tmp_path / "p", params(), root, 6, ["0-59", "60-99"], False
        )
    msg = str(exc.value)
    assert "2 image(s) missing or unreadable" in msg
    assert f"{ids[4]}: corrupt or unreadable PNG" in msg and f"{ids[5]}: file not found" in msg
    assert not (tmp_path / "c").exists()  # nothing that looks like a cache


def test_real_cache_skip_mode_lists_and_drops(tmp_path, nih_folder):
    root, ids = nih_folder
    splits = {
        "train": split_rows(ids[:4]),
        "val": split_rows(ids[4:5]),
        "test": split_rows(ids[5:]),
    }
    man = images_mod.build_cache(
        splits,
        tmp_path / "c",
        tmp_path / "p",
        params(on_error="skip"),
        root,
        6,
        ["0-59", "60-99"],
        False,
    )
    assert [s["image_id"] for s in man["skipped"]] == ids[4:6]
    cache = ImageCache.open(tmp_path / "c")
    assert sorted(cache.rows) == ids[:4] and not cache.is_synthetic
    on_disk = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert on_disk["complete"] is True and on_disk["images"] == 4


def test_real_cache_pixels_match_a_plain_pil_reference(tmp_path, nih_folder):
    root, ids = nih_folder
    splits = {"train": split_rows(ids[:4]), "val": split_rows([]), "test": split_rows([])}
    images_mod.build_cache(
        splits,
        tmp_path / "c",
        tmp_path / "p",
        params(size=24, workers=2),
        root,
        6,
        ["0-59", "60-99"],
        False,
    )
    cache = ImageCache.open(tmp_path / "c")

    def block_mean(img):  # independent reference: 96 -> 24 px is a 4x4 area average
        a = np.asarray(img.convert("L"), dtype=float)
        return a.reshape(24, 4, 24, 4).mean(axis=(1, 3))

    ref = block_mean(Image.open(root / "images_001" / "images" / ids[0]))
    assert np.abs(cache.get([ids[0]])[0] - ref).max() <= 1  # rounding only
    rgb = block_mean(Image.open(root / "images_002" / "images" / ids[2]))
    assert np.abs(cache.get([ids[2]])[0] - rgb).max() <= 1
    # Non-square: padded to a square with black, so the top and bottom bands are 0.
    wide = cache.get([ids[3]])[0]
    assert wide[0].max() == 0 and wide[-1].max() == 0 and wide[12].max() > 0


def test_real_cache_resumes_after_interruption(tmp_path, nih_folder, monkeypatch):
    root, ids = nih_folder
    splits = {"train": split_rows(ids[:4]), "val": split_rows([]), "test": split_rows([])}
    monkeypatch.setattr(images_mod, "CHUNK", 2)
    real = images_mod._decode_chunk
    calls = []

    def flaky(args):
        calls.append([r for r, _ in args[0]])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(images_mod, "_decode_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        images_mod.build_cache(
            splits, tmp_path / "c", tmp_path / "p", params(), root, 6, ["0-59", "60-99"], False
        )
    assert not (tmp_path / "c").exists() and (tmp_path / "p" / "done.npy").exists()
    calls.clear()
    monkeypatch.setattr(images_mod, "_decode_chunk", real)
    seen = []
    monkeypatch.setattr(
        images_mod, "_decode_chunk", lambda a: seen.append([r for r, _ in a[0]]) or real(a)
    )
    images_mod.build_cache(
        splits, tmp_path / "c", tmp_path / "p", params(), root, 6, ["0-59", "60-99"], False
    )
    assert sum(len(s) for s in seen) == 2  # only the chunk that was interrupted is decoded again
    full = ImageCache.open(tmp_path / "c")
    fresh_dir = tmp_path / "fresh"
    images_mod.build_cache(
        splits, fresh_dir, tmp_path / "p2", params(), root, 6, ["0-59", "60-99"], False
    )
    assert np.array_equal(np.asarray(full.pixels), np.asarray(ImageCache.open(fresh_dir).pixels))


def test_missing_images_folder_is_a_clear_error(tmp_path):
    splits = {
        "train": split_rows(["00000001_000.png"]),
        "val": split_rows([]),
        "test": split_rows([]),
    }
    with pytest.raises(UserError, match="images folder not found"):
        images_mod.build_cache(
            splits, tmp_path / "c", tmp_path / "p", params(), tmp_path / "none", 6, ["0-59"], False
        )


def test_open_rejects_incomplete_cache(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(UserError, match="no complete image cache"):
        ImageCache.open(tmp_path / "c")


def test_rows_of_skipped_images_are_dropped_downstream(tmp_path, nih_folder, monkeypatch, capsys):
    from fairxray import paths
    from fairxray.data.splits import load_splits

    root, ids = nih_folder
    monkeypatch.chdir(tmp_path)
    splits = {
        "train": split_rows(ids[:4]),
        "val": split_rows(ids[4:5]),
        "test": split_rows(ids[5:] + ids[:1]),
    }
    folder = paths.splits("p")
    folder.mkdir(parents=True)
    for name, df in splits.items():
        df.to_parquet(paths.split_file("p", name), index=False)
    (folder / "manifest.json").write_text("{}")
    images_mod.build_cache(
        splits,
        paths.images("p"),
        paths.images_partial("p"),
        params(on_error="skip"),
        root,
        6,
        ["0-59", "60-99"],
        False,
    )
    frames = load_splits("p")
    assert list(frames["val"]["image_id"]) == [] and list(frames["test"]["image_id"]) == ids[:1]
    assert "1 row(s) dropped" in capsys.readouterr().err
    cache = ImageCache.open(paths.images("p"))
    for df in frames.values():  # every remaining row has pixels
        assert cache.present(df["image_id"]).all()
    assert len(load_splits("p", drop_skipped=False)["test"]) == 2


# --- no silent wrong data: resume key, bit depth, tiny images ---------------------------------


def _interrupted_build(monkeypatch, splits, out, partial, p, images_dir):
    """Build until the second chunk, then fail as a kill would: the work area is left behind."""
    monkeypatch.setattr(images_mod, "CHUNK", 2)
    real = images_mod._decode_chunk
    calls = []

    def flaky(args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(images_mod, "_decode_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        images_mod.build_cache(splits, out, partial, p, images_dir, 6, ["0-59", "60-99"], False)
    monkeypatch.setattr(images_mod, "_decode_chunk", real)
    assert (partial / "done.npy").exists() and np.load(partial / "done.npy").any()


def _flat_png(path, value, size=(32, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8), "L").save(path)


def test_resume_after_switching_images_dir_uses_the_new_pixels(tmp_path, monkeypatch):
    ids = [f"{k:08d}_000.png" for k in range(1, 7)]
    for v in ids:
        _flat_png(tmp_path / "grey" / v, 128)
        _flat_png(tmp_path / "black" / v, 0)
    splits = {"train": split_rows(ids), "val": split_rows([]), "test": split_rows([])}
    out, partial = tmp_path / "c", tmp_path / "p"
    _interrupted_build(monkeypatch, splits, out, partial, params(), tmp_path / "grey")
    images_mod.build_cache(
        splits, out, partial, params(), tmp_path / "black", 6, ["0-59", "60-99"], False
    )
    assert int(np.asarray(ImageCache.open(out).pixels).max()) == 0  # no grey pixel survives


def test_resume_after_a_file_is_replaced_uses_the_new_file(tmp_path, monkeypatch):
    ids = [f"{k:08d}_000.png" for k in range(1, 7)]
    for v in ids:
        _flat_png(tmp_path / "nih" / v, 128)
    splits = {"train": split_rows(ids), "val": split_rows([]), "test": split_rows([])}
    out, partial = tmp_path / "c", tmp_path / "p"
    _interrupted_build(monkeypatch, splits, out, partial, params(), tmp_path / "nih")
    _flat_png(tmp_path / "nih" / ids[0], 0, size=(40, 40))  # already decoded, then replaced
    images_mod.build_cache(
        splits, out, partial, params(), tmp_path / "nih", 6, ["0-59", "60-99"], False
    )
    cache = ImageCache.open(out)
    assert int(cache.get([ids[0]]).max()) == 0 and int(cache.get([ids[1]]).min()) == 128


def test_resume_after_changing_synthetic_params_renders_again(tmp_path, monkeypatch):
    ids = [f"{k:08d}_000.png" for k in range(8)]
    splits = {"train": split_rows(ids), "val": split_rows([]), "test": split_rows([])}
    out, partial = tmp_path / "c", tmp_path / "p"

    def crash(*a, **k):
        raise KeyboardInterrupt  # after every image was rendered and committed

    real_publish = images_mod._publish
    monkeypatch.setattr(images_mod, "_publish", crash)
    with pytest.raises(KeyboardInterrupt):
        images_mod.build_cache(splits, out, partial, params(), None, 6, ["0-59", "60-99"], False)
    assert np.load(partial / "done.npy").all()
    monkeypatch.setattr(images_mod, "_publish", real_publish)
    loud = dataclasses.replace(SYN, signal=0.9, noise=0.0)
    images_mod.build_cache(
        splits, out, partial, params(synthetic=loud), None, 6, ["0-59", "60-99"], False
    )
    r = splits["train"].iloc[2]
    age = 0 if r.age_group == "0-59" else 1
    expect = synthetic.render(r.image_id, int(r.label_idx), age, r.sex, 16, loud)
    assert np.array_equal(ImageCache.open(out).get([r.image_id])[0], expect)


def test_16_bit_png_is_scaled_by_bit_depth_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    path = tmp_path / "00000001_000.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # PIL reads it as 16-bit, as NIH-like 16-bit files are
    got = images_mod.decode(path, 32)
    expect = np.round(ramp / 65535.0 * 255.0)  # independent reference: linear rescale
    assert np.abs(got.astype(float) - expect).max() <= 1
    assert (got == 255).mean() < 0.01  # clipping would make about 99 % of the pixels white


def test_tiny_images_warn_or_fail_by_name(tmp_path):
    ids = ["00000001_000.png", "00000002_000.png", "00000003_000.png"]
    write_png(tmp_path / "nih" / ids[0], 1, size=(48, 48))
    write_png(tmp_path / "nih" / ids[1], 2, size=(12, 12))  # smaller than the 24 px cache
    write_png(tmp_path / "nih" / ids[2], 3, size=(1, 1))
    splits = {"train": split_rows(ids), "val": split_rows([]), "test": split_rows([])}
    with pytest.raises(UserError) as exc:
        images_mod.build_cache(
            splits, tmp_path / "c", tmp_path / "p", params(size=24), tmp_path / "nih", 6,
            ["0-59", "60-99"], False,
        )  # fmt: skip
    assert f"{ids[2]}: image is 1x1 px, below images.min_source_size (8)" in str(exc.value)
    assert not (tmp_path / "c").exists()
    man = images_mod.build_cache(
        {"train": split_rows(ids[:2]), "val": split_rows([]), "test": split_rows([])},
        tmp_path / "c", tmp_path / "p2", params(size=24), tmp_path / "nih", 6,
        ["0-59", "60-99"], False,
    )  # fmt: skip
    assert man["warnings"] == [
        {"image_id": ids[1], "reason": "image is 12x12 px, upsampled to the 24 px cache"}
    ]
