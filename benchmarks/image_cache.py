"""Build throughput of the image cache on all cores, as a share of the ideal (per-core decode rate x
cores), and a resume after a stop mid-build that redoes no committed chunk.

Writes ``--distinct`` real-format PNGs (1024x1024 like NIH's: 8-bit grayscale, a ``--share-16bit``
of them 16-bit) to a temporary folder and copies them to ``--n`` file names in NIH's nested layout
(each a real file, decoded in full: copies only save the time of encoding them). Then, in one run:

- ``decode_per_core_images_per_s``: :func:`fairxray.data.images.decode` one file after another in
  this process (one core), over the same mix of 8- and 16-bit files;
- ``build_images_per_s``: :func:`fairxray.data.images.build_cache` end to end (file walk, resume
  key, decode on ``images.workers: 0`` processes, commits, publish) on ``cores`` cores;
- ``efficiency``: ``build_images_per_s / (decode_per_core_images_per_s * cores)``, 1.0 = perfect
  (the per-core rate is the mean of one pass before and one after the build);
- ``cpu_efficiency``: the CPU time the decodes alone need (``decode_cpu_ms_per_image`` x n) over
  the CPU time the whole build used (this process and its workers): the build's own overhead,
  which, unlike the wall-clock ratio, other users of a shared machine do not change;
- ``resume``: the same build stopped after ``--stop-after`` commits (an exception raised from the
  commit hook, as an interruption would), then resumed: ``rework_images`` is how many images the
  resumed build decoded beyond those the stop left undone (0 = no committed chunk redone), and
  ``identical`` says the resumed cache's files equal the uninterrupted build's byte for byte.

Prints one JSON object. The figures depend on the machine's load: ``load_avg_1m`` is recorded.

    python benchmarks/image_cache.py --n 2000 --size 256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fairxray.config import ImagesParams, SyntheticParams
from fairxray.data import images, synthetic
from fairxray.data.cache import INDEX, MANIFEST, PIXELS

SYN = SyntheticParams(signal=0.3, noise=0.05, age_signal_scale=(1.0, 0.5), sex_signal_scale={})


class _Stop(Exception):
    pass


def write_folder(root: Path, n: int, distinct: int, share_16bit: float) -> list[str]:
    """``n`` PNG files under ``root/images_NNN/images/`` (1,000 per folder, as NIH ships 12 folders
    of about 10,000), cycling over ``distinct`` encoded images."""
    rng = np.random.default_rng(0)
    n16 = round(distinct * share_16bit)
    root.mkdir(parents=True, exist_ok=True)
    sources = []
    for k in range(distinct):
        base = synthetic.render(f"{k:08d}_000.png", k % 6, k % 2, "M", 1024, SYN)
        noisy = np.clip(base.astype(int) + rng.integers(-8, 9, base.shape), 0, 255)
        path = root / f"source_{k}.png"
        if k < n16:  # 16-bit: the same picture at 16-bit depth, low bits noisy
            deep = noisy * 257 + rng.integers(0, 257, base.shape)
            Image.fromarray(deep.astype(np.uint16)).save(path)
        else:
            Image.fromarray(noisy.astype(np.uint8), "L").save(path)
        sources.append(path)
    ids = [f"{k:08d}_000.png" for k in range(n)]
    for k, v in enumerate(ids):
        folder = root / f"images_{k // 1000 + 1:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[k % distinct], folder / v)
    for s in sources:
        s.unlink()
    return ids


def _decode_sample(sample: list[Path], size: int) -> tuple[float, float]:
    """Wall and CPU seconds of decoding ``sample`` one file after another in this process."""
    t0, c0 = time.perf_counter(), time.process_time()
    for path in sample:
        images.decode(path, size)
    return time.perf_counter() - t0, time.process_time() - c0


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished children (the decode workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in (PIXELS, INDEX, MANIFEST):
        with open(folder / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def _build(split, tmp: Path, name: str, params: ImagesParams, on_commit=None) -> float:
    t0 = time.perf_counter()
    images.build_cache(
        {"train": split},
        tmp / name,
        tmp / f"{name}.partial",
        params,
        tmp / "nih",
        6,
        ["0-59"],
        progress=False,
        on_commit=on_commit,
    )
    return time.perf_counter() - t0


def run(
    n: int, size: int, distinct: int, share_16bit: float, stop_after: int, workers: int, tmp: Path
) -> dict:
    ids = write_folder(tmp / "nih", n, distinct, share_16bit)
    files = images.find_pngs(tmp / "nih")
    sample = [files[v] for v in ids[: min(n, 2 * distinct)]]
    images.decode(sample[0], size)  # warm imports and caches outside the timing
    wall0, cpu0 = _decode_sample(sample, size)

    split = pd.DataFrame({"image_id": ids, "label_idx": 0, "age_group": "0-59", "sex": "M"})
    params = ImagesParams(
        size=size, min_source_size=32, on_error="fail", workers=workers, synthetic=SYN
    )
    cores = workers or images.cores()
    load = os.getloadavg()[0]
    cpu_before = _cpu_seconds()
    build_s = _build(split, tmp, "full", params)
    build_cpu = _cpu_seconds() - cpu_before
    throughput = n / build_s
    wall1, cpu1 = _decode_sample(sample, size)  # again after: the machine's load drifts
    per_core = 2 * len(sample) / (wall0 + wall1)
    cpu_per_image = (cpu0 + cpu1) / (2 * len(sample))

    commits = []

    def stop(done: int, made: int) -> None:
        commits.append(done)
        if len(commits) == stop_after:
            raise _Stop

    t0 = time.perf_counter()
    try:
        _build(split, tmp, "resumed", params, stop)
    except _Stop:
        pass
    else:
        raise SystemExit(
            f"image_cache: the build ended in {len(commits)} commit(s), before the stop"
        )
    first_s = time.perf_counter() - t0
    left = n - int(np.load(tmp / "resumed.partial" / "done.npy").sum())
    resumed = []
    resume_s = _build(split, tmp, "resumed", params, lambda done, made: resumed.append(made))
    return {
        "benchmark": "image_cache",
        "n_images": n,
        "source_px": 1024,
        "share_16bit": share_16bit,
        "distinct_encoded_files": distinct,
        "size": size,
        "chunk": images.CHUNK,
        "cores": cores,
        "load_avg_1m": round(load, 2),
        "decode_per_core_images_per_s": round(per_core, 1),
        "decode_sample": len(sample),
        "build_seconds": round(build_s, 2),
        "build_images_per_s": round(throughput, 1),
        "ideal_images_per_s": round(per_core * cores, 1),
        "efficiency": round(throughput / (per_core * cores), 3),
        "decode_cpu_ms_per_image": round(1000 * cpu_per_image, 2),
        "build_cpu_seconds": round(build_cpu, 2),
        "cpu_efficiency": round(n * cpu_per_image / build_cpu, 3),
        # Upper bounds: lifetime peaks (the main one includes writing the PNGs), in MB.
        "peak_rss_mb_main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_mb_largest_worker": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
        "resume": {
            "stopped_after_commits": len(commits),
            "images_done_at_stop": n - left,
            "first_part_seconds": round(first_s, 2),
            "resumed_images_decoded": resumed[-1] if resumed else 0,
            "rework_images": (resumed[-1] if resumed else 0) - left,
            "resume_seconds": round(resume_s, 2),
            "identical": _digest(tmp / "resumed") == _digest(tmp / "full"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="images in the build")
    ap.add_argument("--size", type=int, default=256, help="cache side (images.size)")
    ap.add_argument("--distinct", type=int, default=20, help="distinct encoded PNGs the files copy")
    ap.add_argument("--share-16bit", type=float, default=0.1)
    ap.add_argument("--stop-after", type=int, default=3, help="commits before the simulated stop")
    ap.add_argument("--workers", type=int, default=0, help="images.workers; 0 = all cores")
    ap.add_argument("--tmp", type=Path, help="scratch folder (default: a system temporary one)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        result = run(
            args.n,
            args.size,
            args.distinct,
            args.share_16bit,
            args.stop_after,
            args.workers,
            Path(tmp),
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
