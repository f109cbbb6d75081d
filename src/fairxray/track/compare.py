"""``fairxray compare``: experiments x headline figures as one readable table.

Sources. ``dvc`` (default): ``dvc exp show --json``, one row per experiment (the workspace, each
commit, each ``dvc exp run``) and model x method, from its ``reports/summary.json``. ``mlflow``:
the parent runs of the tracking store, one row per DVC experiment and model x method, with the
mean over seeds and a ``*`` on a gap that was significant (corrected) in every seed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fairxray.errors import UserError
from fairxray.metrics.headline import HEADLINE, HEADLINE_ML, TITLES, TITLES_ML, gaps_for, task_of

SUMMARY = "reports/summary.json"
COLUMNS = ("experiment", "cell", *(TITLES[k] for k in HEADLINE))


def _keys(rows: list[dict]) -> tuple[str, ...]:
    """The multi-label headline when every row is a multi-label cell (no accuracy), else the
    multi-class one."""
    return HEADLINE_ML if rows and all("underdiagnosis" in r for r in rows) else HEADLINE


def _rev_rows(entry: Mapping[str, Any], label: str) -> list[dict]:
    data = entry.get("data") or {}
    files = data.get("metrics") or {}
    summary = (files.get(SUMMARY) or {}).get("data") or {}
    rows = []
    for cell, figures in summary.items():
        if isinstance(figures, Mapping):
            keys = HEADLINE_ML if task_of(figures) == "multilabel" else HEADLINE
            rows.append({"experiment": label, "cell": cell, **{k: figures.get(k) for k in keys}})
    return rows


def dvc_rows(exp_show: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Rows from the parsed output of ``dvc exp show --json``."""
    rows = []
    for base in exp_show:
        rev = str(base.get("rev", "?"))
        label = "workspace" if rev == "workspace" else (base.get("name") or rev[:7])
        rows += _rev_rows(base, label)
        for group in base.get("experiments") or []:
            for exp in group.get("revs") or []:
                name = exp.get("name") or str(exp.get("rev", "?"))[:7]
                rows += _rev_rows(exp, f"{name} (exp of {label})")
    return rows


def dvc_exp_show(repo: str | Path = ".") -> list[dict]:
    # The dvc beside this interpreter (the venv's), else the one on PATH; no analytics.
    beside = Path(sys.executable).with_name("dvc")
    cmd = [str(beside) if beside.exists() else "dvc", "exp", "show", "--json", "--no-fetch"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    try:
        res = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env)
    except OSError as exc:
        raise UserError(f"compare: cannot run dvc ({exc})") from None
    if res.returncode != 0:
        raise UserError(
            f"compare: `dvc exp show --json` failed: {(res.stderr or res.stdout).strip()}"
        )
    return json.loads(res.stdout or "[]")


def mlflow_rows(tracking_uri: str, experiment: str) -> list[dict]:
    """One row per parent run (DVC experiment x model x method) of ``experiment``."""
    from fairxray.track import headline as h
    from fairxray.track.runs import KIND, METHOD, MODEL, client

    cl = client(tracking_uri)
    exp = cl.get_experiment_by_name(experiment)
    if exp is None:
        raise UserError(f"compare: no MLflow experiment '{experiment}' in {tracking_uri}")
    runs = cl.search_runs(
        [exp.experiment_id], f"tags.`{KIND}` = 'pair'", order_by=["start_time ASC"]
    )
    rows = []
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        if h.mlflow_name("accuracy") in m:
            task = "multiclass"
        elif h.mlflow_name("auroc_macro", "multilabel") in m:
            task = "multilabel"
        else:
            continue  # tuned but never tracked
        row = {
            "experiment": t.get(h.DVC_EXPERIMENT, "?"),
            "cell": f"{t.get(MODEL)}/{t.get(METHOD)}",
        }
        for k in HEADLINE_ML if task == "multilabel" else HEADLINE:
            row[k] = m.get(h.mlflow_name(k, task))
            sig = m.get(h.mlflow_name(f"{k}/significant", task))
            if k in gaps_for(task) and sig is not None and sig >= 1.0:
                row[f"{k}/significant"] = True
        rows.append(row)
    return rows


def _cell(row: Mapping[str, Any], key: str) -> str:
    v = row.get(key)
    if v is None or not math.isfinite(float(v)):
        return "n/a"
    return f"{float(v):.3f}" + ("*" if row.get(f"{key}/significant") else "")


def table(rows: list[dict]) -> list[list[str]]:
    keys = _keys(rows)
    return [[str(r["experiment"]), str(r["cell"]), *(_cell(r, k) for k in keys)] for r in rows]


def columns(rows: list[dict]) -> tuple[str, ...]:
    keys = _keys(rows)
    titles = TITLES_ML if keys == HEADLINE_ML else TITLES
    return ("experiment", "cell", *(titles[k] for k in keys))


def render(rows: list[dict], markdown: bool = False) -> str:
    """A fixed-width terminal table, or a Markdown table with ``markdown``."""
    if not rows:
        raise UserError(f"compare: no headline figures found (run `dvc repro` so {SUMMARY} exists)")
    body, cols = table(rows), columns(rows)
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(cols)]

    def fmt(r: list[str]) -> str:
        cells = zip(r, widths, strict=True)
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([fmt(cols), fmt(["-" * w for w in widths]), *(fmt(r) for r in body)])
