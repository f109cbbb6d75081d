"""Run the embedded demo (NIH metadata, synthetic images, toy model) end to end into --out."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from fairxray import reproduce as r

    ap = argparse.ArgumentParser(
        prog="fairxray demo",
        description=(
            "Apply the demo profile in a run folder under --out and run `dvc repro` there: no "
            "NIH images, weights or GPU needed. Rerunning on the same --out resumes."
        ),
    )
    ap.add_argument(
        "--out",
        default=os.environ.get(r.ENV_OUT),
        help=f"run folder; default: ${r.ENV_OUT} (the Docker image sets /out)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one params key after the profile (YAML value)",
    )
    ap.add_argument("--params", default="params.yaml", help="the project's params.yaml")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fairxray import DEMO_BANNER
    from fairxray import reproduce as r
    from fairxray.errors import UserError
    from fairxray.stages.reproduce import parse_sets

    if not args.out:
        raise UserError(f"--out: not given (or set ${r.ENV_OUT})")
    project = r.project_root(Path(args.params))
    out_dir = Path(args.out).expanduser().resolve()
    text, _ = r.profiled_params(project, Path(args.params), "demo", parse_sets(args.set))
    r.require_ok(r.check_out(out_dir), "demo")
    run_dir = r.prepare_run_dir(project, out_dir, text)
    commit = r.project_commit(project)
    r.write_run_record(run_dir, {"command": "demo", "profile": "demo", "commit": commit})
    print(f"demo: {DEMO_BANNER}; running dvc repro in {run_dir}")
    rc = r.run_pipeline(run_dir, commit)
    if rc != 0:
        print(f"demo: dvc repro failed (exit {rc}); rerun to resume")
        return rc
    print(f"demo finished ({DEMO_BANNER})")
    print("\n".join(r.summary(run_dir)))
    return 0
