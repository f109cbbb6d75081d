"""Build the uint8 image cache of a protocol (see :mod:`fairxray.data.cache` for the layout).

Real mode decodes each needed NIH PNG once (grayscale by bit depth, padded to square,
area-downsampled to ``images.size``) in chunks of ``CHUNK`` images on ``images.workers`` processes
(0 = all cores), with a bounded number of chunks in flight. Work in progress lives in
``data/partial/images/<protocol>/``: a sparse ``pixels.npy`` the finished rows are written into
(never the whole set in memory), a done-mask, and the key they belong to (:func:`resume_key`).
Each batch of finished chunks is committed (pixels synced, then the done-mask replaced), so an
interrupted build, killed or crashed, resumes at its last commit. Missing and corrupt files are
collected over the whole run and reported together; with ``images.on_error: fail`` nothing is
published, with ``skip`` they are left out and listed in the manifest. The finished cache is
assembled in ``<cache>.tmp`` (the work area's pixel file hard-linked into it, no copy, when nothing
was skipped), ``manifest.json`` (``complete: true``) written last, and swapped into place by
renames.

Demo mode renders :mod:`fairxray.data.synthetic` images for exactly the split rows, same format.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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

# Images per worker task, and the unit of resume: a chunk is written and committed as a whole.
# 64 images of 1024 px are about 0.5 s of decoding on one core, so commits (one fdatasync each)
# stay rare next to the work while an interruption loses little.
CHUNK = 64
WINDOW = 2  # chunks in flight per worker: keeps every worker busy, bounds results held in memory
RENDER_COMMIT = 1024  # demo mode: rows synthesised between commits
COPY_ROWS = 1024  # rows per block when copying the kept rows of a cache with skipped images


@dataclass(frozen=True)
class Problem:
    image_id: str
    reason: str


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset``
    narrow), the meaning of ``images.workers: 0``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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


def find_files(images_dir: Path, todo: pd.DataFrame) -> tuple[dict[str, Path], str]:
    """``{image_id: file}`` of the images that exist, and the cache's source name. NIH rows are
    found by file name anywhere below ``images_dir``; rows with a ``path`` column (CheXpert,
    MIMIC-CXR-JPG: JPG or PNG) are ``images_dir / path``, the layout the dataset's tables name."""
    if "path" not in todo.columns:
        return find_pngs(images_dir), "nih"
    if not images_dir.is_dir():
        raise UserError(f"{images_dir}: images folder not found (data.images_dir)")
    found = {}
    for image_id, rel in zip(todo["image_id"].astype(str), todo["path"].astype(str), strict=True):
        f = images_dir / rel
        if f.is_file():
            found[image_id] = f
    return found, "files"


def _to_8bit(im: Image.Image) -> Image.Image:
    """Grayscale ``L`` by the image's bit depth: a 16-bit PNG (PIL mode ``I;16``/``I``) is scaled
    by 255 / 65535, not clipped at 255 as ``convert("L")`` would (that turns almost every pixel
    white); 8-bit, palette, RGB(A) and 1-bit images take PIL's own conversion."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"integer pixels outside 0-65535 (mode {im.mode})")
        # round(v * 255 / 65535) in integers (6x faster than through float64): a tie never
        # occurs (v * 510 = 65535 * odd has no integer v), so adding 32767 then flooring rounds
        # every one of the 65,536 values exactly as float rounding does.
        scaled = (arr.astype(np.uint32) * 255 + 32767) // 65535
        return Image.fromarray(scaled.astype(np.uint8), "L")
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
    """Resumable work area: a pixel file, a done-mask and the key (ids, size, inputs) they belong to.

    Rows are written with ``os.pwrite`` at their offset in ``pixels.npy`` (a ``.npy`` file created
    sparse, so nothing of the full ``[N, S, S]`` array is held in memory). :meth:`commit` makes the
    written rows durable (``fdatasync``) *before* it replaces ``done.npy`` (written to a temporary
    name, fsynced, renamed), so a row marked done always has its pixels on disk, whether the process
    is killed or the machine loses power. ``work.json`` is written last when the area is created; a
    missing, unreadable or different key, or a missing file, starts the area afresh.
    """

    def __init__(self, path: Path, ids: list[str], size: int, key: dict):
        self.path = path
        key = {"ids": ids, "size": size, **key}
        if not self._matches(key, len(ids)):
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
            np.lib.format.open_memmap(path / PIXELS, "w+", np.uint8, (len(ids), size, size)).flush()
            _atomic_save(path / "done.npy", np.zeros(len(ids), bool))
            _atomic_write(path / "work.json", json.dumps(key).encode())
        self.done = np.load(path / "done.npy")
        self.offset = np.load(path / PIXELS, mmap_mode="r").offset
        self.row_bytes = size * size
        self.fd = os.open(path / PIXELS, os.O_RDWR)

    def _matches(self, key: dict, n: int) -> bool:
        try:
            same = json.loads((self.path / "work.json").read_text()) == key
            done = np.load(self.path / "done.npy")
            shape = np.load(self.path / PIXELS, mmap_mode="r").shape
        except (OSError, ValueError):
            return False
        return same and done.shape == (n,) and shape == (n, key["size"], key["size"])

    def write(self, row: int, arr: np.ndarray) -> None:
        if arr.size != self.row_bytes:  # a wrong-sized image would overwrite its neighbours
            raise ValueError(
                f"row {row}: image of shape {arr.shape}, expected one row of the cache"
            )
        os.pwrite(
            self.fd,
            np.ascontiguousarray(arr, np.uint8).tobytes(),
            self.offset + row * self.row_bytes,
        )

    def commit(self) -> None:
        os.fdatasync(self.fd)
        _atomic_save(self.path / "done.npy", self.done)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def pixels(self) -> np.ndarray:
        """The work area's pixels, memory-mapped read-only."""
        return np.load(self.path / PIXELS, mmap_mode="r")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` by a fsynced temporary file renamed over it: readers see old or new, whole."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    _atomic_write(path, buf.getvalue())


def build_cache(
    splits: dict[str, pd.DataFrame],
    out_dir: Path,
    partial_dir: Path,
    params: ImagesParams,
    images_dir: Path | None,
    n_classes: int,
    age_groups: list[str],
    progress: bool = True,
    on_commit: Callable[[int, int], None] | None = None,
) -> dict:
    """Build ``out_dir`` from the split rows; returns the manifest written.

    ``on_commit(rows_done, rows_this_run)`` is called after each commit of the work area (the
    rows now durable in total, and how many of them this call produced); raising from it stops
    the build there, as an interruption would, and a later call resumes from that commit."""
    todo = needed_images(splits)
    ids = todo["image_id"].astype(str).tolist()
    source, files = "synthetic", {}
    if images_dir is not None:
        files, source = find_files(Path(images_dir), todo)
    key = resume_key(todo, images_dir, files, params, n_classes, age_groups, source)
    work = _Partial(partial_dir, ids, params.size, key)
    problems: list[Problem] = []
    notes: list[Problem] = []
    try:
        if images_dir is None:
            _render_all(todo, work, params, n_classes, age_groups, progress, on_commit)
        else:
            problems, notes = _decode_all(
                ids, work, Path(images_dir), files, params, progress, on_commit
            )
    finally:
        work.close()

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


def _render_all(
    todo, work: _Partial, params: ImagesParams, n_classes, age_groups, progress, on_commit
):
    """Demo mode: synthesise each pending row in this process, committing every ``RENDER_COMMIT``."""
    age_index = {g: i for i, g in enumerate(age_groups)}
    findings = synthetic.row_findings(todo)  # None: single-label rows
    made = 0
    rows = tqdm(todo.itertuples(), total=len(todo), disable=not progress, desc="render")
    for i, r in enumerate(rows):
        if work.done[i]:
            continue
        age, syn = age_index[r.age_group], params.synthetic
        if findings is None:
            px = synthetic.render(r.image_id, int(r.label_idx), age, r.sex, params.size, syn, n_classes)
        else:  # multi-label: every finding of the row (the multi-label demo)
            px = synthetic.render_findings(r.image_id, findings[i], age, r.sex, params.size, syn)
        work.write(i, px)
        work.done[i] = True
        made += 1
        if made % RENDER_COMMIT == 0:
            work.commit()
            if on_commit is not None:
                on_commit(int(work.done.sum()), made)
    work.commit()
    if on_commit is not None:
        on_commit(int(work.done.sum()), made)


def resume_key(
    todo: pd.DataFrame,
    images_dir: Path | None,
    files: dict[str, Path],
    params: ImagesParams,
    n_classes: int,
    age_groups: list[str],
    source: str = "nih",
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
        "source": source,
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
    on_commit: Callable[[int, int], None] | None = None,
) -> tuple[list[Problem], list[Problem]]:
    """Decode every pending file in chunks of ``CHUNK`` on ``images.workers`` processes (0 = all
    cores); returns (problems, warnings), each sorted by image id. At most ``WINDOW`` chunks per
    worker are in flight, so memory stays bounded whatever the number of images; each batch of
    finished chunks is written at its rows and committed before more results are taken."""
    problems = [Problem(v, f"file not found under {images_dir}") for v in ids if v not in files]
    notes: list[Problem] = []
    pending = [(i, str(files[v])) for i, v in enumerate(ids) if v in files and not work.done[i]]
    chunks = [
        (pending[k : k + CHUNK], params.size, params.min_source_size)
        for k in range(0, len(pending), CHUNK)
    ]
    workers = params.workers or cores()
    bar = tqdm(total=len(ids), initial=len(ids) - len(pending), disable=not progress, desc="decode")
    made = 0

    def take(batch: list) -> None:
        nonlocal made
        for chunk in batch:
            for row, arr, reason, warning in chunk:
                if arr is None:
                    problems.append(Problem(ids[row], reason))
                else:
                    work.write(row, arr)
                    work.done[row] = True
                    made += 1
                if warning:
                    notes.append(Problem(ids[row], warning))
        work.commit()
        bar.update(sum(len(c) for c in batch))
        if on_commit is not None:
            on_commit(int(work.done.sum()), made)

    try:
        if workers == 1 or len(chunks) <= 1:
            for c in chunks:
                take([_decode_chunk(c)])
        else:
            _pool_map(_decode_chunk, chunks, min(workers, len(chunks)), take)
    finally:
        bar.close()
    return sorted(problems, key=lambda p: p.image_id), sorted(notes, key=lambda p: p.image_id)


def _pool_map(fn, chunks: list, workers: int, take: Callable[[list], None]) -> None:
    """``take`` each batch of results as it completes (any order), keeping at most
    ``WINDOW * workers`` chunks submitted but not taken."""
    todo = iter(chunks)
    running: set = set()
    pool = ProcessPoolExecutor(workers)
    try:
        while True:
            while len(running) < WINDOW * workers and (c := next(todo, None)) is not None:
                running.add(pool.submit(fn, c))
            if not running:
                return
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            take([f.result() for f in finished])
    finally:
        pool.shutdown(cancel_futures=True)


def _publish(
    work: _Partial, ids, keep, out_dir: Path, params: ImagesParams, source, problems, splits, notes
) -> dict:
    """Assemble the cache in ``<out>.tmp`` (pixels, index, then the manifest), then swap it in by
    renames: the old cache is renamed aside, the new one into place, the old one deleted. A reader
    finds a complete cache (old or new) or none, never a half-written one."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if len(keep) == len(ids):
        try:  # the work area's file is the cache: a hard link costs no copy of N x S x S bytes
            os.link(work.path / PIXELS, tmp / PIXELS)
        except OSError:
            shutil.copyfile(work.path / PIXELS, tmp / PIXELS)
    else:
        _copy_rows(work.pixels(), keep, tmp / PIXELS)
    _fsync(tmp / PIXELS)
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
    _atomic_write(tmp / MANIFEST, json.dumps(manifest, indent=2).encode())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(work.path, ignore_errors=True)
    return manifest


def _copy_rows(src: np.ndarray, keep: list[int], dest: Path) -> None:
    """``src[keep]`` into a new ``.npy`` at ``dest``, ``COPY_ROWS`` rows at a time (bounded memory)."""
    out = np.lib.format.open_memmap(dest, "w+", np.uint8, (len(keep), *src.shape[1:]))
    for k in range(0, len(keep), COPY_ROWS):
        out[k : k + COPY_ROWS] = src[keep[k : k + COPY_ROWS]]
    out.flush()
    del out
