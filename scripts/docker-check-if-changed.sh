#!/usr/bin/env bash
# CI's Docker gate: run scripts/docker-check.sh --record (a real image build and demo run: 9
# minutes on an idle 2-core machine, about 30 on a busy one, 3.5 GB of downloads; docs/docker.md)
# only when the image's build inputs differ from those of the last recorded check.
# docs/docker-check.json holds that check: its commit, its result and inputs_sha256, the hash of
# the files listed in scripts/docker-check-record.py (Dockerfile, .dockerignore,
# requirements.lock, pyproject.toml, scripts/install.sh). A hash rather than a commit range: it
# survives rebases and shallow clones.
#
# After a check in CI, commit the updated docs/docker-check.json and docs/docker.md (the job prints
# them) so the next runs skip it. FAIRXRAY_DOCKER_CHECK=always runs it regardless,
# FAIRXRAY_DOCKER_CHECK=never skips it (and says so).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

mode="${FAIRXRAY_DOCKER_CHECK:-auto}"
log() { echo "docker-check-if-changed: $*" >&2; }
if [ "$mode" = never ]; then
  log "FAIRXRAY_DOCKER_CHECK=never: the Docker image is NOT checked in this run"
  exit 0
fi
want="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("inputs_sha256", ""))' \
  docs/docker-check.json 2>/dev/null || true)"
have="$(python3 -c 'import importlib.util as u, sys
s = u.spec_from_file_location("r", sys.argv[1]); m = u.module_from_spec(s); s.loader.exec_module(m)
print(m.inputs_sha256())' scripts/docker-check-record.py)"
if [ "$mode" != always ] && [ -n "$want" ] && [ "$want" = "$have" ]; then
  log "the image's build inputs are those of the last recorded check ($(python3 -c \
    'import json; r = json.load(open("docs/docker-check.json")); print(r["date"], r["commit"][:12])')); skipping"
  exit 0
fi
log "the image's build inputs changed since the last recorded check: running scripts/docker-check.sh"
bash scripts/docker-check.sh --record
log "record updated; commit it:"
git --no-pager diff --stat -- docs/docker-check.json docs/docker.md >&2 || true
