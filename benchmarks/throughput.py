"""End-to-end training images/s of ``fit()`` against the model-bound images/s, for full_ft and lora.

End to end: ``fairxray.adapt.fit`` on synthetic uint8 images held in memory (as the `train` stage
holds the image cache): batch gather, augmentation, the model's preprocessing, forward, backward,
AdamW and scheduler steps; images/s from the per-epoch training time ``fit`` records, epoch 1
left out as warm-up, validation not counted. Model-bound: the same module (same method, batch,
optimiser, bf16 autocast and channels_last on CUDA) stepping on one preprocessed batch already on
the device, so no data work at all. ``ratio`` = end to end / model-bound (target on GPU: >= 0.85).
Prints one JSON object per method and a summary line.

    .venv/bin/python benchmarks/throughput.py                                   # toy, CPU
    .venv/bin/python benchmarks/throughput.py --model clip-vit-b16 --size 224 --n 2048 --batch-size 256
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
from fairxray.adapt.fit import FitData, SplitInputs, fit, resolve_device
from fairxray.config import load_params
from fairxray.data import synthetic
from fairxray.models import create

REPO = Path(__file__).resolve().parents[1]


def images(n: int, size: int, n_classes: int, syn, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` demo images: a handful rendered, the rest noisy copies (rendering is not measured)."""
    labels = np.arange(n) % n_classes
    base = np.stack(
        [synthetic.render(f"b{c}", c, 0, "M", size, syn, n_classes) for c in range(n_classes)]
    )
    rng = np.random.default_rng(seed)
    noise = rng.integers(-6, 7, (n, size, size), dtype=np.int16)
    return np.clip(base[labels].astype(np.int16) + noise, 0, 255).astype(np.uint8), labels


def model_bound(method, model_name, hp, n_classes, size, device, steps, warmup) -> float:
    torch.manual_seed(0)
    model = create(model_name)
    module = adapt.build(method, n_classes=n_classes, hp=hp, model=model).to(device)
    if device.type == "cuda":
        module.to(memory_format=torch.channels_last)
    module.train()
    opt_kwargs = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(module.param_groups(hp), weight_decay=hp.weight_decay, **opt_kwargs)
    px = torch.randint(0, 256, (hp.batch_size, size, size), dtype=torch.uint8, device=device)
    x = module.preprocess(px)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, n_classes, (hp.batch_size,), device=device)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def step():
        with amp:
            logits = module(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * hp.batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy")
    ap.add_argument("--methods", nargs="+", default=["full_ft", "lora"])
    ap.add_argument("--n", type=int, default=1024, help="training images per epoch")
    ap.add_argument("--size", type=int, default=64, help="cached image side in px")
    ap.add_argument("--epochs", type=int, default=3, help="epoch 1 is warm-up")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="model-bound timed steps")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: train.num_threads)")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--out", help="also write the JSON lines here")
    args = ap.parse_args(argv)

    p = load_params(args.params)
    n_classes = len(p.data.classes)
    hp = dataclasses.replace(
        p.train,
        epochs=max(args.epochs, 2),
        batch_size=args.batch_size,
        device=args.device,
        patience=0,
        num_threads=p.train.num_threads if args.threads is None else args.threads,
    )
    if hp.num_threads > 0:
        torch.set_num_threads(hp.num_threads)
    device = resolve_device(hp.device)
    px, y = images(args.n, args.size, n_classes, p.images.synthetic, 0)
    vpx, vy = images(max(hp.batch_size, 2 * n_classes), args.size, n_classes, p.images.synthetic, 1)
    data = FitData(n_classes, SplitInputs(y, pixels=px), SplitInputs(vy, pixels=vpx))

    lines = []
    for method in args.methods:
        res = fit(method, data, hp, seed=0, model=create(args.model))
        timed = res.history[1:]
        e2e = sum(h["train_images"] for h in timed) / sum(h["train_seconds"] for h in timed)
        bound = model_bound(method, args.model, hp, n_classes, args.size, device, args.steps, 3)
        row = {
            "benchmark": "throughput",
            "method": method,
            "model": args.model,
            "random_weights": True,
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "size": args.size,
            "batch_size": hp.batch_size,
            "n_train": args.n,
            "timed_epochs": len(timed),
            "augment": dataclasses.asdict(hp.augment),
            "end_to_end_images_per_s": round(e2e, 1),
            "model_bound_images_per_s": round(bound, 1),
            "ratio": round(e2e / bound, 3),
        }
        lines.append(json.dumps(row))
        print(lines[-1])
    for line in lines:
        r = json.loads(line)
        print(
            f"{r['method']}: end-to-end / model-bound = {r['ratio']} "
            f"({r['end_to_end_images_per_s']} vs {r['model_bound_images_per_s']} images/s, {r['device']})"
        )
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
