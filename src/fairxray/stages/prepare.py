"""NIH metadata -> patient-aware train/val/test splits of one protocol (data/splits/<protocol>/)."""

from __future__ import annotations

import argparse

from fairxray.config import load_params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fairxray prepare", description=__doc__)
    ap.add_argument(
        "--protocol",
        required=True,
        help="nih6x200-paper | nih6x200-clean | nih-official | nih-demo-official (or chexpert-*, mimic-official)",
    )
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    from fairxray.data.splits import prepare  # after parsing: --help stays instant

    p = load_params(args.params)
    m = prepare(p, args.protocol)
    leak = m["leakage"]
    print(
        f"prepare {args.protocol}: rows {m['rows']}, patients {m['patients']}; "
        f"repeated image ids {leak['repeated_image_ids']}, shared images {leak['shared_images']}, "
        f"shared patients {leak['shared_patients']}"
    )
    if m.get("shortfall_total"):
        short = [
            f"{r['label']}/{r['age_group']}/{r['sex']} -{r['shortfall']}"
            for r in m["shortfall"]
            if r["shortfall"]
        ]
        print(
            f"prepare {args.protocol}: cells short of data.per_cell (taken from train): {', '.join(short)}"
        )
    return 0
