"""MLflow: one experiment per profile, a parent run per model x method, nested runs per Optuna
trial (logged live by ``tune``) and per final seed (logged by ``track``), the ONNX model, the
model registry.

The DVC outputs are the record; MLflow is a browsable view of them. Backend: SQLite
(``mlflow.tracking_uri``, default ``sqlite:///mlruns/mlflow.db``) with artifacts in an
``artifacts/`` folder beside the database; an ``http(s)://`` URI uses a shared tracking server
and its artifact store. MLflow is imported lazily: importing it costs seconds.

Run identity. The parent run of a pair is found by its tags (kind ``pair``, model, method), so
``tune`` and ``track`` share it. A seed run is identified by the content hash of what it logs
(:mod:`fairxray.track.lifecycle`): ``track`` reuses a FINISHED run with the same hash, and adds a
run only for changed content (MLflow params are immutable, so a changed run cannot be updated in
place), marking the pair's earlier seed runs ``fairxray.current=false``; only then does the
registry get a new version of the pair's model with the alias ``best``. Runs a dead process left
RUNNING are closed as KILLED by the next ``tune`` or ``track`` of the pair.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fairxray import paths
from fairxray.config import Params
from fairxray.errors import UserError
from fairxray.track import headline, lifecycle

TRACKED = Path("tracked")
ARTIFACTS = "artifacts"

KIND = "fairxray.kind"  # pair | trial | seed
MODEL = "fairxray.model"
METHOD = "fairxray.method"
MITIGATION = "fairxray.mitigation"  # none | a mitigation (the run <method>+<mitigation>)
SEED = "fairxray.seed"
CURRENT = "fairxray.current"
STUDY = "fairxray.study"
TRIAL = "fairxray.trial"


def tracked_file(model: str, method: str) -> Path:
    """``tracked/<model>/<method>.json``: the run ids ``track`` logged (its DVC output)."""
    return TRACKED / model / f"{method}.json"


def registered_name(experiment: str, model: str, method: str) -> str:
    return f"{experiment}.{model}.{method}"


_BAD = re.compile(r"[^/\w.\- ]")


def metric_key(key: str) -> str:
    """An MLflow-safe metric name: ``&`` (the intersection ``age_group&sex``) -> ``_x_``; any
    other character MLflow rejects -> ``_``. metrics.json is logged too, with the exact keys."""
    return _BAD.sub("_", key.replace("&", "_x_"))


def _quiet_env() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def artifact_root(tracking_uri: str) -> Path | None:
    """``<database folder>/artifacts`` for a SQLite backend; None for a server (it decides)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :]).parent / ARTIFACTS
    return None


def client(tracking_uri: str):
    """An ``MlflowClient`` on ``tracking_uri``; also the fluent API's URI (``mlflow.onnx``
    logs through it). A SQLite database's folder is created first."""
    _quiet_env()
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def experiment_id(cl, name: str, tracking_uri: str, profile: str, task: str = "multiclass") -> str:
    exp = cl.get_experiment_by_name(name)
    if exp is not None:
        headline.present_experiment(cl, exp.experiment_id, profile, task)
        return exp.experiment_id
    root = artifact_root(tracking_uri)
    location = None
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        location = root.resolve().as_uri()
    try:
        tags = {"profile": profile, **headline.experiment_tags(profile, task)}
        return cl.create_experiment(name, artifact_location=location, tags=tags)
    except Exception:
        # Another process created it between the lookup and here.
        exp = cl.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_info(root: str | Path = ".") -> dict[str, str]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        # Run folders made by `fairxray reproduce`/`demo` (and the Docker image) are not git
        # checkouts; they pass the project's commit in FAIRXRAY_GIT_SHA.
        env = os.environ.get("FAIRXRAY_GIT_SHA", "").strip()
        return {"git_commit": env or "unknown (not a git checkout)"}
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


def common_tags(p: Params, model: str, method: str, stage: str) -> dict[str, str]:
    """Tags of every run: git commit (also MLflow's own source tag), the DVC stage, profile,
    protocol and the data manifest's hash."""
    from fairxray.data.manifest import manifest_sha256

    git = git_info()
    tags = {
        MODEL: model,
        METHOD: method,
        MITIGATION: _mitigation(method),
        "fairxray.profile": p.profile,
        "fairxray.protocol": p.data.protocol,
        "fairxray.dvc_stage": stage,
        "fairxray.data_manifest_sha256": manifest_sha256(p.data.protocol),
        "fairxray.git_commit": git["git_commit"],
        "mlflow.source.git.commit": git["git_commit"],
        # Which DVC experiment (name, baseline revision) and settings made this run.
        **headline.dvc_tags(),
        **headline.tune_tags(p.tune),
        "fairxray.params_sha256": headline.params_sha256(),
        **lifecycle.owner_tags(),
        # The run's description in the MLflow UI: demo runs say what they are.
        "mlflow.note.content": description(p, model, method),
    }
    if "git_dirty" in git:
        tags["fairxray.git_dirty"] = git["git_dirty"]
    return tags


def description(p: Params, model: str, method: str) -> str:
    """What a run (or a registered model) of ``model`` x ``method`` is, in one line."""
    from fairxray import DEMO_BANNER

    what = f"fairxray {model} x {method} on {p.data.protocol}"
    return f"{DEMO_BANNER}: {what} (synthetic images, random weights)" if p.is_demo else what


def _describe(cl, registered: dict, p: Params, model: str, method: str) -> None:
    """Registered models and their versions carry the same description as the runs."""
    text = description(p, model, method)
    cl.update_registered_model(registered["name"], description=text)
    cl.update_model_version(registered["name"], registered["version"], description=text)


def _mitigation(run: str) -> str:
    """``mlp+group_dro`` -> ``group_dro``, ``mlp`` -> ``none``. `check` has validated the names
    against the registry; parsing here spares `track` importing every mitigation (torch)."""
    _, sep, mitigation = run.partition(paths.RUN_SEP)
    return mitigation if sep else paths.NO_MITIGATION


def _filter(tags: dict[str, str]) -> str:
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


def pair_run(cl, exp_id: str, p: Params, model: str, method: str) -> str:
    """The parent run of ``model`` x ``method`` (found by tags, created when absent)."""
    # One parent per DVC experiment: `dvc exp run -S ...` does not overwrite the baseline's.
    key = {KIND: "pair", MODEL: model, METHOD: method, **headline.dvc_tags()}
    key.pop(headline.DVC_BASELINE, None)
    found = cl.search_runs([exp_id], _filter(key), max_results=1, order_by=["start_time ASC"])
    if found:
        if found[0].info.status == "RUNNING":  # its creator was killed before closing it
            cl.set_terminated(found[0].info.run_id, "FINISHED")
        return found[0].info.run_id
    tags = {**key, "fairxray.profile": p.profile, "fairxray.protocol": p.data.protocol}
    run = cl.create_run(exp_id, tags=tags, run_name=f"{model}/{method}")
    cl.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _ms(dt) -> int | None:
    return None if dt is None else int(dt.timestamp() * 1000)


def log_batch(cl, run_id: str, metrics=(), params=(), tags=()) -> None:
    """``log_batch`` within MLflow's per-request limits (1000 metrics, 100 params, 100 tags)."""
    metrics, params, tags = list(metrics), list(params), list(tags)
    while metrics or params or tags:
        cl.log_batch(run_id, metrics=metrics[:1000], params=params[:100], tags=tags[:100])
        metrics, params, tags = metrics[1000:], params[100:], tags[100:]


def _metrics(values: dict[str, Any], ts: int, step: int = 0) -> list:
    from mlflow.entities import Metric

    out = []
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | float | type(None)):
            continue
        # An undefined metric (null in metrics.json) is logged as NaN: visible, not dropped.
        out.append(Metric(metric_key(k), float("nan") if v is None else float(v), ts, step))
    return out


def _params(values: dict[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in values.items()]


def _tags(values: dict[str, Any]) -> list:
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)) for k, v in values.items()]


class TrialLogger:
    """Optuna callback: each finished trial becomes a run nested under the pair's parent run
    (params, objective value(s), per-epoch intermediate values, trial attributes). Logging
    errors are printed and never stop the study: the study in its storage is the record."""

    def __init__(
        self,
        tracking_uri: str,
        p: Params,
        model: str,
        method: str,
        log: Callable[[str], None] = print,
    ) -> None:
        self.uri, self.p, self.model, self.method, self.log = tracking_uri, p, model, method, log
        self.objective = p.tune.objective
        self.fairness_key = p.tune.fairness_key
        self.cl = None

    def _connect(self) -> None:
        # On the first trial only: a resumed study with nothing left to run never imports MLflow.
        p = self.p
        self.cl = client(self.uri)
        self.exp = experiment_id(self.cl, p.mlflow.experiment, self.uri, p.profile, p.data.task)
        self.parent = pair_run(self.cl, self.exp, p, self.model, self.method)
        self.tags = common_tags(p, self.model, self.method, "tune")
        identity = {MODEL: self.model, METHOD: self.method}
        lifecycle.close_dead_runs(self.cl, self.exp, identity, lambda m: self.log(f"tune: {m}"))

    def resync(self, study_name: str, storage) -> list[int]:
        """Log every finished trial of the study that MLflow lacks (the study is the record; a
        kill during logging loses only the MLflow view); returns their numbers."""
        import optuna

        study = optuna.load_study(study_name=study_name, storage=storage)
        if self.cl is None:
            self._connect()
        return lifecycle.resync_trials(self, study, {KIND: "trial", STUDY: study_name}, TRIAL)

    def __call__(self, study, trial) -> None:
        try:
            self._log(study, trial)
        except Exception as exc:  # noqa: BLE001 - tracking must not kill a study
            self.log(f"tune: warning: MLflow logging of trial {trial.number} failed: {exc}")

    def _log(self, study, trial) -> None:
        if self.cl is None:
            self._connect()
        state = trial.state.name
        tags = {
            **self.tags,
            KIND: "trial",
            STUDY: study.study_name,
            TRIAL: str(trial.number),
            "fairxray.trial_state": state.lower(),
            "mlflow.parentRunId": self.parent,
        }
        if state == "PRUNED":
            tags[headline.PRUNED] = "true"
        run = self.cl.create_run(
            self.exp,
            start_time=_ms(trial.datetime_start),
            tags=tags,
            run_name=f"trial-{trial.number}" + (" (pruned)" if state == "PRUNED" else ""),
        )
        rid = run.info.run_id
        now = int(time.time() * 1000)
        values: dict[str, Any] = {}
        if trial.values is not None:
            values[f"val/{self.objective}"] = trial.values[0]
            if len(trial.values) > 1:
                values[f"val/{self.fairness_key}"] = trial.values[1]
        attrs = {k: v for k, v in trial.user_attrs.items() if isinstance(v, int | float)}
        metrics = _metrics({**values, **attrs}, now)
        from mlflow.entities import Metric

        metrics += [
            Metric("val/epoch_score", float(v), now, int(step))
            for step, v in sorted(trial.intermediate_values.items())
        ]
        log_batch(self.cl, rid, metrics=metrics, params=_params(trial.params))
        # A pruned trial ended as designed: FINISHED, tagged fairxray.pruned (not KILLED).
        status = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED"}.get(state, "FAILED")
        self.cl.set_terminated(rid, status, end_time=_ms(trial.datetime_complete))


# -- track: final seeds, ONNX, registry -----------------------------------------------------


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing; run the stage that writes it first") from None


def seed_inputs(p: Params, model: str, method: str, seed: int) -> dict[str, Any]:
    """What one seed's run logs, read from the pipeline's outputs."""
    import yaml

    sdir = paths.seed_dir(model, method, seed)
    cfg_path = sdir / "config.yaml"
    if not cfg_path.exists():
        raise UserError(
            f"{cfg_path}: missing; run `fairxray train --model {model} --method {method}`"
        )
    cfg = yaml.safe_load(cfg_path.read_text())
    mdir = paths.metrics_dir(model, method, seed)
    metrics = _read_json(mdir / "metrics.json")
    params = {
        "model": model,
        "method": method,
        "mitigation": _mitigation(method),
        "seed": seed,
        "protocol": cfg.get("protocol"),
        "inputs": cfg.get("inputs"),
        "hyperparameters_from": cfg.get("hyperparameters_from"),
        "trainable_params": cfg.get("trainable_params"),
        "random_weights": cfg.get("random_weights"),
        "model_scale": cfg.get("model_scale", "full"),
        **{f"train.{k}": v for k, v in _flatten(cfg.get("train", {})).items()},
    }
    train_metrics = {}
    if cfg.get("best_score") is not None:
        train_metrics[f"val/{cfg.get('selection')}"] = cfg["best_score"]
        train_metrics["train/best_epoch"] = cfg.get("best_epoch")
    artifacts = {
        "evaluate": sorted(f for f in mdir.iterdir() if f.is_file()),
        "predictions": [
            f
            for s in ("val", "test")
            if (f := paths.prediction_file(model, method, seed, s)).exists()
        ],
        "model": [f for f in (cfg_path, sdir / "weights.safetensors") if f.exists()],
    }
    return {
        "config": cfg,
        "params": params,
        "metrics": metrics,
        "groups": headline.group_metrics(headline.read_group_rows(mdir / "by_group.csv")),
        "train_metrics": train_metrics,
        "history": cfg.get("history") or [],
        "artifacts": artifacts,
    }


def onnx_signature(report: dict):
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    inp = TensorSpec(np.dtype(np.float32), tuple(report["input"]["shape"]), report["input"]["name"])
    out = TensorSpec(
        np.dtype(np.float32), tuple(report["output"]["shape"]), report["output"]["name"]
    )
    return ModelSignature(inputs=Schema([inp]), outputs=Schema([out]))


def track(
    p: Params,
    model: str,
    method: str,
    *,
    tracking_uri: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Log every seed of ``model`` x ``method`` (resolved params, every metric of
    ``metrics.json``, tags, artifacts), the exported ONNX model on the exported seed's run
    (the seed ``export`` picked: best validation score), register it and write
    ``tracked/<model>/<method>.json``. Returns that file's content."""
    uri = tracking_uri or p.mlflow.tracking_uri
    cl = client(uri)
    exp = experiment_id(cl, p.mlflow.experiment, uri, p.profile, p.data.task)
    parent = pair_run(cl, exp, p, model, method)
    tags = common_tags(p, model, method, "train")
    inputs = {seed: seed_inputs(p, model, method, seed) for seed in p.seeds}
    report_path = paths.onnx(model, method).with_name("onnx.json")
    mitigated = _mitigation(method) != "none"
    if mitigated and not report_path.exists():
        # The mitigation grid is not exported: its registered model is the best seed's folder.
        report = {"exported": False, "reason": "mitigated run: no ONNX export"}
    else:
        report = _read_json(report_path)

    lifecycle.close_dead_runs(cl, exp, {MODEL: model, METHOD: method}, lambda m: log(f"track: {m}"))
    onnx_seed = report.get("seed")
    exported = bool(report.get("exported")) and onnx_seed in inputs
    onnx_files = [report_path.with_name("model.onnx"), report_path] if exported else []
    sha = {
        seed: lifecycle.content_sha256(inp, onnx_files if seed == onnx_seed else ())
        for seed, inp in inputs.items()
    }
    reused = {
        seed: run
        for seed in inputs
        if (run := lifecycle.finished_run(cl, exp, _seed_key(model, method, seed), sha[seed]))
    }
    old = cl.search_runs(
        [exp], _filter({KIND: "seed", MODEL: model, METHOD: method, CURRENT: "true"})
    )
    for r in old:
        if r.info.run_id not in {run.info.run_id for run in reused.values()}:
            cl.set_tag(r.info.run_id, CURRENT, "false")

    for tuned in (paths.tuned(model, method), paths.tuned_study(model, method)):
        if tuned.exists():
            cl.log_artifact(parent, str(tuned), "tuned")

    now = int(time.time() * 1000)
    runs = {seed: run.info.run_id for seed, run in reused.items()}
    for seed, inp in inputs.items():
        if seed not in reused:
            seed_tags = {**tags, lifecycle.CONTENT: sha[seed]}
            runs[seed] = _seed_run(cl, exp, parent, seed_tags, model, method, seed, inp, now, log)
    if reused:
        log(f"track: {model}/{method}: {len(reused)} seed run(s) unchanged, reused")

    registered, onnx_seed = _registration(
        cl, runs, reused, inputs, report, report_path, p, model, method, log, onnx_seed, mitigated
    )
    for seed, rid in runs.items():
        cl.set_tag(rid, CURRENT, "true")
        if seed not in reused:
            cl.set_terminated(rid, "FINISHED")
    cl.set_tag(parent, "fairxray.best_run", runs.get(onnx_seed, ""))
    _log_parent(cl, parent, tags, inputs, now)
    runs = dict(sorted(runs.items()))

    content = {
        "tracking_uri": _redact_uri(uri),
        "experiment": p.mlflow.experiment,
        "experiment_id": exp,
        "parent_run_id": parent,
        "seed_runs": {str(k): v for k, v in runs.items()},
        "best_seed": onnx_seed,
        "registered_model": registered,
    }
    _write_json(tracked_file(model, method), content)
    return content


def _registration(
    cl, runs, reused, inputs, report, report_path, p, model, method, log, onnx_seed, mitigated
):
    """Register the pair's best model: the exported ONNX on its seed's run, or (a mitigated run,
    not exported) the best seed's folder. Returns (registered model or None, that seed)."""
    exported = bool(report.get("exported")) and onnx_seed in inputs
    registered = None
    if exported:
        registered = _register(
            cl, runs[onnx_seed], reused.get(onnx_seed), report, report_path, p, model, method, log
        )
    elif mitigated:
        onnx_seed = _best_seed(inputs)
        registered = _register_folder(cl, runs[onnx_seed], p, model, method)
        log(
            f"track: seed {onnx_seed} (best val score) registered as {registered['name']} "
            f"version {registered['version']} (alias best)"
        )
    elif not report.get("exported"):
        log(f"track: {report_path}: no ONNX model ({report.get('reason')}); nothing registered")
    return registered, onnx_seed


def _register(cl, run_id, reused, report, report_path, p, model, method, log) -> dict:
    """Log and register the ONNX model on the exported seed's run, unless that run was reused
    and its registry version still exists; the alias ``best`` points at the version."""
    registered = lifecycle.registered_from_tag(cl, reused) if reused is not None else None
    if registered is None:
        registered = _log_onnx(cl, run_id, report, report_path, p, model, method)
        cl.set_tag(run_id, lifecycle.REGISTERED, f"{registered['name']}:{registered['version']}")
        log(
            f"track: ONNX of seed {report.get('seed')} logged and registered as "
            f"{registered['name']} version {registered['version']} (alias best)"
        )
    cl.set_registered_model_alias(registered["name"], "best", registered["version"])
    _describe(cl, registered, p, model, method)
    return registered


def _seed_key(model: str, method: str, seed: int) -> dict[str, str]:
    return {KIND: "seed", MODEL: model, METHOD: method, SEED: str(seed)}


def _seed_run(cl, exp, parent, tags, model, method, seed, inp, now, log) -> str:
    """One seed's run: its metrics, training curves, params and artifacts; returns its id."""
    from mlflow.entities import Metric

    run = cl.create_run(
        exp,
        tags={**tags, KIND: "seed", SEED: str(seed), CURRENT: "true", "mlflow.parentRunId": parent},
        run_name=f"{model}/{method}/seed{seed}",
    )
    rid = run.info.run_id
    shown = {**headline.headline_metrics([inp["metrics"]]), **inp["groups"]}
    history = [
        Metric(f"train/{k}", float(h[k]), now, int(h["epoch"]))
        for h in inp["history"]
        for k in ("train_loss", "val_loss", "val_score")
        if k in h and h[k] is not None and math.isfinite(float(h[k]))
    ]
    log_batch(
        cl,
        rid,
        metrics=_metrics(inp["metrics"], now)
        + _metrics(inp["train_metrics"], now)
        + _metrics(shown, now)
        + history,
        params=_params(inp["params"]),
    )
    for folder, files in inp["artifacts"].items():
        for f in files:
            cl.log_artifact(rid, str(f), folder)
    log(f"track: {model}/{method} seed {seed}: run {rid}")
    return rid


def _log_parent(cl, parent: str, tags: dict[str, str], inputs: dict, now: int) -> None:
    """The parent run shows its pair at a glance: the headline figures and per-group values
    as the mean over seeds, and the tags of the latest track (commit, data, DVC experiment)."""
    seeds = list(inputs.values())
    values = {
        **headline.headline_metrics(i["metrics"] for i in seeds),
        **headline.mean_group_metrics(i["groups"] for i in seeds),
        "n_seeds": len(seeds),
    }
    keep = {k: v for k, v in tags.items() if k not in (KIND, "mlflow.parentRunId")}
    log_batch(cl, parent, metrics=_metrics(values, now), tags=_tags(keep))


def _best_seed(inputs: dict) -> int:
    """The seed with the best validation score (``best_score``; the first seed on ties or when
    the run trains nothing)."""
    scores = {s: inp["config"].get("best_score") for s, inp in inputs.items()}
    scored = {s: v for s, v in scores.items() if v is not None and math.isfinite(float(v))}
    if not scored:
        return next(iter(inputs))
    best = max(scored.values())
    return next(s for s, v in scored.items() if v == best)


def _register_folder(cl, run_id, p, model, method) -> dict:
    """Register the run's ``model`` artifact folder (config and weights) as the best model of
    ``model`` x ``method``: the registry keeps one entry per mitigation."""
    from mlflow.exceptions import MlflowException

    name = registered_name(p.mlflow.experiment, model, method)
    try:
        cl.create_registered_model(name)
    except MlflowException:
        pass  # registered by an earlier run of track
    source = f"{cl.get_run(run_id).info.artifact_uri}/model"
    version = cl.create_model_version(name, source, run_id=run_id)
    cl.set_registered_model_alias(name, "best", str(version.version))
    registered = {"name": name, "version": str(version.version), "model_uri": source}
    _describe(cl, registered, p, model, method)
    return registered


def _log_onnx(cl, run_id, report, report_path, p, model, method) -> dict:
    import mlflow
    import onnx

    onnx_path = report_path.with_name("model.onnx")
    name = registered_name(p.mlflow.experiment, model, method)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="model",
            signature=onnx_signature(report),
            registered_model_name=name,
            save_as_external_data=False,
            # The flavor's own defaults (onnx, onnxruntime, pinned to the installed versions):
            # what MLflow's inference falls back to, without its 10 s model-loading subprocess.
            pip_requirements=mlflow.onnx.get_default_pip_requirements(),
        )
        mlflow.log_artifact(str(report_path), "model")
    version = str(info.registered_model_version)
    cl.set_registered_model_alias(name, "best", version)
    return {"name": name, "version": version, "model_uri": info.model_uri}


def _redact_uri(uri: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]+@", r"//\1:***@", uri)


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)


def find_runs(cl, exp_id: str, tags: dict[str, str]) -> Iterable:
    return cl.search_runs([exp_id], _filter(tags))
