"""Data-parallel fit (fairxray.adapt.fit.distributed) on CPU: 2 gloo processes, the toy model.

One spawn of 2 processes (module fixture) runs every 2-process scenario; the tests compare its
files with 1-process fits run here. The 2-process run must equal the 1-process run with the same
global batch (8 rows: 4 per rank; the epoch's last batch has 5 rows, split 2 + 3, so the loss
weighting of unequal shards is exercised), resume from rank 0's checkpoint to the uninterrupted
result, and refuse a batch size the processes cannot split.

Tolerance (a): the two runs do the same arithmetic except for the order of summation (each rank
sums its shard's per-row gradients, gloo adds the two partial sums; one process sums all rows,
and a convolution's backward blocks a batch of 4 differently from one of 8): float32 rounding,
~1e-7 relative per gradient. AdamW carries it over the run's 10 steps, and its step is about lr
per element whatever the gradient's size, so an element whose gradient is near zero can move by a
fraction of lr on a rounding difference. Hence: probabilities within 1e-6 (measured <= 1e-7);
every weight within lr / 10 = 3e-4 (measured: one element of 23,766 at 8e-5 with 2 torch threads,
<= 1e-6 with 1) and 99.9% of them within 1e-5 (measured <= 2e-6). A wrong sharding is far outside:
the control with the per-rank batch differs by ~4e-2 in probabilities and ~4e-3 in the median
weight.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from _trainkit import fit_data, train_params

from fairxray import paths
from fairxray.adapt.fit import distributed, fit
from fairxray.config import load_params
from fairxray.errors import UserError
from fairxray.models import create

WORLD = 2
METHOD = "full_ft"
PROB_ATOL = 1e-6
LR = 3e-3  # _trainkit.train_params
WEIGHT_ATOL, BULK_ATOL = LR / 10, 1e-5  # every weight; 99.9% of them
SRC = Path(__file__).resolve().parents[2] / "src"


def _hp(**kw):
    # 37 training rows in batches of 8: 8, 8, 8, 8, 5 (the last split 2 + 3 over the ranks).
    return train_params(**{"epochs": 2, "batch_size": 8, **kw})


class Interrupted(Exception):
    pass


def _stop_after(n):
    def on_epoch(epoch, _score):
        if epoch == n:
            raise Interrupted

    return on_epoch


def _summary(res) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in res.module.state_dict().items()},
        "val_probs": res.val_probs,
        "test_probs": res.test_probs,
        "history": [
            {k: e[k] for k in ("epoch", "train_loss", "val_loss", "val_score")}
            for e in res.history
        ],
        "best_epoch": res.best_epoch,
        "resumed_from": res.resumed_from,
    }


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    data = fit_data()
    results: dict = {}
    with distributed.session(torch.device("cpu")):
        results["world"] = distributed.world_size()
        results["shards"] = [distributed.shard(start, n) for start, n in ((0, 8), (32, 5))]
        results["batches"] = [len(b) for b in distributed.batches(torch.arange(37), 8)]
        results["tail"] = [len(b) for b in distributed.batches(torch.arange(35), 8)]
        results["plain"] = _summary(fit(METHOD, data, _hp(), seed=0, model=create("toy")))
        ckpt = os.path.join(out, "ckpt")
        try:
            fit(
                METHOD, data, _hp(), seed=0, model=create("toy"), checkpoint_dir=ckpt,
                on_epoch=_stop_after(1),
            )
        except Interrupted:
            pass
        results["files_after_interrupt"] = sorted(os.listdir(ckpt))
        resumed = fit(METHOD, data, _hp(), seed=0, model=create("toy"), checkpoint_dir=ckpt)
        results["resumed"] = _summary(resumed)
        results["unused_grad"] = _unused_parameter_steps()
        # A BatchNorm head on CPU (no SyncBatchNorm there): it trains, replicas stay equal.
        feats = fit_data(create("toy"), features=True)
        results["mlp"] = _summary(fit("mlp", feats, _hp(), seed=0))
        results["multilabel"] = _summary(
            fit("linear_probe", _multilabel(feats), _hp(selection="neg_loss"), seed=0)
        )
        try:
            fit(METHOD, data, _hp(batch_size=13), seed=0, model=create("toy"))
            results["odd_batch"] = None
        except UserError as exc:
            results["odd_batch"] = str(exc)
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))


def _multilabel(data):
    """``data`` as a multi-label task: one-hot targets with 40 % of the entries masked (NaN) at
    fixed random places, so the ranks' shards average their masked BCE over different numbers
    of targets."""
    import dataclasses

    rng = np.random.default_rng(3)

    def convert(split):
        y = np.eye(data.n_classes, dtype=np.float32)[split.labels]
        y[rng.random(y.shape) < 0.4] = np.nan
        return dataclasses.replace(split, labels=y)

    return dataclasses.replace(
        data,
        train=convert(data.train),
        val=convert(data.val),
        test=convert(data.test),
        task="multilabel",
    )


class _PartlyUsed(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used, self.unused = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.used(x)


def _unused_parameter_steps() -> list:
    """Three DDP steps of a module with a trainable weight its forward never reaches."""
    torch.manual_seed(0)
    m = _PartlyUsed()
    ddp = distributed.wrap(m, torch.device("cpu"))
    for _ in range(3):
        m.zero_grad(set_to_none=True)
        ddp(torch.randn(4, 3)).sum().backward()
    return [m.unused.weight.grad is None, m.used.weight.grad is not None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process(tmp_path_factory, one_process) -> list[dict]:
    # Forked after the 1-process fit, the workers inherit its imports (torch, dynamo, fairxray:
    # ~10 s per fresh process on 2 cores); they run on CPU with one thread. Spawned instead when
    # this process has CUDA initialised (a forked child cannot use it).
    out = tmp_path_factory.mktemp("ddp")
    method = "spawn" if torch.cuda.is_initialized() else "fork"
    ctx = mp.start_processes(
        _worker, args=(_free_port(), str(out)), nprocs=WORLD, join=False, start_method=method
    )
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the 2-process fits did not finish in 240 s")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def one_process():
    return _summary(fit(METHOD, fit_data(), _hp(), seed=0, model=create("toy")))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _abs_diffs(a: dict, b: dict) -> torch.Tensor:
    assert a.keys() == b.keys()
    return torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in a])


def _close_states(a: dict, b: dict) -> None:
    d = _abs_diffs(a, b)
    assert float(d.max()) <= WEIGHT_ATOL
    assert float(d.quantile(0.999)) <= BULK_ATOL


def test_two_processes_equal_one_process_with_the_same_global_batch(two_process, one_process):
    r0, r1 = two_process
    assert r0["world"] == r1["world"] == WORLD
    ddp = r0["plain"]
    _close_states(ddp["state"], one_process["state"])
    assert LR == _hp().lr
    for split in ("val_probs", "test_probs"):
        np.testing.assert_allclose(ddp[split], one_process[split], atol=PROB_ATOL, rtol=0)
    # The epoch's mean training loss is the global one (all-reduced), not rank 0's shard.
    for a, b in zip(ddp["history"], one_process["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    assert ddp["best_epoch"] == one_process["best_epoch"]
    # Every rank ends with the same replica and the same selection.
    assert _max_diff(r0["plain"]["state"], r1["plain"]["state"]) == 0.0
    assert np.array_equal(r0["plain"]["val_probs"], r1["plain"]["val_probs"])
    assert r0["plain"]["history"] == r1["plain"]["history"]


def test_masked_multilabel_loss_equals_one_process(two_process):
    # Shards hold different numbers of unmasked targets: each rank's mean is rescaled by its
    # share of the batch's unmasked targets, not of its rows, so DDP still averages to the
    # 1-process masked BCE.
    data = _multilabel(fit_data(create("toy"), features=True))
    one = _summary(fit("linear_probe", data, _hp(selection="neg_loss"), seed=0))
    ddp = two_process[0]["multilabel"]
    _close_states(ddp["state"], one["state"])
    np.testing.assert_allclose(ddp["val_probs"], one["val_probs"], atol=PROB_ATOL, rtol=0)
    for a, b in zip(ddp["history"], one["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_the_batch_is_global_not_per_process(two_process):
    # Control: one process with the per-rank batch (4) trains a visibly different model, so the
    # tolerance above separates a right sharding from a wrong one.
    per_rank = _summary(fit(METHOD, fit_data(), _hp(batch_size=4), seed=0, model=create("toy")))
    ddp = two_process[0]["plain"]
    assert np.abs(ddp["val_probs"] - per_rank["val_probs"]).max() > 1000 * PROB_ATOL
    assert float(_abs_diffs(ddp["state"], per_rank["state"]).median()) > 100 * BULK_ATOL


def test_checkpoint_resumes_under_two_processes(two_process):
    for res in two_process:
        assert "last.pt" in res["files_after_interrupt"]
        resumed, plain = res["resumed"], res["plain"]
        assert resumed["resumed_from"] == 1 and plain["resumed_from"] == 0
        assert _max_diff(resumed["state"], plain["state"]) == 0.0
        assert np.array_equal(resumed["val_probs"], plain["val_probs"])
        assert np.array_equal(resumed["test_probs"], plain["test_probs"])
        assert resumed["history"] == plain["history"]
        assert resumed["best_epoch"] == plain["best_epoch"]


def test_batchnorm_head_trains_with_equal_parameters_on_every_rank(two_process):
    r0, r1 = (res["mlp"] for res in two_process)
    params = [k for k in r0["state"] if "running" not in k and "num_batches" not in k]
    assert "head.1.running_mean" in r0["state"]  # linear -> BatchNorm -> ReLU -> linear
    assert max(float((r0["state"][k] - r1["state"][k]).abs().max()) for k in params) == 0.0
    assert r0["history"] == r1["history"]
    assert np.isfinite(r0["history"][-1]["train_loss"])


def test_a_trainable_weight_the_forward_never_reaches_does_not_stop_ddp(two_process):
    # Plain DDP raises at the second step ("Expected to have finished reduction ..."); the
    # unused weight keeps no gradient, as in one process (AdamW then skips it).
    for res in two_process:
        assert res["unused_grad"] == [True, True]


def test_batch_not_divisible_by_the_processes_is_refused(two_process):
    for res in two_process:
        msg = res["odd_batch"]
        assert msg is not None and "\n" not in msg
        assert "'train.batch_size' 13" in msg and "2 processes" in msg


def test_check_batch_by_hand():
    distributed.check_batch(13, 1)  # one process: any batch
    distributed.check_batch(8, 2)
    distributed.check_batch(12, 3)
    for bs, world in ((13, 2), (10, 4), (2, 2)):
        with pytest.raises(UserError, match=f"'train.batch_size' {bs} .* {world} processes"):
            distributed.check_batch(bs, world)


def test_shards_cover_every_row_once(two_process):
    for j, (start, n) in enumerate(((0, 8), (32, 5))):
        got = sorted(i for res in two_process for i in range(*res["shards"][j].indices(10**6)))
        assert got == list(range(start, start + n))
    assert [len(range(*r["shards"][1].indices(10**6))) for r in two_process] == [2, 3]
    # A trailing batch of 5 >= 2 rows x 2 ranks is kept; one of 3 is dropped (1 row for a rank).
    assert two_process[0]["batches"] == [8, 8, 8, 8, 5]
    assert two_process[0]["tail"] == [8, 8, 8, 8]


def test_single_process_is_untouched():
    # No torchrun environment: no group, the hooks are identities.
    assert not distributed.active() and distributed.world_size() == 1
    loss = torch.tensor(1.5)
    assert distributed.shard_loss(loss, 3, 8) is loss
    assert distributed.shard(5, 8) == slice(5, 13)
    assert distributed.wrap(torch.nn.Linear(2, 2), torch.device("cpu")) is None
    assert [len(b) for b in distributed.batches(torch.arange(35), 8)] == [8, 8, 8, 8, 3]


# -- the stage under torchrun (slow: three CLI launches, ~1 min on 2 cores) --------------------


def _cli(root, *args, nproc: int = 0):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd = [*launcher, "--nproc_per_node", str(nproc)] if nproc else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [*cmd, "-m", "fairxray.cli", "train", "--model", "toy", "--method", METHOD, *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
@pytest.mark.heavy  # a real torchrun of the stage; the 2-process gloo tests above run by default
def test_torchrun_train_stage_equals_one_process(tmp_path):
    from _trainkit import write_project

    from fairxray.metrics.predictions import prob_columns

    overrides = {"epochs": 2, "batch_size": 8}
    runs = {}
    for name, nproc in (("one", 0), ("two", WORLD)):
        root = tmp_path / name
        write_project(root, train_overrides=overrides)
        proc = _cli(root, "--seeds", "0", nproc=nproc)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[name] = (root, proc)
    (one, _), (two, proc) = runs["one"], runs["two"]
    assert proc.stdout.count("best epoch") == 1  # rank 0 alone logs
    classes = list(load_params(one / "params.yaml").data.classes)
    for split in ("val", "test"):
        rel = paths.prediction_file("toy", METHOD, 0, split)
        a, b = pd.read_parquet(one / rel), pd.read_parquet(two / rel)
        assert a["image_id"].tolist() == b["image_id"].tolist()
        cols = prob_columns(classes)
        np.testing.assert_allclose(b[cols], a[cols], atol=PROB_ATOL, rtol=0)
    assert not (two / paths.checkpoints("toy", METHOD, 0)).exists()  # cleared once complete
    assert (two / paths.seed_dir("toy", METHOD, 0) / "weights.safetensors").exists()
    odd = tmp_path / "odd"
    write_project(odd, train_overrides={**overrides, "batch_size": 13})
    bad = _cli(odd, "--seeds", "0", nproc=WORLD)
    assert bad.returncode != 0
    assert "fairxray train: error: params.yaml (train): 'train.batch_size' 13" in bad.stderr
