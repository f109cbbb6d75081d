"""List every registered model: family, weights source and licence, and whether its weights are present and valid."""

from __future__ import annotations

import argparse
import json

from fairxray.config import load_params


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairxray models", description=__doc__)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--weights-dir", default=None, help="overrides data.weights_dir")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fairxray.models.inventory import inventory

    p = load_params(args.params)
    weights_dir = args.weights_dir if args.weights_dir is not None else p.data.weights_dir
    rows = inventory(weights_dir)
    if args.json:
        print(json.dumps({"weights_dir": weights_dir, "models": rows}, indent=2))
        return 0
    print(f"weights_dir: {weights_dir or '(not set: random init only)'}")
    for r in rows:
        state = "valid" if r["valid"] else ("present" if r["present"] else "missing")
        print(
            f"{r['name']:<15} {r['family']:<16} {state:<8} dim {r['embed_dim']:<4} {r['license']}"
        )
        print(f"{'':<15} source: {r['source']}")
        for prob in r["problems"]:
            print(f"{'':<15} ! {prob}")
    return 0
