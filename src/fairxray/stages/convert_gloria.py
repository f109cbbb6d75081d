"""Convert GLoRIA's Lightning checkpoint (chexpert_resnet50.ckpt) into the safetensors file the registry loads."""

from __future__ import annotations

import argparse
from pathlib import Path

from fairxray.config import load_params
from fairxray.errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairxray convert-gloria", description=__doc__)
    p.add_argument("checkpoint", help="path to chexpert_resnet50.ckpt")
    p.add_argument("--params", default="params.yaml", help="read only when --out is not given")
    p.add_argument(
        "--out",
        default=None,
        help="output file (default: the file name the registry loads, in <data.weights_dir>/gloria/)",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="fall back to full unpickling (unsafe) when the safe reader cannot parse the file",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fairxray.models.convert import OUT_NAME, convert  # after parsing: torch is slow

    if args.out is not None:
        dst = Path(args.out)  # no params file needed (works outside a checkout)
    elif (weights_dir := load_params(args.params).data.weights_dir) is not None:
        dst = Path(weights_dir) / "gloria" / OUT_NAME
    else:
        raise UserError("--out not given and data.weights_dir not set: nowhere to write")
    written = convert(args.checkpoint, dst, args.trust_pickle)
    print(f"wrote {written}")
    return 0
