"""Predictions -> metrics.json, by_group.csv, plots, and each cell's cell.json (all seeds combined)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fairxray import paths
from fairxray.config import load_params
from fairxray.errors import UserError


def _say(what: str, ev) -> None:
    m, notes = ev.metrics, "".join(f"; {n.split(' (')[0]}" for n in ev.meta.get("notes", []))
    k = "accuracy" if "accuracy" in m else "auroc_macro"  # multilabel: macro AUROC
    print(
        f"evaluate {what}: {k} {m[k]:.3f} "
        f"[{m[k + '/ci_low']:.3f}, {m[k + '/ci_high']:.3f}], n {m['n/images']}, "
        f"{len(ev.warnings)} warning(s){notes}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="fairxray evaluate",
        description=__doc__,
        epilog="Either PREDICTIONS --out DIR, or --model M --method X (every seed of params.seeds).",
    )
    ap.add_argument("predictions", nargs="?", type=Path, help="one predictions parquet")
    ap.add_argument("--out", type=Path, help="output folder for PREDICTIONS")
    ap.add_argument("--model")
    ap.add_argument("--method")
    ap.add_argument("--split", default="test", help="test (default) or val")
    ap.add_argument("--profile", choices=("demo", "paper"), help="default: params.profile")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    # After parsing: --help stays instant.
    from fairxray.metrics.evaluate import evaluate_cell, evaluate_file, settings

    s = settings(p := load_params(args.params))
    profile = args.profile or p.profile
    if args.predictions is not None:
        if args.out is None or args.model or args.method:
            raise UserError("evaluate: give PREDICTIONS with --out DIR, or --model and --method")
        _say(
            f"{args.predictions} -> {args.out}",
            evaluate_file(args.predictions, args.out, s, profile),
        )
        return 0
    if not (args.model and args.method) or args.out is not None:
        raise UserError("evaluate: give PREDICTIONS with --out DIR, or --model and --method")
    if args.split not in paths.SPLITS:
        raise UserError(f"evaluate: --split must be one of {', '.join(paths.SPLITS)}")
    evs, cell = evaluate_cell(args.model, args.method, p.seeds, args.split, s, profile)
    for seed, ev in zip(p.seeds, evs, strict=True):
        _say(f"{args.model}/{args.method} seed {seed}", ev)
    _say(f"{args.model}/{args.method} cell ({cell.meta.get('n_runs', 1)} distinct run(s))", cell)
    return 0
