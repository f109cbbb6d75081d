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


def test_ui_opens_on_the_training_runs_with_headline_columns(tmp_path, params, repo_root):
    """The URL `fairxray ui` prints shows, without a click, the training runs (not the GenAI
    overview), the headline metric columns and the DEMO marker; the screenshot stays in
    tmp_path (ui-headline.png) for a person to look at."""
    if _browser.chromium() is None:
        pytest.skip(_browser.SKIP_REASON)
    from fairxray.metrics.headline import GAPS, HEADLINE
    from fairxray.track import headline as h
    from fairxray.track.runs import _metrics, log_batch

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    cl = client(uri)
    exp = experiment_id(cl, params.mlflow.experiment, uri, params.profile)
    for i, method in enumerate(("linear_probe", "lora")):
        seed = {k: 0.5 + 0.1 * i for k in HEADLINE} | {f"{k}/p_adjusted": 0.02 for k in GAPS}
        log_batch(
            cl,
            pair_run(cl, exp, params, "toy", method),
            metrics=_metrics(h.headline_metrics([seed]), 0),
        )
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fairxray.cli", "ui", "--port", str(port), "--tracking-uri", uri,
         "--params", str(repo_root / "params.yaml")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false"},
    )  # fmt: skip
    try:
        _wait(f"http://127.0.0.1:{port}/health", proc)
        url = h.view_url(f"http://127.0.0.1:{port}", exp)
        profile = tmp_path / "chromium-profile"
        profile.mkdir()
        wide = ("--window-size=1800,900",)
        dom = subprocess.run(
            _browser.command(profile, *wide, "--dump-dom", url),
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
        subprocess.run(
            _browser.command(profile, *wide, f"--screenshot={tmp_path / 'ui-headline.png'}", url),
            capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert url in out  # the command prints the URL it means
    assert "toy/lora" in dom and "toy/linear_probe" in dom
    for col in ("1.accuracy", "2.macro_f1", h.mlflow_name(GAPS[0])):
        assert col in dom, col
    assert "DEMO" in dom
    assert "Traces (0)" not in dom  # not the GenAI overview
    assert (tmp_path / "ui-headline.png").stat().st_size > 10_000
