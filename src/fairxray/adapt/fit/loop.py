"""One training loop for Optuna trials and final runs: :func:`fit`.

AdamW, a cosine schedule stepped per batch (one cycle over the run, or the paper's warm restarts),
cross-entropy (``data.task`` multilabel: masked BCE and sigmoids, :mod:`fairxray.adapt.fit.task`),
optional class-balanced sampling, the paper's augmentation for image methods (as
tensor ops, :mod:`fairxray.adapt.augment`), model selection and early stopping on the validation
split only (a mitigated run selects on the worst group's validation score; the test split is
predicted once, after the best epoch is restored), a checkpoint
after every epoch and resume from it, bf16 autocast and channels_last on CUDA, deterministic on
CPU for a given seed.

Reproducibility: the seed fixes the head's initialisation and dropout (torch's global generator,
reset at the start) and the batch order and augmentation draws (one CPU ``torch.Generator``).
A checkpoint stores both generators' states with the weights, optimiser and scheduler, so an
interrupted run resumed from it continues exactly where it stopped (tested bit for bit on CPU).

:func:`_fit` is a short loop over named steps: :func:`_train_epoch`, :func:`_validate`,
:func:`_select` (best epoch and early stop) and the checkpoint (:mod:`.checkpoint`).
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fairxray import adapt
from fairxray.adapt.augment import augment, augment_draws
from fairxray.adapt.fit import checkpoint as ck
from fairxray.adapt.fit import distributed as dist
from fairxray.adapt.fit.inputs import (
    FitData,
    epoch_order,
    prepare_batch,
    to_device,
    to_device_inputs,
)
from fairxray.adapt.fit.settings import check_train_params, resolve_device
from fairxray.adapt.fit.task import (
    check_task,
    loss_count,
    macro_auroc,
    targets_tensor,
    task_loss,
    task_probs,
)
from fairxray.adapt.lora import lora_gradient_problems, lora_parameters
from fairxray.config import TrainParams
from fairxray.errors import UserError
from fairxray.mitigate import NONE, TrainHook, get_mitigation, split_run


class DivergedError(UserError):
    """A fit whose validation score was never finite: nothing to select."""


@dataclass
class FitResult:
    method: str
    module: nn.Module  # best epoch's weights, on the training device, eval mode
    history: list[dict]  # one entry per epoch run (train/val loss, val score, lr, timings)
    best_epoch: int  # 1-based
    best_score: float  # validation score named by ``selection``
    selection: str
    val_probs: np.ndarray  # float64 [N_val, C]: softmax (multiclass) or sigmoid of the best epoch
    test_probs: np.ndarray | None
    trainable_params: int
    resumed_from: int = 0  # epochs restored from a checkpoint (0 = fresh start)
    stopped_early: bool = False
    extra: dict = field(default_factory=dict)


def selection_score(selection: str, labels: np.ndarray, probs: np.ndarray, loss: float) -> float:
    """Higher is better: macro-F1 over all classes (absent classes count as 0), accuracy, or the
    negated mean cross-entropy (the paper keeps the epoch with the lowest validation loss).
    Multilabel (``labels`` float [N, L], NaN masked): ``macro_auroc`` or ``neg_loss`` (the negated
    masked BCE), :mod:`fairxray.adapt.fit.task`."""
    if selection == "neg_loss":
        return -float(loss)
    if selection == "macro_auroc":
        return macro_auroc(labels, probs)
    pred = probs.argmax(axis=1)
    if selection == "accuracy":
        return float((pred == labels).mean())
    if selection == "macro_f1":
        from sklearn.metrics import f1_score  # here: export and embed import this module, not it

        n = probs.shape[1]
        return float(
            f1_score(labels, pred, labels=list(range(n)), average="macro", zero_division=0)
        )
    raise ValueError(f"unknown selection {selection!r}")


def worst_group_score(
    selection: str, labels: np.ndarray, probs: np.ndarray, groups: np.ndarray
) -> float:
    """The lowest :func:`selection_score` over the groups (codes >= 0) of the rows: what a
    mitigated run selects its epoch on (Sagawa et al. select GroupDRO on worst-group validation
    accuracy; selecting a mitigated run on overall validation score hands the epoch back to the
    majority group)."""
    scores = []
    for g in np.unique(groups[groups >= 0]):
        m = groups == g
        p, y = probs[m], labels[m]
        loss = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None))))
        scores.append(selection_score(selection, y, p, loss))
    return float(min(scores)) if scores else float("nan")


# -- run context ----------------------------------------------------------------------------


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
                xb = prepare_batch(module, x[start : start + batch_size], inputs, device)
                out.append(module(xb).float())
    finally:
        module.train(was)
    return torch.cat(out)


def _probs(logits: torch.Tensor, task: str = "multiclass") -> np.ndarray:
    # float64 softmax: rows sum to 1 within ~1e-16, far inside the predictions contract.
    return task_probs(task, logits)


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
    compile_backend: str | None = None,
) -> FitResult:
    """Train ``method`` on ``data`` with hyperparameters ``hp``; return the best-epoch result.

    ``model`` (a :class:`fairxray.models.ClipModel`) is needed by image methods (lora, full_ft),
    which adapt its image tower in place: pass a fresh one per call. ``checkpoint_dir``: after
    each epoch, the state needed to resume goes there; a later call with the same arguments
    resumes from it (a checkpoint from other arguments is discarded). ``on_epoch(epoch,
    val_score)`` is called after each epoch's checkpoint (Optuna raises ``TrialPruned`` from it).
    The test split, if given, is predicted once with the selected weights; it never influences
    training or selection. ``compile_backend`` (e.g. ``"inductor"``): the training forward pass
    runs through ``torch.compile`` with that backend; validation, test, checkpoints and the
    returned module stay eager (same parameters). Off by default: ``benchmarks/gpu.py`` measures
    whether it pays before any stage turns it on.

    ``method`` may name a mitigated run, ``<method>+<mitigation>`` (``mlp+group_dro``): a
    ``train`` mitigation then shapes the batch loss through its hook (:mod:`fairxray.mitigate`),
    from ``data.train.groups``; it sees the training split only.
    """
    check_train_params(hp)
    check_task(data.task, hp.selection, hp.class_balanced, "train", "train.selection")
    meth = adapt.get_method(method)
    if meth.build is None:
        raise ValueError(f"method {method!r} does not train; use its own predictions")
    _, mitigation = split_run(method)
    if mitigation != NONE and get_mitigation(mitigation).kind != "train":
        raise ValueError(f"mitigation {mitigation!r} does not train; it post-processes predictions")
    if mitigation != NONE and data.task == "multilabel":
        raise UserError(f"{method}: mitigations are multi-class only (data.task multilabel)")
    say = dist.main_only(log or (lambda _msg: None))
    device = dist.local_device(resolve_device(hp.device))
    with dist.session(device), _run_context(device, hp.num_threads):
        dist.check_batch(hp.batch_size)
        return _fit(
            meth, method, data, hp, seed, model, checkpoint_dir, on_epoch, say, device,
            compile_backend,
        )


@dataclass
class _Run:
    """One fit's fixed parts: the module, its optimiser and schedule, the inputs on the device."""

    meth: adapt.Method
    hp: TrainParams
    seed: int
    device: torch.device
    module: nn.Module
    gen: torch.Generator
    opt: torch.optim.Optimizer
    sched: object
    x_train: torch.Tensor
    y_train: torch.Tensor  # CPU: the epoch order is drawn from it
    y_train_dev: torch.Tensor
    x_val: torch.Tensor
    y_val: np.ndarray
    y_val_dev: torch.Tensor
    n_classes: int
    has_lora: bool
    fingerprint: str = ""
    forward: Callable | None = None  # training forward: DDP replica / torch.compile'd, else None
    x_views: torch.Tensor | None = None  # [K, N, D] cached augmented train views (frozen methods)
    hook: TrainHook | None = None  # the run's mitigation (None: plain cross-entropy)
    g_train_dev: torch.Tensor | None = None  # the training rows' group codes
    g_val: np.ndarray | None = None  # the validation rows' group codes (worst-group selection)
    task: str = "multiclass"  # data.task: the loss and probabilities (fit/task.py)


def _mitigation_hook(run: str, data: FitData, hp) -> TrainHook | None:
    """The hook of ``run``'s train mitigation, built from the training split only."""
    _, mitigation = split_run(run)
    if mitigation == NONE:
        return None
    g = data.train.groups
    if g is None or not data.group_names:
        raise UserError(
            f"{run}: the mitigation needs each training row's group (mitigate.attribute)"
        )
    return get_mitigation(mitigation).make_hook(
        hp, len(data.group_names), data.n_classes, np.asarray(g), np.asarray(data.train.labels)
    )


def _groups_on(groups, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(groups, dtype=np.int64)).to(device)


def _setup(meth, run, data: FitData, hp, seed, model, device, fingerprinted: bool) -> _Run:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    gen = torch.Generator().manual_seed(seed)

    in_dim = data.train.features.shape[1] if meth.inputs == "embeddings" else None
    module = adapt.build(meth.name, n_classes=data.n_classes, hp=hp, model=model, in_dim=in_dim)
    # Hashing the data costs ~0.1 s per 100 MB: only worth it when there is a checkpoint to match.
    fp = ck.fingerprint(run, seed, hp, data, module) if fingerprinted else ""
    module.to(device)
    if device.type == "cuda" and meth.inputs == "images":
        module.to(memory_format=torch.channels_last)

    x_train = to_device_inputs(data.train, meth.inputs, device)
    x_val = to_device_inputs(data.val, meth.inputs, device)
    y_train = targets_tensor(data.task, data.train.labels)  # a copy
    y_val = targets_tensor(data.task, data.val.labels).numpy()
    if len(y_train) < 2:
        raise UserError("train split: needs at least 2 rows")
    for name, y in (("train", y_train.numpy()), ("val", y_val)):
        if data.task == "multiclass" and (y.min() < 0 or y.max() >= data.n_classes):
            raise UserError(f"{name} split: label_idx outside 0..{data.n_classes - 1}")

    # Built after the module, so an adversary's initialisation draws come after the head's.
    hook = _mitigation_hook(run, data, hp)
    groups = module.param_groups(hp)
    if hook is not None:
        hook.to(device)
        if hook.parameters():
            groups.append({"params": hook.parameters(), "lr": hp.lr})
    opt_kwargs = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(groups, weight_decay=hp.weight_decay, **opt_kwargs)
    steps_per_epoch = len(dist.batches(torch.arange(len(y_train)), hp.batch_size))
    return _Run(
        meth=meth,
        hp=hp,
        seed=seed,
        device=device,
        module=module,
        gen=gen,
        opt=opt,
        sched=_make_scheduler(opt, hp, steps_per_epoch),
        x_train=x_train,
        y_train=y_train,
        y_train_dev=y_train.to(device),
        x_val=x_val,
        y_val=y_val,
        y_val_dev=torch.from_numpy(y_val).to(device),
        n_classes=data.n_classes,
        has_lora=bool(lora_parameters(module)),
        fingerprint=fp,
        x_views=_train_views(data, meth.inputs, device),
        hook=hook,
        g_train_dev=_groups_on(data.train.groups, device) if hook is not None else None,
        g_val=None if hook is None else data.val.groups,
        task=data.task,
    )


def _train_views(data: FitData, inputs: str, device: torch.device) -> torch.Tensor | None:
    views = data.train.feature_views
    if inputs != "embeddings" or views is None or len(views) == 0:
        return None
    if views.shape[1:] != data.train.features.shape:
        raise ValueError("train feature_views must be [K, N, D] matching the train features")
    return torch.from_numpy(np.array(views, dtype=np.float32)).to(device)


def _train_epoch(r: _Run, epoch: int) -> tuple[float, int, float]:
    """One pass over the training split; returns (mean loss, images seen, seconds)."""
    module, hp, device = r.module, r.hp, r.device
    module.train()
    t_start = time.perf_counter()
    total_loss, seen = torch.zeros((), device=device), 0
    # The epoch's batch order and augmentation draws cross to the device once, so no batch
    # waits on a host-to-device copy.
    order = epoch_order(r.y_train, r.n_classes, hp.class_balanced, r.gen)
    chunks = dist.batches(order, hp.batch_size)  # global batches; each rank takes its shard
    order_dev = to_device(torch.cat(chunks), device)
    draws_dev = view_dev = None
    if r.meth.inputs == "images":
        draws_dev = to_device(augment_draws(len(order_dev), r.gen), device)
    if r.x_views is not None:  # one cached augmented view per image this epoch
        view_dev = to_device(
            torch.randint(len(r.x_views), (len(order_dev),), generator=r.gen), device
        )
    pos = 0
    for idx in chunks:
        start = pos
        rows = dist.shard(pos, len(idx))  # this rank's positions in the epoch order
        idx_dev = order_dev[rows]
        if view_dev is None:
            xb = r.x_train[idx_dev]
        else:
            xb = r.x_views[view_dev[rows], idx_dev]
        if draws_dev is not None:
            xb = augment(xb, hp.augment, draws=draws_dev[rows])
        pos += len(idx)
        xb = prepare_batch(module, xb, r.meth.inputs, device)
        with _autocast(device):
            logits = (module if r.forward is None else r.forward)(xb)
        y_b = r.y_train_dev[idx_dev]
        if r.hook is None:
            loss = task_loss(r.task, logits, y_b)
        else:
            ce = F.cross_entropy(logits.float(), y_b, reduction="none")
            loss = r.hook.loss(ce, r.g_train_dev[idx_dev], y_b, logits)
        if dist.active():  # the shard's share of what the whole batch's loss averages over
            whole = r.y_train_dev[order_dev[start : start + len(idx)]]
            loss = dist.shard_loss(loss, loss_count(r.task, y_b), loss_count(r.task, whole))
        r.opt.zero_grad(set_to_none=True)
        loss.backward()
        if r.has_lora and epoch == 1 and seen == 0:
            problems = lora_gradient_problems(module)
            if problems:
                raise RuntimeError(f"LoRA adapters are not training: {problems[:3]}")
        r.opt.step()
        r.sched.step()
        total_loss += loss.detach() * len(idx)
        seen += len(idx)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total_loss = dist.average(total_loss)
    return float(total_loss) / max(seen, 1), seen, time.perf_counter() - t_start


def _validate(r: _Run, epoch: int, train_loss: float, seen: int, train_seconds: float) -> dict:
    """The validation loss and selection score after ``epoch``: one history entry."""
    t_eval = time.perf_counter()
    logits = predict_logits(r.module, r.x_val, r.meth.inputs, r.hp.embed_batch_size, r.device)
    val_loss = float(task_loss(r.task, logits, r.y_val_dev))
    if r.g_val is not None:
        score = worst_group_score(r.hp.selection, r.y_val, _probs(logits), r.g_val)
    else:
        score = selection_score(r.hp.selection, r.y_val, _probs(logits, r.task), val_loss)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_score": score,
        "lr": float(r.opt.param_groups[0]["lr"]),
        "train_images": seen,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - t_eval,
    }


def _select(r: _Run, state: ck.LoopState, entry: dict, ckpt: Path | None, best: dict) -> None:
    """Keep the epoch if strictly better (ties keep the earlier, less trained one); early stop."""
    if entry["val_score"] > state.best_score:
        state.best_score, state.best_epoch, state.since_best = entry["val_score"], entry["epoch"], 0
        if ckpt is not None:
            if dist.is_main():  # the others read it after the epoch's barrier
                ck.save_best(ckpt, entry["epoch"], r.module)
        else:
            best["state"] = ck.cpu_state(r.module)
    else:
        state.since_best += 1
    if r.hp.patience and state.since_best >= r.hp.patience:
        state.stopped_early = True


def _fit(
    meth, run, data, hp, seed, model, checkpoint_dir, on_epoch, say, device, backend
) -> FitResult:
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    r = _setup(meth, run, data, hp, seed, model, device, fingerprinted=ckpt is not None)
    dist.check_run(r.hook is not None)
    r.forward = dist.wrap(r.module, device)  # DDP under torchrun, else None
    if backend is not None:
        r.forward = torch.compile(r.forward or r.module, backend=backend)
    label = f"{run} seed {seed}"
    state = ck.LoopState()
    if ckpt is not None:
        state = dist.main_first(  # rank 0 may clear a stale checkpoint before the others read
            lambda: ck.restore(
                ckpt, r.fingerprint, label, r.module, r.opt, r.sched, r.gen, device, say, r.hook
            )
        )
    resumed_from = state.epoch
    best: dict = {}
    while state.epoch < hp.epochs and not state.stopped_early:
        state.epoch += 1
        entry = dist.from_main(_validate(r, state.epoch, *_train_epoch(r, state.epoch)))
        state.history.append(entry)
        _select(r, state, entry, ckpt, best)
        say(
            f"{label} epoch {state.epoch}/{hp.epochs}: train loss {entry['train_loss']:.4f}"
            f"  val loss {entry['val_loss']:.4f}  val {hp.selection} {entry['val_score']:.4f}"
            f"  ({entry['train_images'] / max(entry['train_seconds'], 1e-9):.0f} img/s)"
        )
        if ckpt is not None:
            if dist.is_main():
                ck.save_last(
                    ckpt, r.fingerprint, state, r.module, r.opt, r.sched, r.gen, device, r.hook
                )
            dist.barrier()  # the other ranks read rank 0's files (resume, best epoch)
        if on_epoch is not None:
            on_epoch(state.epoch, entry["val_score"])
    return _finish(r, data, state, ckpt, best, resumed_from)


def _finish(r: _Run, data: FitData, state, ckpt, best: dict, resumed_from: int) -> FitResult:
    """Restore the selected epoch; predict validation and (once) test with it."""
    if state.best_epoch == 0:
        # Every epoch's validation score was NaN (a diverged run: NaN loss or features); there is
        # no epoch to select, and a tuning trial must fail rather than stop the study.
        raise DivergedError(
            f"{r.meth.name} seed {r.seed}: no finite validation {r.hp.selection} in any of "
            f"{len(state.history)} epoch(s) (diverged? try a smaller train.lr)"
        )
    module, inputs, bs = r.module, r.meth.inputs, r.hp.embed_batch_size
    module.load_state_dict(ck.load_best(ckpt, state.best_epoch) if ckpt else best["state"])
    module.eval()
    val_probs = _probs(predict_logits(module, r.x_val, inputs, bs, r.device), r.task)
    test_probs = None
    if data.test is not None:
        x_test = to_device_inputs(data.test, inputs, r.device)
        test_probs = _probs(predict_logits(module, x_test, inputs, bs, r.device), r.task)
    return FitResult(
        method=r.meth.name,
        module=module,
        history=state.history,
        best_epoch=state.best_epoch,
        best_score=state.best_score,
        selection=r.hp.selection,
        val_probs=val_probs,
        test_probs=test_probs,
        trainable_params=adapt.count_trainable(module),
        resumed_from=resumed_from,
        stopped_early=state.stopped_early,
    )
