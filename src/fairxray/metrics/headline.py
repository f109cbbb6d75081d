"""The headline figures: the few numbers a reader looks at first, named once for the report's
``summary.json``, the DVC plots, ``fairxray compare`` and the MLflow parent runs.

Utility: accuracy, macro-F1 and macro AUROC. Fairness, per sensitive attribute (age group and
sex): the max-min macro-F1 gap, fairlearn's worst-case equalized-odds difference (max over
classes) and the binned ECE gap. Every other metric stays in each run's ``metrics.json``.

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


def companions(key: str) -> tuple[str, ...]:
    """The keys beside ``key`` in metrics.json: its interval, and for a gap its inference."""
    tail = INTERVAL + (INFERENCE if key in GAPS else ())
    return tuple(f"{key}/{t}" for t in tail)
