"""Two `fairxray tune` worker processes share one study on a throw-away PostgreSQL cluster
(127.0.0.1, a free port, removed afterwards). Skips, saying why, only where PostgreSQL cannot
start (no server binaries, or the cluster fails to come up)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

# heavy: two processes importing torch and training 8 trials (~30 s); CI runs it after the
# default suite.
pytestmark = [pytest.mark.slow, pytest.mark.heavy]

N_TRIALS = 8


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return found[0] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """URL of a fresh PostgreSQL cluster; stopped and deleted at teardown."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    # The server refuses to run as root: run it as the 'postgres' user there.
    prefix: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        if runuser is None:
            pytest.skip("running as root and runuser is missing")
        prefix = [runuser, "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="fairxray-pg-"))
    data, log = base / "data", base / "server.log"
    if prefix:
        os.chown(base, pw.pw_uid, pw.pw_gid)
    port = _free_port()

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)

    init = run(initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off"
    start = run(pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start")
    if start.returncode != 0:
        text = log.read_text()[-300:] if log.exists() else start.stderr[-300:]
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {text.strip()}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_share_one_study(postgres, tmp_path):
    import optuna
    from _trainkit import write_project

    path = write_project(tmp_path, train_overrides={"epochs": 6})
    raw = yaml.safe_load(path.read_text())
    raw["tune"].update(
        n_trials=N_TRIALS,
        startup_trials=N_TRIALS,
        space={
            "lora": {
                "lr": {"low": 1e-3, "high": 1e-2, "log": True},
                "lora_rank": {"choices": [2, 4]},
            }
        },
    )
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [
        sys.executable,
        "-m",
        "fairxray.cli",
        "tune",
        "--model",
        "toy",
        "--method",
        "lora",
        "--storage",
        postgres,
        "--no-mlflow",
        "--params",
        str(path),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    workers = [
        subprocess.Popen(
            [*cmd, "--worker", str(k)],
            cwd=tmp_path,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for k in (0, 1)
    ]
    outs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs

    storage = "postgresql+psycopg://" + postgres.split("://", 1)[1]
    names = optuna.get_all_study_names(storage)
    assert len(names) == 1 and names[0].startswith("toy/lora@")
    study = optuna.load_study(study_name=names[0], storage=storage)
    finished = study.get_trials(
        states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    # Each worker stops once the study holds N_TRIALS; one in flight each may overshoot.
    assert N_TRIALS <= len(finished) <= N_TRIALS + 1
    assert {t.user_attrs["worker"] for t in finished} == {0, 1}, outs
    # Own sampler seeds: no two trials drew the same learning rate.
    lrs = [t.params["lr"] for t in finished]
    assert len(set(lrs)) == len(lrs)
    tuned = yaml.safe_load((tmp_path / "tuned" / "toy" / "lora.study.yaml").read_text())
    assert tuned["study"]["name"] == names[0] and "postgresql" in tuned["study"]["storage"]
