"""What the MLflow UI shows first: the experiment marked as model training (so the UI opens on
the training runs, not the GenAI overview), the headline figures under names that sort first,
per-group values as chartable metrics, a saved view whose table shows the headline columns, and
the tags that tell a DVC experiment from the baseline.

Names. A headline figure ``K`` of :mod:`fairxray.metrics.headline` is logged as ``<n>.K`` with
``n`` its place in that list (``1.accuracy``, ``2.macro_f1``, ``3.auroc_macro``,
``4.f1_gap/age_group/standard`` ... ``9.ece_gap/sex/binned``), its companions beside it
(``4.f1_gap/age_group/standard/ci_low``, ``.../p_adjusted``, ...): the digit sorts them before
every other metric and in the order of the list. Every metric also keeps its ``metrics.json``
name. A per-group value of ``by_group.csv`` is ``group.<attribute>.<group>.<metric>`` (with
``/ci_low``, ``/ci_high`` and ``group.<attribute>.<group>.n``), e.g.
``group.age_group.60-99.macro_f1``; MLflow rejects ``=`` in a name, so a dot separates the
attribute from the group (attributes, groups and metric names contain no dot; ``&`` of an
intersection becomes ``_x_``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fairxray import DEMO_BANNER
from fairxray.metrics.headline import (
    INFERENCE,
    INTERVAL,
    gaps_for,
    headline_for,
    task_of,
    titles_for,
)

EXPERIMENT_KIND = "mlflow.experimentKind"  # read by the UI: which home page an experiment gets
TRAINING = "custom_model_development"
NOTE = "mlflow.note.content"  # the experiment's description, shown above the runs table
SHARED_VIEW = "mlflow.sharedViewState."  # + key: a saved runs-table view the UI loads by URL
VIEW_KEY = "fairxray-headline"
PRUNED = "fairxray.pruned"
DVC_EXPERIMENT = "fairxray.dvc_experiment"
DVC_BASELINE = "fairxray.dvc_baseline_rev"
WORKSPACE = "workspace"  # a plain `dvc repro` (or a stage run by hand)

_BAD = re.compile(r"[^/\w.\- ]")


def _safe(s: str) -> str:
    return _BAD.sub("_", str(s).replace("&", "_x_"))


def mlflow_name(key: str, task: str = "multiclass") -> str:
    """``accuracy`` -> ``1.accuracy``; ``f1_gap/sex/standard/ci_low`` -> ``7.f1_gap/sex/...``.
    Under ``multilabel`` the numbering follows :data:`~fairxray.metrics.headline.HEADLINE_ML`
    (``1.auroc_macro``, ``2.underdiagnosis``, ``3.underdiagnosis_gap/age_group`` ...)."""
    for i, k in enumerate(headline_for(task), start=1):
        if key == k or key.startswith(f"{k}/"):
            return f"{i}.{key}"
    raise KeyError(f"{key}: not a headline figure or one of its companions")


def _companion_keys(key: str, task: str = "multiclass") -> list[str]:
    tail = INTERVAL + (INFERENCE if key in gaps_for(task) else ())
    return [key, *(f"{key}/{t}" for t in tail)]


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    return None  # null (undefined) or absent


def headline_metrics(seeds: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each headline figure and companion present in the seeds' ``metrics.json``, as the mean
    over seeds under its sorted name (one seed: its values). ``K/significant`` becomes the
    fraction of seeds in which the gap was significant. A key absent from every seed is left
    out (the inference keys exist only once the permutation test ran); an undefined value
    (null) counts as NaN. The headline list is the task's (:func:`fairxray.metrics.headline.task_of`
    of the first seed)."""
    seeds = list(seeds)
    out = {}
    task = task_of(seeds[0]) if seeds else "multiclass"
    for key in headline_for(task):
        for k in _companion_keys(key, task):
            if not any(k in m for m in seeds):
                continue
            vals = [_num(m.get(k)) for m in seeds]
            finite = [v for v in vals if v is not None and math.isfinite(v)]
            out[mlflow_name(k, task)] = sum(finite) / len(finite) if finite else float("nan")
    return out


def group_metrics(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """``by_group.csv`` rows -> ``group.<attribute>.<group>.<metric>`` (+ ``/ci_low``,
    ``/ci_high``) and ``group.<attribute>.<group>.n`` (images in the group)."""
    out = {}
    for r in rows:
        base = f"group.{_safe(r['attribute'])}.{_safe(r['group'])}"
        name = f"{base}.{_safe(r['metric'])}"
        for col, suffix in (("value", ""), ("ci_low", "/ci_low"), ("ci_high", "/ci_high")):
            if col in r:
                v = _num(r[col])
                out[name + suffix] = float("nan") if v is None else v
        if "n" in r and _num(r["n"]) is not None:
            out[f"{base}.n"] = float(r["n"])
    return out


def read_group_rows(path: Path) -> list[dict]:
    """The rows of one ``by_group.csv`` (none when absent); group labels stay strings."""
    import pandas as pd

    if not path.is_file():
        return []
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"group": str})
    return df.to_dict("records")


def mean_group_metrics(per_seed: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean over seeds of each per-group metric (for the parent run)."""
    per_seed = list(per_seed)
    keys = list(dict.fromkeys(k for m in per_seed for k in m))
    out = {}
    for k in keys:
        finite = [m[k] for m in per_seed if k in m and math.isfinite(m[k])]
        out[k] = sum(finite) / len(finite) if finite else float("nan")
    return out


def view_state(task: str = "multiclass") -> dict:
    """The runs-table view of the saved view: run name, time, the headline columns (value,
    interval, corrected p-value), the DVC experiment and the profile; newest first."""
    cols = ["attributes.`Run Name`", "attributes.`Created`"]
    for key in headline_for(task):
        cols.append(f"metrics.`{mlflow_name(key, task)}`")
        if key in gaps_for(task):
            cols += [
                f"metrics.`{mlflow_name(f'{key}/{t}', task)}`" for t in (*INTERVAL, "p_adjusted")
            ]
    cols += [f"tags.`{DVC_EXPERIMENT}`", "tags.`fairxray.profile`"]
    return {
        "selectedColumns": cols,
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "runsExpanded": {},
    }


def experiment_tags(profile: str, task: str = "multiclass") -> dict[str, str]:
    """The experiment's tags: model training (the UI's home is the runs table), a description
    (DEMO in the demo) and the saved headline view."""
    what = (
        f"{DEMO_BANNER} fairxray: fairness of CLIP-based models on chest X-rays."
        if profile == "demo"
        else "fairxray: fairness of CLIP-based models on NIH ChestX-ray14."
    )
    note = (
        f"{what} One parent run per model x method (the mean over seeds of the headline figures: "
        + ", ".join(titles_for(task)[k] for k in headline_for(task))
        + "), nested runs per seed and per tuning trial. `fairxray ui` opens the headline view."
    )
    return {
        EXPERIMENT_KIND: TRAINING,
        NOTE: note,
        SHARED_VIEW + VIEW_KEY: json.dumps(view_state(task), separators=(",", ":")),
    }


def present_experiment(cl, exp_id: str, profile: str, task: str = "multiclass") -> None:
    for k, v in experiment_tags(profile, task).items():
        cl.set_experiment_tag(exp_id, k, v)


def view_url(base: str, exp_id: str) -> str:
    """The runs table of ``exp_id`` in the headline view, with the sidebar on "Model training"
    (the UI's own default is GenAI; ``workflowType`` in the URL overrides it)."""
    query = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    return f"{base.rstrip('/')}/#/experiments/{exp_id}/runs?{query}"


def dvc_tags() -> dict[str, str]:
    """The DVC experiment this process runs in: ``dvc exp run`` sets ``DVC_EXP_NAME`` and
    ``DVC_EXP_BASELINE_REV`` for each stage; a plain ``dvc repro`` is the workspace."""
    tags = {DVC_EXPERIMENT: os.environ.get("DVC_EXP_NAME") or WORKSPACE}
    if rev := os.environ.get("DVC_EXP_BASELINE_REV"):
        tags[DVC_BASELINE] = rev
    return tags


def tune_tags(tune) -> dict[str, str]:
    """The tune settings that decide which hyperparameters were chosen (not the search space,
    which the tuned file and the trials' params show)."""
    keys = ("n_trials", "seed", "objective", "multi_objective", "fairness_key", "max_cost",
            "pruner", "pruner_startup_trials", "pruner_warmup_epochs", "startup_trials")  # fmt: skip
    return {f"fairxray.tune.{k}": str(getattr(tune, k)) for k in keys if hasattr(tune, k)}


def params_sha256(path: str | Path = "params.yaml") -> str:
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unknown"
