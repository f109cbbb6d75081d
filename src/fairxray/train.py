"""One training loop for Optuna trials and final runs: :func:`fit`.

AdamW, a cosine schedule stepped per batch (one cycle over the run, or the paper's warm restarts),
cross-entropy, optional class-balanced sampling, the paper's augmentation for image methods (as
tensor ops, :mod:`fairxray.augment`), model selection and early stopping on the validation split
only (the test split is predicted once, after the best epoch is restored), a checkpoint after every
epoch and resume from it, bf16 autocast and channels_last on CUDA, deterministic on CPU for a
given seed.

Reproducibility: the seed fixes the head's initialisation and dropout (torch's global generator,
reset at the start) and the batch order and augmentation draws (one CPU ``torch.Generator``).
A checkpoint stores both generators' states with the weights, optimiser and scheduler, so an
interrupted run resumed from it continues exactly where it stopped (tested bit for bit on CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn

from fairxray import adapt
from fairxray.adapt.lora import lora_gradient_problems, lora_parameters
from fairxray.augment import augment, augment_draws
from fairxray.config import TrainParams
from fairxray.errors import UserError

SCHEDULERS = ("cosine", "cosine_warm_restarts")
SELECTIONS = ("macro_f1", "accuracy", "neg_loss")
DEVICES = ("auto", "cpu", "cuda")
CHECKPOINT_FORMAT = 1
LAST = "last.pt"


class DivergedError(UserError):
    """A fit whose validation score was never finite: nothing to select."""


@dataclass
class SplitInputs:
    """One split as the trainer sees it: labels plus either cached features or uint8 pixels."""

    labels: np.ndarray  # int64 [N], class indices
    features: np.ndarray | None = None  # float32 [N, D] (linear_probe, mlp)
    pixels: np.ndarray | None = None  # uint8 [N, S, S] (lora, full_ft)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class FitData:
    n_classes: int
    train: SplitInputs
    val: SplitInputs
    test: SplitInputs | None = None


@dataclass
class FitResult:
    method: str
    module: nn.Module  # best epoch's weights, on the training device, eval mode
    history: list[dict]  # one entry per epoch run (train/val loss, val score, lr, timings)
    best_epoch: int  # 1-based
    best_score: float  # validation score named by ``selection``
    selection: str
    val_probs: np.ndarray  # float64 [N_val, C], softmax of the best epoch
    test_probs: np.ndarray | None
    trainable_params: int
    resumed_from: int = 0  # epochs restored from a checkpoint (0 = fresh start)
    stopped_early: bool = False
    extra: dict = field(default_factory=dict)


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
        (hp.head in adapt.heads.HEADS, "head", f"must be one of {adapt.heads.HEADS}"),
        (hp.head_hidden >= 1, "head_hidden", "must be at least 1"),
        (hp.lora_rank >= 1, "lora_rank", "must be at least 1"),
        (0 <= hp.lora_dropout < 1, "lora_dropout", "must lie in [0, 1)"),
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


def selection_score(selection: str, labels: np.ndarray, probs: np.ndarray, loss: float) -> float:
    """Higher is better: macro-F1 over all classes (absent classes count as 0), accuracy, or the
    negated mean cross-entropy (the paper keeps the epoch with the lowest validation loss)."""
    if selection == "neg_loss":
        return -float(loss)
    pred = probs.argmax(axis=1)
    if selection == "accuracy":
        return float((pred == labels).mean())
    if selection == "macro_f1":
        n = probs.shape[1]
        return float(
            f1_score(labels, pred, labels=list(range(n)), average="macro", zero_division=0)
        )
    raise ValueError(f"unknown selection {selection!r}")


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


# -- checkpoints ----------------------------------------------------------------------------


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _best_name(epoch: int) -> str:
    return f"best-epoch{epoch:04d}.pt"


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
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
        for arr in (split.labels, split.features, split.pixels):
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


# -- the loop -------------------------------------------------------------------------------


def _set_deterministic(mode: bool, warn_only: bool = False) -> None:
    # The public setter also flips torch._inductor's flag and so imports inductor (~3 s per
    # process, paid by every `fairxray train`). Nothing here compiles; when inductor is not loaded
    # the eager flag alone is the same setting.
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._inductor" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        setter(mode, warn_only=warn_only)


@contextlib.contextmanager
def _run_context(device: torch.device, num_threads: int) -> Iterator[None]:
    """Deterministic algorithms on CPU and an optional thread count, restored afterwards."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    try:
        if device.type == "cpu":
            _set_deterministic(True)
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        yield
    finally:
        _set_deterministic(prev_det, prev_warn)
        torch.set_num_threads(prev_threads)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device_inputs(split: SplitInputs, inputs: str, device: torch.device) -> torch.Tensor:
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


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def _prepare(module: nn.Module, x: torch.Tensor, inputs: str, device: torch.device) -> torch.Tensor:
    if inputs == "images":
        x = module.preprocess(x)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
    return x


def predict_logits(
    module: nn.Module, x: torch.Tensor, inputs: str, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Eval-mode logits (float32, on ``device``) for every row of ``x``, no augmentation."""
    was = module.training
    module.eval()
    out = []
    try:
        with torch.inference_mode(), _autocast(device):
            for start in range(0, len(x), batch_size):
                xb = _prepare(module, x[start : start + batch_size], inputs, device)
                out.append(module(xb).float())
    finally:
        module.train(was)
    return torch.cat(out)


def _probs(logits: torch.Tensor) -> np.ndarray:
    # float64 softmax: rows sum to 1 within ~1e-16, far inside the predictions contract.
    return torch.softmax(logits.double(), dim=1).cpu().numpy()


def _make_scheduler(opt, hp: TrainParams, steps_per_epoch: int):
    if hp.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=hp.epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=hp.t0)


def fit(
    method: str,
    data: FitData,
    hp: TrainParams,
    *,
    seed: int,
    model=None,
    checkpoint_dir: str | Path | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Train ``method`` on ``data`` with hyperparameters ``hp``; return the best-epoch result.

    ``model`` (a :class:`fairxray.models.ClipModel`) is needed by image methods (lora, full_ft),
    which adapt its image tower in place: pass a fresh one per call. ``checkpoint_dir``: after
    each epoch, the state needed to resume goes there; a later call with the same arguments
    resumes from it (a checkpoint from other arguments is discarded). ``on_epoch(epoch,
    val_score)`` is called after each epoch's checkpoint (Optuna raises ``TrialPruned`` from it).
    The test split, if given, is predicted once with the selected weights; it never influences
    training or selection.
    """
    check_train_params(hp)
    meth = adapt.get_method(method)
    if meth.build is None:
        raise ValueError(f"method {method!r} does not train; use its own predictions")
    say = log or (lambda _msg: None)
    device = resolve_device(hp.device)
    with _run_context(device, hp.num_threads):
        return _fit(meth, data, hp, seed, model, checkpoint_dir, on_epoch, say, device)


def _fit(meth, data, hp, seed, model, checkpoint_dir, on_epoch, say, device) -> FitResult:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    gen = torch.Generator().manual_seed(seed)

    in_dim = data.train.features.shape[1] if meth.inputs == "embeddings" else None
    module = adapt.build(meth.name, n_classes=data.n_classes, hp=hp, model=model, in_dim=in_dim)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    # Hashing the data costs ~0.1 s per 100 MB: only worth it when there is a checkpoint to match.
    fp = fingerprint(meth.name, seed, hp, data, module) if ckpt is not None else ""
    module.to(device)
    if device.type == "cuda" and meth.inputs == "images":
        module.to(memory_format=torch.channels_last)

    x_train = _to_device_inputs(data.train, meth.inputs, device)
    x_val = _to_device_inputs(data.val, meth.inputs, device)
    y_train = torch.from_numpy(
        np.array(data.train.labels, dtype=np.int64)
    )  # a copy: may be read-only
    y_train_dev = y_train.to(device)
    y_val = np.array(data.val.labels, dtype=np.int64)
    y_val_dev = torch.from_numpy(y_val).to(device)
    if len(y_train) < 2:
        raise UserError("train split: needs at least 2 rows")
    for name, y in (("train", y_train.numpy()), ("val", y_val)):
        if y.min() < 0 or y.max() >= data.n_classes:
            raise UserError(f"{name} split: label_idx outside 0..{data.n_classes - 1}")

    opt_kwargs = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(module.param_groups(hp), weight_decay=hp.weight_decay, **opt_kwargs)
    steps_per_epoch = len(batches(torch.arange(len(y_train)), hp.batch_size))
    sched = _make_scheduler(opt, hp, steps_per_epoch)
    has_lora = bool(lora_parameters(module))

    history: list[dict] = []
    best_score, best_epoch, since_best, start_epoch = -math.inf, 0, 0, 0
    stopped_early = False
    best_state: dict[str, torch.Tensor] | None = None

    if ckpt is not None and (ckpt / LAST).exists():
        state = torch.load(ckpt / LAST, map_location="cpu", weights_only=True)
        if state.get("format") == CHECKPOINT_FORMAT and state.get("fingerprint") == fp:
            module.load_state_dict(state["module"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            history = list(state["history"])
            best_score, best_epoch = float(state["best_score"]), int(state["best_epoch"])
            since_best, start_epoch = int(state["since_best"]), int(state["epoch"])
            stopped_early = bool(state["stopped_early"])
            say(f"resuming {meth.name} seed {seed} after epoch {start_epoch} from {ckpt}")
        else:
            say(f"{ckpt}: checkpoint is from other settings or data; starting afresh")
            clear_checkpoints(ckpt)
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
    resumed_from = start_epoch

    epoch = start_epoch
    while epoch < hp.epochs and not stopped_early:
        epoch += 1
        module.train()
        t_start = time.perf_counter()
        total_loss, seen = torch.zeros((), device=device), 0
        # The epoch's batch order and augmentation draws cross to the device once, so no batch
        # waits on a host-to-device copy.
        chunks = batches(
            epoch_order(y_train, data.n_classes, hp.class_balanced, gen), hp.batch_size
        )
        order_dev = _to_device(torch.cat(chunks), device)
        draws_dev = None
        if meth.inputs == "images":
            draws_dev = _to_device(augment_draws(len(order_dev), gen), device)
        pos = 0
        for idx in chunks:
            idx_dev = order_dev[pos : pos + len(idx)]
            xb = x_train[idx_dev]
            if draws_dev is not None:
                xb = augment(xb, hp.augment, draws=draws_dev[pos : pos + len(idx)])
            pos += len(idx)
            xb = _prepare(module, xb, meth.inputs, device)
            yb = y_train_dev[idx_dev]
            with _autocast(device):
                logits = module(xb)
            loss = F.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if has_lora and epoch == 1 and seen == 0:
                problems = lora_gradient_problems(module)
                if problems:
                    raise RuntimeError(f"LoRA adapters are not training: {problems[:3]}")
            opt.step()
            sched.step()
            total_loss += loss.detach() * len(idx)
            seen += len(idx)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t_start

        t_eval = time.perf_counter()
        val_logits = predict_logits(module, x_val, meth.inputs, hp.embed_batch_size, device)
        val_loss = float(F.cross_entropy(val_logits, y_val_dev))
        val_probs = _probs(val_logits)
        score = selection_score(hp.selection, y_val, val_probs, val_loss)
        entry = {
            "epoch": epoch,
            "train_loss": float(total_loss) / max(seen, 1),
            "val_loss": val_loss,
            "val_score": score,
            "lr": float(opt.param_groups[0]["lr"]),
            "train_images": seen,
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - t_eval,
        }
        history.append(entry)
        # Strictly better only: ties keep the earlier (less trained) epoch.
        if score > best_score:
            best_score, best_epoch, since_best = score, epoch, 0
            if ckpt is not None:
                _atomic_save(
                    {"epoch": epoch, "module": _cpu_state(module)}, ckpt / _best_name(epoch)
                )
            else:
                best_state = _cpu_state(module)
        else:
            since_best += 1
        if hp.patience and since_best >= hp.patience:
            stopped_early = True
        say(
            f"{meth.name} seed {seed} epoch {epoch}/{hp.epochs}: train loss {entry['train_loss']:.4f}"
            f"  val loss {val_loss:.4f}  val {hp.selection} {score:.4f}"
            f"  ({seen / max(train_seconds, 1e-9):.0f} img/s)"
        )
        if ckpt is not None:
            _atomic_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "fingerprint": fp,
                    "epoch": epoch,
                    "module": _cpu_state(module),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "history": history,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "since_best": since_best,
                    "stopped_early": stopped_early,
                },
                ckpt / LAST,
            )
            for old in ckpt.glob("best-epoch*.pt"):
                if old.name != _best_name(best_epoch):
                    old.unlink()
        if on_epoch is not None:
            on_epoch(epoch, score)

    if best_epoch == 0:
        # Every epoch's validation score was NaN (a diverged run: NaN loss or features); there is
        # no epoch to select, and a tuning trial must fail rather than stop the study.
        raise DivergedError(
            f"{meth.name} seed {seed}: no finite validation {hp.selection} in any of "
            f"{len(history)} epoch(s) (diverged? try a smaller train.lr)"
        )
    if ckpt is not None:
        best_state = torch.load(
            ckpt / _best_name(best_epoch), map_location="cpu", weights_only=True
        )["module"]
    module.load_state_dict(best_state)
    module.eval()
    val_probs = _probs(predict_logits(module, x_val, meth.inputs, hp.embed_batch_size, device))
    test_probs = None
    if data.test is not None:
        x_test = _to_device_inputs(data.test, meth.inputs, device)
        test_probs = _probs(
            predict_logits(module, x_test, meth.inputs, hp.embed_batch_size, device)
        )
    return FitResult(
        method=meth.name,
        module=module,
        history=history,
        best_epoch=best_epoch,
        best_score=best_score,
        selection=hp.selection,
        val_probs=val_probs,
        test_probs=test_probs,
        trainable_params=adapt.count_trainable(module),
        resumed_from=resumed_from,
        stopped_early=stopped_early,
    )


# -- the train stage's library side: inputs, tuned overrides, outputs -----------------------

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.yaml"


def resolve_train_params(base: TrainParams, tuned_file: str | Path) -> tuple[TrainParams, str]:
    """``base`` (params.yaml's ``train``) with the ``params:`` overrides of ``tuned_file`` when it
    exists. Keys are ``TrainParams`` field names; ``augment`` may be a nested mapping or dotted
    (``augment.flip_p``). Returns the params and where they came from."""
    import yaml

    from fairxray.config import _build

    tuned_file = Path(tuned_file)
    if not tuned_file.exists():
        return base, "params.yaml (train)"
    try:
        raw = yaml.safe_load(tuned_file.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{tuned_file}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict):
        raise UserError(f"{tuned_file}: needs a 'params:' mapping of train hyperparameters")
    merged = dataclasses.asdict(base)
    for key, value in raw["params"].items():
        head, _, rest = str(key).partition(".")
        if head not in merged:
            raise UserError(f"{tuned_file}: unknown key 'params.{key}' (not a train parameter)")
        if rest or isinstance(merged[head], dict):
            if not isinstance(merged[head], dict):
                raise UserError(f"{tuned_file}: 'params.{key}': train.{head} has no sub-keys")
            if rest:
                merged[head][rest] = value
            elif isinstance(value, dict):
                merged[head].update(value)
            else:
                raise UserError(f"{tuned_file}: 'params.{key}' must be a mapping")
        else:
            merged[head] = value
    hp = _build(TrainParams, merged, "train", str(tuned_file))
    check_train_params(hp, str(tuned_file))
    return hp, str(tuned_file)


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


def load_fit_data(
    frames: dict, inputs: str, n_classes: int, *, embeddings_dir=None, cache=None
) -> FitData:
    """Split frames -> :class:`FitData`: embeddings from ``embeddings_dir`` (frozen methods) or
    pixels from ``cache`` (image methods), row for row, repeats expanded."""
    from fairxray.stages.embed import read_embeddings

    out = {}
    for split, frame in frames.items():
        y = split_labels(frame, n_classes, f"{split} split")
        ids = frame["image_id"].astype(str).tolist()
        if inputs == "embeddings":
            out[split] = SplitInputs(y, features=read_embeddings(embeddings_dir, split, ids))
        else:
            out[split] = SplitInputs(y, pixels=cache.get(ids))
    return FitData(n_classes, out["train"], out["val"], out.get("test"))


def prediction_frame(frame, probs: np.ndarray, classes, sensitive):
    """The predictions contract for one split: ids, label, ``prob_<Class>``, sensitive columns."""
    from fairxray.predictions import prob_columns

    out = frame[["image_id", "patient_id", "label_idx"]].reset_index(drop=True).copy()
    out["label_idx"] = out["label_idx"].astype(np.int64)
    for col, j in zip(prob_columns(classes), range(probs.shape[1]), strict=True):
        out[col] = probs[:, j].astype(np.float64)
    for col in sensitive:
        if col not in frame.columns:
            raise UserError(f"split file: missing sensitive column '{col}' (metrics.sensitive)")
        out[col] = frame[col].to_numpy()
    return out


def save_run(seed_dir: str | Path, module: nn.Module | None, config: dict) -> Path:
    """``seed_dir/weights.safetensors`` (the trained module's state; none for zero_shot) and
    ``seed_dir/config.yaml`` (everything needed to rebuild it), written atomically."""
    import yaml
    from safetensors.torch import save_model

    seed_dir = Path(seed_dir)
    tmp = seed_dir.with_name(f".{seed_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if module is not None:
        save_model(module.to("cpu"), str(tmp / WEIGHTS_FILE))
        # safetensors creates its file 0600 whatever the umask; give it the umask's mode like
        # every other output, so a run folder written by a container stays readable on the host.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp / WEIGHTS_FILE, 0o666 & ~umask)
    (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.rmtree(seed_dir, ignore_errors=True)
    os.replace(tmp, seed_dir)
    return seed_dir


def load_trained(
    seed_dir: str | Path, weights_dir: str | Path | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild a trained module from ``save_run``'s folder: the model from the registry (its
    pretrained weights from ``weights_dir``, random as in training when None), the method's
    module, then the saved weights, strictly. Returns ``(module in eval mode, config)``."""
    import yaml
    from safetensors.torch import load_model

    from fairxray.config import _build

    seed_dir = Path(seed_dir)
    cfg = yaml.safe_load((seed_dir / CONFIG_FILE).read_text())
    if cfg.get("inputs") == "none":
        raise UserError(f"{seed_dir}: method {cfg.get('method')} has no trained weights")
    hp = _build(TrainParams, cfg["train"], "train", str(seed_dir / CONFIG_FILE))
    model = None
    if cfg["inputs"] == "images":
        from fairxray.models import create

        model = create(cfg["model"], weights_dir)
    module = adapt.build(
        cfg["method"], n_classes=len(cfg["classes"]), hp=hp, model=model, in_dim=cfg["in_dim"]
    )
    load_model(module, str(seed_dir / WEIGHTS_FILE), strict=True)
    return module.eval(), cfg
