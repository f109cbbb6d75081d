"""The train stage's library side: every seed of one model x method, from the split frames and
the tuned hyperparameters to weights, config and val/test predictions on disk.

zero_shot trains nothing: it writes the model's zero-shot predictions, so every cell of the grid
has the same outputs.

A mitigated run ``<method>+<mitigation>`` (:mod:`fairxray.mitigate`) trains like its method with
the mitigation's loss hook (the training rows' ``mitigate.attribute`` groups loaded with them),
or, for a post-processing mitigation, reads the plain method's val/test predictions of each
seed, fits the rule on the val rows and writes the adjusted predictions.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import numpy as np
from torch import nn

from fairxray import adapt, paths
from fairxray.adapt.fit import (
    check_train_params,
    clear_checkpoints,
    distributed,
    fit,
    load_fit_data,
    resolve_device,
    split_labels,
    split_targets,
)
from fairxray.config import Params, TrainParams
from fairxray.errors import UserError
from fairxray.mitigate import NONE, get_mitigation, split_run

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


def prediction_frame(frame, probs: np.ndarray, classes, sensitive, task: str = "multiclass"):
    """The predictions contract for one split: ids, label, ``prob_<Class>``, sensitive columns;
    under ``task`` multilabel also the ``y_<Class_Name>`` targets, copied from the split frame
    (1, 0 or NaN = masked)."""
    from fairxray.metrics.predictions import prob_columns, target_columns

    out = frame[["image_id", "patient_id", "label_idx"]].reset_index(drop=True).copy()
    out["label_idx"] = out["label_idx"].astype(np.int64)
    for col, j in zip(prob_columns(classes), range(probs.shape[1]), strict=True):
        out[col] = probs[:, j].astype(np.float64)
    if task == "multilabel":
        y = split_targets(frame, classes, "split file")
        for col, j in zip(target_columns(classes), range(y.shape[1]), strict=True):
            out[col] = y[:, j]
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

        model = create(cfg["model"], weights_dir, cfg.get("model_scale", "full"))
    module = adapt.build(
        cfg["method"], n_classes=len(cfg["classes"]), hp=hp, model=model, in_dim=cfg["in_dim"]
    )
    load_model(module, str(seed_dir / WEIGHTS_FILE), strict=True)
    return module.eval(), cfg


# -- the seed loop --------------------------------------------------------------------------


@dataclasses.dataclass
class _Job:
    """What every seed of one model x method shares."""

    p: Params
    model_name: str
    method: str
    meth: adapt.Method
    hp: TrainParams
    frames: dict
    classes: list[str]
    sensitive: list[str]
    cache: object
    data: object
    base: dict


def train(
    p: Params,
    model_name: str,
    method: str,
    seeds: list[int] | tuple[int, ...],
    device: str | None = None,
    log=print,
) -> list[dict]:
    """Run every seed; return one summary per seed. Under ``torchrun`` every process trains each
    seed data-parallel (:mod:`fairxray.adapt.fit.distributed`) and only rank 0 logs and writes;
    methods that train nothing run on rank 0 alone."""
    log, main = distributed.main_only(log), distributed.is_main()
    base, mitigation = split_run(method)
    if mitigation != NONE and get_mitigation(mitigation).kind == "post":
        return [_post_seed(p, model_name, method, seed, log) for seed in seeds if main]
    job = _job(p, model_name, method, seeds, device, log)
    if job.meth.inputs == "none":
        return [_zero_shot_seed(job, seed, log) for seed in seeds if main]
    with distributed.session(distributed.local_device(resolve_device(job.hp.device))):
        return [_trained_seed(job, seed, log) for seed in seeds]


def _job(p: Params, model_name: str, method: str, seeds, device: str | None, log) -> _Job:
    import torch

    from fairxray.data.cache import ImageCache
    from fairxray.data.splits import load_splits

    meth = adapt.get_method(method)
    adapt.check_grid([model_name], [method])
    check_train_params(p.train, p.source)
    hp, hp_source = resolve_train_params(p.train, paths.tuned(model_name, method))
    if device:
        hp = dataclasses.replace(hp, device=device)
    distributed.check_batch(hp.batch_size, src=hp_source)  # under torchrun: the global batch
    if hp.num_threads > 0:
        torch.set_num_threads(hp.num_threads)
    classes, sensitive = list(p.data.classes), list(p.metrics.sensitive)
    frames = load_splits(p.data.protocol)
    log(
        f"train: {model_name} x {method}, seeds {list(seeds)}, protocol {p.data.protocol}, "
        f"hyperparameters from {hp_source}, device {resolve_device(hp.device)}"
    )
    cache = None
    if meth.inputs in ("none", "images"):
        cache = ImageCache.open(paths.images(p.data.protocol))
    data = None
    if meth.inputs != "none":
        mitigated = split_run(method)[1] != NONE
        data = load_fit_data(
            frames,
            meth.inputs,
            len(classes),
            embeddings_dir=paths.embeddings(model_name),
            cache=cache,
            group_column=p.mitigate.attribute if mitigated else None,
            task=p.data.task,
            classes=classes,
        )
    base = {
        "profile": p.profile,
        "model": model_name,
        "method": method,
        "inputs": meth.inputs,
        "protocol": p.data.protocol,
        "classes": classes,
        "weights_dir": p.data.weights_dir,
        "random_weights": p.data.weights_dir is None,
        "model_scale": p.model_scale,
        "hyperparameters_from": hp_source,
        "train": dataclasses.asdict(hp),
    }
    return _Job(p, model_name, method, meth, hp, frames, classes, sensitive, cache, data, base)


def _write_predictions(job: _Job, seed: int, split: str, df) -> None:
    from fairxray.metrics.predictions import write_predictions

    path = paths.prediction_file(job.model_name, job.method, seed, split)
    write_predictions(df, path, job.classes, job.sensitive, task=job.p.data.task)


def _zero_shot_seed(job: _Job, seed: int, log) -> dict:
    from fairxray.adapt import zero_shot
    from fairxray.models import create

    t0 = time.perf_counter()
    model = create(job.model_name, job.p.data.weights_dir, job.p.model_scale)
    dev = resolve_device(job.hp.device)
    probs = {}
    task = job.p.data.task
    for split in ("val", "test"):
        if task == "multilabel":
            split_targets(job.frames[split], job.classes, f"{split} split")
        else:
            split_labels(job.frames[split], len(job.classes), f"{split} split")
        probs[split] = zero_shot.predictions(
            model,
            job.cache,
            job.frames[split],
            job.classes,
            job.sensitive,
            job.hp.embed_batch_size,
            dev,
            rule=job.hp.zero_shot_rule,
            task=task,
        )
    config = {**job.base, "seed": seed, "in_dim": None, "trainable_params": 0}
    save_run(paths.seed_dir(job.model_name, job.method, seed), None, config)
    for split, df in probs.items():
        _write_predictions(job, seed, split, df)
    log(f"train: {job.model_name} x {job.method} seed {seed}: zero-shot predictions written")
    return {"seed": seed, "seconds": time.perf_counter() - t0}


def _post_seed(p: Params, model_name: str, run: str, seed: int, log) -> dict:
    """A post-processing mitigation of one seed: fitted on the plain run's val predictions,
    applied to its test predictions (whose labels it never reads)."""
    from fairxray.metrics.predictions import prob_columns, read_predictions, write_predictions

    t0 = time.perf_counter()
    base, mitigation = split_run(run)
    if p.data.task == "multilabel":
        raise UserError(f"{run}: mitigations are multi-class only (data.task multilabel)")
    classes, sensitive = list(p.data.classes), list(p.metrics.sensitive)
    attr, cols = p.mitigate.attribute, prob_columns(classes)
    frames = {}
    for split in ("val", "test"):
        f = paths.prediction_file(model_name, base, seed, split)
        if not f.exists():
            raise UserError(
                f"{f}: missing; run `fairxray train --model {model_name} --method {base}`"
            )
        frames[split] = read_predictions(f, classes, sensitive, task=p.data.task)
    val, test = frames["val"], frames["test"]
    new_val, new_test, info = get_mitigation(mitigation).postprocess(
        val[cols].to_numpy(np.float64),
        val["label_idx"].to_numpy(np.int64),
        val[attr].astype(str).to_numpy(),
        test[cols].to_numpy(np.float64),
        test[attr].astype(str).to_numpy(),
        p.mitigate,
    )
    config = {
        "profile": p.profile,
        "model": model_name,
        "method": run,
        "inputs": "none",
        "postprocess_of": base,
        "protocol": p.data.protocol,
        "classes": classes,
        "seed": seed,
        "in_dim": None,
        "trainable_params": 0,
        "mitigate": dataclasses.asdict(p.mitigate),
        "rule": info,
    }
    save_run(paths.seed_dir(model_name, run, seed), None, config)
    for split, frame, probs in (("val", val, new_val), ("test", test, new_test)):
        out = frame.copy()
        out[cols] = probs
        path = paths.prediction_file(model_name, run, seed, split)
        write_predictions(out, path, classes, sensitive, task=p.data.task)
    log(f"train: {model_name} x {run} seed {seed}: {info['rule']} fitted on val, applied to test")
    return {"seed": seed, "seconds": time.perf_counter() - t0}


def _trained_seed(job: _Job, seed: int, log) -> dict:
    from fairxray.models import create

    t0 = time.perf_counter()
    name, method, data = job.model_name, job.method, job.data
    model = (
        create(name, job.p.data.weights_dir, job.p.model_scale)
        if job.meth.inputs == "images"
        else None
    )
    ckpt = paths.checkpoints(name, method, seed)
    result = fit(method, data, job.hp, seed=seed, model=model, checkpoint_dir=ckpt, log=log)
    if not distributed.is_main():  # rank 0 writes the outputs
        return {"seed": seed, "best_epoch": result.best_epoch, "seconds": time.perf_counter() - t0}
    in_dim = (
        int(data.train.features.shape[1])
        if job.meth.inputs == "embeddings"
        else model.spec.embed_dim
    )
    config = {
        **job.base,
        "seed": seed,
        "in_dim": in_dim,
        "trainable_params": result.trainable_params,
        "selection": result.selection,
        "best_epoch": result.best_epoch,
        "best_score": result.best_score,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from,
        "history": result.history,
    }
    for split, probs in (("val", result.val_probs), ("test", result.test_probs)):
        _write_predictions(
            job,
            seed,
            split,
            prediction_frame(job.frames[split], probs, job.classes, job.sensitive, job.p.data.task),
        )
    save_run(paths.seed_dir(name, method, seed), result.module, config)
    # The outputs are complete: the checkpoints served only an interrupted run.
    clear_checkpoints(ckpt)
    seconds = time.perf_counter() - t0
    log(
        f"train: {name} x {method} seed {seed}: best epoch {result.best_epoch} "
        f"(val {result.selection} {result.best_score:.4f}), {result.trainable_params:,} trainable "
        f"parameters, {seconds:.1f} s -> {paths.seed_dir(name, method, seed)}"
    )
    return {"seed": seed, "best_epoch": result.best_epoch, "seconds": seconds}
