"""How the cost of the pipeline's per-image steps grows with the number of images: wall time and
peak memory of each step at several sizes, and the log-log slope of time against size (1 = linear).

Steps (``--steps``, default all), each run as the pipeline runs it, on inputs built here:

- ``prepare``: :func:`fairxray.data.splits.prepare` of ``nih-official`` on ``n`` rows of the real NIH
  metadata (torchxrayvision's copy, 112,120 rows), subsampled by patient, with
  ``train_val_list.txt`` / ``test_list.txt`` drawn patient-wise in NIH's proportions (22.8 % of
  the images in test). Every finding keeps a few positive patients in train_val, and when the
  seeded val draw still misses a finding (only at small ``n``) the next ``data.seed`` is used.
- ``embed``: :func:`fairxray.adapt.store.embed` with the ``toy`` model on CPU, over a uint8 image
  cache of ``n`` images at ``--image-size`` px (default ``images.size`` of the params) and
  70/10/20 train/val/test split frames.
- ``evaluate``: :func:`fairxray.metrics.evaluate.evaluate_file` of one multi-class predictions
  table of ``n`` rows (``data.classes``, age group x sex, 3.6 images per patient as in NIH) with
  the params' ``metrics`` (``n_boot``, ``n_perm``): the metrics, their intervals, the
  permutation nulls and the files the stage writes.
- ``evaluate_point``: the same with ``n_boot = n_perm = 0``; ``evaluate`` minus this is the
  inference's share.

Each (step, size) is measured in its own fresh process (``--child``), so peaks do not mix; the
inputs are written beforehand by this process and are not timed. ``seconds`` is the step's own
wall time (not the interpreter start); ``peak_rss_mb`` is the child's peak resident memory,
``rss_start_mb`` its resident memory once the step's modules are imported, before the step.
A new step is one function: ``@step("name", setup=...)`` on ``run(folder, params) -> dict``
(see :func:`predictions_setup` for the tables; ``task="multilabel"`` writes the multi-label form).

    python benchmarks/scale.py --sizes 1000,10000,100000 > scale.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = "nih-official"
TEST_SHARE = 25_596 / 112_120  # NIH's test_list.txt share of the images
IMAGES_PER_PATIENT = 112_120 / 30_805
KEEP_PER_FINDING = 10  # positive patients of each finding kept in train_val (1 image each)


@dataclass(frozen=True)
class Step:
    name: str
    setup: Callable  # (n, folder, params, args) -> None: writes the inputs; untimed, in the parent
    run: Callable  # (folder, params) -> dict of facts about what was processed; timed, in a child
    imports: tuple[str, ...]  # loaded in the child before the clock starts


STEPS: dict[str, Step] = {}


def step(name: str, setup: Callable, imports: tuple[str, ...] = ()) -> Callable:
    def register(run: Callable) -> Callable:
        STEPS[name] = Step(name, setup, run, ("numpy", "pandas", "fairxray.config", *imports))
        return run

    return register


# ---- prepare -------------------------------------------------------------------------------


def _sample_metadata(raw, n: int, rng):
    """``n`` rows of the NIH CSV (raw columns): a few positive patients per finding (one image
    each), then whole random patients; returns (rows, ids of the kept-in-train_val patients)."""
    import pandas as pd

    from fairxray.data import nih

    findings = raw["Finding Labels"].str.split("|")
    taken: list = []
    keep_patients: set = set()
    for label in (*nih.NIH_LABELS, nih.NO_FINDING):
        rows = raw[findings.map(lambda ls, c=label: c in ls)]
        firsts = rows.drop_duplicates("Patient ID")
        firsts = firsts[~firsts["Patient ID"].isin(keep_patients)]
        pick = firsts.iloc[rng.permutation(len(firsts))[:KEEP_PER_FINDING]]
        taken.append(pick)
        keep_patients |= set(pick["Patient ID"])
    head = pd.concat(taken)
    rest = raw[~raw["Patient ID"].isin(keep_patients)]
    patients = rest["Patient ID"].unique()
    order = {p: i for i, p in enumerate(rng.permutation(patients))}
    rest = rest.assign(_o=rest["Patient ID"].map(order)).sort_values(["_o", "Image Index"])
    out = pd.concat([head, rest.drop(columns="_o").iloc[: max(n - len(head), 0)]])
    if len(out) < n:
        raise SystemExit(f"scale: prepare needs n <= {len(raw)} (the NIH metadata's rows)")
    return out.iloc[:n], keep_patients


@functools.cache
def _bundled_metadata():
    """The raw NIH CSV of torchxrayvision's wheel, read once per process (each size samples it)."""
    import pandas as pd

    from fairxray.data import nih

    return pd.read_csv(nih.bundled_metadata())


def prepare_setup(n: int, folder: Path, p, args) -> None:

    from fairxray.data import nih, splits

    rng = np.random.default_rng(0)
    raw = _bundled_metadata()
    if n < 2 * KEEP_PER_FINDING * (len(nih.NIH_LABELS) + 1):
        raise SystemExit(f"scale: prepare needs n >= {2 * KEEP_PER_FINDING * 15} rows")
    meta_rows, keep = _sample_metadata(raw, n, rng)
    folder.mkdir(parents=True, exist_ok=True)
    meta_rows.to_csv(folder / "Data_Entry_subset.csv", index=False)
    patients = meta_rows["Patient ID"].unique()
    free = [q for q in patients if q not in keep]
    test_patients, images = set(), 0
    for q, k in meta_rows[meta_rows["Patient ID"].isin(free)].groupby("Patient ID").size().items():
        if images >= TEST_SHARE * n:
            break
        if rng.random() < 2 * TEST_SHARE:  # spread the test patients over the id range
            test_patients.add(q)
            images += k
    is_test = meta_rows["Patient ID"].isin(test_patients)
    lists = folder / "lists"
    lists.mkdir(exist_ok=True)
    (lists / "test_list.txt").write_text("\n".join(meta_rows["Image Index"][is_test]) + "\n")
    (lists / "train_val_list.txt").write_text("\n".join(meta_rows["Image Index"][~is_test]) + "\n")
    # The seeded val draw must give val a positive of every finding (prepare checks it); at small
    # n some seeds do not: take the first that does. Untimed; the child runs that seed.
    meta = nih.read_metadata(folder / "Data_Entry_subset.csv")
    for seed in range(p.data.seed, p.data.seed + 500):
        q = _prepare_params(folder, p, seed)
        try:
            made, _ = splits.make_splits(q, OFFICIAL, meta)
            splits.check_splits(q, OFFICIAL, made, folder)
        except Exception:  # noqa: BLE001 - any failure of this seed: try the next
            continue
        (folder / "seed.json").write_text(json.dumps(seed))
        return
    raise SystemExit(f"scale: no data.seed gives every finding a val positive at n = {n}")


def _prepare_params(folder: Path, p, seed: int):
    data = dataclasses.replace(
        p.data,
        metadata=str(folder / "Data_Entry_subset.csv"),
        official_lists_dir=str(folder / "lists"),
        seed=seed,
    )
    return dataclasses.replace(p, data=data)


@step("prepare", setup=prepare_setup, imports=("fairxray.data.splits",))
def prepare_run(folder: Path, p) -> dict:
    from fairxray.data.splits import prepare

    q = _prepare_params(folder, p, json.loads((folder / "seed.json").read_text()))
    m = prepare(q, OFFICIAL, out_dir=folder / "splits")
    return {"rows": sum(m["rows"].values()), "rows_per_split": m["rows"]}


# ---- embed ---------------------------------------------------------------------------------


def embed_setup(n: int, folder: Path, p, args) -> None:
    """Split frames (70/10/20) under ``data/splits/<protocol>/`` and a complete uint8 cache of
    random pixels (the toy model's cost does not depend on them) under ``data/images/``."""
    import pandas as pd

    from fairxray import paths
    from fairxray.data.cache import INDEX, MANIFEST, PIXELS

    size = args.image_size or p.images.size
    protocol = p.data.protocol
    ids = [f"{k:08d}_000.png" for k in range(n)]
    frame = pd.DataFrame({"image_id": ids, "patient_id": [i[:8] for i in ids], "label_idx": 0})
    cut = [0, int(0.7 * n), int(0.8 * n), n]
    sp = folder / paths.splits(protocol)
    sp.mkdir(parents=True)
    for k, name in enumerate(paths.SPLITS):
        frame.iloc[cut[k] : cut[k + 1]].to_parquet(sp / f"{name}.parquet", index=False)
    (sp / "manifest.json").write_text(json.dumps({"protocol": protocol, "rows": n}))
    im = folder / paths.images(protocol)
    im.mkdir(parents=True)
    pixels = np.lib.format.open_memmap(im / PIXELS, "w+", np.uint8, (n, size, size))
    rng = np.random.default_rng(0)
    for k in range(0, n, 4096):
        pixels[k : k + 4096] = rng.integers(0, 256, pixels[k : k + 4096].shape, dtype=np.uint8)
    pixels.flush()
    del pixels
    pd.DataFrame({"image_id": ids, "row": np.arange(n)}).to_parquet(im / INDEX, index=False)
    manifest = {"complete": True, "source": "synthetic", "size": size, "images": n, "skipped": []}
    (im / MANIFEST).write_text(json.dumps(manifest))


@step("embed", setup=embed_setup, imports=("torch", "fairxray.adapt.store", "fairxray.models"))
def embed_run(folder: Path, p) -> dict:
    from fairxray.adapt.store import embed

    os.chdir(folder)  # the stage's paths are relative to the project root
    m = embed(p, "toy", "cpu", out_dir=Path("embeddings") / "toy")
    return {"rows": m["images_encoded"], "embed_dim": m["embed_dim"]}


# ---- evaluate ------------------------------------------------------------------------------


def predictions_frame(n: int, classes, age_groups, task: str = "multiclass", seed: int = 0):
    """A predictions table of the contract (``fairxray.metrics.predictions``): ``n`` images of
    ``n / 3.6`` patients with age group and sex per patient, informative probabilities that are
    weaker for the last age group. ``multilabel``: independent per-label probabilities and 0/1
    ``y_<Class>`` targets (about 1.6 positives per image, none for some)."""
    import pandas as pd

    from fairxray.metrics.predictions import prob_columns, target_columns

    rng = np.random.default_rng(seed)
    k = len(classes)
    n_pat = max(int(n / IMAGES_PER_PATIENT), 2)
    pid = np.sort(rng.integers(0, n_pat, n))
    age = np.asarray(age_groups)[rng.integers(0, len(age_groups), n_pat)][pid]
    sex = np.where(rng.random(n_pat) < 0.5, "F", "M")[pid]
    strength = np.where(age == age_groups[-1], 1.0, 1.5)[:, None]
    df = pd.DataFrame(
        {
            "image_id": [f"{i:08d}_000.png" for i in range(n)],
            "patient_id": [f"{q:08d}" for q in pid],
        }
    )
    if task == "multiclass":
        y = rng.integers(0, k, n)
        logits = rng.normal(size=(n, k)) + strength * np.eye(k)[y]
        prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        df["label_idx"] = y
    else:
        targets = (rng.random((n, k)) < 1.6 / k).astype(float)
        prob = 1 / (1 + np.exp(-(rng.normal(size=(n, k)) + strength * (2 * targets - 1))))
        df["label_idx"] = np.where(targets.sum(1) == 1, targets.argmax(1), -1)
        for c, col in enumerate(target_columns(classes)):
            df[col] = targets[:, c]
    for c, col in enumerate(prob_columns(classes)):
        df[col] = prob[:, c]
    return df.assign(age_group=age, sex=sex)


def predictions_setup(task: str = "multiclass") -> Callable:
    """A setup writing ``test.parquet``: :func:`predictions_frame` over the params' classes."""

    def setup(n: int, folder: Path, p, args) -> None:
        from fairxray.data.nih import age_group_labels
        from fairxray.metrics.predictions import write_predictions

        df = predictions_frame(n, p.data.classes, age_group_labels(p.data.age_bins), task)
        write_predictions(df, folder / "test.parquet", p.data.classes, p.metrics.sensitive, task)

    return setup


EVALUATE_IMPORTS = ("fairxray.metrics.evaluate", "matplotlib.pyplot")


def _evaluate(folder: Path, p, point_only: bool) -> dict:
    from fairxray.metrics.evaluate import evaluate_file, settings

    s = settings(p)
    if point_only:
        s = dataclasses.replace(s, n_boot=0, n_perm=0)
    ev = evaluate_file(folder / "test.parquet", folder / "metrics", s, p.profile)
    return {"rows": int(ev.metrics["n/images"]), "n_boot": s.n_boot, "n_perm": s.n_perm}


@step("evaluate_point", setup=predictions_setup(), imports=EVALUATE_IMPORTS)
def evaluate_point_run(folder: Path, p) -> dict:
    return _evaluate(folder, p, point_only=True)


@step("evaluate", setup=predictions_setup(), imports=EVALUATE_IMPORTS)
def evaluate_run(folder: Path, p) -> dict:
    return _evaluate(folder, p, point_only=False)


def _multilabel(p):
    """``p`` under ``data.task: multilabel`` with NIH's 14 findings and No Finding as targets."""
    from fairxray.data.nih import TARGETS

    data = dataclasses.replace(p.data, task="multilabel", classes=tuple(TARGETS))
    return dataclasses.replace(p, data=data)


def multilabel_setup(n: int, folder: Path, p, args) -> None:
    """``test.parquet`` of ``n`` images and, for the thresholds, ``val.parquet`` of ``n / 4``."""
    from fairxray.data.nih import age_group_labels
    from fairxray.metrics.predictions import write_predictions

    q = _multilabel(p)
    groups = age_group_labels(q.data.age_bins)
    for split, rows, seed in (("test", n, 0), ("val", max(n // 4, 50), 1)):
        df = predictions_frame(rows, q.data.classes, groups, "multilabel", seed=seed)
        path = folder / f"{split}.parquet"
        write_predictions(df, path, q.data.classes, q.metrics.sensitive, "multilabel")


@step("evaluate_multilabel", setup=multilabel_setup, imports=EVALUATE_IMPORTS)
def evaluate_multilabel_run(folder: Path, p) -> dict:
    """The multi-label evaluate (15 labels, val-chosen thresholds, every gap's inference)."""
    from fairxray.metrics.evaluate import evaluate_file, settings

    s = settings(_multilabel(p))
    ev = evaluate_file(folder / "test.parquet", folder / "metrics", s, p.profile)
    return {"rows": int(ev.metrics["n/images"]), "labels": len(s.classes), "n_boot": s.n_boot}


# ---- measurement ---------------------------------------------------------------------------


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in MB. ``ru_maxrss`` would not do:
    it carries over across ``exec`` the parent's size at the fork that started this child."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(name: str, folder: Path, params: Path, overrides: dict) -> dict:
    """Run one step in this (fresh) process: import, then time ``run``; peak from ``VmHWM``."""
    import importlib

    from fairxray.config import load_params

    s = STEPS[name]
    for mod in s.imports:
        importlib.import_module(mod)
    p = _with_overrides(load_params(params), overrides)
    start = _status_mb("VmRSS")
    t0 = time.perf_counter()
    facts = s.run(folder, p)
    seconds = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    return {"seconds": seconds, "rss_start_mb": start, "peak_rss_mb": peak, **facts}


def _with_overrides(p, o: dict):
    m = p.metrics
    metrics = dataclasses.replace(
        m, n_boot=o.get("n_boot", m.n_boot), n_perm=o.get("n_perm", m.n_perm)
    )
    return dataclasses.replace(p, metrics=metrics)


def slope(ns, ys) -> float | None:
    """Least-squares slope of log(y) on log(n): 1 = linear growth, 2 = quadratic."""
    pts = [(math.log(n), math.log(y)) for n, y in zip(ns, ys, strict=True) if y > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    return round(float(np.polyfit([x for x, _ in pts], [y for _, y in pts], 1)[0]), 3)


def measure(name: str, n: int, tmp: Path, params: Path, args, overrides: dict) -> dict:
    from fairxray.config import load_params

    folder = tmp / f"{name}-{n}"
    folder.mkdir(parents=True)
    STEPS[name].setup(n, folder, _with_overrides(load_params(params), overrides), args)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--folder", str(folder)]
    cmd += ["--params", str(params), "--overrides", json.dumps(overrides)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    process_s = time.perf_counter() - t0
    shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"scale: {name} at n = {n} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = r.pop("rows")
    return {
        "n": n,
        "rows_processed": rows,
        "seconds": round(r.pop("seconds"), 3),
        "process_seconds": round(process_s, 2),  # the child's whole life: start, imports, step
        **{k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()},
    }


def summarise(runs: list[dict]) -> dict:
    for r in runs:
        r["seconds_per_1k"] = round(1000 * r["seconds"] / r["n"], 4)
        r["peak_increase_mb"] = round(r["peak_rss_mb"] - r["rss_start_mb"], 1)
    ns = [r["n"] for r in runs]
    secs = [r["seconds"] for r in runs]
    return {
        "runs": runs,
        "slope_seconds": slope(ns, secs),
        # Between the two largest sizes, where a step's fixed cost (imports done, but model
        # build, plots, file writes) weighs least; n log n (sorting) reads 1 + 1/ln(n), about 1.1.
        "slope_seconds_top": slope(ns[-2:], secs[-2:]) if len(ns) > 1 else None,
        "slope_peak_increase": slope(ns, [r["peak_increase_mb"] for r in runs]),
        "fixed_plus_linear": fixed_plus_linear(ns, secs),
    }


def fixed_plus_linear(ns, ys) -> dict | None:
    """Least squares in relative terms of ``y = fixed + per_1k * n / 1000``, and the largest
    residual relative to y: small when the cost is a constant plus a linear term."""
    if len(set(ns)) < 2:
        return None
    y = np.asarray(ys, float)
    b, a = np.polyfit(np.asarray(ns, float), y, 1, w=1 / y)  # relative residuals count
    worst = max(abs(a + b * n - y) / y for n, y in zip(ns, ys, strict=True))
    return {
        "fixed_seconds": round(float(a), 3),
        "seconds_per_1k": round(float(1000 * b), 4),
        "max_rel_residual": round(float(worst), 3),
    }


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def _write(path: Path | None, result: dict) -> None:
    if path is not None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="comma-separated row counts")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated: {', '.join(STEPS)}")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--image-size", type=int, default=0, help="embed's cache side; 0 = images.size")
    ap.add_argument("--n-boot", type=int, help="overrides metrics.n_boot")
    ap.add_argument("--n-perm", type=int, help="overrides metrics.n_perm")
    ap.add_argument("--tmp", type=Path, help="scratch folder (default: a system temporary one)")
    ap.add_argument("--out", type=Path, help="also write the JSON here, after every measurement")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    params = args.params.resolve()
    if args.child:
        print(json.dumps(child(args.child, args.folder, params, json.loads(args.overrides))))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    names = [s for s in args.steps.split(",") if s]
    unknown = [s for s in names if s not in STEPS]
    if unknown or not sizes:
        ap.error(f"unknown step(s) {unknown}; known: {', '.join(STEPS)}" if unknown else "no sizes")
    overrides = {
        k: v for k, v in (("n_boot", args.n_boot), ("n_perm", args.n_perm)) if v is not None
    }
    from fairxray.config import load_params

    p = _with_overrides(load_params(params), overrides)
    result = {
        "benchmark": "scale",
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": os.environ.get("FAIRXRAY_COMMIT") or _commit(),
        "cores": len(os.sched_getaffinity(0)),
        "load_avg_1m_start": round(os.getloadavg()[0], 2),
        "sizes": sizes,
        "settings": {
            "classes": len(p.data.classes),
            "n_boot": p.metrics.n_boot,
            "n_perm": p.metrics.n_perm,
            "embed_image_size": args.image_size or p.images.size,
            "embed_batch_size": p.train.embed_batch_size,
            "torch_threads": p.train.num_threads,
        },
        "steps": {},
        "complete": False,
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for name in names:
            runs = []
            for n in sizes:
                runs.append(measure(name, n, Path(tmp), params, args, overrides))
                result["steps"][name] = summarise(runs)
                _write(args.out, result)
                print(f"scale: {name} n={n} {runs[-1]['seconds']} s", file=sys.stderr)
    result["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    result["complete"] = True
    _write(args.out, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
