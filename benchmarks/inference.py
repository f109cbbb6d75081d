"""Time and peak memory of the full inference of one run: every metric and gap, the patient
bootstrap (``--n-boot``), the permutation null of every gap (``--n-perm``) and the MDE simulation.

Two sizes by default: the paper's test set (240 images, 6 classes, age x sex) and NIH's official
test set size (25,596 images). Prints one JSON object per size; the numbers to read are
``seconds`` and ``peak_rss_gb`` (the process's peak resident memory after that size).
Targets: 240 images <= 30 s, 25,596 images <= 300 s and <= 4 GB, on 2 cores.

    .venv/bin/python benchmarks/inference.py --sizes 240 25596 --n-boot 1000 --n-perm 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import pandas as pd

from fairxray.config import PAPER_CLASSES
from fairxray.metrics.evaluate import Settings, evaluate_frame
from fairxray.metrics.predictions import prob_columns


def predictions(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` images of ``n * 0.8`` patients, balanced age x sex, a weaker signal for 60-99."""
    rng = np.random.default_rng(seed)
    k = len(PAPER_CLASSES)
    n_pat = max(int(n * 0.8), 2)
    pid = np.sort(rng.integers(0, n_pat, n))
    age = np.where(rng.random(n_pat) < 0.5, "0-59", "60-99")[pid]
    sex = np.where(rng.random(n_pat) < 0.5, "F", "M")[pid]
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + np.where(age == "0-59", 1.5, 1.0)[:, None] * np.eye(k)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    df = pd.DataFrame(
        {
            "image_id": [f"{i:08d}.png" for i in range(n)],
            "patient_id": [f"{p:08d}" for p in pid],
            "label_idx": y,
        }
    )
    for c, col in enumerate(prob_columns(PAPER_CLASSES)):
        df[col] = prob[:, c]
    return df.assign(age_group=age, sex=sex)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[240, 25596])
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--n-perm", type=int, default=1000)
    args = ap.parse_args(argv)
    s = Settings(
        classes=PAPER_CLASSES,
        sensitive=("age_group", "sex"),
        n_boot=args.n_boot,
        n_perm=args.n_perm,
        levels={"age_group": ["0-59", "60-99"]},
    )
    for n in args.sizes:
        df = predictions(n)
        t = time.perf_counter()
        ev = evaluate_frame(df, s, f"<{n} images>")
        secs = time.perf_counter() - t
        gaps = [k for k in ev.metrics if k.endswith("/p_value")]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
        print(
            json.dumps(
                {
                    "images": n,
                    "n_boot": args.n_boot,
                    "n_perm": args.n_perm,
                    "gaps": len(gaps),
                    "keys": len(ev.metrics),
                    "seconds": round(secs, 2),
                    "peak_rss_gb": round(rss, 3),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
