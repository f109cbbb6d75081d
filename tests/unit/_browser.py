"""Headless Chromium for the tests that look at a page (the HTML report, the MLflow UI)."""

from __future__ import annotations

import shutil
from pathlib import Path

SKIP_REASON = "no chromium binary on PATH (Debian: apt-get install -y chromium; CI installs it)"

# Flags measured to work here: headless, no sandbox as root, no network side traffic, and a virtual
# time budget so script-rendered pages finish before the dump or screenshot.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",
    "--window-size=1400,900",
)


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def command(profile: Path, *extra: str) -> list[str]:
    """The browser invocation with a throw-away profile folder and ``extra`` arguments."""
    browser = chromium()
    if browser is None:
        raise RuntimeError(SKIP_REASON)
    return [browser, *FLAGS, f"--user-data-dir={profile}", *extra]
