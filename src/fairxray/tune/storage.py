"""Where studies live: an RDB URL (SQLite ``studies/optuna.db`` by default, or PostgreSQL for many workers), with heartbeats so a killed worker's trial is marked failed."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from fairxray import paths
from fairxray.config import TuneParams

HEARTBEAT_S = 10  # a killed worker's RUNNING trial is marked failed after 2 missed beats


def storage_url(tp: TuneParams, override: str | None = None) -> str:
    """``--storage`` > ``tune.storage`` > SQLite ``studies/optuna.db``. A bare ``postgresql://``
    gets the installed driver (psycopg 3; SQLAlchemy's default would be psycopg2)."""
    url = override or tp.storage or f"sqlite:///{paths.study_db().as_posix()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def make_storage(url: str):
    import optuna

    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///") :])
        db.parent.mkdir(parents=True, exist_ok=True)
    from sqlalchemy.exc import DBAPIError

    # Workers started together on an empty database race to create Optuna's tables (PostgreSQL:
    # a duplicate-type error for the loser); a retry finds the tables made and goes on.
    for attempt in range(5):
        try:
            # Heartbeats let the next worker mark a killed worker's RUNNING trial as failed.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=HEARTBEAT_S, grace_period=2 * HEARTBEAT_S
                )
        except DBAPIError:
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")
