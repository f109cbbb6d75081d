"""Serve the MLflow UI of this project's tracking store on 127.0.0.1 (lean: one worker)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from fairxray.config import load_params


def ui_command(
    tracking_uri: str, host: str = "127.0.0.1", port: int = 5000
) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line and environment for ``tracking_uri``.

    Lean settings: one worker and no job-execution processes (MLflow's defaults start about 15
    processes and 3 GB; these about 570 MB), no telemetry. Artifacts are served from the folder
    ``track`` and ``tune`` log into (``artifacts/`` beside a SQLite database)."""
    from fairxray.tracking import artifact_root

    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    root = artifact_root(tracking_uri)
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        cmd += ["--artifacts-destination", Path(root).resolve().as_uri()]
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "1",
    }
    return cmd, env


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
    cmd, env = ui_command(uri, args.host, args.port)
    print(
        f"fairxray ui: MLflow UI of {uri} (experiment {p.mlflow.experiment}) at "
        f"http://{args.host}:{args.port}  (Ctrl-C stops it)",
        flush=True,
    )
    return serve(cmd, env)


def serve(cmd: list[str], env: dict[str, str]) -> int:
    """Run the server until it exits; on Ctrl-C or SIGTERM stop it too (no orphan server)."""
    # Its own process group, so stopping it stops every process the server started.
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def _stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
