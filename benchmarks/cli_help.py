"""Wall time of `fairxray --help` and `fairxray <command> --help` for every command, each in a
fresh interpreter (what a user waits for). Prints one JSON object: seconds per command and the
slowest. The issue's target: every help page under 1 s.

    .venv/bin/python benchmarks/cli_help.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from fairxray import cli


def main() -> None:
    times = {}
    for name in ["", *sorted(cli.commands())]:
        argv = [sys.executable, "-m", "fairxray.cli", *([name] if name else []), "--help"]
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times[name or "(top)"] = round(time.perf_counter() - t0, 3)
    slowest = max(times, key=times.get)
    print(json.dumps({"seconds": times, "slowest": slowest, "max_s": times[slowest]}, indent=2))


if __name__ == "__main__":
    main()
