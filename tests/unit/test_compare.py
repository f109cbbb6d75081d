"""`fairxray compare`: experiments x headline figures from DVC (the JSON of a real
`dvc exp show --json`, DVC 3.67, trimmed to metrics) and from MLflow parent runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fairxray.errors import UserError
from fairxray.metrics.headline import GAPS
from fairxray.track import compare as c

DATA = Path(__file__).parent / "data"


def test_dvc_rows_name_each_experiment():
    rows = c.dvc_rows(json.loads((DATA / "dvc_exp_show.json").read_text()))
    assert [(r["experiment"], r["cell"], r["accuracy"]) for r in rows] == [
        ("workspace", "toy/mlp", 0.2),
        ("master", "toy/mlp", pytest.approx(0.3)),
        ("two (exp of master)", "toy/mlp", 0.2),
    ]
    text = c.render(rows).splitlines()
    assert text[0].split()[:3] == ["experiment", "cell", "accuracy"]
    assert len(text) == 2 + 3 and "two (exp of master)" in text[4]
    assert text[4].split()[-9:] == ["0.200", "n/a", "n/a", "0.050", *["n/a"] * 5]
    md = c.render(rows, markdown=True).splitlines()
    assert md[0].startswith("| experiment | cell | accuracy | macro-F1 |") and len(md) == 5
    assert (
        md[2] == "| workspace | toy/mlp | 0.200 | n/a | n/a | 0.050 | n/a | n/a | n/a | n/a | n/a |"
    )


def test_nothing_to_compare_is_one_clear_error():
    with pytest.raises(UserError, match="no headline figures"):
        c.render(c.dvc_rows([{"rev": "workspace", "data": {"metrics": {}}}]))


def test_mlflow_rows_from_parent_runs(tmp_path):
    from fairxray.track import headline as h
    from fairxray.track.runs import KIND, METHOD, MODEL, client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cl = client(uri)
    exp = cl.create_experiment("x")
    for name, acc, sig in (("workspace", 0.5, 1.0), ("fuzzy-owl", 0.6, 0.0)):
        run = cl.create_run(
            exp, tags={KIND: "pair", MODEL: "toy", METHOD: "mlp", h.DVC_EXPERIMENT: name}
        )
        cl.log_metric(run.info.run_id, h.mlflow_name("accuracy"), acc)
        cl.log_metric(run.info.run_id, h.mlflow_name(GAPS[0]), 0.1)
        cl.log_metric(run.info.run_id, h.mlflow_name(f"{GAPS[0]}/significant"), sig)
    cl.create_run(exp, tags={KIND: "pair", MODEL: "toy", METHOD: "lora"})  # tuned, never tracked
    rows = c.mlflow_rows(uri, "x")
    assert [(r["experiment"], r["cell"], r["accuracy"]) for r in rows] == [
        ("workspace", "toy/mlp", 0.5),
        ("fuzzy-owl", "toy/mlp", 0.6),
    ]
    body = c.table(rows)
    gap = 2 + c.HEADLINE.index(GAPS[0])  # after the experiment and cell columns
    assert body[0][gap] == "0.100*" and body[1][gap] == "0.100"  # * = significant in every seed
    with pytest.raises(UserError, match="no MLflow experiment 'y'"):
        c.mlflow_rows(uri, "y")
