"""`dvc plots show` renders offline: the pipeline's plots are the report's PNG images, which DVC
copies next to its page, so the page needs no JavaScript from a CDN. Headless Chromium with every
host unresolvable renders the grid picture (the screenshot is not blank)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import _browser
import numpy as np
import pytest
import yaml

from fairxray.report import summary as s

REPO = Path(__file__).resolve().parents[2]


def _dvc() -> str:
    beside = Path(sys.executable).with_name("dvc")
    return str(beside) if beside.exists() else "dvc"


def test_dvc_plots_show_needs_no_network(tmp_path):
    from test_summary import _head, _paired

    # The pipeline's own plots section, in a throw-away DVC project holding the grid picture.
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    assert plots == ["reports/figures"]  # images only: no Vega template, no CDN
    fig_dir = tmp_path / "reports" / "figures"
    fig_dir.mkdir(parents=True)
    fig = s.figure_grid(_head(True), _paired(True), demo=True)
    fig.savefig(fig_dir / s.FIGURE, dpi=60)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {}, "plots": plots}))
    env = {"DVC_NO_ANALYTICS": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([_dvc(), "init", "-q", "--no-scm"], cwd=tmp_path, check=True, env=env)
    subprocess.run(
        [_dvc(), "plots", "show", "-o", "dvc_plots"], cwd=tmp_path, check=True, env=env,
        capture_output=True,
    )  # fmt: skip
    page = (tmp_path / "dvc_plots" / "index.html").read_text()
    assert not re.search(r"<script[^>]+src=", page), "the page loads JavaScript"
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 1 and srcs[0].endswith(s.FIGURE)
    assert (tmp_path / "dvc_plots" / srcs[0]).read_bytes()[:4] == b"\x89PNG"

    if _browser.chromium() is None:
        pytest.skip(_browser.SKIP_REASON)
    shot = tmp_path / "plots.png"
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    subprocess.run(
        _browser.command(
            profile, "--host-resolver-rules=MAP * ~NOTFOUND", f"--screenshot={shot}",
            (tmp_path / "dvc_plots" / "index.html").as_uri(),
        ),
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    from PIL import Image

    px = np.asarray(Image.open(shot).convert("L"), dtype=float)
    # A blank page is (nearly) all white; the rendered figure has axes, points and text.
    assert (px < 200).mean() > 0.01, "the plots page rendered blank"
