"""The GPU benchmark of issue #19: one run, one JSON, every ratio measured side by side.

Sections of the JSON (``benchmarks/gpu.sh`` runs this on the lent GPU; the unit test runs it on
CPU at tiny sizes with ``--tiny``):

- ``loop``: for each backbone x method (``full_ft``, ``lora``) x batch size x ``torch.compile``
  off/on: end-to-end images/s of ``fairxray.adapt.fit`` on a cached uint8 image array (what the
  `train` stage does: batch gather, augmentation on the device, the model's preprocessing,
  bf16 autocast and channels_last on CUDA, fused AdamW, scheduler; per-epoch training time that
  ``fit`` records, epoch 1 left out as warm-up) against the model-bound images/s (the same
  module, optimiser and precision stepping on one preprocessed batch already on the device).
- ``paper_loop``: the paper's released settings on the same GPU and model: each epoch every PNG
  is decoded and augmented with PIL (RandomVerticalFlip(0.3), RandomHorizontalFlip(0.3),
  RandomRotation(15), ColorJitter(0.2, 0.2, 0.2) on the full-size image) in 4 DataLoader
  workers, fp32, no channels_last, unfused AdamW; with its own fp32 model-bound figure.
- ``embed``: ``fairxray.adapt.store.encode_cache`` images/s per backbone (as the `embed` stage
  runs it) against the model-bound inference images/s at the same precision.
- ``grid``: ``fit`` of each paper model x trained method on the paper's split sizes (840 train,
  120 val, 240 test rows, batch 64, the paper profile's train settings, checkpoints written every
  epoch as the `train` stage does) for a few epochs; the measured per-epoch train + validation
  time, the fixed cost (build, copies, first-epoch warm-up, final predictions) and the embedding
  time give the projected minutes of the paper grid (models x methods x seeds x epochs) and of
  the tuned grid (trials per pair, see ``project``).
- ``targets``: each issue-#19 target with the measured value and whether it is met.

Every measurement runs inside a wall-clock budget (``--budget-s``); one that would start after
it is recorded as ``{"skipped": "budget"}`` rather than silently left out. Random weights
throughout (the speed of a network does not depend on its weights).

    python benchmarks/gpu.py --out gpu.json          # the GPU run (about 7 minutes)
    python benchmarks/gpu.py --tiny --out tiny.json  # CPU, toy model, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fairxray import adapt
from fairxray.adapt.fit import FitData, SplitInputs, fit, resolve_device
from fairxray.adapt.store import encode_cache
from fairxray.config import load_params
from fairxray.models import create

REPO = Path(__file__).resolve().parents[1]
BACKBONES = {"clip-vit-b16": "ViT-B/16", "medclip-vit": "Swin-T", "medclip-resnet": "ResNet-50"}
SECTIONS = ("loop", "paper", "embed", "grid", "compile")
TRAINED = ("linear_probe", "mlp", "lora", "full_ft")
PAPER_AUG = "RandomVerticalFlip(0.3), RandomHorizontalFlip(0.3), RandomRotation(15), ColorJitter(0.2,0.2,0.2)"


class Budget:
    """Wall-clock budget: ``ok()`` is False once ``seconds`` have passed since the start.
    ``save()`` writes the JSON so far (``"complete": false``) to ``path``, so a run killed by an
    outer timeout still leaves every finished measurement behind."""

    def __init__(self, seconds: float, path: str | None = None):
        self.t0, self.seconds, self.path, self.out = time.perf_counter(), seconds, path, {}

    def save(self, complete: bool = False) -> None:
        if self.path:
            write_json(self.path, {**self.out, "complete": complete})

    def ok(self) -> bool:
        return time.perf_counter() - self.t0 < self.seconds

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.t0, 1)


def paper_train() -> dict:
    """The paper profile's ``train`` section (profiles/paper.yaml), as overrides."""
    from ruamel.yaml import YAML

    return dict(YAML(typ="safe").load((REPO / "profiles" / "paper.yaml").read_text())["train"])


def train_params(args, **over):
    p = load_params(args.params)
    base = {k: v for k, v in paper_train().items() if k != "augment"}
    return dataclasses.replace(
        p.train, **{**base, "device": args.device, "num_threads": args.threads, **over}
    )


def pixels(n: int, size: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[n, size, size]`` images with a class-dependent mean (content does not matter to
    speed; a learnable signal keeps the loss finite) and their labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    base = (40 + 30 * y).astype(np.int16)[:, None, None]
    noise = rng.integers(-40, 41, (n, size, size), dtype=np.int16)
    return np.clip(base + noise, 0, 255).astype(np.uint8), y.astype(np.int64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_bound(model_name, method, hp, n_classes, size, device, steps, *, bf16, backend):
    """Train-step images/s of the module alone on one batch already on the device."""
    torch.manual_seed(0)
    module = adapt.build(method, n_classes=n_classes, hp=hp, model=create(model_name)).to(device)
    cuda = device.type == "cuda"
    if cuda and bf16:
        module.to(memory_format=torch.channels_last)
    module.train()
    fused = {"fused": True} if cuda and bf16 else {}
    opt = torch.optim.AdamW(module.param_groups(hp), weight_decay=hp.weight_decay, **fused)
    x = module.preprocess(
        torch.randint(0, 256, (hp.batch_size, size, size), dtype=torch.uint8).to(device)
    )
    if cuda and bf16:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, n_classes, (hp.batch_size,)).to(device)
    fwd = torch.compile(module, backend=backend) if backend else module

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and bf16):
            logits = fwd(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * hp.batch_size / (time.perf_counter() - t0)


def timed_rate(history: list[dict]) -> float:
    timed = history[1:] or history
    return sum(h["train_images"] for h in timed) / sum(h["train_seconds"] for h in timed)


def loop_row(args, model_name, method, bs, backend, n_classes, device) -> dict:
    hp = train_params(args, epochs=args.epochs, batch_size=bs, patience=0)
    px, y = pixels(args.n_train, args.size, n_classes, 0)
    vpx, vy = pixels(max(2 * n_classes, 64), args.size, n_classes, 1)
    data = FitData(n_classes, SplitInputs(y, pixels=px), SplitInputs(vy, pixels=vpx))
    res = fit(method, data, hp, seed=0, model=create(model_name), compile_backend=backend)
    e2e = timed_rate(res.history)
    bound = model_bound(
        model_name, method, hp, n_classes, args.size, device, args.steps, bf16=True, backend=backend
    )
    return {
        "model": model_name,
        "backbone": BACKBONES.get(model_name, model_name),
        "method": method,
        "batch_size": bs,
        "compile": backend or "off",
        "end_to_end_images_per_s": round(e2e, 1),
        "model_bound_images_per_s": round(bound, 1),
        "ratio": round(e2e / bound, 3),
        "first_epoch_seconds": round(res.history[0]["train_seconds"], 2),
    }


# -- the paper's loop: PNG decoded and augmented with PIL every epoch, fp32 ------------------


class PngSet(torch.utils.data.Dataset):
    """Row ``i`` -> file ``i % n_files``: decode, RGB, the paper's PIL augmentation on the full
    image, then grey and resized to the cache side (the model's own preprocessing follows)."""

    def __init__(self, files: list[str], labels: np.ndarray, size: int):
        import torchvision.transforms as T

        self.files, self.labels, self.size = files, labels, size
        self.aug = T.Compose(
            [
                T.RandomVerticalFlip(0.3),
                T.RandomHorizontalFlip(0.3),
                T.RandomRotation(15),
                T.ColorJitter(0.2, 0.2, 0.2),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.files[i % len(self.files)]) as im:
            img = self.aug(im.convert("RGB"))
        img = img.convert("L").resize((self.size, self.size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()), int(self.labels[i])


def write_pngs(folder: Path, n: int, side: int) -> list[str]:
    from PIL import Image

    files = []
    for k, (img, _) in enumerate(zip(*pixels(n, side, 6, 7), strict=True)):
        files.append(str(folder / f"{k:05d}.png"))
        Image.fromarray(img).save(files[-1])
    return files


def paper_row(args, model_name, method, files, n_classes, device) -> dict:
    hp = train_params(args, batch_size=args.paper_batch)
    torch.manual_seed(0)
    module = adapt.build(method, n_classes=n_classes, hp=hp, model=create(model_name)).to(device)
    module.train()
    opt = torch.optim.AdamW(module.param_groups(hp), weight_decay=hp.weight_decay)
    ds = PngSet(files, np.arange(args.paper_n) % n_classes, args.size)
    dl = torch.utils.data.DataLoader(
        ds, batch_size=hp.batch_size, shuffle=True, num_workers=args.paper_workers, drop_last=True
    )
    rates = []
    for _epoch in range(args.paper_epochs):
        t0, seen = time.perf_counter(), 0
        for xb, yb in dl:
            x = module.preprocess(xb.to(device))
            loss = F.cross_entropy(module(x), yb.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(yb)
        _sync(device)
        rates.append(seen / (time.perf_counter() - t0))
    e2e = statistics.mean(rates[1:] or rates)
    bound = model_bound(
        model_name, method, hp, n_classes, args.size, device, args.steps, bf16=False, backend=None
    )
    return {
        "model": model_name,
        "backbone": BACKBONES.get(model_name, model_name),
        "method": method,
        "batch_size": hp.batch_size,
        "precision": "fp32",
        "workers": args.paper_workers,
        "png_side": args.png_side,
        "augment": PAPER_AUG,
        "end_to_end_images_per_s": round(e2e, 1),
        "model_bound_fp32_images_per_s": round(bound, 1),
        "ratio": round(e2e / bound, 3),
    }


# -- embedding ---------------------------------------------------------------------------------


@dataclasses.dataclass
class _ArrayCache:
    """The two members of ``ImageCache`` that ``encode_cache`` reads."""

    pixels: np.ndarray

    def rows_for(self, image_ids) -> np.ndarray:
        return np.asarray([int(i) for i in image_ids], dtype=np.int64)


def embed_row(args, model_name, device) -> dict:
    model = create(model_name).to(device)
    px, _ = pixels(args.embed_n, args.size, 6, 3)
    ids = [str(i) for i in range(len(px))]
    cache = _ArrayCache(px)
    encode_cache(model, cache, ids[: args.embed_batch], args.embed_batch, device)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    encode_cache(model, cache, ids, args.embed_batch, device, normalize=False)
    e2e = len(ids) / (time.perf_counter() - t0)
    x = model.preprocess(torch.from_numpy(px[: args.embed_batch]).to(device))
    model.eval()  # as encode_cache runs it
    with torch.inference_mode():
        for _ in range(2):
            model.encode_image(x, normalize=False)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            model.encode_image(x, normalize=False)
        _sync(device)
    bound = args.steps * len(x) / (time.perf_counter() - t0)
    return {
        "model": model_name,
        "backbone": BACKBONES.get(model_name, model_name),
        "batch_size": args.embed_batch,
        "precision": "fp32",
        "images": len(ids),
        "end_to_end_images_per_s": round(e2e, 1),
        "model_bound_images_per_s": round(bound, 1),
        "ratio": round(e2e / bound, 3),
    }


# -- the grid projection -----------------------------------------------------------------------


def grid_row(args, model_name, method, n_classes, embed_s, tmp: Path) -> dict:
    """Measured epochs of one model x method on the paper's split sizes."""
    hp = train_params(args, epochs=args.grid_epochs, patience=0)
    px, y = pixels(args.grid_n_train, args.size, n_classes, 0)
    vpx, vy = pixels(args.grid_n_val, args.size, n_classes, 1)
    tpx, ty = pixels(args.grid_n_test, args.size, n_classes, 2)
    t_build = time.perf_counter()
    model = create(model_name)
    build_s = time.perf_counter() - t_build
    if adapt.get_method(method).inputs == "embeddings":
        feats = {
            k: np.random.default_rng(i).standard_normal((n, model.spec.embed_dim)).astype("f4")
            for i, (k, n) in enumerate((("train", len(y)), ("val", len(vy)), ("test", len(ty))))
        }
        splits = [
            SplitInputs(lab, features=feats[k]) for k, lab in zip(feats, (y, vy, ty), strict=True)
        ]
        model, build_s = None, 0.0  # the `train` stage builds no model for embedding methods
    else:
        splits = [
            SplitInputs(y, pixels=px),
            SplitInputs(vy, pixels=vpx),
            SplitInputs(ty, pixels=tpx),
        ]
    data = FitData(n_classes, *splits)
    # Wall-clock stamps after each epoch's checkpoint (``on_epoch`` runs after it): an epoch's
    # cost includes validation, selection and writing the checkpoint, as in the `train` stage.
    stamps = [time.perf_counter()]
    res = fit(
        method,
        data,
        hp,
        seed=0,
        model=model,
        checkpoint_dir=tmp / f"{model_name}-{method}",
        on_epoch=lambda _e, _s: stamps.append(time.perf_counter()),
    )
    end = time.perf_counter()
    walls = np.diff(stamps)
    steady = float(np.mean(walls[1:] if len(walls) > 1 else walls))
    compute = [h["train_seconds"] + h["eval_seconds"] for h in res.history]
    return {
        "model": model_name,
        "method": method,
        "epochs_measured": len(walls),
        "epoch_seconds": round(steady, 4),  # train + validation + checkpoint, steady state
        "epoch_train_val_seconds": round(float(np.mean(compute[1:] or compute)), 4),
        "first_epoch_seconds": round(build_s + float(walls[0]), 4),  # + model build, setup
        "fixed_seconds": round(end - stamps[-1], 4),  # best weights restored, val + test predicted
        "embed_seconds": round(embed_s, 4) if model is None else 0.0,
    }


def run_seconds(row: dict, epochs: int) -> float:
    """One fit of ``epochs`` epochs: fixed cost + first epoch + the rest at the steady rate."""
    return row["fixed_seconds"] + row["first_epoch_seconds"] + (epochs - 1) * row["epoch_seconds"]


def project(rows: list[dict], args, tp, start_s: float = 0.0) -> dict:
    """Paper grid: models x methods x seeds runs of ``full_epochs`` plus one embedding pass per
    model. Tuned grid: per pair ``trials`` trials, then the seeds' final runs. A pruned trial runs
    ``pruner_warmup_epochs + 1`` epochs (the first epoch it may be stopped at); the first
    ``pruner_startup_trials`` never are. Two bounds: no trial pruned (upper), and every trial that
    may be pruned pruned at its first chance (lower); a median pruner lands between them.
    ``start_s``: one stage process's start (imports); the paper grid starts one `embed` per model
    and one `train` and one `evaluate` per pair, the tuned grid one `tune` more per pair."""
    e = args.grid_full_epochs
    embed = {r["model"]: r["embed_seconds"] for r in rows if r["embed_seconds"]}
    paper = sum(args.grid_seeds * run_seconds(r, e) for r in rows) + sum(embed.values())
    paper += start_s * (len(embed) + 2 * len(rows))
    startup = min(tp.pruner_startup_trials, args.tune_trials)
    pruned_e = min(tp.pruner_warmup_epochs + 1, e)
    upper = paper + start_s * len(rows) + sum(args.tune_trials * run_seconds(r, e) for r in rows)
    lower = (
        paper
        + start_s * len(rows)
        + sum(
            startup * run_seconds(r, e) + (args.tune_trials - startup) * run_seconds(r, pruned_e)
            for r in rows
        )
    )
    no_ckpt = [{**r, "epoch_seconds": r["epoch_train_val_seconds"]} for r in rows]
    paper_no_ckpt = paper - sum(
        args.grid_seeds * (run_seconds(r, e) - run_seconds(q, e))
        for r, q in zip(rows, no_ckpt, strict=True)
    )
    return {
        "runs": len(rows) * args.grid_seeds,
        "pairs": len(rows),
        "epochs": e,
        "seeds": args.grid_seeds,
        "paper_grid_minutes": round(paper / 60, 2),
        "paper_grid_minutes_if_checkpoints_were_free": round(paper_no_ckpt / 60, 2),
        "tune_trials_per_pair": args.tune_trials,
        "tuned_grid_minutes_no_pruning": round(upper / 60, 2),
        "tuned_grid_minutes_all_prunable_pruned": round(lower / 60, 2),
        "pruned_trial_epochs": pruned_e,
        "stage_process_start_seconds": round(start_s, 2),
        "includes": "per run: model build, every epoch's training, validation and checkpoint, "
        "the final validation and test predictions; per model: one embedding pass; per stage: "
        "process start. Not included: the image cache, bootstrap evaluation, export, report",
    }


# -- targets and the run -----------------------------------------------------------------------


def targets(out: dict) -> dict:
    """Issue #19's targets from the rows of this run (None where a row was skipped)."""
    loop = [r for r in out["loop"] if "ratio" in r]
    eager = [r for r in loop if r["compile"] == "off"]
    best = {}
    for r in loop:  # the better of compile off/on for each backbone x method x batch
        key = (r["model"], r["method"], r["batch_size"])
        if key not in best or r["end_to_end_images_per_s"] > best[key]["end_to_end_images_per_s"]:
            best[key] = r
    speedups = []
    for p in (r for r in out["paper_loop"] if "ratio" in r):
        ours = [
            r["end_to_end_images_per_s"]
            for r in eager
            if (r["model"], r["method"], r["batch_size"])
            == (p["model"], p["method"], p["batch_size"])
        ]
        if ours:
            speedups.append(
                {
                    "model": p["model"],
                    "method": p["method"],
                    "batch_size": p["batch_size"],
                    "speedup": round(ours[0] / p["end_to_end_images_per_s"], 2),
                }
            )
    proj = out.get("projection") or {}

    def meets(value, ok):
        return {"value": value, "met": None if value is None else bool(ok(value))}

    return {
        "min_ratio_end_to_end_over_model_bound_eager": meets(
            min((r["ratio"] for r in eager), default=None), lambda v: v >= 0.9
        ),
        "min_ratio_best_of_compile": meets(
            min((r["ratio"] for r in best.values()), default=None), lambda v: v >= 0.9
        ),
        "min_speedup_over_paper_settings": meets(
            min((s["speedup"] for s in speedups), default=None), lambda v: v >= 8
        ),
        "speedups_over_paper_settings": speedups,
        "paper_grid_minutes": meets(proj.get("paper_grid_minutes"), lambda v: v <= 20),
        "tuned_grid_minutes_no_pruning": meets(
            proj.get("tuned_grid_minutes_no_pruning"), lambda v: v <= 120
        ),
    }


def _measure(budget: Budget, rows: list, label: dict, fn) -> None:
    if not budget.ok():
        rows.append({**label, "skipped": "budget"})
        return
    t0 = time.perf_counter()
    try:
        rows.append({**fn(), "seconds": round(time.perf_counter() - t0, 1)})
    except torch.cuda.OutOfMemoryError as err:  # one shape too big must not lose the run
        torch.cuda.empty_cache()
        rows.append({**label, "error": f"out of memory: {str(err).splitlines()[0]}"})
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    budget.save()


def write_json(path: str, obj: dict) -> None:
    """Whole or not at all: a temporary file renamed over ``path``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".part")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def environment(device: torch.device) -> dict:
    try:
        commit = (
            subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            or None
        )
    except OSError:
        commit = None
    return {
        "benchmark": "gpu",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit or os.environ.get("FAIRXRAY_COMMIT"),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "random_weights": True,
    }


def run(args) -> dict:
    budget = Budget(args.budget_s, args.out)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    p = load_params(args.params)
    n_classes = len(p.data.classes)
    out = {**environment(device), "tiny": args.tiny, "budget_s": args.budget_s}
    out["settings"] = {k: v for k, v in vars(args).items() if k not in ("out", "params")}
    out.update(loop=[], paper_loop=[], embed=[], grid=[], projection=None)
    budget.out = out
    # Priority order: the eager loop, embedding and the grid (the projection), the paper's loop,
    # then the compiled loop (the slowest to start); what does not fit the budget is marked skipped.
    if "loop" in args.sections:
        loops(args, out["loop"], budget, None, n_classes, device)
    with tempfile.TemporaryDirectory() as tmp:
        if "embed" in args.sections:
            for m in args.backbones:
                _measure(budget, out["embed"], {"model": m}, lambda m=m: embed_row(args, m, device))
        if "grid" in args.sections:
            grid(args, out, budget, Path(tmp), n_classes, device, p.tune)
        if "paper" in args.sections:
            paper_loops(args, out["paper_loop"], budget, Path(tmp), n_classes, device)
    if "compile" in args.sections:
        loops(args, out["loop"], budget, args.compile_backend, n_classes, device)
    out["targets"] = targets(out)
    out["distributions"] = imported_distributions()
    out["elapsed_s"] = budget.elapsed()
    return out


def loops(args, rows, budget, backend, n_classes, device) -> None:
    """Batch-size major, largest first when compiled: if the budget ends mid-way, every backbone
    and method has its compiled figure at the batch where compilation pays most."""
    sizes = sorted(args.batch_sizes, reverse=backend is not None)
    for bs in sizes:
        for m in args.backbones:
            for method in args.methods:
                label = {
                    "model": m,
                    "method": method,
                    "batch_size": bs,
                    "compile": backend or "off",
                }
                _measure(
                    budget,
                    rows,
                    label,
                    lambda m=m, method=method, bs=bs: loop_row(
                        args, m, method, bs, backend, n_classes, device
                    ),
                )


def paper_loops(args, rows, budget, tmp: Path, n_classes, device) -> None:
    if not budget.ok():
        return
    files = write_pngs(tmp, args.png_files, args.png_side)
    for m in args.backbones:
        for method in args.methods:
            label = {"model": m, "method": method, "batch_size": args.paper_batch}
            _measure(
                budget,
                rows,
                label,
                lambda m=m, method=method: paper_row(args, m, method, files, n_classes, device),
            )


def grid(args, out, budget, tmp: Path, n_classes, device, tp) -> None:
    for m in args.grid_models:
        embed_s = args.grid_n_embed / _embed_rate(out["embed"], m, args, device)
        for method in TRAINED:
            _measure(
                budget,
                out["grid"],
                {"model": m, "method": method},
                lambda m=m, method=method, e=embed_s: grid_row(args, m, method, n_classes, e, tmp),
            )
    done = [r for r in out["grid"] if "epoch_seconds" in r]
    if len(done) == len(args.grid_models) * len(TRAINED):
        out["projection"] = project(done, args, tp, stage_start_seconds())


def stage_start_seconds() -> float:
    """Seconds a fresh Python takes to import the `train` and `tune` stages (torch included)."""
    t0 = time.perf_counter()
    code = "import fairxray.stages.train, fairxray.stages.tune"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
    return time.perf_counter() - t0


def imported_distributions() -> dict:
    """Installed distributions this run imported, with versions (``gpu.sh`` installs these)."""
    import importlib.metadata as md

    by_top = md.packages_distributions()
    names = {d for mod in list(sys.modules) for d in by_top.get(mod.split(".")[0], [])}
    out = {}
    for name in sorted(names, key=str.lower):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def _embed_rate(rows: list[dict], model: str, args, device) -> float:
    for r in rows:
        if r.get("model") == model and "end_to_end_images_per_s" in r:
            return r["end_to_end_images_per_s"]
    r = embed_row(args, model, device)  # a grid model that is not one of the backbones
    rows.append({**r, "for_grid": True})
    return r["end_to_end_images_per_s"]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = ap.add_argument
    a("--tiny", action="store_true", help="CPU check at tiny sizes with the toy model (seconds)")
    a("--backbones", nargs="+", default=list(BACKBONES))
    a("--grid-models", nargs="+", default=None, help="default: the paper profile's models")
    a("--methods", nargs="+", default=["full_ft", "lora"])
    a("--batch-sizes", nargs="+", type=int, default=[64, 256])
    a("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    a("--compile-backend", default="inductor")
    a("--n-train", type=int, default=1536, help="loop: training images per epoch")
    a("--epochs", type=int, default=3, help="loop and paper loop epochs; epoch 1 is warm-up")
    a("--size", type=int, default=256, help="cached image side (the paper profile's images.size)")
    a("--steps", type=int, default=10, help="model-bound timed steps")
    a("--paper-batch", type=int, default=64)
    a("--paper-epochs", type=int, default=2, help="epoch 1 (workers starting) is warm-up")
    a("--paper-n", type=int, default=512, help="paper loop: images per epoch")
    a("--paper-workers", type=int, default=4)
    a("--png-files", type=int, default=128, help="distinct PNGs the paper loop cycles through")
    a("--png-side", type=int, default=1024, help="NIH PNGs are 1024x1024 8-bit grey")
    a("--embed-n", type=int, default=2048)
    a("--embed-batch", type=int, default=128, help="train.embed_batch_size")
    a("--grid-n-train", type=int, default=840)
    a("--grid-n-val", type=int, default=120)
    a("--grid-n-test", type=int, default=240)
    a("--grid-n-embed", type=int, default=1200, help="images the embed stage encodes per model")
    a("--grid-epochs", type=int, default=3, help="measured epochs per grid pair")
    a("--grid-full-epochs", type=int, default=100)
    a("--grid-seeds", type=int, default=3)
    a("--tune-trials", type=int, default=20)
    a("--budget-s", type=float, default=420.0)
    a("--device", default="auto", choices=("auto", "cpu", "cuda"))
    a("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    a("--params", default=str(REPO / "params.yaml"))
    a("--out", help="also write the JSON here")
    return ap


TINY = dict(
    backbones=["toy"],
    grid_models=["toy"],
    batch_sizes=[8],
    compile_backend="eager",
    n_train=32,
    epochs=2,
    size=32,
    steps=2,
    paper_batch=8,
    paper_n=16,
    paper_epochs=2,
    paper_workers=2,
    png_files=4,
    png_side=64,
    embed_n=16,
    embed_batch=8,
    grid_n_train=24,
    grid_n_val=12,
    grid_n_test=12,
    grid_n_embed=24,
    grid_epochs=2,
    device="cpu",
    threads=1,
)


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    if ap.parse_args(argv).tiny:
        ap.set_defaults(**TINY)  # tiny sizes, unless given on the command line
    args = ap.parse_args(argv)
    if args.grid_models is None:
        from ruamel.yaml import YAML

        args.grid_models = YAML(typ="safe").load((REPO / "profiles" / "paper.yaml").read_text())[
            "models"
        ]
    out = {**run(args), "complete": True}
    if args.out:
        write_json(args.out, out)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
