"""The run folder of ``fairxray reproduce`` / ``fairxray demo``: :func:`prepare_run_dir` lays out a
self-contained DVC project under ``--out`` (the pipeline files, ``params.yaml`` with the profile
applied, a DVC repository without git) and :func:`run_pipeline` runs ``dvc repro`` there: DVC
outputs, ``mlruns/`` and ``reports/`` land in ``--out``. Rerunning on the same folder resumes: DVC
skips finished stages, Optuna studies and training checkpoints live outside DVC outputs and are
picked up again. :func:`reproduce` and :func:`demo` are the two commands' whole work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from fairxray import DEMO_BANNER
from fairxray.config import Params, load_params
from fairxray.errors import UserError
from fairxray.profiles import apply_profile
from fairxray.reproduce.checks import (
    ENV_OUT,
    check_out,
    find_metadata,
    find_official_lists,
    preflight,
    require_ok,
)

# What a run folder needs from the project: the pipeline definition, the profile overlays and the
# source files dvc.yaml lists as dependencies (the code that runs is the installed package; the
# copy is what DVC hashes). params.yaml is written separately with the profile applied.
PIPELINE_FILES = ("dvc.yaml", ".dvcignore", "profiles", "src")


def project_root(params_path: Path) -> Path:
    """The project a params file belongs to: its folder, which must hold ``dvc.yaml``."""
    root = params_path.resolve().parent
    if not (root / "dvc.yaml").is_file():
        raise UserError(
            f"{params_path}: no dvc.yaml beside it; run from the fairxray project folder or "
            f"pass --params <project>/params.yaml"
        )
    return root


def profiled_params(
    project: Path, params_path: Path, profile: str, sets: Mapping[str, Any]
) -> tuple[str, Params]:
    """``params_path`` with ``profiles/<profile>.yaml`` and ``sets`` applied: the text to write
    and the typed params (validated by the same loader every stage uses)."""
    load_params(params_path)
    with tempfile.TemporaryDirectory(prefix="fairxray-params-") as tmp:
        work = Path(tmp) / "params.yaml"
        shutil.copyfile(params_path, work)
        apply_profile(profile, work, dict(sets), profiles_dir=project / "profiles")
        return work.read_text(), load_params(work)


def _replace(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary sibling and a rename, dropping stale files."""
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    if src.is_dir():
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        if dst.is_dir():
            shutil.rmtree(dst)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def dvc_executable() -> str:
    """The ``dvc`` installed beside this interpreter (the lock's), else the one on PATH."""
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.exists() else "dvc"


ENV_GIT_SHA = "FAIRXRAY_GIT_SHA"  # the commit a run folder's code came from (it has no .git)


def project_commit(project: Path) -> str | None:
    """``git rev-parse HEAD`` of the project (``-dirty`` when tracked files are modified), or
    ``$FAIRXRAY_GIT_SHA`` (set in the Docker image at build time), or None."""

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(
                ["git", *args], cwd=project, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if head:
        return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    given = os.environ.get(ENV_GIT_SHA, "")
    return given if given and given != "unknown" else None


def run_env(commit: str | None = None) -> dict[str, str]:
    """The environment of ``dvc repro``: this interpreter's scripts first on PATH (dvc.yaml runs
    ``fairxray ...``), hubs offline, no telemetry, and the project's commit for run tags."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    if commit:
        env[ENV_GIT_SHA] = commit
    return env


def write_run_record(run_dir: Path, record: Mapping[str, Any]) -> Path:
    """``<run_dir>/run.json``: what was checked and with which code, written atomically."""
    path = run_dir / "run.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def prepare_run_dir(project: Path, out_dir: Path, params_text: str) -> Path:
    """Make ``out_dir`` a DVC project (no git) running ``project``'s pipeline with these params.

    The pipeline files are refreshed from ``project`` on every call; ``params.yaml`` is written
    atomically; DVC state, outputs, ``dvc.lock``, studies and checkpoints already in ``out_dir``
    are kept, so a rerun continues where the last one stopped.
    """
    out_dir = out_dir.resolve()
    if out_dir == project.resolve():
        raise UserError(f"{out_dir}: --out must be a folder other than the project itself")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        src = project / name
        if src.exists():
            _replace(src, out_dir / name)
    tmp = out_dir / "params.yaml.tmp"
    tmp.write_text(params_text)
    os.replace(tmp, out_dir / "params.yaml")
    (out_dir / "mlruns").mkdir(exist_ok=True)
    if not (out_dir / ".dvc").is_dir():
        # A DVC repository without git: the run folder is its own DVC root even inside a git
        # checkout (checked in the tests). No analytics and no update check: runs are offline.
        for cmd in (
            ["init", "--no-scm", "-q"],
            ["config", "core.analytics", "false"],
            ["config", "core.check_update", "false"],
        ):
            res = subprocess.run(
                [dvc_executable(), *cmd], cwd=out_dir, env=run_env(), capture_output=True, text=True
            )
            if res.returncode != 0:
                raise UserError(
                    f"{out_dir}: `dvc {' '.join(cmd)}` failed: {(res.stderr or res.stdout).strip()}"
                )
    return out_dir


def run_pipeline(run_dir: Path, commit: str | None = None, dvc_args: Iterable[str] = ()) -> int:
    """``dvc repro`` in ``run_dir``; its output streams to the terminal; returns its exit code."""
    cmd = [dvc_executable(), "repro", *dvc_args]
    return subprocess.run(cmd, cwd=run_dir, env=run_env(commit)).returncode


def summary(run_dir: Path) -> list[str]:
    """What a finished run left where, for the closing message."""
    where = [
        ("splits and leakage manifests", "data/splits"),
        ("image caches", "data/images"),
        ("metrics per run", "metrics"),
        ("comparison report", "reports"),
        (
            "MLflow runs (fairxray ui, or mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db)",
            "mlruns",
        ),
        ("pipeline state (dvc.lock; rerun to resume)", "dvc.lock"),
        ("preflight record and code commit", "run.json"),
    ]
    return [f"  {what}: {run_dir / rel}" for what, rel in where if (run_dir / rel).exists()]


def parse_sets(items: Iterable[str]) -> dict:
    """``--set KEY=VALUE`` items -> {key: YAML value}."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. images.workers=8")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _resolved(value: str | None) -> Path | None:
    return Path(value).expanduser().resolve() if value else None


_DONE = {  # command -> (advice after a failed dvc repro, closing line)
    "reproduce": ("fix the cause and rerun to resume", "reproduce: finished"),
    "demo": ("rerun to resume", f"demo finished ({DEMO_BANNER})"),
}


def _finish(what: str, run_dir: Path, commit: str | None, say: Callable[[str], None]) -> int:
    advice, done = _DONE[what]
    rc = run_pipeline(run_dir, commit)
    if rc != 0:
        say(f"{what}: dvc repro failed (exit {rc}); {advice}")
        return rc
    say(done)
    say("\n".join(summary(run_dir)))
    return 0


def reproduce(
    params: str,
    *,
    images_dir: str | None,
    weights_dir: str | None,
    out: str | None,
    metadata: str | None = None,
    official_lists_dir: str | None = None,
    sets: Iterable[str] = (),
    profile: str = "paper",
    check_only: bool = False,
    allow_cpu: bool = False,
    load_weights: bool = False,
    say: Callable[[str], None] = print,
) -> int:
    """Check every input (one message for every problem), then run ``profile`` in ``out``."""
    project = project_root(Path(params))
    images, weights, out_dir = _resolved(images_dir), _resolved(weights_dir), _resolved(out)
    given_metadata, given_lists = _resolved(metadata), _resolved(official_lists_dir)
    meta = find_metadata(images, str(given_metadata) if given_metadata else None)
    lists_dir = find_official_lists(images, str(given_lists) if given_lists else None)
    # The paper profile refuses to load without both folders; a missing one is reported by the
    # preflight together with everything else, so a placeholder stands in for resolving params.
    overrides = {
        "data.images_dir": str(images or "/nonexistent/images-dir"),
        "data.weights_dir": str(weights or "/nonexistent/weights-dir"),
        "data.metadata": str(meta) if meta else None,
    }
    if lists_dir is not None:
        overrides["data.official_lists_dir"] = str(lists_dir)
    overrides.update(parse_sets(sets))
    text, p = profiled_params(project, Path(params), profile, overrides)
    result = preflight(
        p,
        out_dir,
        images_dir=images,
        weights_dir=weights,
        metadata=meta,
        allow_cpu=allow_cpu,
        load_weights=load_weights,
    )
    require_ok(result, "reproduce")
    say("preflight: every input checked")
    for line in result.checked:
        say(f"  ok  {line}")
    for line in result.warnings:
        say(f"  warning: {line}")
    if check_only:
        say("--check-only: nothing run")
        return 0
    assert out_dir is not None  # the preflight reports a missing --out
    run_dir = prepare_run_dir(project, out_dir, text)
    commit = project_commit(project)
    record = {
        "command": "reproduce",
        "profile": profile,
        "commit": commit,
        "images_dir": images,
        "weights_dir": weights,
        "metadata": meta,
        "checked": result.checked,
        "warnings": result.warnings,
    }
    write_run_record(run_dir, record)
    say(f"reproduce: profile {profile} in {run_dir}; running dvc repro")
    return _finish("reproduce", run_dir, commit, say)


def demo(
    params: str, out: str | None, sets: Iterable[str] = (), say=print, profile: str = "demo"
) -> int:
    """A demo profile (``demo``, or another whose params say ``profile: demo``, such as
    ``demo-multilabel``) in a run folder under ``out``: no NIH images, weights or GPU."""
    if not out:
        raise UserError(f"--out: not given (or set ${ENV_OUT})")
    project = project_root(Path(params))
    out_dir = Path(out).expanduser().resolve()
    text, p = profiled_params(project, Path(params), profile, parse_sets(sets))
    if not p.is_demo:
        raise UserError(
            f"--profile {profile}: not a demo profile (its params say profile: {p.profile}); "
            "real data runs through `fairxray reproduce`"
        )
    require_ok(check_out(out_dir), "demo")
    run_dir = prepare_run_dir(project, out_dir, text)
    commit = project_commit(project)
    write_run_record(run_dir, {"command": "demo", "profile": profile, "commit": commit})
    say(f"demo: {DEMO_BANNER}; running dvc repro in {run_dir}")
    return _finish("demo", run_dir, commit, say)
