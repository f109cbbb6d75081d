"""Build the uint8 image cache of a protocol (see :mod:`fairxray.data.cache` for the layout).

Real mode decodes each needed NIH PNG once (grayscale, padded to square, area-downsampled
to ``images.size``), in parallel across processes. Work in progress lives in
``data/partial/images/<protocol>/`` (pixels plus a done-mask, flushed as it goes), so an interrupted
build resumes where it stopped. Missing and corrupt files are collected over the whole run and
reported together; with ``images.on_error: fail`` nothing is published, with ``skip`` they are left
out and listed in the manifest. The finished cache is assembled in a temporary folder and renamed
into place, with ``manifest.json`` (``complete: true``) written last.

Demo mode renders :mod:`fairxray.data.synthetic` images for exactly the split rows, same format.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from fairxray.config import ImagesParams
from fairxray.data import synthetic
from fairxray.data.cache import INDEX, MANIFEST, PIXELS
from fairxray.errors import UserError

CHUNK = 16


@dataclass(frozen=True)
class Problem:
    image_id: str
    reason: str


def find_pngs(images_dir: Path) -> dict[str, Path]:
    """Map file name -> path for every PNG below ``images_dir`` (NIH's ``images_NNN/images/`` or flat)."""
    if not images_dir.is_dir():
        raise UserError(f"{images_dir}: images folder not found (data.images_dir)")
    found: dict[str, Path] = {}
    for root, _dirs, files in os.walk(images_dir):
        for name in files:
            if name.lower().endswith(".png"):
                found.setdefault(name, Path(root) / name)
    return found


def _to_8bit(im: Image.Image) -> Image.Image:
    """Grayscale ``L`` by the image's bit depth: a 16-bit PNG (PIL mode ``I;16``/``I``) is scaled
    by 255 / 65535, not clipped at 255 as ``convert("L")`` would (that turns almost every pixel
    white); 8-bit, palette, RGB(A) and 1-bit images take PIL's own conversion."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"integer pixels outside 0-65535 (mode {im.mode})")
        return Image.fromarray(np.round(arr * (255.0 / 65535.0)).astype(np.uint8), "L")
    if im.mode == "F":
        raise ValueError("floating-point PNG pixels are not a supported X-ray format")
    return im.convert("L")


def decode(path: Path, size: int) -> np.ndarray:
    """One PNG -> uint8 ``[size, size]``: grayscale by bit depth (see :func:`_to_8bit`),
    zero-padded to a square (no anatomy cropped, aspect kept; NIH images are square already),
    resized with antialiasing."""
    return decode_with_size(path, size)[0]


def decode_with_size(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode` and the source image's ``(width, height)``."""
    with Image.open(path) as im:
        im.load()
        im = _to_8bit(im)
    source = im.size
    w, h = im.size
    if w != h:
        side = max(w, h)
        canvas = Image.new("L", (side, side), 0)
        canvas.paste(im, ((side - w) // 2, (side - h) // 2))
        im = canvas
    # Downsample by the largest integer factor with a box filter (area averaging, Image.reduce:
    # about 8x cheaper than a bilinear resample of the full image; 1024 -> 256 is exactly this
    # step), then resample any remaining non-integer ratio bilinearly with antialiasing.
    factor = im.size[0] // size
    if factor >= 2:
        im = im.reduce(factor)
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8), source


def _decode_chunk(
    args: tuple[list[tuple[int, str]], int, int],
) -> list[tuple[int, np.ndarray | None, str, str]]:
    """(row, pixels or None, problem, warning) per item: a source image whose shorter side is
    below ``min_side`` is a problem; one smaller than the cache (upsampled) is a warning."""
    items, size, min_side = args
    out = []
    for row, path in items:
        try:
            arr, (w, h) = decode_with_size(Path(path), size)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            out.append((row, None, f"corrupt or unreadable PNG ({type(exc).__name__}: {exc})", ""))
            continue
        if min(w, h) < min_side:
            why = f"image is {w}x{h} px, below images.min_source_size ({min_side})"
            out.append((row, None, why, ""))
        elif max(w, h) < size:
            out.append((row, arr, "", f"image is {w}x{h} px, upsampled to the {size} px cache"))
        else:
            out.append((row, arr, "", ""))
    return out


def needed_images(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per distinct image of the protocol (first occurrence), with what rendering needs."""
    rows = pd.concat(splits.values())
    return rows.drop_duplicates("image_id").sort_values("image_id").reset_index(drop=True)


class _Partial:
    """Resumable work area: a pixel memmap, a done-mask and the id list they belong to."""

    def __init__(self, path: Path, ids: list[str], size: int, key: dict):
        self.path = path
        key = {"ids": ids, "size": size, **key}
        meta = path / "work.json"
        fresh = not meta.exists() or json.loads(meta.read_text()) != key
        if fresh:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
            np.lib.format.open_memmap(path / PIXELS, "w+", np.uint8, (len(ids), size, size)).flush()
            np.save(path / "done.npy", np.zeros(len(ids), bool))
            meta.write_text(json.dumps(key))
        self.pixels = np.load(path / PIXELS, mmap_mode="r+")
        self.done = np.load(path / "done.npy")

    def commit(self) -> None:
        self.pixels.flush()
        tmp = self.path / "done.tmp.npy"
        np.save(tmp, self.done)
        os.replace(tmp, self.path / "done.npy")


def build_cache(
    splits: dict[str, pd.DataFrame],
    out_dir: Path,
    partial_dir: Path,
    params: ImagesParams,
    images_dir: Path | None,
    n_classes: int,
    age_groups: list[str],
    progress: bool = True,
) -> dict:
    """Build ``out_dir`` from the split rows; returns the manifest written."""
    todo = needed_images(splits)
    ids = todo["image_id"].astype(str).tolist()
    source = "synthetic" if images_dir is None else "nih"
    files = {} if images_dir is None else find_pngs(Path(images_dir))
    key = resume_key(todo, images_dir, files, params, n_classes, age_groups)
    work = _Partial(partial_dir, ids, params.size, key)
    problems: list[Problem] = []
    notes: list[Problem] = []
    if images_dir is None:
        age_index = {g: i for i, g in enumerate(age_groups)}
        findings = synthetic.row_findings(todo)  # None: single-label rows
        for i, r in enumerate(
            tqdm(todo.itertuples(), total=len(todo), disable=not progress, desc="render")
        ):
            if work.done[i]:
                continue
            age, syn = age_index[r.age_group], params.synthetic
            if findings is None:
                work.pixels[i] = synthetic.render(
                    r.image_id, int(r.label_idx), age, r.sex, params.size, syn, n_classes
                )
            else:
                work.pixels[i] = synthetic.render_findings(
                    r.image_id, findings[i], age, r.sex, params.size, syn
                )
            work.done[i] = True
        work.commit()
    else:
        problems, notes = _decode_all(ids, work, Path(images_dir), files, params, progress)

    bad = {p.image_id for p in problems}
    if problems and params.on_error == "fail":
        lines = [f"  {p.image_id}: {p.reason}" for p in problems[:50]]
        more = [f"  ... and {len(problems) - 50} more"] if len(problems) > 50 else []
        raise UserError(
            "\n".join(
                [
                    f"{images_dir}: {len(problems)} image(s) missing or unreadable; no cache written "
                    "(set images.on_error: skip to leave them out):"
                ]
                + lines
                + more
            )
        )
    keep = [i for i, v in enumerate(ids) if v not in bad]
    manifest = _publish(work, ids, keep, out_dir, params, source, problems, splits, notes)
    return manifest


def resume_key(
    todo: pd.DataFrame,
    images_dir: Path | None,
    files: dict[str, Path],
    params: ImagesParams,
    n_classes: int,
    age_groups: list[str],
) -> dict:
    """What the pixels of an interrupted build depend on: the work area is reused only when all
    of it is unchanged. Real images: the folder and each needed file's path, size and mtime
    (a replaced file changes one of them). Synthetic: the synthetic params, the class count, the
    age groups and each row's label, age group and sex (what :func:`synthetic.render` reads)."""
    h = hashlib.sha256()
    if images_dir is None:
        h.update(json.dumps(dataclasses.asdict(params.synthetic), sort_keys=True).encode())
        h.update(json.dumps([n_classes, list(age_groups)]).encode())
        findings = synthetic.row_findings(todo)
        for i, r in enumerate(todo.itertuples()):
            more = "" if findings is None else "|" + ",".join(findings[i])
            h.update(f"{r.image_id}|{int(r.label_idx)}|{r.age_group}|{r.sex}{more}\n".encode())
        return {"source": "synthetic", "inputs_sha256": h.hexdigest()}
    for v in todo["image_id"].astype(str):
        f = files.get(v)
        if f is None:
            h.update(f"{v}|absent\n".encode())
        else:
            st = f.stat()
            h.update(f"{v}|{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return {
        "source": "nih",
        "images_dir": str(Path(images_dir).resolve()),
        "min_source_size": params.min_source_size,
        "inputs_sha256": h.hexdigest(),
    }


def _decode_all(
    ids: list[str],
    work: _Partial,
    images_dir: Path,
    files: dict[str, Path],
    params: ImagesParams,
    progress: bool,
) -> tuple[list[Problem], list[Problem]]:
    """Decode every pending file; returns (problems, warnings), each sorted by image id."""
    problems = [Problem(v, f"file not found under {images_dir}") for v in ids if v not in files]
    notes: list[Problem] = []
    pending = [(i, str(files[v])) for i, v in enumerate(ids) if v in files and not work.done[i]]
    chunks = [
        (pending[k : k + CHUNK], params.size, params.min_source_size)
        for k in range(0, len(pending), CHUNK)
    ]
    workers = params.workers or os.cpu_count() or 1
    bar = tqdm(total=len(ids), initial=len(ids) - len(pending), disable=not progress, desc="decode")
    results: Iterable
    if workers == 1 or len(chunks) <= 1:
        results = map(_decode_chunk, chunks)
        pool = None
    else:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(_decode_chunk, chunks)
    try:
        for chunk in results:
            for row, arr, reason, warning in chunk:
                if arr is None:
                    problems.append(Problem(ids[row], reason))
                else:
                    work.pixels[row] = arr
                    work.done[row] = True
                if warning:
                    notes.append(Problem(ids[row], warning))
            work.commit()
            bar.update(len(chunk))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return sorted(problems, key=lambda p: p.image_id), sorted(notes, key=lambda p: p.image_id)


def _publish(
    work: _Partial, ids, keep, out_dir: Path, params: ImagesParams, source, problems, splits, notes
) -> dict:
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if len(keep) == len(ids):
        work.pixels.flush()
        shutil.copyfile(work.path / PIXELS, tmp / PIXELS)
    else:
        np.save(tmp / PIXELS, np.asarray(work.pixels[keep]))
    pd.DataFrame({"image_id": [ids[i] for i in keep], "row": np.arange(len(keep))}).to_parquet(
        tmp / INDEX, index=False
    )
    manifest = {
        "complete": True,
        "source": source,
        "size": params.size,
        "images": len(keep),
        "rows_per_split": {k: int(len(v)) for k, v in splits.items()},
        "skipped": [{"image_id": p.image_id, "reason": p.reason} for p in problems],
        "warnings": [{"image_id": p.image_id, "reason": p.reason} for p in notes],
        "resize": "pad to square with black, box-filter reduce by the integer factor, then bilinear",
    }
    if source == "synthetic":
        manifest["synthetic"] = {
            "signal": params.synthetic.signal,
            "noise": params.synthetic.noise,
            "age_signal_scale": list(params.synthetic.age_signal_scale),
            "sex_signal_scale": dict(params.synthetic.sex_signal_scale),
            "note": "DEMO: synthetic images with a planted group effect (fairxray.data.synthetic)",
        }
        if all(synthetic.has_findings(df.columns) for df in splits.values()):
            manifest["synthetic"]["findings"] = (
                "multi-label: each image carries the pattern of every finding in its metadata "
                "row, at the group amplitude (planted underdiagnosis)"
            )
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out_dir)
    shutil.rmtree(work.path, ignore_errors=True)
    return manifest
