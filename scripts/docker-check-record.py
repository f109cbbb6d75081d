"""Record one scripts/docker-check.sh result: add the hash of the image's build inputs to the JSON
(docs/docker-check.json, what scripts/docker-check-if-changed.sh compares against) and add a row
to the table of checks in docs/docker.md.

usage: python3 scripts/docker-check-record.py RESULT.json docs/docker-check.json docs/docker.md
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the expensive layers are built from: the Dockerfile, the context filter, and everything the
# install step copies in before it runs install.sh (src/fairxray/__init__.py only carries the
# version, which pyproject.toml reads).
INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "requirements.lock",
    "pyproject.toml",
    "scripts/install.sh",
)
BEGIN, END = "<!-- docker-check:begin -->", "<!-- docker-check:end -->"
HEADER = (
    "| date (UTC) | commit | image size | base build | image build | demo run | machine download during build "
    "| machine |\n|---|---|---|---|---|---|---|---|\n"
)


def inputs_sha256(root: Path = ROOT) -> str:
    h = hashlib.sha256()
    for name in INPUTS:
        h.update(name.encode() + b"\0" + hashlib.sha256((root / name).read_bytes()).digest())
    return h.hexdigest()


def row(r: dict) -> str:
    base = "cached" if r["base_cached"] else f"{r['base_build_s']:.0f} s"
    commit = r["commit"][:12] + (" (+ uncommitted changes)" if r["dirty"] else "")
    return (
        f"| {r['date'][:16].replace('T', ' ')} | {commit} | {r['image_size_gb']:.2f} GB "
        f"| {base} | {r['image_build_s'] / 60:.1f} min | {r['demo_run_s'] / 60:.1f} min "
        f"| {r['host_rx_bytes_during_build'] / 1e9:.1f} GB | {r['cpus']} cores, "
        f"{r['storage_driver']}, dockerd {r['docker_server']} |\n"
    )


def main(argv: list[str]) -> int:
    result_path, record_path, doc_path = map(Path, argv)
    result = json.loads(result_path.read_text())
    result["inputs"] = list(INPUTS)
    result["inputs_sha256"] = inputs_sha256()
    record_path.write_text(json.dumps(result, indent=2) + "\n")
    doc = doc_path.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{doc_path}: no {BEGIN} ... {END} block for the table of checks")
    head, rest = doc.split(BEGIN, 1)
    table, tail = rest.split(END, 1)
    rows = [ln + "\n" for ln in table.strip().splitlines()[2:] if ln.startswith("|")]
    doc = head + BEGIN + "\n" + HEADER + "".join(rows) + row(result) + END + tail
    doc_path.write_text(doc)
    print(f"recorded the check in {record_path} and {doc_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
