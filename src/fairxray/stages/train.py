"""Train one model x method for each seed; write weights, config and val/test predictions."""

from __future__ import annotations

import argparse

from fairxray.check import require_valid
from fairxray.config import load_params


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fairxray train", description=__doc__)
    ap.add_argument("--model", required=True, help="a model of the registry (params.models)")
    ap.add_argument(
        "--method",
        required=True,
        help="zero_shot | linear_probe | mlp | lora | full_ft, or <method>+<mitigation>",
    )
    ap.add_argument("--seeds", type=int, nargs="+", help="default: params.yaml seeds")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), help="overrides train.device")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    p = load_params(args.params)
    require_valid(p)  # before a study or a model folder exists
    from fairxray.adapt.train import train

    train(p, args.model, args.method, args.seeds or list(p.seeds), args.device)
    return 0
