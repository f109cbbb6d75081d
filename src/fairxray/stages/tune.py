"""Tune one model x method with Optuna (resumable study); write tuned/<model>/<method>.yaml."""

from __future__ import annotations

import argparse

from fairxray.config import load_params


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fairxray tune", description=__doc__)
    ap.add_argument("--model", required=True, help="a model of the registry (params.models)")
    ap.add_argument(
        "--method", required=True, help="linear_probe | mlp | lora | full_ft | zero_shot"
    )
    ap.add_argument(
        "--storage",
        help="Optuna storage URL (default tune.storage, else sqlite:///studies/optuna.db); "
        "postgresql://user:pass@host/db lets workers on many machines share the study",
    )
    ap.add_argument(
        "--worker",
        type=int,
        default=0,
        help="worker label in a shared study (sampler seeds come from trial numbers, so workers never need distinct labels)",
    )
    ap.add_argument("--n-trials", type=int, help="finished trials to reach (default tune.n_trials)")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default mlflow.tracking_uri)")
    ap.add_argument("--no-mlflow", action="store_true", help="do not log trials to MLflow")
    ap.add_argument("--params", default="params.yaml")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fairxray import adapt  # after parsing: torch makes --help take seconds
    from fairxray.check import require_valid
    from fairxray.tune import make_storage, search_space, storage_url, tune
    from fairxray.tune.study import trains as study_trains

    p = load_params(args.params)
    require_valid(p)  # before a study or a model folder exists
    callbacks = []
    trains = adapt.get_method(args.method).build is not None and study_trains(args.method)
    if trains and search_space(p.tune, args.method) and not args.no_mlflow:
        from fairxray.track.runs import TrialLogger

        uri = args.tracking_uri or p.mlflow.tracking_uri
        callbacks.append(TrialLogger(uri, p, args.model, args.method))
    run = {"storage": args.storage, "worker": args.worker, "n_trials": args.n_trials}
    content = tune(p, args.model, args.method, callbacks=callbacks, **run)
    if callbacks and "study" in content:  # the study is the record: MLflow gets what it lacks
        storage = make_storage(storage_url(p.tune, args.storage))
        callbacks[0].resync(content["study"]["name"], storage)
    return 0
