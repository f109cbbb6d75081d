"""List every registered model: family, expected weight files, source and licence, and whether its weights are present and verified."""

from __future__ import annotations

import argparse
import json


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairxray models", description=__doc__)
    p.add_argument("--params", default=None, help="params file for data.weights_dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--weights-dir", default=None, help="overrides data.weights_dir")
    p.add_argument(
        "--pin",
        nargs="*",
        metavar="MODEL",
        default=None,
        help="record the sha256 of the files present (all models, or those named) in "
        "<weights_dir>/<model>/fairxray-sha256.json; later runs verify against it",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fairxray.models.inventory import format_inventory, inventory, params_weights_dir, pin

    weights_dir = args.weights_dir or params_weights_dir(args.params)
    if args.pin is not None:
        for path in pin(weights_dir, args.pin):
            print(f"pinned {path}")
    rows = inventory(weights_dir)
    if args.json:
        print(json.dumps({"weights_dir": weights_dir, "models": rows}, indent=2))
    else:
        print(format_inventory(weights_dir, rows))
    return 0
