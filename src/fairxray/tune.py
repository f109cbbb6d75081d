"""Optuna studies over ``fairxray.train.fit``'s hyperparameters, one per model x method.

A trial draws values from ``tune.space.<method>`` (TPE, seeded), trains with the one ``fit()`` the
final runs use, and returns the validation score (``tune.objective``) of its best epoch; a median
pruner stops trials whose per-epoch validation score falls behind. The test split is never loaded.

Storage is an RDB URL: SQLite ``studies/optuna.db`` by default, kept across ``dvc repro`` so an
interrupted study resumes with every finished trial; ``postgresql://...`` lets workers on several
machines share a study (each worker its own sampler seed). Counting: a study runs until it holds
``tune.n_trials`` finished (complete or pruned) trials of its settings; failed and abandoned
(killed) trials do not count.

Study name: ``<model>/<method>@<settings hash>``. The hash covers everything that makes a trial's
value comparable (the base train params, the method's search space, the objective, the training
seed, the data manifest, the embeddings or the model's weights); without it, changing
``train.epochs`` and rerunning would find the old study "finished" and hand back a best trial
trained under other settings. Changing the settings back resumes the earlier study.
``n_trials``, the sampler seed and the pruner are left out: more trials extend a study, and a
pruned trial is still a valid measurement.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fairxray import paths
from fairxray.config import AugmentParams, Params, TrainParams, TuneParams
from fairxray.errors import UserError

OBJECTIVES = ("macro_f1", "accuracy", "neg_loss")
PRUNERS = ("median", "none")
FORMAT = 1
HEARTBEAT_S = 10  # a killed worker's RUNNING trial is marked failed after 2 missed beats


@dataclass(frozen=True)
class Dim:
    """One searched train parameter."""

    name: str  # TrainParams field, or ``augment.<field>``
    kind: str  # "int" | "float" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None


def _field_type(name: str) -> type | None:
    head, _, rest = name.partition(".")
    hints = typing.get_type_hints(TrainParams)
    if head not in hints:
        return None
    if rest:
        if hints[head] is not AugmentParams:
            return None
        return typing.get_type_hints(AugmentParams).get(rest)
    return None if hints[head] is AugmentParams else hints[head]


def search_space(tp: TuneParams, method: str, src: str = "params.yaml") -> list[Dim]:
    """The validated search space of ``method`` (empty: nothing to tune). Ranges take the
    parameter's type from ``TrainParams``: an int field gives integer trials."""
    raw = tp.space.get(method) or {}
    dims = []
    for name, spec in raw.items():
        where = f"{src}: 'tune.space.{method}.{name}'"
        ftype = _field_type(name)
        if ftype is None:
            raise UserError(f"{where}: not a train parameter (a TrainParams field or augment.<x>)")
        if not isinstance(spec, dict):
            raise UserError(f"{where}: must be {{low, high, log}} or {{choices: [...]}}")
        if "choices" in spec:
            extra = set(spec) - {"choices"}
            choices = spec["choices"]
            if extra or not isinstance(choices, list) or not choices:
                raise UserError(f"{where}: {{choices: [...]}} takes one non-empty list only")
            for c in choices:
                ok = isinstance(c, ftype) and not (ftype is not bool and isinstance(c, bool))
                if ftype is float and isinstance(c, int) and not isinstance(c, bool):
                    ok = True
                if not ok:
                    raise UserError(f"{where}: choice {c!r} is not a {ftype.__name__}")
            dims.append(Dim(name, "categorical", choices=tuple(choices)))
            continue
        extra = set(spec) - {"low", "high", "log"}
        if extra or "low" not in spec or "high" not in spec:
            raise UserError(f"{where}: a range needs low and high (and optional log), got {spec}")
        if ftype not in (int, float):
            raise UserError(f"{where}: a {ftype.__name__} parameter takes {{choices: [...]}}")
        low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
        for v in (low, high):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise UserError(f"{where}: low and high must be numbers, got {v!r}")
        if ftype is int and not (float(low).is_integer() and float(high).is_integer()):
            raise UserError(f"{where}: an integer parameter needs integer low and high")
        if not low < high:
            raise UserError(f"{where}: low must be below high, got {low} and {high}")
        if log and low <= 0:
            raise UserError(f"{where}: a log range needs low > 0, got {low}")
        kind = "int" if ftype is int else "float"
        conv = int if kind == "int" else float
        dims.append(Dim(name, kind, conv(low), conv(high), log))
    return dims


def check_tune_params(tp: TuneParams, src: str = "params.yaml") -> None:
    checks = [
        (tp.n_trials >= 0, "n_trials", "must be non-negative (0 turns tuning off)"),
        (tp.startup_trials >= 0, "startup_trials", "must be non-negative"),
        (tp.pruner in PRUNERS, "pruner", f"must be one of {PRUNERS}"),
        (tp.pruner_startup_trials >= 0, "pruner_startup_trials", "must be non-negative"),
        (tp.pruner_warmup_epochs >= 0, "pruner_warmup_epochs", "must be non-negative"),
        (tp.objective in OBJECTIVES, "objective", f"must be one of {OBJECTIVES}"),
        (tp.max_cost >= 0, "max_cost", "must be non-negative"),
    ]
    for ok, key, what in checks:
        if not ok:
            raise UserError(f"{src}: 'tune.{key}' {what}, got {getattr(tp, key)!r}")


def apply_overrides(base: TrainParams, overrides: dict[str, Any]) -> TrainParams:
    """``base`` with ``overrides`` (flat; ``augment.x`` dotted), as ``resolve_train_params``
    applies a tuned file's ``params:``."""
    top = {k: v for k, v in overrides.items() if "." not in k}
    aug = {k.split(".", 1)[1]: v for k, v in overrides.items() if "." in k}
    hp = dataclasses.replace(base, **top)
    if aug:
        hp = dataclasses.replace(hp, augment=dataclasses.replace(hp.augment, **aug))
    return hp


def suggest(trial, dims: Sequence[Dim]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dims:
        if d.kind == "categorical":
            out[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif d.kind == "int":
            out[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), log=d.log)
        else:
            out[d.name] = trial.suggest_float(d.name, d.low, d.high, log=d.log)
    return out


def sampler_seed(seed: int, worker: int, existing_trials: int) -> int:
    """The TPE seed of one run: ``seed`` itself for worker 0 of a fresh study (reproducible),
    a different stream per worker and per resume point otherwise. A resumed run seeded like the
    first one would redraw the very points the study already holds."""
    if worker == 0 and existing_trials == 0:
        return seed
    return int(np.random.SeedSequence([seed, worker, existing_trials]).generate_state(1)[0])


def objective_value(objective: str, labels: np.ndarray, probs: np.ndarray) -> float:
    """Higher is better, from validation probabilities: macro-F1, accuracy or the negated mean
    cross-entropy (-mean log p[true class]), as ``fairxray.train.selection_score`` defines them."""
    from fairxray.train import selection_score

    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    loss = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None))))
    return selection_score(objective, y, p, loss)


# -- storage ------------------------------------------------------------------------------


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


# -- settings hash ------------------------------------------------------------------------


def manifest_sha256(protocol: str) -> str:
    """sha256 of ``data/splits/<protocol>/manifest.json`` (its NIH metadata hash and split
    counts): what the studies, runs and tags identify the data by."""
    path = paths.splits(protocol) / "manifest.json"
    if not path.exists():
        raise UserError(f"{path}: no split manifest; run `fairxray prepare --protocol {protocol}`")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs_sha256(p: Params, model: str, method: str) -> str | None:
    """What a trial trains on, hashed: the cached train/val embeddings (embedding methods), or
    the image cache's manifest plus the freshly built model's weights (image methods), so new
    embeddings, a changed model or other pretrained weights start a new study."""
    from fairxray import adapt

    inputs = adapt.get_method(method).inputs
    h = hashlib.sha256()
    if inputs == "embeddings":
        for split in ("train", "val"):
            f = paths.embeddings(model) / f"{split}.npz"
            if not f.exists():
                raise UserError(f"{f}: missing; run `fairxray embed --model {model}`")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    elif inputs == "images":
        from fairxray.models import create

        man = paths.images(p.data.protocol) / "manifest.json"
        if not man.exists():
            raise UserError(f"{man}: missing; run `fairxray images --protocol {p.data.protocol}`")
        h.update(man.read_bytes())
        for k, v in create(model, p.data.weights_dir).state_dict().items():
            h.update(k.encode())
            h.update(np.ascontiguousarray(v.detach().cpu().float().numpy()).tobytes())
    else:
        return None
    return h.hexdigest()


def settings(p: Params, model: str, method: str) -> dict:
    """What makes trials of a study comparable (hashed into the study name)."""
    tp = p.tune
    return {
        "model": model,
        "method": method,
        "protocol": p.data.protocol,
        "data_manifest_sha256": manifest_sha256(p.data.protocol),
        "inputs_sha256": inputs_sha256(p, model, method),
        "weights_dir": p.data.weights_dir,
        "train": dataclasses.asdict(p.train),
        "space": tp.space.get(method) or {},
        "objective": tp.objective,
        "multi_objective": tp.multi_objective,
        "fairness_key": tp.fairness_key if tp.multi_objective else None,
        "seed": p.seeds[0],
    }


def study_name(model: str, method: str, settings_: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings_, sort_keys=True).encode()).hexdigest()
    return f"{model}/{method}@{digest[:10]}"


# -- the study ----------------------------------------------------------------------------


@dataclass
class TuneData:
    """What a trial needs: the fit inputs (no test split), the val frame (fairness gap) and,
    for image methods, a factory of fresh models."""

    fit_data: Any
    val_frame: Any
    inputs: str
    new_model: Callable[[], Any] | None


def load_tune_data(p: Params, model_name: str, method: str) -> TuneData:
    from fairxray import adapt
    from fairxray.data.cache import ImageCache
    from fairxray.models import create
    from fairxray.prepare import load_splits
    from fairxray.train import load_fit_data

    meth = adapt.get_method(method)
    frames = load_splits(p.data.protocol)
    frames = {s: frames[s] for s in ("train", "val")}  # tuning never sees the test split
    cache = ImageCache.open(paths.images(p.data.protocol)) if meth.inputs == "images" else None
    data = load_fit_data(
        frames,
        meth.inputs,
        len(p.data.classes),
        embeddings_dir=paths.embeddings(model_name),
        cache=cache,
    )
    new_model = None
    if meth.inputs == "images":
        weights = p.data.weights_dir

        def new_model():
            return create(model_name, weights)

    return TuneData(data, frames["val"], meth.inputs, new_model)


def fairness_gap(p: Params, val_frame, probs: np.ndarray, key: str) -> float:
    """``key`` of ``evaluate``'s metrics on the validation predictions (point estimate only)."""
    from fairxray.evaluate import point_metrics, prepare
    from fairxray.stages.evaluate import settings as eval_settings
    from fairxray.train import prediction_frame

    s = dataclasses.replace(eval_settings(p), n_boot=0)
    df = prediction_frame(val_frame, probs, p.data.classes, p.metrics.sensitive)
    # Every metric is computed; only the warnings about the chosen one matter here.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics, _ = point_metrics(prepare(df, s, "validation predictions"), s)
    if key not in metrics:
        sample = ", ".join(sorted(k for k in metrics if "gap" in k or "eq_odds" in k)[:6])
        raise UserError(f"params.yaml: 'tune.fairness_key' {key!r} is not a metric; e.g. {sample}")
    value = float(metrics[key])
    if math.isnan(value):
        why = "; ".join(dict.fromkeys(str(w.message) for w in caught)) or "undefined"
        raise UserError(f"tune: validation {key} is undefined, so it cannot be minimised: {why}")
    return value


def counted_states() -> tuple:
    """Trial states that count toward ``n_trials``: complete and pruned (a pruned trial is a
    finished measurement; a failed or abandoned one is not)."""
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def n_finished(study) -> int:
    return len(study.get_trials(deepcopy=False, states=counted_states()))


def make_objective(
    p: Params,
    method: str,
    dims: Sequence[Dim],
    data: TuneData,
    *,
    worker: int,
    log: Callable[[str], None],
):
    import optuna

    from fairxray.train import DivergedError, check_train_params, fit

    tp = p.tune
    seed = p.seeds[0]

    def objective(trial):
        overrides = suggest(trial, dims)
        hp = apply_overrides(p.train, overrides)
        check_train_params(hp, f"tune trial {trial.number}")
        # Pruning compares intermediate values; they are fit()'s per-epoch val score, which is
        # the objective only when the two name the same metric. Optuna cannot prune
        # multi-objective trials.
        prune = tp.pruner != "none" and not tp.multi_objective and hp.selection == tp.objective
        trial.set_user_attr("worker", worker)

        def on_epoch(epoch: int, score: float) -> None:
            if not prune:
                return
            trial.report(score, epoch)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", epoch)
                log(f"trial {trial.number}: pruned after epoch {epoch} (val {score:.4f})")
                raise optuna.TrialPruned(f"epoch {epoch}: val {hp.selection} {score:.4f}")

        t0 = time.perf_counter()
        model = data.new_model() if data.new_model is not None else None
        try:
            result = fit(method, data.fit_data, hp, seed=seed, model=model, on_epoch=on_epoch)
        except DivergedError as exc:
            # A diverged trial (no finite validation score) fails on its own; Optuna records a
            # NaN objective as FAIL, which does not count toward n_trials and stops nothing else.
            log(f"trial {trial.number}: failed: {exc}  {overrides}")
            trial.set_user_attr("failed", str(exc))
            return (math.nan, math.nan) if tp.multi_objective else math.nan
        if hp.selection == tp.objective:
            value = float(result.best_score)
        else:
            value = objective_value(tp.objective, data.fit_data.val.labels, result.val_probs)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs_run", len(result.history))
        trial.set_user_attr("trainable_params", int(result.trainable_params))
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        trial.set_user_attr("val_history", [round(h["val_score"], 6) for h in result.history])
        msg = f"trial {trial.number}: val {tp.objective} {value:.4f}"
        if not tp.multi_objective:
            log(f"{msg}  {overrides}")
            return value
        gap = fairness_gap(p, data.val_frame, result.val_probs, tp.fairness_key)
        log(f"{msg}, val {tp.fairness_key} {gap:.4f}  {overrides}")
        return value, gap

    return objective


def choose_pareto(front: Sequence, max_cost: float):
    """The fairest trial of the Pareto front whose objective is at most ``max_cost`` below the
    front's best (ties: the higher objective, then the earlier trial). ``values`` are
    (objective to maximise, gap to minimise); a NaN gap never wins."""
    best = max(t.values[0] for t in front)
    ok = [t for t in front if t.values[0] >= best - max_cost - 1e-12]

    def key(t):
        gap = t.values[1]
        return (math.isnan(gap), gap, -t.values[0], t.number)

    return min(ok, key=key)


def trial_record(t) -> dict:
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "values": None if t.values is None else [float(v) for v in t.values],
        "params": dict(t.params),
        "best_epoch": t.user_attrs.get("best_epoch"),
        "worker": t.user_attrs.get("worker"),
    }


def summarise(study, p: Params, model: str, method: str, settings_: dict, url: str) -> dict:
    """The content of ``tuned/<model>/<method>.yaml``: the chosen params and the study."""
    from optuna.trial import TrialState

    tp = p.tune
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise UserError(
            f"tune {model}/{method}: no trial completed ({counts}); see the log above for why"
        )
    out: dict[str, Any] = {
        "format": FORMAT,
        "model": model,
        "method": method,
        "tuned": True,
        "objective": tp.objective,
    }
    if tp.multi_objective:
        front = sorted(study.best_trials, key=lambda t: t.number)
        chosen = choose_pareto(front, tp.max_cost)
        out["multi_objective"] = {
            "fairness_key": tp.fairness_key,
            "max_cost": tp.max_cost,
            "rule": (
                "fairest Pareto trial whose val objective is at most max_cost below the front's "
                "best; max_cost 0 = the most accurate"
            ),
            "pareto_front": [
                {
                    "trial": t.number,
                    tp.objective: float(t.values[0]),
                    tp.fairness_key: float(t.values[1]),
                    "params": dict(t.params),
                }
                for t in front
            ],
        }
        out["best_trial"] = chosen.number
        out["best_value"] = float(chosen.values[0])
        out["best_fairness_gap"] = float(chosen.values[1])
    else:
        chosen = study.best_trial
        out["best_trial"] = chosen.number
        out["best_value"] = float(chosen.value)
    out["best_epoch"] = chosen.user_attrs.get("best_epoch")
    out["params"] = dict(chosen.params)
    out["study"] = {
        "name": study.study_name,
        "storage": redact(url),
        "n_trials": tp.n_trials,
        "counts": {k: v for k, v in counts.items() if v},
        "sampler": (
            f"TPE seeded from tune.seed {tp.seed}, the worker and the trials already in the "
            f"study; {tp.startup_trials} random startup trials"
        ),
        "pruner": tp.pruner,
        "train_seed": p.seeds[0],
        "settings": {k: v for k, v in settings_.items() if k not in ("train", "space")},
        "trials": [trial_record(t) for t in sorted(trials, key=lambda t: t.number)],
    }
    return out


def nothing_to_tune(model: str, method: str, reason: str) -> dict:
    return {
        "format": FORMAT,
        "model": model,
        "method": method,
        "tuned": False,
        "reason": reason,
        "params": {},
    }


def write_tuned(path: str | Path, content: dict) -> Path:
    """Atomic write of the tuned file (``train`` reads its ``params:``)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(content, sort_keys=False))
    os.replace(tmp, path)
    return path


def tune(
    p: Params,
    model: str,
    method: str,
    *,
    storage: str | None = None,
    worker: int = 0,
    n_trials: int | None = None,
    callbacks: Sequence[Callable] = (),
    data: TuneData | None = None,
    write: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Run (or resume) the study of ``model`` x ``method`` up to ``n_trials`` (default
    ``tune.n_trials``) finished trials; write and return the tuned file's content.
    ``callbacks`` are Optuna callbacks ``(study, frozen_trial)`` (MLflow logging, tests)."""
    import optuna

    from fairxray import adapt

    tp = p.tune
    check_tune_params(tp)
    meth = adapt.get_method(method)
    out_path = paths.tuned(model, method)
    if meth.build is None:
        content = nothing_to_tune(model, method, f"{method} trains nothing: nothing to tune")
    elif not (n_trials or tp.n_trials):
        content = nothing_to_tune(
            model, method, "tune.n_trials is 0 (tuning off): params.yaml's train values"
        )
    elif not (dims := search_space(tp, method)):
        content = nothing_to_tune(
            model, method, f"tune.space has no entry for {method}: params.yaml's train values"
        )
    else:
        target = n_trials or tp.n_trials
        url = storage_url(tp, storage)
        st = settings(p, model, method)
        name = study_name(model, method, st)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = (
            optuna.pruners.MedianPruner(
                n_startup_trials=tp.pruner_startup_trials, n_warmup_steps=tp.pruner_warmup_epochs
            )
            if tp.pruner == "median"
            else optuna.pruners.NopPruner()
        )
        directions = ["maximize", "minimize"] if tp.multi_objective else ["maximize"]
        study = optuna.create_study(
            storage=make_storage(url),
            pruner=pruner,
            study_name=name,
            directions=directions,
            load_if_exists=True,
        )
        seed = sampler_seed(tp.seed, worker, len(study.get_trials(deepcopy=False)))
        study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=tp.startup_trials)
        if "settings" not in study.user_attrs:
            study.set_user_attr("settings", st)
        done = n_finished(study)
        remaining = max(target - done, 0)
        log(
            f"tune: study {name} in {redact(url)}: {done} finished trial(s) kept, "
            f"{remaining} to run (n_trials {target}), worker {worker}"
        )
        if remaining:
            if data is None:
                data = load_tune_data(p, model, method)
            objective = make_objective(p, method, dims, data, worker=worker, log=log)
            stop = optuna.study.MaxTrialsCallback(target, states=counted_states())
            study.optimize(objective, n_trials=remaining, callbacks=[stop, *callbacks])
        content = summarise(study, p, model, method, st, url)
        log(
            f"tune: {name}: best trial {content['best_trial']} val {tp.objective} "
            f"{content['best_value']:.4f} -> {out_path}"
        )
    if write:
        write_tuned(out_path, content)
    return content
