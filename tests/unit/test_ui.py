"""`fairxray ui` serves the MLflow UI of a tracking store: headless Chromium renders the runs page
and it lists the runs; stopping the command stops the server (no orphan process)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import _browser
import pytest

from fairxray.track.runs import client, experiment_id, pair_run

pytestmark = pytest.mark.slow  # the server takes 10-20 s to start on 2 shared cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fairxray ui exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def test_ui_lists_the_runs(tmp_path, params, repo_root):
    if _browser.chromium() is None:
        pytest.skip(_browser.SKIP_REASON)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    cl = client(uri)
    exp = experiment_id(cl, params.mlflow.experiment, uri, params.profile)
    for method in ("lora", "linear_probe"):
        pair_run(cl, exp, params, "toy", method)

    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fairxray.cli",
            "ui",
            "--port",
            str(port),
            "--tracking-uri",
            uri,
            "--params",
            str(repo_root / "params.yaml"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false"},
    )
    try:
        _wait(f"http://127.0.0.1:{port}/health", proc)
        profile = tmp_path / "chromium-profile"
        profile.mkdir()
        dom = subprocess.run(
            _browser.command(
                profile, "--dump-dom", f"http://127.0.0.1:{port}/#/experiments/{exp}/runs"
            ),
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert params.mlflow.experiment in dom
        assert "toy/lora" in dom and "toy/linear_probe" in dom
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out  # the CLI's "interrupted" status after stopping the server
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
