"""The search space of a study: one :class:`Dim` per searched train parameter of ``tune.space.<method>``, validated against ``TrainParams``; the sampler, seeded per trial."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairxray.config import AugmentParams, TrainParams, TuneParams
from fairxray.errors import UserError

OBJECTIVES = ("macro_f1", "accuracy", "neg_loss", "macro_auroc")  # by task: adapt/fit/task.py


PRUNERS = ("median", "none")


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


def space_entries(tp: TuneParams, run: str) -> dict[str, tuple[str, Any]]:
    """train key -> (the ``tune.space`` entry it comes from, its spec). A mitigated run
    ``<method>+<mitigation>`` searches its method's entry and its mitigation's together."""
    from fairxray.mitigate import NONE, split_run

    method, mitigation = split_run(run)
    out: dict[str, tuple[str, Any]] = {}
    for entry in (method, mitigation) if mitigation != NONE else (method,):
        for name, spec in (tp.space.get(entry) or {}).items():
            out[name] = (entry, spec)
    return out


def search_space(tp: TuneParams, method: str, src: str = "params.yaml") -> list[Dim]:
    """The validated search space of ``method`` (empty: nothing to tune). Ranges take the
    parameter's type from ``TrainParams``: an int field gives integer trials."""
    dims = []
    for name, (entry, spec) in space_entries(tp, method).items():
        where = f"{src}: 'tune.space.{entry}.{name}'"
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


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number``: ``seed`` itself for trial 0, an independent stream
    for every later number. A trial's draws then depend only on ``tune.seed``, its number and the
    trials before it: two workers (which get different trial numbers from the storage) never draw
    alike whatever their ``--worker``, and a resumed study continues as an uninterrupted one."""
    if number == 0:
        return seed
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def make_sampler(seed: int, startup_trials: int):
    """TPE reseeded before each trial from :func:`trial_seed` (its random startup draws too)."""
    import optuna

    class TrialSeededTPE(optuna.samplers.TPESampler):
        def before_trial(self, study, trial) -> None:
            s = trial_seed(seed, trial.number)
            self._rng.rng.seed(s)
            self._random_sampler._rng.rng.seed(s)
            super().before_trial(study, trial)

    return TrialSeededTPE(seed=seed, n_startup_trials=startup_trials)
