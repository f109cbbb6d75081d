"""The train parameters the fit loop accepts (:func:`check_train_params`) and the device it runs
on (:func:`resolve_device`); shared by the embedding store, which runs before any fit."""

from __future__ import annotations

import torch

from fairxray.adapt import heads
from fairxray.adapt.lora import LORA_CONFIGS
from fairxray.config import TrainParams
from fairxray.errors import UserError

SCHEDULERS = ("cosine", "cosine_warm_restarts")
SELECTIONS = ("macro_f1", "accuracy", "neg_loss", "macro_auroc")  # by task: fit/task.py
DEVICES = ("auto", "cpu", "cuda")
ZERO_SHOT_OVERRIDES = ("model", "cosine_softmax")  # see fairxray.adapt.zero_shot



def check_train_params(hp: TrainParams, src: str = "train") -> None:
    """Raise a one-line :class:`UserError` naming the key for values ``fit`` cannot use."""
    checks = [
        (hp.epochs >= 1, "epochs", "must be at least 1"),
        (hp.batch_size >= 2, "batch_size", "must be at least 2 (BatchNorm heads need 2 rows)"),
        (hp.lr > 0, "lr", "must be positive"),
        (hp.backbone_lr_scale >= 0, "backbone_lr_scale", "must be non-negative"),
        (hp.weight_decay >= 0, "weight_decay", "must be non-negative"),
        (hp.scheduler in SCHEDULERS, "scheduler", f"must be one of {SCHEDULERS}"),
        (hp.t0 >= 1, "t0", "must be at least 1"),
        (hp.head in heads.HEADS, "head", f"must be one of {heads.HEADS}"),
        (hp.head_hidden >= 1, "head_hidden", "must be at least 1"),
        (hp.lora_rank >= 1, "lora_rank", "must be at least 1"),
        (0 <= hp.lora_dropout < 1, "lora_dropout", "must lie in [0, 1)"),
        (hp.lora_config in LORA_CONFIGS, "lora_config", f"must be one of {LORA_CONFIGS}"),
        (hp.lora_budget >= 1, "lora_budget", "must be at least 1"),
        (hp.frozen_augment_views >= 0, "frozen_augment_views", "must be non-negative"),
        (hp.zero_shot_rule in ZERO_SHOT_OVERRIDES, "zero_shot_rule", f"must be one of {ZERO_SHOT_OVERRIDES}"),
        (hp.patience >= 0, "patience", "must be non-negative"),
        (0 <= hp.augment.flip_p <= 1, "augment.flip_p", "must lie in [0, 1]"),
        (0 <= hp.augment.rotation_deg <= 180, "augment.rotation_deg", "must lie in [0, 180]"),
        (0 <= hp.augment.jitter < 1, "augment.jitter", "must lie in [0, 1)"),
        (hp.selection in SELECTIONS, "selection", f"must be one of {SELECTIONS}"),
        (hp.device in DEVICES, "device", f"must be one of {DEVICES}"),
        (hp.num_threads >= 0, "num_threads", "must be non-negative"),
        (hp.embed_batch_size >= 1, "embed_batch_size", "must be at least 1"),
    ]
    for ok, key, what in checks:
        if not ok:
            raise UserError(f"{src}: 'train.{key}' {what}, got {_get(hp, key)!r}")


def _get(hp: TrainParams, dotted: str):
    obj = hp
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)
