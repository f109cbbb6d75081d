"""Run the embedded demo (NIH metadata, synthetic images, toy model) end to end into --out."""

from __future__ import annotations

import argparse
import os


def _parser() -> argparse.ArgumentParser:
    from fairxray.reproduce.names import ENV_OUT

    ap = argparse.ArgumentParser(
        prog="fairxray demo",
        description=(
            "Apply the demo profile in a run folder under --out and run `dvc repro` there: no "
            "NIH images, weights or GPU needed. Rerunning on the same --out resumes."
        ),
    )
    ap.add_argument(
        "--out",
        default=os.environ.get(ENV_OUT),
        help=f"run folder; default: ${ENV_OUT} (the Docker image sets /out)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one params key after the profile (YAML value)",
    )
    ap.add_argument(
        "--profile",
        default="demo",
        help="demo profile to apply: demo (default) or demo-multilabel (profiles/)",
    )
    ap.add_argument("--params", default="params.yaml", help="the project's params.yaml")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fairxray.reproduce.run import demo

    return demo(args.params, args.out, args.set, profile=args.profile)
