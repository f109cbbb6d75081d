"""The `check` stage: every params problem is one numbered message naming the file actually read,
before any stage does work; the paper profile's real inputs are all reported together."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fairxray import cli

REPO = Path(__file__).resolve().parents[2]


def write_params(tmp_path: Path, name: str = "other.yaml", **changes) -> Path:
    """The project's params with dotted ``changes`` (``"a.b": v``; ``"+key": v`` adds a key)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.lstrip("+").split(".")
        node = raw
        for k in parents:
            node = node[k]
        node[last] = value
    out = tmp_path / name
    out.write_text(yaml.safe_dump(raw))
    return out


def run_check(tmp_path, monkeypatch, capsys, **changes) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    params = write_params(tmp_path, **{k.replace("__", "."): v for k, v in changes.items()})
    rc = cli.main(["check", "--params", str(params)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def test_valid_params_pass_and_write_the_output(tmp_path, monkeypatch, capsys):
    rc, _ = run_check(tmp_path, monkeypatch, capsys)
    assert rc == 0 and (tmp_path / "check" / "params.json").exists()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"+colour": "red"}, "unknown key 'colour'"),  # top level: no other stage reads it
        ({"images.size": -64}, "'images.size' must be at least 8 px, got -64"),
        ({"data.per_cell": -5}, "'data.per_cell' must be at least 1, got -5"),
        ({"metrics.n_boot": -1}, "'metrics.n_boot' must be 0 (off) or >= 2, got -1"),
        ({"seeds": []}, "'seeds' needs at least one seed, got []"),
        ({"train.epochs": -3}, "'train.epochs' must be at least 1, got -3"),
        ({"models": ["x; touch F; true"]}, "'models[0]' 'x; touch F; true' is not a safe name"),
        ({"models": ["toy", "no-such-model"]}, "'models[1]' 'no-such-model' is not registered"),
        ({"methods": ["linear_probe", "lasso"]}, "'methods[1]' 'lasso' is not registered"),
        ({"tune.n_trials": -2}, "'tune.n_trials' must be non-negative"),
    ],
)
def test_bad_params_fail_naming_the_file_read(tmp_path, monkeypatch, capsys, changes, expected):
    monkeypatch.chdir(tmp_path)
    params = write_params(tmp_path, **changes)
    (tmp_path / "check").mkdir()
    (tmp_path / "check" / "params.json").write_text("{}")  # a stale pass must not survive
    assert cli.main(["check", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert str(params) in err and "params.yaml" not in err.replace(str(params), "")
    assert not (tmp_path / "check" / "params.json").exists()
    assert not (tmp_path / "F").exists()


def test_registry_problems_are_listed_together(tmp_path, monkeypatch, capsys):
    rc, err = run_check(
        tmp_path, monkeypatch, capsys, models=["toy", "nope"], methods=["mlp", "lasso"]
    )
    assert rc == 2 and "2 problem(s)" in err and "'nope'" in err and "'lasso'" in err


def test_paper_profile_reports_images_and_weights_in_one_message(tmp_path, monkeypatch, capsys):
    from PIL import Image

    (tmp_path / "nih" / "images_001" / "images").mkdir(parents=True)
    Image.new("L", (64, 64)).save(tmp_path / "nih" / "images_001" / "images" / "00000001_000.png")
    (tmp_path / "weights").mkdir()
    rc, err = run_check(
        tmp_path,
        monkeypatch,
        capsys,
        profile="paper",
        data__images_dir=str(tmp_path / "nih"),
        data__weights_dir=str(tmp_path / "weights"),
        data__protocols=["nih6x200-clean"],
        models=["toy"],
    )
    assert rc == 2
    assert "2 problem(s)" in err
    assert "nih6x200-clean" in err and "missing" in err  # the protocol's needed images
    assert "weights for model 'toy' not usable" in err  # and the model's weights
    assert not (tmp_path / "check" / "params.json").exists()


def test_tune_with_negative_epochs_fails_before_a_study_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    params = write_params(tmp_path, **{"train.epochs": -1})
    argv = ["tune", "--model", "toy", "--method", "linear_probe", "--params", str(params)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{params}: 1 problem(s)" in err and "'train.epochs' must be at least 1" in err
    assert "Traceback" not in err and not (tmp_path / "studies").exists()
