"""Check NIH images, metadata, weights and GPU, then run the paper profile end to end into --out."""

from __future__ import annotations

import argparse
import os

ENV_HELP = "default: ${}; the Docker image sets it to {}"
DESCRIPTION = (
    "Check every input (NIH folder layout and the images the protocols need, the metadata "
    "checksum, each model's weights, the output folder, a CUDA GPU), report every problem in one "
    "message, then apply the paper profile in a run folder under --out and run `dvc repro` "
    "there. Rerunning on the same --out resumes."
)


def _parser() -> argparse.ArgumentParser:
    from fairxray.reproduce import names as r

    ap = argparse.ArgumentParser(prog="fairxray reproduce", description=DESCRIPTION)
    env = os.environ.get
    for flag, var, mount, what in (
        ("--images-dir", r.ENV_IMAGES_DIR, "/data/nih",
         "NIH ChestX-ray14 folder (images_NNN/images/*.png or flat)"),
        ("--weights-dir", r.ENV_WEIGHTS_DIR, "/weights",
         "one sub-folder per model (see `fairxray models`)"),
        ("--out", r.ENV_OUT, "/out", "run folder: DVC outputs, mlruns/ and reports/ land here"),
    ):  # fmt: skip
        ap.add_argument(flag, default=env(var), help=f"{what}; " + ENV_HELP.format(var, mount))
    ap.add_argument("--metadata", default=env(r.ENV_METADATA), help=f"NIH {r.METADATA_NAME}; "
                    "default: the one in --images-dir if present, else the identical copy "
                    "bundled in torchxrayvision")  # fmt: skip
    ap.add_argument("--official-lists-dir", help="folder with NIH's train_val_list.txt and "
                    "test_list.txt (nih-official); default: --images-dir if they are there")  # fmt: skip
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one params key after the profile (YAML value), "
                    "e.g. images.workers=8")  # fmt: skip
    ap.add_argument("--check-only", action="store_true", help="run the checks, report, and stop")
    ap.add_argument("--allow-cpu", action="store_true",
                    help="run without a CUDA GPU (a warning, not an error)")  # fmt: skip
    ap.add_argument("--load-weights", action="store_true",
                    help="also build every model from its files on the CPU (strict keys; minutes)")  # fmt: skip
    ap.add_argument("--profile", default="paper", help="profile to apply (default: paper)")
    ap.add_argument("--params", default="params.yaml", help="the project's params.yaml")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fairxray.reproduce.run import reproduce

    opts = vars(args)
    opts["sets"] = opts.pop("set")
    return reproduce(**opts)
