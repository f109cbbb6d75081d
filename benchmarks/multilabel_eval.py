"""Time and peak memory of one multi-label cell's full evaluation (``data.task: multilabel``):
per-label thresholds on validation, every metric and gap, the patient bootstrap (``--n-boot``) and
the permutation null of every gap (``--n-perm``).

Synthetic tables obeying the multilabel predictions contract: ``--images`` test images (default
25,596, NIH's official test set) of ``--patients`` patients, ``--labels`` labels (default 15: the 14
findings and No Finding), four age groups x two sexes, and a validation table of a quarter of that
size. Evaluated and written as the ``evaluate`` stage does (``metrics.json``, ``by_group.csv``, the
plot, the cell files, into a temp folder). Prints one JSON object: seconds (all of it),
inference_seconds (before writing), peak_rss_gb (the process's peak resident memory), n_images,
n_labels, n_boot, n_perm, n_gaps. Target: <= 300 s and <= 4 GB on 2 cores.

    .venv/bin/python benchmarks/multilabel_eval.py --n-boot 1000 --n-perm 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fairxray.metrics.evaluate import Settings, evaluate_multilabel, write_cell, write_evaluation
from fairxray.metrics.multilabel import NO_FINDING, is_gap_key
from fairxray.metrics.predictions import validate_predictions

FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
)  # fmt: skip
AGES = ("0-39", "40-59", "60-79", "80-99")


def table(n: int, n_pat: int, classes, seed: int) -> pd.DataFrame:
    """Findings at 2-15 % prevalence, scores with a weaker signal for the oldest group."""
    rng = np.random.default_rng(seed)
    L = len(classes)
    pid = np.sort(rng.integers(0, n_pat, n))
    sex = np.where(rng.random(n_pat) < 0.45, "F", "M")[pid]
    age = np.asarray(AGES)[rng.integers(0, len(AGES), n)]
    prev = rng.uniform(0.02, 0.15, L)
    Y = (rng.random((n, L)) < prev).astype(float)
    nf = classes.index(NO_FINDING)
    Y[:, nf] = (np.delete(Y, nf, axis=1).sum(1) == 0).astype(float)
    signal = np.where(age == AGES[-1], 0.8, 1.4)[:, None]
    prob = 1 / (1 + np.exp(-(rng.normal(size=(n, L)) + signal * (2 * Y - 1) - 1.0)))
    df = pd.DataFrame(
        {
            "image_id": [f"{i:08d}_000.png" for i in range(n)],
            "patient_id": [f"{p:08d}" for p in pid],
            "label_idx": np.full(n, -1, dtype=np.int64),
            "age_group": age,
            "sex": sex,
        }
    )
    for j, c in enumerate(classes):
        df[f"prob_{c}"] = prob[:, j]
        df["y_" + c.replace(" ", "_")] = Y[:, j]
    return validate_predictions(df, classes, ("age_group", "sex"), "benchmark", task="multilabel")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=25596)
    ap.add_argument("--patients", type=int, default=2800)
    ap.add_argument("--labels", type=int, default=15, help="findings + No Finding (2-15)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--n-perm", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=1, help="runs (seeds) in the cell")
    args = ap.parse_args(argv)
    classes = (*FINDINGS[: args.labels - 1], NO_FINDING)
    s = Settings(
        classes=classes,
        sensitive=("age_group", "sex"),
        n_boot=args.n_boot,
        n_perm=args.n_perm,
        task="multilabel",
    )
    tests = [table(args.images, args.patients, classes, 1 + k) for k in range(args.seeds)]
    for t in tests[1:]:  # the same rows, other scores
        t[["image_id", "patient_id", "age_group", "sex"]] = tests[0][
            ["image_id", "patient_id", "age_group", "sex"]
        ]
        t[[c for c in t.columns if c.startswith("y_")]] = tests[0][
            [c for c in t.columns if c.startswith("y_")]
        ]
    vals = [
        table(args.images // 4, args.patients // 4, classes, 100 + s) for s in range(args.seeds)
    ]
    start = time.perf_counter()
    r = evaluate_multilabel(tests, vals, s, [f"seed{k}" for k in range(args.seeds)])
    inferred = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:  # the evaluate stage's files and plot
        write_evaluation(r, Path(tmp) / "seed", profile="paper")
        write_cell(r, Path(tmp) / "cell", profile="paper", pairing="benchmark")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB (Linux)
    gaps = [k for k in r.metrics if is_gap_key(k) and k.count("/") <= 2 and not k.endswith(
        ("/ci_low", "/ci_high", "/p_value", "/p_adjusted", "/null_mean", "/excess", "/significant")
    )]  # fmt: skip
    print(
        json.dumps(
            {
                "seconds": round(seconds, 1),
                "inference_seconds": round(inferred, 1),
                "peak_rss_gb": round(peak, 3),
                "n_images": args.images,
                "n_patients": int(r.metrics["n/patients"]),
                "n_labels": len(classes),
                "n_seeds": args.seeds,
                "n_boot": args.n_boot,
                "n_perm": args.n_perm,
                "n_gaps": len(gaps),
                "n_gaps_tested": sum(k.endswith("/p_value") for k in r.metrics),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
