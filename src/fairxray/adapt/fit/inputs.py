"""What the fit loop trains on: :class:`FitData` (labels plus cached features or uint8 pixels per
split), built from the split frames by :func:`load_fit_data`, and each epoch's batch order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fairxray.errors import UserError


@dataclass
class SplitInputs:
    """One split as the trainer sees it: labels plus either cached features or uint8 pixels."""

    labels: np.ndarray  # int64 [N], class indices; multilabel: float [N, L] 1/0/NaN (masked)
    features: np.ndarray | None = None  # float32 [N, D] (linear_probe, mlp)
    pixels: np.ndarray | None = None  # uint8 [N, S, S] (lora, full_ft)
    # float32 [K, N, D]: K cached augmented views per row (train split, train.frozen_augment_views)
    feature_views: np.ndarray | None = None
    groups: np.ndarray | None = None  # int64 [N], code of each row's sensitive group (-1: unseen)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class FitData:
    n_classes: int
    train: SplitInputs
    val: SplitInputs
    test: SplitInputs | None = None
    group_names: tuple[str, ...] = ()  # groups[i] == k means group_names[k] (train's levels)
    task: str = "multiclass"  # data.task; "multilabel": n_classes independent labels


def split_labels(frame, n_classes: int, source: str) -> np.ndarray:
    if "label_idx" not in frame.columns:
        raise UserError(f"{source}: missing column 'label_idx'")
    y = frame["label_idx"].to_numpy(dtype=np.int64)
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if bad.size:
        raise UserError(
            f"{source}: row {int(bad[0])} has label_idx {int(y[bad[0]])}; training needs one label "
            f"in 0..{n_classes - 1} per row (a single-label protocol)"
        )
    return y


def split_targets(frame, classes, source: str) -> np.ndarray:
    """The multi-label targets of a split frame, float64 ``[N, L]``: the ``y_<Class_Name>``
    columns of ``classes`` in order, each 1, 0 or NaN (masked)."""
    from fairxray.metrics.predictions import target_columns

    cols = target_columns(classes)
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise UserError(
            f"{source}: missing column '{missing[0]}' (data.task multilabel needs a y_<Class> "
            "target column per label of data.classes; is data.protocol a multi-label protocol?)"
        )
    y = frame[cols].to_numpy(dtype=np.float64)
    bad = ~(np.isnan(y) | (y == 0) | (y == 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise UserError(
            f"{source}: row {int(r)}: column '{cols[c]}' is {y[r, c]!r}, not 0, 1 or NaN"
        )
    return y


def group_codes(frames: dict, column: str) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """The sensitive ``column`` as int codes per split: levels are the training split's values
    (sorted), so the codes never depend on the test split; another split's unseen value is -1."""
    for split, frame in frames.items():
        if column not in frame.columns:
            raise UserError(
                f"{split} split: missing sensitive column '{column}' (mitigate.attribute)"
            )
    names = tuple(sorted(frames["train"][column].astype(str).unique()))
    index = {g: k for k, g in enumerate(names)}
    codes = {
        split: np.array([index.get(g, -1) for g in frame[column].astype(str)], dtype=np.int64)
        for split, frame in frames.items()
    }
    return names, codes


def load_fit_data(
    frames: dict,
    inputs: str,
    n_classes: int,
    *,
    embeddings_dir=None,
    cache=None,
    group_column: str | None = None,
    task: str = "multiclass",
    classes=None,
) -> FitData:
    """Split frames -> :class:`FitData`: embeddings from ``embeddings_dir`` (frozen methods) or
    pixels from ``cache`` (image methods), row for row, repeats expanded; with ``group_column``,
    each row's sensitive group too (what a mitigation trains on). ``task`` multilabel reads the
    targets of ``classes`` (:func:`split_targets`) instead of ``label_idx``."""
    from fairxray.adapt.store import read_embeddings, read_views

    names, codes = group_codes(frames, group_column) if group_column else ((), {})
    out = {}
    for split, frame in frames.items():
        if task == "multilabel":
            y = split_targets(frame, classes, f"{split} split")
        else:
            y = split_labels(frame, n_classes, f"{split} split")
        ids = frame["image_id"].astype(str).tolist()
        g = codes.get(split)
        if inputs == "embeddings":
            views = read_views(embeddings_dir, ids) if split == "train" else None
            feats = read_embeddings(embeddings_dir, split, ids)
            out[split] = SplitInputs(y, features=feats, feature_views=views, groups=g)
        else:
            out[split] = SplitInputs(y, pixels=cache.get(ids), groups=g)
    return FitData(n_classes, out["train"], out["val"], out.get("test"), names, task)


# -- batches --------------------------------------------------------------------------------


def epoch_order(
    labels: torch.Tensor, n_classes: int, balanced: bool, generator: torch.Generator
) -> torch.Tensor:
    """Indices of one epoch: a permutation, or (class-balanced) N draws with replacement with
    probability proportional to 1 / (count of the row's class), so each present class is drawn
    equally often in expectation."""
    n = len(labels)
    if not balanced:
        return torch.randperm(n, generator=generator)
    counts = torch.bincount(labels, minlength=n_classes).double()
    weights = 1.0 / counts[labels]
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Consecutive chunks of ``order``; a trailing chunk of one row is dropped (BatchNorm heads
    cannot normalise a single row in train mode), so an epoch may skip one random row."""
    out = list(torch.split(order, batch_size))
    if len(out) > 1 and len(out[-1]) < 2:
        out.pop()
    return out


# -- devices --------------------------------------------------------------------------------


def to_device_inputs(split: SplitInputs, inputs: str, device: torch.device) -> torch.Tensor:
    if inputs == "embeddings":
        if split.features is None:
            raise ValueError("an embedding method needs features in every split")
        return torch.from_numpy(np.array(split.features, dtype=np.float32)).to(device)
    if split.pixels is None:
        raise ValueError("an image method needs pixels in every split")
    px = np.asarray(split.pixels)
    if px.dtype != np.uint8 or px.ndim != 3:
        raise ValueError(f"pixels must be uint8 [N, S, S], got {px.dtype} {px.shape}")
    return torch.from_numpy(np.array(px)).to(device)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def prepare_batch(
    module: nn.Module, x: torch.Tensor, inputs: str, device: torch.device
) -> torch.Tensor:
    if inputs == "images":
        x = module.preprocess(x)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
    return x
