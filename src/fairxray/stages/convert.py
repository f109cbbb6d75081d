"""Convert a pickled weights file (a state dict, plain or wrapped, or a TorchScript archive) into
safetensors with the tensors-only reader; loaders read <stem>.safetensors in place of the pickle."""

from __future__ import annotations

import argparse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fairxray convert", description=__doc__)
    p.add_argument("weights", help="e.g. <weights_dir>/medclip-vit/pytorch_model.bin")
    p.add_argument("--out", default=None, help="output file (default <stem>.safetensors beside it)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fairxray.models.convert import convert_state_file  # after parsing: torch is slow

    written, n = convert_state_file(args.weights, args.out)
    print(f"wrote {written} ({n} tensors)")
    return 0
