"""Switch params.yaml to a profile (demo | demo-multilabel | paper), e.g. `fairxray profile paper --images-dir D --weights-dir W`."""

from __future__ import annotations

import argparse
from pathlib import Path

from fairxray.profiles import apply_profile, path_sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fairxray profile", description=__doc__)
    ap.add_argument("name", help="a profile in profiles/: demo, demo-multilabel or paper")
    ap.add_argument("--images-dir", help="NIH ChestX-ray14 PNG folder (sets data.images_dir)")
    ap.add_argument("--weights-dir", help="model weights folder (sets data.weights_dir)")
    ap.add_argument("--metadata", help="NIH Data_Entry_2017_v2020.csv (sets data.metadata)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    sets = path_sets(
        {
            "data.images_dir": args.images_dir,
            "data.weights_dir": args.weights_dir,
            "data.metadata": args.metadata,
        }
    )
    apply_profile(args.name, Path(args.params), sets)
    print(f"profile {args.name}: applied profiles/{args.name}.yaml to {args.params}")
    return 0
