"""The embedding store: every image of a protocol's splits encoded once per model
(``embeddings/<model>/``), for the frozen methods. ``encode_cache`` -> float32 ``[N, embed_dim]``.

The cache holds uint8 grayscale pixels at one size (the largest any model needs); each model's
own ``preprocess`` resizes and normalises them on the fly, batched on the target device. Repeated
image ids (the paper protocol keeps repeats) are encoded once.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fairxray import paths
from fairxray.config import Params
from fairxray.data.cache import ImageCache
from fairxray.errors import UserError
from fairxray.models.base import ClipModel


def encode_cache(
    model: ClipModel,
    cache: ImageCache,
    image_ids: Sequence[str],
    batch_size: int = 64,
    device: str | torch.device | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """``model.encode_image(model.preprocess(pixels))`` for ``image_ids`` in order.

    ``device`` moves the model there (in place); default is where the model already is. The
    model is put in eval mode for the pass and its previous mode restored afterwards.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    ids = [str(i) for i in image_ids]
    rows = cache.rows_for(ids)  # validates every id up front: a clear error before any work
    uniq, inverse = np.unique(rows, return_inverse=True)
    dev = torch.device(device) if device is not None else model.device
    model.to(dev)
    was_training = model.training
    model.eval()
    out = np.empty((len(uniq), model.spec.embed_dim), dtype=np.float32)
    try:
        with torch.inference_mode():
            for start in range(0, len(uniq), batch_size):
                chunk = uniq[start : start + batch_size]  # sorted: sequential mmap reads
                px = torch.from_numpy(np.asarray(cache.pixels[chunk])).to(dev, non_blocking=True)
                z = model.encode_image(model.preprocess(px), normalize=normalize)
                out[start : start + len(chunk)] = z.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out[inverse]


def iter_pixels(cache: ImageCache, image_ids: Sequence[str], batch_size: int, device):
    """uint8 pixel batches ``[b, S, S]`` on ``device`` for ``image_ids`` in order (zero-shot rules
    that need more than the image embedding, e.g. GLoRIA's region features)."""
    rows = cache.rows_for([str(i) for i in image_ids])
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        yield torch.from_numpy(np.asarray(cache.pixels[chunk])).to(device)


# embeddings/<model>/ layout: one <split>.npz per split with ``image_id`` (str [U], each image
# once, in first-appearance order) and ``features`` (float32 [U, embed_dim], the image tower's
# unnormalised output, ``ClipModel.encode_image(..., normalize=False)``: the quantity the heads of
# image methods see too); with ``train.frozen_augment_views`` K > 0 also train_views.npz
# (``image_id`` as train.npz, ``features`` float32 [K, U, embed_dim]: K augmented views of every
# training image); manifest.json (written last; ``complete: true``).
MANIFEST = "manifest.json"
FORMAT = 1
VIEWS = "train_views.npz"
VIEW_SEED = 0  # the views' augmentation stream: fixed, so the cache is a pure function of params


def encode_views(
    model: ClipModel,
    cache: ImageCache,
    image_ids: Sequence[str],
    k: int,
    aug,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """float32 ``[k, len(image_ids), D]``: each image augmented (``train.augment``, the image
    methods' augmentation) k times with a seeded stream, each view encoded once."""
    from fairxray.adapt.augment import augment

    gen = torch.Generator().manual_seed(VIEW_SEED)
    model.to(device).eval()
    out = np.empty((k, len(image_ids), model.spec.embed_dim), dtype=np.float32)
    with torch.inference_mode():
        for v in range(k):
            start = 0
            for px in iter_pixels(cache, image_ids, batch_size, device):
                px = augment(px, aug, gen)
                z = model.encode_image(model.preprocess(px), normalize=False)
                out[v, start : start + len(px)] = z.float().cpu().numpy()
                start += len(px)
    return out


def read_views(folder: str | Path, image_ids) -> np.ndarray | None:
    """float32 ``[K, len(image_ids), D]`` of the cached training views, or None when none."""
    path = Path(folder) / VIEWS
    if not path.is_file():
        return None
    with np.load(path) as z:
        ids, feats = z["image_id"].astype(str), z["features"]
    pos = {v: i for i, v in enumerate(ids)}
    want = [str(i) for i in image_ids]
    missing = [i for i in want if i not in pos]
    if missing:
        raise UserError(f"{path}: {len(missing)} training image(s) have no views; rerun embed")
    return feats[:, np.fromiter((pos[i] for i in want), dtype=np.int64, count=len(want))]


def write_embeddings(
    out_dir: Path,
    ids_by_split: dict[str, list[str]],
    features: dict[str, np.ndarray],
    manifest: dict,
    views: np.ndarray | None = None,
) -> Path:
    """Write the folder atomically: a temp folder next to it, then one rename."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split, ids in ids_by_split.items():
        np.savez(
            tmp / f"{split}.npz", image_id=np.asarray(ids, dtype=str), features=features[split]
        )
    if views is not None:
        np.savez(tmp / VIEWS, image_id=np.asarray(ids_by_split["train"], dtype=str), features=views)
    (tmp / MANIFEST).write_text(
        json.dumps({**manifest, "format": FORMAT, "complete": True}, indent=2)
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def read_embeddings(folder: str | Path, split: str, image_ids) -> np.ndarray:
    """float32 ``[len(image_ids), D]`` for ``image_ids`` of ``split`` (repeats expanded)."""
    folder = Path(folder)
    man = folder / MANIFEST
    if not man.exists() or not json.loads(man.read_text()).get("complete"):
        raise UserError(f"{folder}: no complete embedding cache (run `fairxray embed`)")
    path = folder / f"{split}.npz"
    with np.load(path) as z:
        ids, feats = z["image_id"].astype(str), z["features"]
    pos = {v: i for i, v in enumerate(ids)}
    want = [str(i) for i in image_ids]
    missing = [i for i in want if i not in pos]
    if missing:
        raise UserError(
            f"{path}: {len(missing)} image id(s) of the split are not embedded, e.g. {missing[:3]}; "
            "rerun `fairxray embed`"
        )
    return feats[np.fromiter((pos[i] for i in want), dtype=np.int64, count=len(want))]


def embed(
    p: Params, model_name: str, device: str | None = None, out_dir: Path | None = None
) -> dict:
    """Encode the union of the splits' images once; write one file per split; return the manifest."""
    import torch

    from fairxray.adapt.fit.settings import check_train_params, resolve_device
    from fairxray.data.splits import load_splits
    from fairxray.models import create
    from fairxray.models.registry import require_weights

    check_train_params(p.train)
    if p.data.weights_dir is not None or not p.is_demo:
        # The first model stage of the grid: one error naming every model whose weights are
        # missing or invalid (folder and download source), before any model is encoded.
        require_weights(p.models, p.data.weights_dir)
    protocol = p.data.protocol
    frames = load_splits(protocol)
    ids_by_split = {s: list(dict.fromkeys(f["image_id"].astype(str))) for s, f in frames.items()}
    union = list(dict.fromkeys(i for ids in ids_by_split.values() for i in ids))
    cache = ImageCache.open(paths.images(protocol))
    dev = resolve_device(device or p.train.device)
    if p.train.num_threads > 0:
        torch.set_num_threads(p.train.num_threads)
    model = create(model_name, p.data.weights_dir, p.model_scale)
    t0 = time.perf_counter()
    feats = encode_cache(model, cache, union, p.train.embed_batch_size, dev, normalize=False)
    seconds = time.perf_counter() - t0
    k = p.train.frozen_augment_views
    views, view_seconds = None, 0.0
    if k > 0:
        t1 = time.perf_counter()
        views = encode_views(
            model, cache, ids_by_split["train"], k, p.train.augment, p.train.embed_batch_size, dev
        )
        view_seconds = time.perf_counter() - t1
    row = {v: i for i, v in enumerate(union)}
    per_split = {s: feats[[row[i] for i in ids]] for s, ids in ids_by_split.items()}
    manifest = {
        "model": model_name,
        "protocol": protocol,
        "embed_dim": int(feats.shape[1]),
        "normalized": False,
        "images_encoded": len(union),
        "rows_per_split": {s: int(len(f)) for s, f in frames.items()},
        "unique_per_split": {s: len(ids) for s, ids in ids_by_split.items()},
        "image_source": cache.manifest.get("source"),
        "random_weights": p.data.weights_dir is None,
        "model_scale": p.model_scale,  # "tiny": a small random build, never a full model
        "device": str(dev),
        "seconds": round(seconds, 3),
        "frozen_augment_views": k,
        "view_seconds": round(view_seconds, 3),
    }
    out = out_dir or paths.embeddings(model_name)
    write_embeddings(out, ids_by_split, per_split, manifest, views)
    return manifest
