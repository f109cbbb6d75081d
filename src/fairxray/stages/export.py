"""Export one trained model x method to ONNX (image -> probabilities) and check parity."""

from __future__ import annotations

import argparse

from fairxray.config import load_params


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fairxray export", description=__doc__)
    ap.add_argument("--model", required=True, help="a model of the registry (params.models)")
    ap.add_argument(
        "--method", required=True, help="zero_shot | linear_probe | mlp | lora | full_ft"
    )
    ap.add_argument("--params", default="params.yaml")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fairxray.export.onnx import export  # after parsing: --help stays instant

    p = load_params(args.params)
    export(p, args.model, args.method)
    return 0
