"""Decode+resize throughput of the image-cache builder against a plain one-image-at-a-time PIL loop.

Writes N synthetic 1024x1024 8-bit grayscale PNGs (NIH's format) to a temporary folder, then times
(a) ``fairxray.data.images.build_cache`` (all cores, reducing_gap resize, memmap output) and (b) a
plain loop ``Image.open -> convert("L") -> resize(size, BILINEAR)`` into a list, on the same files.
Prints one JSON object; the number to read is ``speedup`` (a ratio measured in this run).

    .venv/bin/python benchmarks/images.py --n 96 --size 256
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fairxray.config import ImagesParams, SyntheticParams
from fairxray.data import images, synthetic


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=0, help="0 = all cores")
    args = ap.parse_args(argv)
    syn = SyntheticParams(signal=0.3, noise=0.05, age_signal_scale=(1.0, 0.5), sex_signal_scale={})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "nih" / "images_001" / "images"
        root.mkdir(parents=True)
        ids = [f"{k:08d}_000.png" for k in range(args.n)]
        base = synthetic.render("00000000_000.png", 1, 0, "M", 1024, syn)
        rng = np.random.default_rng(0)
        for i in ids:
            noisy = np.clip(base.astype(int) + rng.integers(-8, 9, base.shape), 0, 255).astype(
                np.uint8
            )
            Image.fromarray(noisy, "L").save(root / i)
        split = pd.DataFrame({"image_id": ids, "label_idx": 0, "age_group": "0-59", "sex": "M"})
        params = ImagesParams(
            size=args.size, min_source_size=32, on_error="fail", workers=args.workers, synthetic=syn
        )

        t0 = time.perf_counter()
        images.build_cache(
            {"train": split},
            Path(tmp) / "cache",
            Path(tmp) / "partial",
            params,
            Path(tmp) / "nih",
            6,
            ["0-59"],
            progress=False,
        )
        builder = time.perf_counter() - t0

        t0 = time.perf_counter()
        out = []
        for i in ids:
            with Image.open(root / i) as im:
                out.append(
                    np.asarray(
                        im.convert("L").resize((args.size, args.size), Image.Resampling.BILINEAR)
                    )
                )
        baseline = time.perf_counter() - t0

    result = {
        "benchmark": "images",
        "n_images": args.n,
        "source_px": 1024,
        "size": args.size,
        "cores": os.cpu_count(),
        "workers": args.workers or os.cpu_count(),
        "builder_images_per_s": round(args.n / builder, 1),
        "pil_loop_images_per_s": round(args.n / baseline, 1),
        "speedup": round(baseline / builder, 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
