"""Check NIH images, metadata, weights and GPU, then run the paper profile end to end into --out."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ENV_HELP = "default: ${}; the Docker image sets it to {}"


def _parser() -> argparse.ArgumentParser:
    from fairxray import reproduce as r

    ap = argparse.ArgumentParser(
        prog="fairxray reproduce",
        description=(
            "Check every input (NIH folder layout and the images the protocols need, the "
            "metadata checksum, each model's weights, the output folder, a CUDA GPU), report "
            "every problem in one message, then apply the paper profile in a run folder under "
            "--out and run `dvc repro` there. Rerunning on the same --out resumes."
        ),
    )
    env = os.environ.get
    ap.add_argument(
        "--images-dir",
        default=env(r.ENV_IMAGES_DIR),
        help="NIH ChestX-ray14 folder (images_NNN/images/*.png or flat); "
        + ENV_HELP.format(r.ENV_IMAGES_DIR, "/data/nih"),
    )
    ap.add_argument(
        "--weights-dir",
        default=env(r.ENV_WEIGHTS_DIR),
        help="one sub-folder per model (see `fairxray models`); "
        + ENV_HELP.format(r.ENV_WEIGHTS_DIR, "/weights"),
    )
    ap.add_argument(
        "--metadata",
        default=env(r.ENV_METADATA),
        help=f"NIH {r.METADATA_NAME}; default: the one in --images-dir if present, else the "
        "identical copy bundled in torchxrayvision",
    )
    ap.add_argument(
        "--official-lists-dir",
        help="folder with NIH's train_val_list.txt and test_list.txt (nih-official); "
        "default: --images-dir if they are there",
    )
    ap.add_argument(
        "--out",
        default=env(r.ENV_OUT),
        help="run folder: DVC outputs, mlruns/ and reports/ land here; "
        + ENV_HELP.format(r.ENV_OUT, "/out"),
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one params key after the profile (YAML value), e.g. images.workers=8",
    )
    ap.add_argument("--check-only", action="store_true", help="run the checks, report, and stop")
    ap.add_argument(
        "--allow-cpu", action="store_true", help="run without a CUDA GPU (a warning, not an error)"
    )
    ap.add_argument(
        "--load-weights",
        action="store_true",
        help="also build every model from its files on the CPU (strict keys; minutes)",
    )
    ap.add_argument("--profile", default="paper", help="profile to apply (default: paper)")
    ap.add_argument("--params", default="params.yaml", help="the project's params.yaml")
    return ap


def parse_sets(items: list[str]) -> dict:
    import yaml

    from fairxray.errors import UserError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. images.workers=8")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _resolved(value: str | None) -> Path | None:
    return Path(value).expanduser().resolve() if value else None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fairxray import reproduce as r

    project = r.project_root(Path(args.params))
    images_dir = _resolved(args.images_dir)
    weights_dir = _resolved(args.weights_dir)
    out_dir = _resolved(args.out)
    given_metadata = _resolved(args.metadata)
    given_lists = _resolved(args.official_lists_dir)
    metadata = r.find_metadata(images_dir, str(given_metadata) if given_metadata else None)
    lists_dir = r.find_official_lists(images_dir, str(given_lists) if given_lists else None)
    # The paper profile refuses to load without both folders; a missing one is reported by the
    # preflight together with everything else, so a placeholder stands in for resolving params.
    sets = {
        "data.images_dir": str(images_dir or "/nonexistent/images-dir"),
        "data.weights_dir": str(weights_dir or "/nonexistent/weights-dir"),
        "data.metadata": str(metadata) if metadata else None,
    }
    if lists_dir is not None:
        sets["data.official_lists_dir"] = str(lists_dir)
    sets.update(parse_sets(args.set))
    text, p = r.profiled_params(project, Path(args.params), args.profile, sets)

    result = r.preflight(
        p,
        out_dir,
        images_dir=images_dir,
        weights_dir=weights_dir,
        metadata=metadata,
        allow_cpu=args.allow_cpu,
        load_weights=args.load_weights,
    )
    r.require_ok(result, "reproduce")
    print("preflight: every input checked")
    for line in result.checked:
        print(f"  ok  {line}")
    for line in result.warnings:
        print(f"  warning: {line}")
    if args.check_only:
        print("--check-only: nothing run")
        return 0
    assert out_dir is not None  # the preflight reports a missing --out
    run_dir = r.prepare_run_dir(project, out_dir, text)
    commit = r.project_commit(project)
    r.write_run_record(
        run_dir,
        {
            "command": "reproduce",
            "profile": args.profile,
            "commit": commit,
            "images_dir": images_dir,
            "weights_dir": weights_dir,
            "metadata": metadata,
            "checked": result.checked,
            "warnings": result.warnings,
        },
    )
    print(f"reproduce: profile {args.profile} in {run_dir}; running dvc repro")
    rc = r.run_pipeline(run_dir, commit)
    if rc != 0:
        print(f"reproduce: dvc repro failed (exit {rc}); fix the cause and rerun to resume")
        return rc
    print("reproduce: finished")
    print("\n".join(r.summary(run_dir)))
    return 0
