"""Experiments (DVC revisions or MLflow runs) x headline figures as one table (--md: Markdown)."""

from __future__ import annotations

import argparse

from fairxray.config import load_params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fairxray compare", description=__doc__)
    ap.add_argument(
        "--source",
        choices=("dvc", "mlflow"),
        default="dvc",
        help="dvc: `dvc exp show` over reports/summary.json (default); mlflow: the parent runs",
    )
    ap.add_argument("--md", action="store_true", help="print a Markdown table")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default mlflow.tracking_uri)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    from fairxray.track import compare as c

    if args.source == "dvc":
        rows = c.dvc_rows(c.dvc_exp_show())
    else:
        p = load_params(args.params)
        rows = c.mlflow_rows(args.tracking_uri or p.mlflow.tracking_uri, p.mlflow.experiment)
    print(c.render(rows, markdown=args.md))
    return 0
