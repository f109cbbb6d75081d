#!/usr/bin/env bash
# README command 2: set up (scripts/install.sh) and run the checks: ruff, hadolint on the
# Dockerfile, and pytest including the slow end-to-end `dvc repro` smoke tests (GPU tests skip
# without CUDA; the heavy tests run with `scripts/test.sh -m heavy`, as .ci/run does after this).
# `scripts/test.sh -m "not slow"` runs the fast unit tests only; other pytest arguments keep the
# "not gpu and not heavy" default.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install.sh
export PATH="$root/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DVC_NO_ANALYTICS=1 \
  MLFLOW_ENABLE_TELEMETRY=false PYTHONDONTWRITEBYTECODE=1

# Headless Chromium renders the HTML report and the MLflow UI in tests. CI installs it; elsewhere
# those tests skip and say why.
if [ "${CI:-}" = "true" ] && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ||
    echo "test.sh: could not install chromium; browser tests will skip" >&2
fi

ruff check src tests benchmarks
[ -f Dockerfile ] && hadolint Dockerfile
# The default marker selection is "not gpu and not heavy" (slow tests, the dvc repro smoke tests
# included), also when other pytest arguments are given; an explicit -m replaces it
# (`scripts/test.sh -m heavy` runs the heavy tests, as .ci/run does after the default suite).
has_marker=false
for arg in "$@"; do
  case "$arg" in -m | -m*) has_marker=true ;; esac
done
if [ "$has_marker" = false ]; then set -- -m "not gpu and not heavy" "$@"; fi
# Both cores: one pytest worker per core, each test file kept on one worker (module fixtures such
# as the smoke test's demo run are built once). FAIRXRAY_TEST_WORKERS=0 runs in one process.
workers="${FAIRXRAY_TEST_WORKERS:-2}"
if [ "$workers" != 0 ]; then set -- -n "$workers" --dist loadfile "$@"; fi
python -m pytest "$@"
