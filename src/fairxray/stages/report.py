"""Every run's metrics -> the paper's two tables (Markdown, CSV, HTML), figures, paper vs here."""

from __future__ import annotations

import argparse
from pathlib import Path

from fairxray import paths
from fairxray.config import load_params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fairxray report", description=__doc__)
    ap.add_argument("--out", type=Path, default=paths.REPORTS, help="default: reports/")
    ap.add_argument("--profile", choices=("demo", "paper"), help="default: from the runs / params")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    from fairxray.report.build import build_report  # after parsing: --help stays instant
    from fairxray.report.multilabel import build_multilabel_report

    p = load_params(args.params)
    build = build_multilabel_report if p.data.task == "multilabel" else build_report
    s = build(p, args.out, profile=args.profile)
    missing = f"; {len(s['missing'])} run(s) missing" if s["missing"] else ""
    files = s.get("files") or (
        "report.md, report.html, table1_utility.*, table2_fairness.*, gap_inference.csv, "
        f"paired_comparisons.csv: {s['paired']} row(s)"
    )
    print(
        f"report: {s['runs']} run(s), {s['rows']} model x method row(s) -> {s['out']}/ ({files}){missing}"
    )
    for line in s["significant"]:
        print(f"  significant after correction: {line}")
    return 0
