"""`fairxray <command> --help` parses arguments before anything heavy is imported: no torch,
pandas, MLflow, DVC or scikit-learn behind any help page (they cost seconds each). Checked by the
modules a fresh interpreter holds after the help page, not by a clock (benchmarks/cli_help.py
prints the times)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fairxray import cli

HEAVY = ("torch", "pandas", "mlflow", "dvc", "sklearn", "optuna", "matplotlib", "open_clip")

PROBE = """
import json, sys
from fairxray import cli
try:
    rc = cli.main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps({{"rc": rc, "heavy": heavy}}))
"""


def _help(*argv: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_probe_sees_a_heavy_import():
    # The check can fail: a command that really runs imports pandas (and the probe reports it).
    res = _help("evaluate", "--model", "toy", "--method", "mlp", "--params", "/nonexistent.yaml")
    assert res["rc"] == 2 and "pandas" in res["heavy"]


def test_top_level_help_imports_no_stage():
    res = _help("--help")
    assert res == {"rc": 0, "heavy": []}


@pytest.mark.parametrize("command", sorted(cli.commands()))
def test_command_help_imports_nothing_heavy(command):
    res = _help(command, "--help")
    assert res["rc"] == 0, res
    assert res["heavy"] == [], f"`fairxray {command} --help` imports {res['heavy']}"
