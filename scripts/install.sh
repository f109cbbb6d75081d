#!/usr/bin/env bash
# The one way in: creates .venv/ at the repository root and installs requirements.lock into it,
# then fairxray itself (editable, no dependency resolution). CI, the README and the Dockerfile all
# call this script, so there is a single list of dependencies. Re-running is a no-op while the
# lock is unchanged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${FAIRXRAY_VENV:-$root/.venv}"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
  done
fi
[ -n "$python" ] || { echo "install.sh: no python3 found (need Python 3.11 or 3.12)" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)' ||
  { echo "install.sh: $python is $("$python" -V 2>&1); fairxray needs Python 3.11 or 3.12" >&2; exit 1; }

stamp="$venv/.fairxray-lock.sha256"
want="$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/fairxray" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "install.sh: $venv is up to date with requirements.lock"
  exit 0
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --no-cache-dir --no-deps -r requirements.lock
"${pip[@]}" install --quiet --no-cache-dir --no-deps --no-build-isolation -e .
"${pip[@]}" check
echo "$want" > "$stamp"
echo "install.sh: installed fairxray into $venv"
