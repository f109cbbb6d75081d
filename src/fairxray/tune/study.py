"""Optuna studies over ``fairxray.adapt.fit``'s hyperparameters, one per model x method.

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
pruned trial is still a valid measurement."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fairxray import paths
from fairxray.config import Params
from fairxray.data.splits import manifest_sha256
from fairxray.errors import UserError
from fairxray.tune.objective import TuneData, load_tune_data, make_objective
from fairxray.tune.space import check_tune_params, make_sampler, search_space, space_entries
from fairxray.tune.storage import make_storage, redact, storage_url

FORMAT = 1


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
        for k, v in create(model, p.data.weights_dir, p.model_scale).state_dict().items():
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
        # No folder paths: a moved or re-cloned project keeps its studies. The weights are
        # identified by content (inputs_sha256 hashes the built model or its embeddings).
        "train": dataclasses.asdict(p.train),
        "space": {k: spec for k, (_, spec) in space_entries(tp, method).items()},
        "objective": tp.objective,
        "multi_objective": tp.multi_objective,
        "fairness_key": tp.fairness_key if tp.multi_objective else None,
        "seed": p.seeds[0],
    }


def study_name(model: str, method: str, settings_: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings_, sort_keys=True).encode()).hexdigest()
    return f"{model}/{method}@{digest[:10]}"


def trains(run: str) -> bool:
    """False for a post-processing mitigation: it fits its rule, never a model."""
    from fairxray.mitigate import NONE, get_mitigation, split_run

    mitigation = split_run(run)[1]
    return mitigation == NONE or get_mitigation(mitigation).kind == "train"


def counted_states() -> tuple:
    """Trial states that count toward ``n_trials``: complete and pruned (a pruned trial is a
    finished measurement; a failed or abandoned one is not)."""
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def n_finished(study) -> int:
    return len(study.get_trials(deepcopy=False, states=counted_states()))


class _StopAtTarget:
    """Stop when finished trials plus those other workers started since this run began reach
    the target. Trials left RUNNING by a killed process (started before this run) don't count:
    they will never finish, and the heartbeat marks them failed."""

    def __init__(self, target: int) -> None:
        import datetime

        self.target, self.since = target, datetime.datetime.now()

    def __call__(self, study, trial) -> None:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in counted_states() for t in trials)
        flying = sum(
            t.state == TrialState.RUNNING and t.datetime_start is not None
            and t.datetime_start >= self.since
            for t in trials
        )  # fmt: skip
        if done + flying >= self.target:
            study.stop()


def counted_trials(study, n_trials: int) -> list:
    """The first ``n_trials`` finished trials by number: what a study of ``n_trials`` holds."""
    done = sorted(study.get_trials(deepcopy=False, states=counted_states()), key=lambda t: t.number)
    return done[:n_trials]


def _pareto_front(complete: Sequence) -> list:
    """The non-dominated trials of (maximise values[0], minimise values[1])."""

    def dominates(a, b) -> bool:
        (a0, a1), (b0, b1) = a.values, b.values
        return a0 >= b0 and a1 <= b1 and (a0 > b0 or a1 < b1)

    return [t for t in complete if not any(dominates(o, t) for o in complete if o is not t)]


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


def summarise(
    study, p: Params, model: str, method: str, settings_: dict, url: str, n_trials: int | None = None
) -> dict:
    """The chosen params and the study, from its first ``n_trials`` finished trials by number
    (default ``tune.n_trials``): a study holding more (an earlier, larger ``n_trials``, or a
    second worker finishing last) gives the same result as one that stopped there."""
    from optuna.trial import TrialState

    tp = p.tune
    trials = counted_trials(study, n_trials or tp.n_trials)
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
        front = sorted(_pareto_front(complete), key=lambda t: t.number)
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
        # Highest value; ties go to the earlier trial (as Optuna's best_trial).
        chosen = max(complete, key=lambda t: (t.value, -t.number))
        out["best_trial"] = chosen.number
        out["best_value"] = float(chosen.value)
    out["best_epoch"] = chosen.user_attrs.get("best_epoch")
    out["params"] = dict(chosen.params)
    out["study"] = {
        "name": study.study_name,
        "storage": redact(url),
        "n_trials": n_trials or tp.n_trials,
        "trials_in_study": n_finished(study),
        "counts": {k: v for k, v in counts.items() if v},
        "sampler": (
            f"TPE reseeded per trial from tune.seed {tp.seed} and the trial number; "
            f"{tp.startup_trials} random startup trials"
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


def tuned_params(content: dict) -> dict:
    """What ``train`` reads (and DVC hashes as its dependency): the chosen hyperparameters only,
    so a rerun of tune that chooses the same ones (more trials, another storage) retrains
    nothing. The study summary goes to ``tuned/<model>/<method>.study.yaml``."""
    keep = ("format", "model", "method", "tuned", "reason", "params")
    return {k: content[k] for k in keep if k in content}


def write_tuned(path: str | Path, content: dict) -> Path:
    """Atomic write of the tuned file (``train`` reads its ``params:``)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(content, sort_keys=False))
    os.replace(tmp, path)
    return path


def _open_study(tp, url: str, name: str):
    """The study ``name`` in ``url`` (created if new) with the configured pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=tp.pruner_startup_trials, n_warmup_steps=tp.pruner_warmup_epochs
        )
        if tp.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    directions = ["maximize", "minimize"] if tp.multi_objective else ["maximize"]
    return optuna.create_study(
        storage=make_storage(url),
        pruner=pruner,
        study_name=name,
        directions=directions,
        load_if_exists=True,
    )


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

    from fairxray import adapt

    tp = p.tune
    check_tune_params(tp)
    meth = adapt.get_method(method)
    adapt.check_grid([model], [method])
    out_path = paths.tuned(model, method)
    if meth.build is None or not trains(method):
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
        study = _open_study(tp, url, name)
        study.sampler = make_sampler(tp.seed, tp.startup_trials)
        if "settings" not in study.user_attrs:
            study.set_user_attr("settings", st)
        done = n_finished(study)
        remaining = max(target - done, 0)
        log(
            f"tune: study {name} in {redact(url)}: {done} finished trial(s) kept, "
            f"{remaining} to run (n_trials {target}), worker {worker}"
        )
        if done > target:
            log(
                f"tune: {name}: the study holds {done} finished trials; the result uses the "
                f"first {target} by number (tune.n_trials {target})"
            )
        if remaining:
            if data is None:
                data = load_tune_data(p, model, method)
            objective = make_objective(p, method, dims, data, worker=worker, log=log)
            # Trials in flight in other workers count too, so workers sharing a study stop
            # together at n_trials; a rare overshoot is harmless (the first n_trials are used).
            stop = _StopAtTarget(target)
            study.optimize(objective, n_trials=remaining, callbacks=[stop, *callbacks])
        content = summarise(study, p, model, method, st, url, target)
        log(
            f"tune: {name}: best trial {content['best_trial']} val {tp.objective} "
            f"{content['best_value']:.4f} -> {out_path}"
        )
    if write:
        write_tuned(paths.tuned_study(model, method), content)
        write_tuned(out_path, tuned_params(content))
    return content
