"""Encode cached images with a model's image tower: ``encode_cache`` -> float32 ``[N, embed_dim]``.

The cache holds uint8 grayscale pixels at one size (the largest any model needs); each model's
own ``preprocess`` resizes and normalises them on the fly, batched on the target device. Repeated
image ids (the paper protocol keeps repeats) are encoded once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fairxray.data.cache import ImageCache
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
