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
        help="worker number in a shared study (each worker gets its own sampler seed)",
    )
    ap.add_argument("--n-trials", type=int, help="finished trials to reach (default tune.n_trials)")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default mlflow.tracking_uri)")
    ap.add_argument("--no-mlflow", action="store_true", help="do not log trials to MLflow")
    ap.add_argument("--params", default="params.yaml")
    return ap


def main(argv: list[str] | None = None) -> int:
    from fairxray import adapt
    from fairxray.tune import search_space, tune
    from fairxray.tune.study import trains as study_trains

    args = _parser().parse_args(argv)
    p = load_params(args.params)
    callbacks = []
    trains = adapt.get_method(args.method).build is not None and study_trains(args.method)
    if trains and search_space(p.tune, args.method) and not args.no_mlflow:
        from fairxray.track.runs import TrialLogger

        uri = args.tracking_uri or p.mlflow.tracking_uri
        callbacks.append(TrialLogger(uri, p, args.model, args.method))
    tune(
        p,
        args.model,
        args.method,
        storage=args.storage,
        worker=args.worker,
        n_trials=args.n_trials,
        callbacks=callbacks,
    )
    return 0
