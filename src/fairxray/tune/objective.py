"""One trial: draw hyperparameters, train with the one ``fit()`` the final runs use, return the validation objective (and optionally a validation fairness gap); prune on the per-epoch score. The test split is never loaded."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairxray import paths
from fairxray.config import Params
from fairxray.errors import UserError
from fairxray.tune.space import Dim, apply_overrides, suggest


def objective_value(
    objective: str, labels: np.ndarray, probs: np.ndarray, task: str = "multiclass"
) -> float:
    """Higher is better, from validation probabilities: macro-F1, accuracy or the negated mean
    cross-entropy (-mean log p[true class]), as ``fairxray.adapt.fit.selection_score`` defines them.
    ``task`` multilabel (``labels`` float [N, L], NaN masked): ``macro_auroc`` or the negated
    masked BCE (:mod:`fairxray.adapt.fit.task`)."""
    from fairxray.adapt.fit import selection_score

    p = np.asarray(probs, dtype=np.float64)
    if task == "multilabel":
        from fairxray.adapt.fit.task import multilabel_neg_loss

        y = np.asarray(labels, dtype=np.float64)
        return selection_score(objective, y, p, -multilabel_neg_loss(y, p))
    y = np.asarray(labels, dtype=np.int64)
    loss = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None))))
    return selection_score(objective, y, p, loss)


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
    from fairxray.adapt.fit import load_fit_data
    from fairxray.data.cache import ImageCache
    from fairxray.data.splits import load_splits
    from fairxray.mitigate import NONE, split_run
    from fairxray.models import create

    meth = adapt.get_method(method)
    mitigated = split_run(method)[1] != NONE
    frames = load_splits(p.data.protocol)
    frames = {s: frames[s] for s in ("train", "val")}  # tuning never sees the test split
    cache = ImageCache.open(paths.images(p.data.protocol)) if meth.inputs == "images" else None
    data = load_fit_data(
        frames,
        meth.inputs,
        len(p.data.classes),
        embeddings_dir=paths.embeddings(model_name),
        cache=cache,
        group_column=p.mitigate.attribute if mitigated else None,
        task=p.data.task,
        classes=p.data.classes,
    )
    new_model = None
    if meth.inputs == "images":
        weights, scale = p.data.weights_dir, p.model_scale

        def new_model():
            return create(model_name, weights, scale)

    return TuneData(data, frames["val"], meth.inputs, new_model)


def fairness_gap(p: Params, val_frame, probs: np.ndarray, key: str) -> float:
    """``key`` of ``evaluate``'s metrics on the validation predictions (point estimate only)."""
    from fairxray.adapt.train import prediction_frame
    from fairxray.metrics.evaluate import point_metrics, prepare
    from fairxray.metrics.evaluate import settings as eval_settings

    s = dataclasses.replace(eval_settings(p), n_boot=0)
    df = prediction_frame(val_frame, probs, p.data.classes, p.metrics.sensitive, p.data.task)
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

    from fairxray.adapt.fit import DivergedError, check_train_params, fit
    from fairxray.mitigate import NONE, split_run

    tp = p.tune
    seed = p.seeds[0]
    # A mitigated fit selects its epoch on the worst group's val score; the study's objective
    # stays the overall one, recomputed from the selected epoch's val probabilities.
    overall = split_run(method)[1] == NONE

    def objective(trial):
        overrides = suggest(trial, dims)
        hp = apply_overrides(p.train, overrides)
        check_train_params(hp, f"tune trial {trial.number}")
        # Pruning compares intermediate values; they are fit()'s per-epoch val score, which is
        # the objective only when the two name the same metric. Optuna cannot prune
        # multi-objective trials.
        prune = (
            tp.pruner != "none"
            and not tp.multi_objective
            and hp.selection == tp.objective
            and overall
        )
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
        if hp.selection == tp.objective and overall:
            value = float(result.best_score)
        else:
            value = objective_value(
                tp.objective, data.fit_data.val.labels, result.val_probs, p.data.task
            )
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
