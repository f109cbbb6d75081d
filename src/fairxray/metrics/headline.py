"""The headline figures: the few numbers a reader looks at first, named once for the report's
``summary.json``, the DVC plots, ``fairxray compare`` and the MLflow parent runs.

Multi-class (``data.task: multiclass``). Utility: accuracy, macro-F1 and macro AUROC. Fairness,
per sensitive attribute (age group and sex): the max-min macro-F1 gap, fairlearn's worst-case
equalized-odds difference (max over classes) and the binned ECE gap. Every other metric stays in each run's ``metrics.json``.

Multi-label (``data.task: multilabel``, :data:`HEADLINE_ML`): macro AUROC over the labels, the
overall underdiagnosis rate (No Finding false-positive rate), the underdiagnosis gap per attribute
and for the age x sex intersection, the macro AUROC gap and the mean over labels of the per-label
TPR gap for age group and sex.

For a gap ``K``, ``metrics.json`` carries ``K/ci_low`` and ``K/ci_high`` (patient bootstrap) and,
once the permutation test of the inference work has run, ``K/p_value``, ``K/p_adjusted``,
``K/null_mean``, ``K/excess``, ``K/mde`` and ``K/significant``; readers use them when present.
"""

from __future__ import annotations

UTILITY = ("accuracy", "macro_f1", "auroc_macro")
ATTRIBUTES = ("age_group", "sex")
GAP_TEMPLATES = ("f1_gap/{a}/standard", "eq_odds/{a}/worst_case_max", "ece_gap/{a}/binned")
GAPS = tuple(t.format(a=a) for a in ATTRIBUTES for t in GAP_TEMPLATES)
HEADLINE = UTILITY + GAPS

# Companion keys of a gap in metrics.json, in the order they are shown.
INTERVAL = ("ci_low", "ci_high")
INFERENCE = ("p_value", "p_adjusted", "null_mean", "excess", "mde", "significant")

TITLES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "auroc_macro": "AUROC",
    **{
        t.format(a=a): f"{name} {'age' if a == 'age_group' else a}"
        for a in ATTRIBUTES
        for t, name in zip(GAP_TEMPLATES, ("F1 gap", "EqOdds", "ECE gap"), strict=True)
    },
}


ML_ATTRIBUTES = (*ATTRIBUTES, "&".join(ATTRIBUTES))
UTILITY_ML = ("auroc_macro", "underdiagnosis")
GAPS_ML = (
    *(f"underdiagnosis_gap/{a}" for a in ML_ATTRIBUTES),
    *(f"auroc_macro_gap/{a}" for a in ATTRIBUTES),
    *(f"tpr_gap_mean/{a}" for a in ATTRIBUTES),
)
HEADLINE_ML = UTILITY_ML + GAPS_ML


def _short(a: str) -> str:
    return {"age_group": "age", "age_group&sex": "age x sex"}.get(a, a)


TITLES_ML = {
    "auroc_macro": "AUROC",
    **{
        "underdiagnosis": "underdiagnosis",
        **{f"underdiagnosis_gap/{a}": f"underdiag. gap {_short(a)}" for a in ML_ATTRIBUTES},
        **{f"auroc_macro_gap/{a}": f"AUROC gap {_short(a)}" for a in ATTRIBUTES},
        **{f"tpr_gap_mean/{a}": f"mean TPR gap {_short(a)}" for a in ATTRIBUTES},
    },
}


def task_of(metrics) -> str:
    """``multilabel`` for a multi-label ``metrics.json`` / summary entry (no accuracy, but a macro
    AUROC or an underdiagnosis figure), else ``multiclass``."""
    keys = set(metrics)
    if "accuracy" not in keys and keys & {"auroc_macro", "underdiagnosis"}:
        return "multilabel"
    return "multiclass"


def headline_for(task: str) -> tuple[str, ...]:
    return HEADLINE_ML if task == "multilabel" else HEADLINE


def titles_for(task: str) -> dict[str, str]:
    return TITLES_ML if task == "multilabel" else TITLES


def gaps_for(task: str) -> tuple[str, ...]:
    return GAPS_ML if task == "multilabel" else GAPS


def companions(key: str) -> tuple[str, ...]:
    """The keys beside ``key`` in metrics.json: its interval, and for a gap its inference."""
    tail = INTERVAL + (INFERENCE if key in GAPS or key in GAPS_ML else ())
    return tuple(f"{key}/{t}" for t in tail)
