"""Shared test setup: offline, CPU, seeded. Area-specific fixtures live in their own modules."""

from __future__ import annotations

import os

# Set before any library import can touch the hub or phone home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # Registered here, not in pyproject.toml: that file is a Docker build input, and a marker
    # is no reason to rebuild and re-check the image.
    config.addinivalue_line(
        "markers",
        "heavy: full-size model builds, the kill -9 fault suite, the paper-profile reproduce on "
        "fake NIH, a real torchrun, the tiny-model demo, two tune workers on PostgreSQL and the "
        "GPU benchmark at tiny size; CI runs them after the default suite (scripts/test.sh -m heavy)",
    )


@pytest.fixture(autouse=True)
def _seeded():
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def params():
    from fairxray.config import load_params

    return load_params(REPO / "params.yaml")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        # The marker, not item.keywords: keywords also hold every parent node's name, so a
        # checkout in a folder named "gpu" would skip the whole suite.
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
