"""Log one model x method to MLflow (seed runs, metrics, artifacts, ONNX) and register it."""

from __future__ import annotations

import argparse

from fairxray.config import load_params


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fairxray track", description=__doc__)
    ap.add_argument("--model", required=True, help="a model of the registry (params.models)")
    ap.add_argument(
        "--method", required=True, help="zero_shot | linear_probe | mlp | lora | full_ft"
    )
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default mlflow.tracking_uri)")
    ap.add_argument("--params", default="params.yaml")
    return ap


def main(argv: list[str] | None = None) -> int:
    from fairxray.track.runs import track

    args = _parser().parse_args(argv)
    p = load_params(args.params)
    track(p, args.model, args.method, tracking_uri=args.tracking_uri)
    return 0
