"""The predictions contract and `fairxray evaluate` (both forms) on generated fixture tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fairxray import DEMO_BANNER, cli, paths
from fairxray.config import PAPER_CLASSES
from fairxray.errors import UserError
from fairxray.metrics.evaluate import Settings, evaluate_frame
from fairxray.metrics.predictions import prob_columns, validate_predictions

SENSITIVE = ("age_group", "sex")


def predictions(n_per_cell=10, seed=0, signal=1.5) -> pd.DataFrame:
    """A table shaped like the NIH 6x200 test split: 6 classes x 2 age groups x 2 sexes x n."""
    rng = np.random.default_rng(seed)
    cells = [(c, a, s) for c in range(6) for a in ("0-59", "60-99") for s in ("M", "F")]
    rows = [cell for cell in cells for _ in range(n_per_cell)]
    y = np.array([r[0] for r in rows])
    logits = rng.normal(size=(len(y), 6)) + signal * np.eye(6)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    df = pd.DataFrame(
        {
            "image_id": [f"{i:08d}_000.png" for i in range(len(y))],
            "patient_id": [f"{i // 2:08d}" for i in range(len(y))],  # two images per patient
            "label_idx": y.astype(np.int64),
        }
    )
    for c, col in enumerate(prob_columns(PAPER_CLASSES)):
        df[col] = prob[:, c]
    df["age_group"] = [r[1] for r in rows]
    df["sex"] = [r[2] for r in rows]
    # Patients' two images share the attributes: rows 2i and 2i+1 are in the same cell.
    return df


def params_file(tmp: Path, **changes) -> Path:
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    raw["metrics"]["n_perm"] = 20  # the nulls are tested in test_inference.py; keep these fast
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split(".")
        for k in parents:
            node = node[k]
        node[last] = value
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def required_keys(classes=PAPER_CLASSES, attrs=SENSITIVE) -> list[str]:
    keys = ["accuracy", "macro_f1", "balanced_accuracy", "auroc_macro", "var_f1"]
    keys += [f"f1/{c}" for c in classes]
    for a in attrs:
        keys += [f"f1_gap/{a}/paper", f"f1_gap/{a}/standard", f"eq_odds/{a}/paper"]
        keys += [f"eq_odds/{a}/worst_case_max", f"eq_odds/{a}/worst_case_mean"]
        keys += [f"ece_gap/{a}/binned", f"ece_gap/{a}/paper"]
    return keys


# ---- contract ------------------------------------------------------------------------------


def test_valid_table_passes():
    df = predictions()
    assert validate_predictions(df, PAPER_CLASSES, SENSITIVE, "x.parquet") is df


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.drop(columns="prob_Edema"), "x.parquet: missing column 'prob_Edema'"),
        (lambda d: d.drop(columns="sex"), "x.parquet: missing column 'sex'"),
        (lambda d: d.assign(prob_Edema=d["prob_Edema"] * 0.5), "prob_* columns sum to"),
        (
            lambda d: d.assign(prob_Edema=np.where(d.index == 3, np.nan, d["prob_Edema"])),
            "row 3 (image_id 00000003_000.png): column 'prob_Edema' is nan",
        ),
        (lambda d: d.assign(label_idx=d["label_idx"] + 1), "label_idx 6 outside 0..5"),
        (
            lambda d: d.assign(sex=d["sex"].where(d.index != 5, None)),
            "row 5 (image_id 00000005_000.png): column 'sex' is empty",
        ),
        (lambda d: d.assign(prob_Other=0.0), "column 'prob_Other' is not a class"),
        (lambda d: d.iloc[:0], "no rows"),
    ],
)
def test_contract_violations_are_one_line_errors(change, message):
    with pytest.raises(UserError) as err:
        validate_predictions(change(predictions()), PAPER_CLASSES, SENSITIVE, "x.parquet")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_logits_are_rejected():
    df = predictions()
    cols = prob_columns(PAPER_CLASSES)
    df[cols] = np.log(df[cols].to_numpy())
    with pytest.raises(UserError, match="not a probability"):
        validate_predictions(df, PAPER_CLASSES, SENSITIVE, "x.parquet")


# ---- evaluate ------------------------------------------------------------------------------


def _strict_json(path: Path) -> dict:
    def reject(token):
        raise AssertionError(f"{path}: non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def test_cli_file_form_writes_every_key(tmp_path):
    pred = tmp_path / "test.parquet"
    predictions().to_parquet(pred)
    out = tmp_path / "out"
    rc = cli.main(
        ["evaluate", str(pred), "--out", str(out), "--params", str(params_file(tmp_path))]
    )
    assert rc == 0
    m = _strict_json(out / "metrics.json")
    for k in required_keys():
        assert k in m and f"{k}/ci_low" in m and f"{k}/ci_high" in m, k
        assert isinstance(m[k], float), k  # defined on balanced data: never null here
    assert m["n/images"] == 240 and m["n/patients"] == 120
    assert (
        m["n/age_group/0-59"] == 120 and m["n/sex/F"] == 120 and m["n/age_group&sex/60-99&M"] == 60
    )
    assert all(isinstance(v, int | float) or v is None for v in m.values())  # dvc metrics show
    meta = _strict_json(out / "evaluation.json")
    assert meta["label"] == DEMO_BANNER and meta["n_boot"] == 200
    bg = pd.read_csv(out / "by_group.csv")
    assert list(bg.columns) == [
        "label",
        "metric",
        "attribute",
        "group",
        "value",
        "ci_low",
        "ci_high",
        "n",
        "n_patients",
    ]
    assert (bg["label"] == DEMO_BANNER).all()
    assert set(bg["attribute"]) == {"age_group", "sex", "age_group&sex"}
    assert (bg.loc[bg["attribute"] == "age_group&sex", "n"] == 60).all()
    for png in ("group_f1.png", "reliability.png", "confusion.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".out*")), "temporary folders left behind"


def test_cli_model_form_loops_over_seeds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = params_file(tmp_path, seeds=[1, 2], **{"metrics.n_boot": 20})
    for seed in (1, 2):
        f = paths.prediction_file("toy", "mlp", seed, "test")
        f.parent.mkdir(parents=True)
        predictions(seed=seed).to_parquet(f)
    assert cli.main(["evaluate", "--model", "toy", "--method", "mlp", "--params", str(params)]) == 0
    a = _strict_json(paths.metrics_dir("toy", "mlp", 1) / "metrics.json")
    b = _strict_json(paths.metrics_dir("toy", "mlp", 2) / "metrics.json")
    assert a["accuracy"] != b["accuracy"]  # each seed's own predictions
    # Re-running replaces the folder atomically (no leftovers) and gives the same numbers.
    assert cli.main(["evaluate", "--model", "toy", "--method", "mlp", "--params", str(params)]) == 0
    assert _strict_json(paths.metrics_dir("toy", "mlp", 1) / "metrics.json") == a
    assert sorted(p.name for p in paths.metrics("toy", "mlp").iterdir()) == [
        "cell.json",
        "cell_by_group.csv",
        "cell_evaluation.json",
        "replicates.npz",
        "seed1",
        "seed2",
    ]
    cell = _strict_json(paths.metrics("toy", "mlp") / "cell.json")
    assert cell["n_seeds"] == 2 and cell["n_runs"] == 2
    # The cell's point estimate is the mean of the seeds'; its spread is reported beside it.
    assert cell["accuracy"] == pytest.approx((a["accuracy"] + b["accuracy"]) / 2)
    assert cell["seed_sd/accuracy"] == pytest.approx(abs(a["accuracy"] - b["accuracy"]) / 2**0.5)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    pred = tmp_path / "bad.parquet"
    df = predictions()
    df["prob_Edema"] = df["prob_Edema"] * 0.5
    df.to_parquet(pred)
    params = str(params_file(tmp_path))
    assert cli.main(["evaluate", str(pred), "--out", str(tmp_path / "o"), "--params", params]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fairxray evaluate: error: {pred}: row 0") and "\n" not in err
    assert not (tmp_path / "o").exists()
    assert cli.main(["evaluate", "--params", params]) == 2


def test_empty_and_small_groups_give_null_and_warnings_not_a_crash(tmp_path):
    df = predictions(n_per_cell=3)
    # A third configured age bin without images, and old women lacking Edema.
    s = Settings(
        classes=PAPER_CLASSES,
        sensitive=SENSITIVE,
        n_boot=20,
        min_group_size=5,
        levels={"age_group": ["0-59", "60-99", "100-119"]},
    )
    drop = (df["age_group"] == "60-99") & (df["sex"] == "F") & (df["label_idx"] == 3)
    ev = evaluate_frame(df[~drop].reset_index(drop=True), s)
    m = ev.metrics
    assert math.isnan(m["f1_gap/age_group/paper"])  # three levels
    assert math.isnan(m["f1_gap/age_group/standard"])  # empty group
    assert m["n/age_group/100-119"] == 0
    # F1_delta(sex) averages over the age subgroups, one of which is empty: undefined as well.
    assert math.isnan(m["f1_gap/sex/paper"])
    assert math.isfinite(m["accuracy"]) and math.isfinite(m["eq_odds/sex/paper"])
    assert any("100-119: 0 images" in w for w in ev.warnings)
    assert any("exactly two groups" in w for w in ev.warnings)
    row = ev.by_group.query("metric == 'macro_f1' and group == '60-99&F'")
    assert row["value"].isna().all() and (row["n"] == 15).all()
