"""Linear probe on cached embeddings against the same probe re-encoding the images every epoch.

(a) cached: encode every train/val image once (``fairxray.adapt.store.encode_cache``), then
``fairxray.adapt.fit("linear_probe", ...)`` on the embeddings (what the `embed` + `train` stages do);
(b) re-encoding, as the peers do: the same head, optimiser, schedule, batches and epochs, but every
batch's pixels go through the frozen image tower again, and so does the validation split after
every epoch. Both on synthetic demo images at ``--size`` px. Prints one JSON object; the number to
read is ``speedup`` = time(b) / time(a), measured in this run.

(c) with ``--views K`` (``train.frozen_augment_views``): the cost of caching K augmented views of
every training image (encode seconds, bytes on disk = K x n_train x embed_dim x 4) and of the
probe trained on them (``views_*`` keys).

    .venv/bin/python benchmarks/embed_cache.py                       # toy, CPU, seconds
    .venv/bin/python benchmarks/embed_cache.py --model clip-vit-b32 --size 224 --n 128 --epochs 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fairxray import adapt
from fairxray.adapt.fit import FitData, SplitInputs, batches, fit, resolve_device
from fairxray.adapt.store import encode_cache, encode_views
from fairxray.config import load_params
from fairxray.data import synthetic
from fairxray.data.cache import ImageCache
from fairxray.models import create

REPO = Path(__file__).resolve().parents[1]


def synthetic_split(
    prefix: str, n: int, size: int, n_classes: int, syn
) -> tuple[list, np.ndarray, np.ndarray]:
    ids = [f"{prefix}{k:07d}_000.png" for k in range(n)]
    labels = np.arange(n) % n_classes
    px = np.stack(
        [
            synthetic.render(i, int(c), 0, "M", size, syn, n_classes)
            for i, c in zip(ids, labels, strict=True)
        ]
    )
    return ids, labels, px


def reencoding_fit(model, hp, ids_px, labels, val_px, val_labels, n_classes, seed, device) -> None:
    """The peers' loop: frozen encoder in the forward pass of every batch and every epoch."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    module = adapt.build(
        "linear_probe", n_classes=n_classes, hp=hp, in_dim=model.spec.embed_dim
    ).to(device)
    model.to(device).eval()
    opt = torch.optim.AdamW(module.param_groups(hp), weight_decay=hp.weight_decay)
    y = torch.from_numpy(labels).to(device)
    x = torch.from_numpy(ids_px).to(device)
    xv = torch.from_numpy(val_px).to(device)
    steps = len(batches(torch.arange(len(y)), hp.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=hp.epochs * steps)
    for _ in range(hp.epochs):
        module.train()
        for idx in batches(torch.randperm(len(y), generator=gen), hp.batch_size):
            idx = idx.to(device)
            with torch.no_grad():
                z = model.encode_image(model.preprocess(x[idx]), normalize=False)
            loss = F.cross_entropy(module(z), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        module.eval()
        with torch.no_grad():
            for s in range(0, len(xv), hp.embed_batch_size):
                module(
                    model.encode_image(
                        model.preprocess(xv[s : s + hp.embed_batch_size]), normalize=False
                    )
                )
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy")
    ap.add_argument("--n", type=int, default=512, help="training images (val: a quarter of it)")
    ap.add_argument("--size", type=int, default=64, help="cached image side in px")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: train.num_threads)")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--views", type=int, default=4, help="K augmented views (0: skip part c)")
    args = ap.parse_args(argv)

    p = load_params(args.params)
    n_classes = len(p.data.classes)
    hp = dataclasses.replace(
        p.train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
        patience=0,
        num_threads=p.train.num_threads if args.threads is None else args.threads,
    )
    if hp.num_threads > 0:
        torch.set_num_threads(hp.num_threads)
    device = resolve_device(hp.device)
    syn = p.images.synthetic
    tr_ids, tr_y, tr_px = synthetic_split("1", args.n, args.size, n_classes, syn)
    va_ids, va_y, va_px = synthetic_split("2", max(args.n // 4, 2), args.size, n_classes, syn)
    ids = tr_ids + va_ids
    cache = ImageCache(
        Path("<memory>"), np.concatenate([tr_px, va_px]), {i: k for k, i in enumerate(ids)}, {}
    )
    model = create(args.model)

    # Warm-up (lazy imports, allocator, kernels) outside both timings: one epoch of each loop.
    warm = dataclasses.replace(hp, epochs=1)
    w = args.batch_size
    wf = encode_cache(model, cache, ids[:w], w, device, normalize=False)
    fit(
        "linear_probe", FitData(n_classes, *(SplitInputs(tr_y[:w], features=wf),) * 2), warm, seed=0
    )
    reencoding_fit(model, warm, tr_px[:w], tr_y[:w], va_px[:2], va_y[:2], n_classes, 0, device)

    t0 = time.perf_counter()
    feats = encode_cache(model, cache, ids, hp.embed_batch_size, device, normalize=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t_encode = time.perf_counter() - t0
    data = FitData(
        n_classes,
        SplitInputs(tr_y, features=feats[: len(tr_ids)]),
        SplitInputs(va_y, features=feats[len(tr_ids) :]),
    )
    t0 = time.perf_counter()
    fit("linear_probe", data, hp, seed=0)
    t_fit = time.perf_counter() - t0
    cached = t_encode + t_fit

    t0 = time.perf_counter()
    reencoding_fit(model, hp, tr_px, tr_y, va_px, va_y, n_classes, 0, device)
    reencode = time.perf_counter() - t0

    views_keys = {}
    if args.views > 0:
        t0 = time.perf_counter()
        views = encode_views(
            model, cache, tr_ids, args.views, hp.augment, hp.embed_batch_size, device
        )
        t_views = time.perf_counter() - t0
        vdata = FitData(
            n_classes,
            SplitInputs(tr_y, features=feats[: len(tr_ids)], feature_views=views),
            SplitInputs(va_y, features=feats[len(tr_ids) :]),
        )
        t0 = time.perf_counter()
        fit("linear_probe", vdata, hp, seed=0)
        views_keys = {
            "views": args.views,
            "views_encode_s": round(t_views, 3),
            "views_encode_per_view_s": round(t_views / args.views, 3),
            "views_bytes": int(views.nbytes),
            "views_fit_s": round(time.perf_counter() - t0, 3),
        }

    result = {
        "benchmark": "embed_cache",
        "model": args.model,
        "random_weights": True,
        "device": str(device),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "n_train": len(tr_ids),
        "n_val": len(va_ids),
        "size": args.size,
        "epochs": hp.epochs,
        "batch_size": hp.batch_size,
        "cached_encode_s": round(t_encode, 3),
        "cached_fit_s": round(t_fit, 3),
        "cached_total_s": round(cached, 3),
        "reencode_total_s": round(reencode, 3),
        "speedup": round(reencode / cached, 2),
        **views_keys,
    }
    text = json.dumps(result)
    print(text)
    print(
        f"speed-up of the embedding cache: {result['speedup']}x ({reencode:.2f} s -> {cached:.2f} s)"
    )
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
