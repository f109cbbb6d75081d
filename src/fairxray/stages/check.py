"""Validate params.yaml (keys, types, ranges, names; the paper profile's real inputs) before any work."""

from __future__ import annotations

import argparse

from fairxray.check import OUTPUT, check


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fairxray check", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    content = check(args.params)
    for w in content["warnings"]:
        print(f"check: warning: {w}")
    print(f"check: {args.params} is valid ({', '.join(content['checked'])}) -> {OUTPUT}")
    return 0
