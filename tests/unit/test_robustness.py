"""Bad or unusual inputs found while wiring the stages together."""

import pandas as pd
import pytest

from fairxray.errors import UserError


def test_group_f1_plot_accepts_an_interval_that_excludes_the_estimate(tmp_path):
    from fairxray.metrics.evaluate import plot_group_f1

    by_group = pd.DataFrame(
        {
            "metric": ["macro_f1", "macro_f1"],
            "attribute": ["sex", "sex"],
            "group": ["F", "M"],
            "value": [0.001, 0.5],
            "ci_low": [0.004, 0.4],  # a skewed bootstrap: the interval lies above the estimate
            "ci_high": [0.14, 0.6],
            "n": [10, 10],
        }
    )
    plot_group_f1(by_group, tmp_path / "g.png", demo=True)
    assert (tmp_path / "g.png").stat().st_size > 0


def test_git_commit_falls_back_to_the_environment(tmp_path, monkeypatch):
    from fairxray.track.runs import git_info

    monkeypatch.setenv("FAIRXRAY_GIT_SHA", "abc123")
    assert git_info(tmp_path)["git_commit"] == "abc123"
    monkeypatch.delenv("FAIRXRAY_GIT_SHA")
    assert git_info(tmp_path)["git_commit"].startswith("unknown")


def test_corrupt_safetensors_is_a_user_error(tmp_path):
    from fairxray.models.weights import read_state_file

    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(UserError, match=r"model\.safetensors: not a readable safetensors file"):
        read_state_file(bad)


def test_embed_names_every_model_missing_weights_at_once(tmp_path, params):
    import dataclasses

    from fairxray.adapt.store import embed

    data = dataclasses.replace(params.data, weights_dir=str(tmp_path))
    p = dataclasses.replace(params, data=data, models=("clip-vit-b16", "gloria"))
    with pytest.raises(UserError) as exc:
        embed(p, "clip-vit-b16")
    msg = str(exc.value)
    assert "clip-vit-b16" in msg and "gloria" in msg and str(tmp_path) in msg
    assert "ViT-B-16.pt" in msg and "convert-gloria" in msg


def test_a_fit_with_no_finite_validation_score_is_a_clear_error():
    import dataclasses

    import numpy as np
    from _trainkit import fit_data, train_params

    from fairxray.adapt.fit import DivergedError, fit
    from fairxray.models import create

    data = fit_data(create("toy"), features=True)
    nan = dataclasses.replace(data.val, features=np.full_like(data.val.features, np.nan))
    data = dataclasses.replace(data, val=nan)
    with pytest.raises(DivergedError, match="no finite validation neg_loss in any of 2 epoch"):
        fit("linear_probe", data, train_params(epochs=2, selection="neg_loss"), seed=0)


def test_validation_metrics_stay_outside_the_evaluate_output():
    from fairxray import paths

    test_dir = paths.metrics_dir("toy", "mlp", 77)
    val_dir = paths.metrics_dir("toy", "mlp", 77, "val")
    assert test_dir.parts[:3] == ("metrics", "toy", "mlp")
    assert not val_dir.is_relative_to(paths.metrics("toy", "mlp"))
    assert val_dir.parts[0] == "metrics-val"
