"""The MLflow UI of a tracking store: the lean ``mlflow server`` command and a supervisor that
stops it with its whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from fairxray.track import headline
from fairxray.track.runs import artifact_root, client


def ui_command(
    tracking_uri: str, host: str = "127.0.0.1", port: int = 5000
) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line and environment for ``tracking_uri``.

    Lean settings: one worker and no job-execution processes (MLflow's defaults start about 15
    processes and 3 GB; these about 570 MB), no telemetry. Artifacts are served from the folder
    ``track`` and ``tune`` log into (``artifacts/`` beside a SQLite database)."""
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


def headline_view(
    tracking_uri: str, experiment: str, profile: str, base: str, task: str = "multiclass"
) -> str:
    """The URL the UI should open: the experiment's runs table in the headline view (its tags
    set again, so a store made before them gets them too); the UI's root when the experiment
    does not exist yet."""
    cl = client(tracking_uri)
    exp = cl.get_experiment_by_name(experiment)
    if exp is None:
        return base
    headline.present_experiment(cl, exp.experiment_id, profile, task)
    return headline.view_url(base, exp.experiment_id)
