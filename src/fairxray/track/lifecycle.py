"""Run lifecycles in MLflow: who owns a run, closing runs a dead process left RUNNING, the
content identity of a seed run, and the study -> MLflow resync of finished trials.

- Owner. Every run carries ``fairxray.owner`` = ``<host>:<pid>`` of the process that created it.
  A run still RUNNING whose owner is on this host and no longer alive was left by a kill; the next
  ``tune`` or ``track`` of the same model x method closes it as KILLED (tag ``fairxray.closed``).
  A run owned by another host is left alone: its process cannot be probed from here.
- Content identity. A seed run is identified by the sha256 of everything it logs (params, metrics,
  training curves and the bytes of every artifact, the ONNX model included on the exported seed).
  ``track`` reuses a FINISHED run with the same hash instead of adding one, so a repro that changes
  nothing adds no run and no registry version. The git commit is a tag, not part of the content:
  a code change that leaves every output identical is not a new result.
- Resync. The Optuna study is the record of tuning; MLflow is a view. A kill during the logging of
  a trial loses its run but not the trial, so after ``tune`` every finished (complete or pruned)
  trial the study holds and MLflow lacks is logged.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fairxray.hashing import sha256_file

OWNER = "fairxray.owner"
CLOSED = "fairxray.closed"
CONTENT = "fairxray.content_sha256"
REGISTERED = "fairxray.registered_version"
CLOSED_DEAD = "killed: its process died while the run was RUNNING"


def owner_tags() -> dict[str, str]:
    """The tag naming this process as a run's owner."""
    return {OWNER: f"{socket.gethostname()}:{os.getpid()}"}


def owner_is_dead(owner: str | None, host: str | None = None) -> bool:
    """True when ``owner`` (``host:pid``) is a process on this host that no longer runs; a run
    without the tag (made before owners were recorded) counts as dead."""
    if not owner or ":" not in owner:
        return True
    where, _, pid = owner.rpartition(":")
    if where != (host or socket.gethostname()) or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _filter(tags: dict[str, str]) -> str:
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


def close_dead_runs(cl, exp_id: str, identity: dict[str, str], log: Callable[[str], None]) -> list:
    """Close as KILLED every RUNNING run with the tags ``identity`` (a model x method) whose
    owner is dead; returns their ids."""
    query = _filter(identity) + " and attributes.status = 'RUNNING'"
    closed = []
    for r in cl.search_runs([exp_id], query):
        if owner_is_dead(r.data.tags.get(OWNER)):
            cl.set_tag(r.info.run_id, CLOSED, CLOSED_DEAD)
            cl.set_terminated(r.info.run_id, "KILLED")
            closed.append(r.info.run_id)
    if closed:
        what = "/".join(identity.values())
        log(f"closed {len(closed)} MLflow run(s) of {what} left RUNNING by a dead process")
    return closed


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def content_sha256(inputs: dict, extra_files: Iterable[Path] = ()) -> str:
    """sha256 of what one seed run logs: its params, metrics, train metrics and history (as JSON)
    and, by folder and file name, the bytes of each artifact and of ``extra_files`` (the ONNX)."""
    h = hashlib.sha256()
    logged = {k: inputs[k] for k in ("params", "metrics", "train_metrics", "history")}
    h.update(json.dumps(_jsonable(logged), sort_keys=True, default=str).encode())
    files = [(folder, f) for folder, fs in inputs["artifacts"].items() for f in fs]
    files += [("extra", Path(f)) for f in extra_files]
    for folder, f in sorted(files, key=lambda t: (t[0], Path(t[1]).name)):
        h.update(f"\n{folder}/{Path(f).name}:{sha256_file(f)}".encode())
    return h.hexdigest()


def finished_run(cl, exp_id: str, tags: dict[str, str], sha: str):
    """The newest FINISHED run with ``tags`` and content hash ``sha``, or None."""
    query = _filter({**tags, CONTENT: sha}) + " and attributes.status = 'FINISHED'"
    found = cl.search_runs([exp_id], query, max_results=1, order_by=["start_time DESC"])
    return found[0] if found else None


def registered_from_tag(cl, run) -> dict | None:
    """The registry version a reused run recorded (``name:version``), if it still exists."""
    tag = run.data.tags.get(REGISTERED)
    if not tag:
        return None
    name, _, version = tag.rpartition(":")
    try:
        mv = cl.get_model_version(name, version)
    except Exception:  # noqa: BLE001 - deleted from the registry: register again
        return None
    return {"name": name, "version": version, "model_uri": f"models:/{name}/{mv.version}"}


def logged_trials(cl, exp_id: str, study_tags: dict[str, str], trial_tag: str) -> set[int]:
    """Trial numbers (tag ``trial_tag``) of the trial runs with ``study_tags`` that MLflow holds
    as terminated runs; one closed by :func:`close_dead_runs` does not count (its logging never
    finished)."""
    out = set()
    for r in cl.search_runs([exp_id], _filter(study_tags)):
        if r.info.status != "RUNNING" and CLOSED not in r.data.tags:
            out.add(int(r.data.tags[trial_tag]))
    return out


def resync_trials(logger, study, study_tags: dict[str, str], trial_tag: str) -> list[int]:
    """Log through ``logger`` (a connected :class:`fairxray.track.runs.TrialLogger`) every
    finished trial of ``study`` that MLflow lacks; returns their numbers."""
    from optuna.trial import TrialState

    have = logged_trials(logger.cl, logger.exp, study_tags, trial_tag)
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    missing = [t for t in study.get_trials(deepcopy=False, states=states) if t.number not in have]
    for t in sorted(missing, key=lambda t: t.number):
        logger._log(study, t)
    if missing:
        logger.log(f"tune: logged {len(missing)} finished trial(s) MLflow lacked: "
                   f"{[t.number for t in missing]}")  # fmt: skip
    return [t.number for t in missing]
