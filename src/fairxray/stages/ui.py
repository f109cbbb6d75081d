"""Serve the MLflow UI of this project's tracking store on 127.0.0.1 (lean: one worker)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fairxray.config import load_params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fairxray ui", description=__doc__)
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    ap.add_argument("--tracking-uri", help="default mlflow.tracking_uri of params.yaml")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    uri = args.tracking_uri or p.mlflow.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    from fairxray.track.ui import headline_view, serve, ui_command

    cmd, env = ui_command(uri, args.host, args.port)
    base = f"http://{args.host}:{args.port}"
    url = headline_view(uri, p.mlflow.experiment, p.profile, base, p.data.task)
    print(
        f"fairxray ui: MLflow UI of {uri} (experiment {p.mlflow.experiment}); open\n  {url}\n"
        "(the training runs with the headline columns; Ctrl-C stops it)",
        flush=True,
    )
    return serve(cmd, env)
