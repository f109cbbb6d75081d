#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml's pins in a scratch venv (needs the package
# registries). Commit the result; scripts/install.sh installs exactly that file.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3.11}" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --no-cache-dir -e ".[dev]"
{
  echo "# Exact environment for fairxray (Python 3.11, x86_64). Made by scripts/lock.sh from"
  echo "# pyproject.toml's pins (versions known to work together); scripts/install.sh installs exactly this."
  echo "setuptools==$("$tmp/venv/bin/python" -c 'import setuptools; print(setuptools.__version__)')"
  "$tmp/venv/bin/pip" freeze --exclude-editable | grep -v -i '^fairxray'
} > requirements.lock
echo "lock.sh: wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
