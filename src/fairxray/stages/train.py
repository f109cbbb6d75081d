"""Train one model x method for each seed; write weights, config and val/test predictions."""

from __future__ import annotations

import argparse
import dataclasses
import time

from fairxray import paths
from fairxray.config import Params, load_params


def train(
    p: Params,
    model_name: str,
    method: str,
    seeds: list[int] | tuple[int, ...],
    device: str | None = None,
    log=print,
) -> list[dict]:
    """Run every seed; return one summary per seed. zero_shot trains nothing: it writes the
    model's zero-shot predictions, so every cell of the grid has the same outputs."""
    import torch

    from fairxray import adapt, zero_shot
    from fairxray.data.cache import ImageCache
    from fairxray.models import create
    from fairxray.predictions import write_predictions
    from fairxray.prepare import load_splits
    from fairxray.train import (
        check_train_params,
        clear_checkpoints,
        fit,
        load_fit_data,
        prediction_frame,
        resolve_device,
        resolve_train_params,
        save_run,
        split_labels,
    )

    meth = adapt.get_method(method)
    check_train_params(p.train, "params.yaml")
    hp, hp_source = resolve_train_params(p.train, paths.tuned(model_name, method))
    if device:
        hp = dataclasses.replace(hp, device=device)
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
        data = load_fit_data(
            frames,
            meth.inputs,
            len(classes),
            embeddings_dir=paths.embeddings(model_name),
            cache=cache,
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
        "hyperparameters_from": hp_source,
        "train": dataclasses.asdict(hp),
    }
    summaries = []
    for seed in seeds:
        t0 = time.perf_counter()
        if meth.inputs == "none":
            model = create(model_name, p.data.weights_dir)
            dev = resolve_device(hp.device)
            probs = {}
            for split in ("val", "test"):
                split_labels(frames[split], len(classes), f"{split} split")
                probs[split] = zero_shot.predictions(
                    model, cache, frames[split], classes, sensitive, hp.embed_batch_size, dev
                )
            config = {**base, "seed": seed, "in_dim": None, "trainable_params": 0}
            save_run(paths.seed_dir(model_name, method, seed), None, config)
            for split, df in probs.items():
                write_predictions(
                    df, paths.prediction_file(model_name, method, seed, split), classes, sensitive
                )
            summaries.append({"seed": seed, "seconds": time.perf_counter() - t0})
            log(f"train: {model_name} x {method} seed {seed}: zero-shot predictions written")
            continue

        model = create(model_name, p.data.weights_dir) if meth.inputs == "images" else None
        ckpt = paths.checkpoints(model_name, method, seed)
        result = fit(method, data, hp, seed=seed, model=model, checkpoint_dir=ckpt, log=log)
        in_dim = (
            int(data.train.features.shape[1])
            if meth.inputs == "embeddings"
            else model.spec.embed_dim
        )
        config = {
            **base,
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
            df = prediction_frame(frames[split], probs, classes, sensitive)
            write_predictions(
                df, paths.prediction_file(model_name, method, seed, split), classes, sensitive
            )
        save_run(paths.seed_dir(model_name, method, seed), result.module, config)
        # The outputs are complete: the checkpoints served only an interrupted run.
        clear_checkpoints(ckpt)
        seconds = time.perf_counter() - t0
        summaries.append({"seed": seed, "best_epoch": result.best_epoch, "seconds": seconds})
        log(
            f"train: {model_name} x {method} seed {seed}: best epoch {result.best_epoch} "
            f"(val {result.selection} {result.best_score:.4f}), {result.trainable_params:,} trainable "
            f"parameters, {seconds:.1f} s -> {paths.seed_dir(model_name, method, seed)}"
        )
    return summaries


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fairxray train", description=__doc__)
    ap.add_argument("--model", required=True, help="a model of the registry (params.models)")
    ap.add_argument(
        "--method", required=True, help="zero_shot | linear_probe | mlp | lora | full_ft"
    )
    ap.add_argument("--seeds", type=int, nargs="+", help="default: params.yaml seeds")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), help="overrides train.device")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    p = load_params(args.params)
    train(p, args.model, args.method, args.seeds or list(p.seeds), args.device)
    return 0
