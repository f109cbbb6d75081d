"""Checkpoints of the fit loop: after every epoch, ``last.pt`` holds everything needed to resume
(weights, optimiser, scheduler, both generators, history, selection state) and
``best-epoch<k>.pt`` the selected epoch's weights. A checkpoint is resumed only when its
:func:`fingerprint` (method, seed, hyperparameters, data, initial weights) matches."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fairxray.adapt.fit.inputs import FitData
from fairxray.config import TrainParams

CHECKPOINT_FORMAT = 1
LAST = "last.pt"


@dataclass
class LoopState:
    """What the loop carries from epoch to epoch (and a checkpoint restores)."""

    history: list[dict] = field(default_factory=list)
    best_score: float = -math.inf
    best_epoch: int = 0
    since_best: int = 0
    epoch: int = 0
    stopped_early: bool = False


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def best_name(epoch: int) -> str:
    return f"best-epoch{epoch:04d}.pt"


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def fingerprint(method: str, seed: int, hp: TrainParams, data: FitData, module: nn.Module) -> str:
    """What a checkpoint must match to be resumed: method, seed, hyperparameters, the data (all
    labels, features and pixels hashed) and the freshly built module's initial weights."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([method, seed, dataclasses.asdict(hp)], sort_keys=True).encode())
    for split in (data.train, data.val, data.test):
        if split is None:
            h.update(b"none")
            continue
        for arr in (split.labels, split.features, split.pixels, split.groups):
            if arr is not None:
                a = np.ascontiguousarray(arr)
                h.update(str((a.shape, a.dtype.str)).encode())
                h.update(memoryview(a).cast("B"))
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(memoryview(np.ascontiguousarray(v.detach().cpu().float().numpy())).cast("B"))
    return h.hexdigest()


def clear_checkpoints(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)


def restore(
    ckpt: Path, fp: str, label: str, module, opt, sched, gen, device, say, hook=None
) -> LoopState:
    """The loop state of ``ckpt/last.pt`` loaded into the live objects when its fingerprint is
    ``fp``; otherwise the folder is cleared and a fresh state returned."""
    state = LoopState()
    if (ckpt / LAST).exists():
        saved = torch.load(ckpt / LAST, map_location="cpu", weights_only=True)
        if saved.get("format") == CHECKPOINT_FORMAT and saved.get("fingerprint") == fp:
            module.load_state_dict(saved["module"])
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            gen.set_state(saved["generator"])
            if hook is not None and saved.get("hook"):
                hook.load_state_dict(saved["hook"])
            torch.set_rng_state(saved["torch_rng"])
            if device.type == "cuda" and saved.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(saved["cuda_rng"], device)
            state = LoopState(
                history=list(saved["history"]),
                best_score=float(saved["best_score"]),
                best_epoch=int(saved["best_epoch"]),
                since_best=int(saved["since_best"]),
                epoch=int(saved["epoch"]),
                stopped_early=bool(saved["stopped_early"]),
            )
            say(f"resuming {label} after epoch {state.epoch} from {ckpt}")
        else:
            say(f"{ckpt}: checkpoint is from other settings or data; starting afresh")
            clear_checkpoints(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    return state


def save_best(ckpt: Path, epoch: int, module: nn.Module) -> None:
    atomic_save({"epoch": epoch, "module": cpu_state(module)}, ckpt / best_name(epoch))


def load_best(ckpt: Path, epoch: int) -> dict[str, torch.Tensor]:
    return torch.load(ckpt / best_name(epoch), map_location="cpu", weights_only=True)["module"]


def save_last(
    ckpt: Path, fp: str, state: LoopState, module, opt, sched, gen, device, hook=None
) -> None:
    """``last.pt`` for the epoch just finished; best-epoch files other than the current best go."""
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fp,
            "epoch": state.epoch,
            "module": cpu_state(module),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "generator": gen.get_state(),
            "hook": hook.state_dict() if hook is not None else {},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "history": state.history,
            "best_score": state.best_score,
            "best_epoch": state.best_epoch,
            "since_best": state.since_best,
            "stopped_early": state.stopped_early,
        },
        ckpt / LAST,
    )
    for old in ckpt.glob("best-epoch*.pt"):
        if old.name != best_name(state.best_epoch):
            old.unlink()
