"""Decode (or, in the demo, synthesise) every image of a protocol once into a uint8 cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fairxray import paths
from fairxray.config import load_params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fairxray images", description=__doc__)
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    from fairxray.data.images import build_cache  # after parsing: --help stays instant
    from fairxray.data.nih import age_group_labels
    from fairxray.data.splits import load_splits

    p = load_params(args.params)
    splits = load_splits(args.protocol, drop_skipped=False)
    images_dir = None if p.data.images_dir is None else Path(p.data.images_dir)
    manifest = build_cache(
        splits,
        paths.images(args.protocol),
        paths.images_partial(args.protocol),
        p.images,
        images_dir,
        n_classes=len(p.data.classes),
        age_groups=age_group_labels(p.data.age_bins),
        progress=sys.stderr.isatty(),
    )
    kinds = {"synthetic": "DEMO synthetic", "nih": "NIH", "files": "image-file"}
    kind = kinds.get(manifest["source"], manifest["source"])
    print(
        f"images {args.protocol}: {manifest['images']} {kind} images at {manifest['size']} px "
        f"-> {paths.images(args.protocol)}"
    )
    for s in manifest["skipped"]:
        print(f"images {args.protocol}: skipped {s['image_id']}: {s['reason']}", file=sys.stderr)
    for w in manifest["warnings"]:
        print(f"images {args.protocol}: warning: {w['image_id']}: {w['reason']}", file=sys.stderr)
    return 0
