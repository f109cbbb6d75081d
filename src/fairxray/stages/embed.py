"""Encode every image of data.protocol's splits once with one model: embeddings/<model>/."""

from __future__ import annotations

import argparse

from fairxray import paths
from fairxray.config import load_params


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fairxray embed", description=__doc__)
    ap.add_argument("--model", required=True, help="a model of the registry (params.models)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), help="overrides train.device")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    p = load_params(args.params)
    print(f"embed: model {args.model}, protocol {p.data.protocol}")
    from fairxray.adapt.store import embed

    m = embed(p, args.model, args.device)
    print(
        f"embed: {m['images_encoded']} images encoded once ({m['embed_dim']}-d, {m['device']}, "
        f"{m['seconds']:.1f} s); rows per split {m['rows_per_split']} -> {paths.embeddings(args.model)}"
    )
    return 0
