"""The MLflow names of the headline figures and per-group values (fairxray.track.headline):
valid MLflow names, sorted first and in order, means over seeds checked by hand."""

from __future__ import annotations

import math

import pytest

from fairxray.metrics.headline import GAPS, HEADLINE
from fairxray.track import headline as h


def test_names_are_valid_sort_first_and_keep_the_order():
    from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

    names = [h.mlflow_name(k) for k in HEADLINE]
    assert names == sorted(names)
    others = ["accuracy", "auroc_macro", "ece_gap/age_group/paper", "group.sex.F.f1", "n/images"]
    assert sorted(names + others)[: len(names)] == names
    rows = [{"attribute": "age_group&sex", "group": "60-99&F", "metric": "macro_f1",
             "value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 12}]  # fmt: skip
    group = h.group_metrics(rows)
    assert group == {
        "group.age_group_x_sex.60-99_x_F.macro_f1": 0.5,
        "group.age_group_x_sex.60-99_x_F.macro_f1/ci_low": 0.4,
        "group.age_group_x_sex.60-99_x_F.macro_f1/ci_high": 0.6,
        "group.age_group_x_sex.60-99_x_F.n": 12.0,
    }
    for n in [*names, *group, h.mlflow_name(f"{GAPS[0]}/p_adjusted")]:
        assert validate_param_and_metric_name(n) and not path_not_unique(n), n
    with pytest.raises(KeyError):
        h.mlflow_name("var_f1")


def test_headline_means_over_seeds_by_hand():
    gap = GAPS[0]
    seeds = [
        {"accuracy": 0.5, gap: 0.10, f"{gap}/ci_low": 0.0, f"{gap}/significant": True,
         f"{gap}/p_adjusted": 0.01, "macro_f1": None},
        {"accuracy": 0.7, gap: 0.20, f"{gap}/ci_low": 0.1, f"{gap}/significant": False,
         f"{gap}/p_adjusted": 0.20, "macro_f1": None},
    ]  # fmt: skip
    out = h.headline_metrics(seeds)
    assert out["1.accuracy"] == pytest.approx(0.6)
    assert out[f"4.{gap}"] == pytest.approx(0.15)
    assert out[f"4.{gap}/ci_low"] == pytest.approx(0.05)
    assert out[f"4.{gap}/significant"] == pytest.approx(0.5)  # significant in 1 of 2 seeds
    assert out[f"4.{gap}/p_adjusted"] == pytest.approx(0.105)
    assert math.isnan(out["2.macro_f1"])  # undefined in every seed: NaN, not dropped
    assert "3.auroc_macro" not in out and f"4.{gap}/ci_high" not in out  # absent: not invented
    means = h.mean_group_metrics([{"a": 1.0, "b": math.nan}, {"a": 3.0}])
    assert means["a"] == 2.0 and math.isnan(means["b"]) and list(means) == ["a", "b"]


def test_view_and_experiment_tags():
    tags = h.experiment_tags("demo")
    assert tags[h.EXPERIMENT_KIND] == "custom_model_development"
    assert tags[h.NOTE].startswith("DEMO")
    assert not h.experiment_tags("paper")[h.NOTE].startswith("DEMO")
    cols = h.view_state()["selectedColumns"]
    assert cols.index("metrics.`1.accuracy`") < cols.index(f"metrics.`4.{GAPS[0]}/p_adjusted`")
    assert h.view_url("http://127.0.0.1:5000/", "3") == (
        "http://127.0.0.1:5000/#/experiments/3/runs"
        "?workflowType=machine_learning&viewStateShareKey=fairxray-headline"
    )
