"""Data-parallel training under ``torchrun``: one process per device, one DDP replica each.

``torchrun --nproc_per_node N -m fairxray.cli train ...`` starts N copies of the stage; torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) names each
one's place. Without that environment (or with ``WORLD_SIZE=1``) every function here is a no-op
and the fit loop runs exactly as before, bit for bit.

What makes N processes train the same model as one:

- **The global batch is the 1-process batch.** ``train.batch_size`` is global; each rank takes
  ``batch_size / N`` consecutive rows of every batch (:func:`shard`; the size must divide, see
  :func:`check_batch`). Every rank draws the whole epoch's order and augmentation draws from the
  same seeded generator and keeps its own slice, so the rows, their augmentations and the
  optimiser steps are the 1-process run's.
- **The gradient is the global batch mean.** DDP averages the ranks' gradients; a rank's loss is
  its shard's mean rescaled by ``n_rank * N / n_batch`` (:func:`shard_loss`), so the average is the
  mean over the whole batch even when the shards are unequal (the epoch's last, partial batch).
  That partial batch is kept when each rank gets at least 2 rows (BatchNorm's minimum), dropped
  otherwise (:func:`batches`): the 1-process run keeps it, so the two runs then differ by that one
  batch per epoch (none when the batch size divides the training rows).
- **Same seeds, same weights, same decisions.** Every rank builds the module from the same seed,
  DDP keeps the replicas equal, every rank validates on the full validation split, and rank 0's
  history entry is broadcast (:func:`from_main`) so selection and early stopping cannot drift.
- **One writer.** Only rank 0 writes checkpoints, weights, predictions and logs
  (:func:`is_main`); the others wait at a barrier after each epoch's checkpoint and read rank 0's
  files when they resume or restore the best epoch (:func:`main_first`).

BatchNorm: on CUDA the module's BatchNorm layers become ``SyncBatchNorm`` (batch statistics over
the global batch, as in one process; same parameters and state-dict keys). torch's SyncBatchNorm
has no CPU kernel, so on CPU each rank normalises its own shard: a BatchNorm model (the ``mlp``
head, ResNet towers) then differs from the 1-process run by those statistics. ``full_ft`` with the
paper head on a ViT, and the toy model, have no BatchNorm.

Backend: ``nccl`` on CUDA, ``gloo`` on CPU (from ``train.device``). The loss hooks of train
mitigations (group DRO, adversarial) see one shard and keep per-process state, so they are
refused under DDP.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from fairxray.adapt.fit.inputs import batches as _batches
from fairxray.errors import UserError


def world_size() -> int:
    """Processes in the run: the process group's size, else torchrun's ``WORLD_SIZE``, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    """True when more than one process trains together (the process group is up)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[None]:
    """The process group from torchrun's environment for the duration of the block (no-op when
    ``WORLD_SIZE`` is 1 or a group is already up, e.g. one opened by the caller). On CUDA each
    process uses ``cuda:LOCAL_RANK``. A clean exit waits for every rank before the group closes,
    so no rank leaves while rank 0 still writes."""
    if world_size() <= 1 or dist.is_initialized():
        yield
        return
    if not dist.is_available():
        raise UserError("torchrun: this torch build has no torch.distributed")
    if device.type == "cuda":
        torch.cuda.set_device(local_device(device))
    dist.init_process_group(backend=backend_for(device))
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` -> this process's ``cuda:LOCAL_RANK`` under torchrun; other devices unchanged."""
    if device.type != "cuda" or device.index is not None or world_size() <= 1:
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def check_batch(batch_size: int, world: int | None = None, src: str = "train") -> None:
    """``train.batch_size`` is the global batch: it must split evenly over the processes, into
    at least 2 rows each (BatchNorm's minimum)."""
    world = world_size() if world is None else world
    if world > 1 and (batch_size % world or batch_size // world < 2):
        raise UserError(
            f"{src}: 'train.batch_size' {batch_size} is the global batch and must be a multiple "
            f"of the {world} processes with at least 2 rows each (per-process batch = "
            f"batch_size / world size)"
        )


def check_run(has_hook: bool) -> None:
    if active() and has_hook:
        raise UserError(
            "torchrun: train mitigations (their loss hook sees one process's shard) run in one "
            "process; train them without torchrun"
        )


def batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """:func:`fairxray.adapt.fit.inputs.batches`; under DDP a trailing batch too small to give
    every rank 2 rows is dropped too (same on every rank, so every rank takes the same steps)."""
    out = _batches(order, batch_size)
    world = world_size() if active() else 1
    if world > 1 and len(out) > 1 and len(out[-1]) < 2 * world:
        out.pop()
    return out


def shard(start: int, n: int) -> slice:
    """This rank's rows of a global batch at positions ``start .. start + n`` of the epoch order:
    contiguous, sizes differing by at most one (the whole batch outside DDP)."""
    if not active():
        return slice(start, start + n)
    world, r = dist.get_world_size(), dist.get_rank()
    return slice(start + r * n // world, start + (r + 1) * n // world)


def shard_loss(loss: torch.Tensor, n_local: int, n_batch: int) -> torch.Tensor:
    """The shard's mean loss rescaled so that DDP's average of the ranks' gradients is the
    gradient of the mean over the whole batch: ``mean_local * n_local * world / n_batch``.

    ``n_local`` / ``n_batch`` count what the loss averages over: rows for cross-entropy; for a
    masked multi-label loss (a mean over the unmasked targets) the unmasked targets of the shard
    and of the whole batch (every rank holds every label, so both are known without
    communication)."""
    if not active():
        return loss
    return loss * (n_local * dist.get_world_size() / n_batch)


def average(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the ranks (``t`` itself outside DDP). With :func:`shard_loss`, the
    epoch's ``sum(loss * batch rows)`` averages to the 1-process sum of per-row losses."""
    if not active():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def wrap(module: nn.Module, device: torch.device) -> nn.Module | None:
    """The DDP replica used for the training forward pass (None outside DDP). On CUDA, BatchNorm
    layers become SyncBatchNorm first, in place: the same parameter objects, so the optimiser and
    checkpoints are unchanged."""
    if not active():
        return None
    ids = None
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(module)  # replaces BatchNorm children in place
        ids = [device.index]
    # static_graph: the same parameters take part in every step, learned at the first one; a
    # trainable weight the forward never reaches (an image tower's unused projection) keeps no
    # gradient, as in one process, instead of stopping DDP at the second step.
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, static_graph=True)


def barrier() -> None:
    if active():
        dist.barrier()


def from_main(obj):
    """Rank 0's ``obj`` on every rank (``obj`` itself outside DDP)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main_first(fn: Callable[[], object]):
    """``fn()`` on rank 0, then, after a barrier, on the other ranks (which then see what rank 0
    wrote or cleared: resuming from its checkpoint)."""
    if not active():
        return fn()
    out = fn() if is_main() else None
    dist.barrier()
    if not is_main():
        out = fn()
    return out


def main_only(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` on rank 0; a no-op on the other ranks (decided from torchrun's ``RANK``)."""
    if is_main():
        return log
    return lambda _msg: None
