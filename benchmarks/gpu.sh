#!/usr/bin/env bash
# The GPU benchmark of issue #19 in one command: prints one JSON (benchmarks/gpu.py) and writes it
# to ${OUT:-.}/gpu.json. At most ~8 minutes of GPU time in all (install included): the
# measurements run inside what is left of FAIRXRAY_GPU_BUDGET_S (480 s) after the install, less a
# 60 s margin for the measurement in flight when the budget ends.
#
#   FAIRXRAY_COMMIT=<sha> bash benchmarks/gpu.sh            # on the GPU machine, from the repo root
#   bash benchmarks/gpu.sh --tiny                           # CPU at tiny sizes (the unit test)
#   bash benchmarks/gpu.sh --sections compile               # extra gpu.py arguments pass through
#
# Python: $PYTHON if set, else python3. When it cannot import torch with CUDA (or, with --tiny,
# torch at all) plus the benchmark's other packages, the script makes one venv
# (FAIRXRAY_GPU_VENV, default /tmp/fairxray-gpu-venv) and installs into it, once, only the
# distributions the benchmark imports (the list below) plus torch's CUDA runtime wheels, each at
# its requirements.lock pin, with --no-deps (the lock is complete). No .venv needs carrying.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export FAIRXRAY_COMMIT="${FAIRXRAY_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || true)}"

# What benchmarks/gpu.py imports (its JSON lists them under "distributions"; the unit test checks
# that list against this one), plus the families' builders (open_clip, timm, transformers).
DISTS="accelerate anyio charset-normalizer cloudpickle colorama cuda-bindings cuda-pathfinder
filelock fsspec ftfy google-auth h11 httpcore2 httpx2 huggingface-hub idna jinja2 joblib markupsafe
mpmath narwhals networkx numpy open-clip-torch packaging pandas peft pillow protobuf psutil pyarrow
pydot python-dateutil pyyaml regex rich ruamel-yaml safetensors scikit-learn scipy setuptools six
sympy threadpoolctl timm tokenizers torch torchvision tqdm transformers triton truststore
typing-extensions wcwidth"

tiny=0
for a in "$@"; do [ "$a" = "--tiny" ] && tiny=1; done
PY="${PYTHON:-python3}"
if [ "$tiny" = 1 ]; then  # the toy model needs none of the families' builders
  check='import torch, torchvision, PIL, sklearn, ruamel.yaml'
else
  check='import torch, torchvision, PIL, open_clip, timm, transformers, peft, sklearn, ruamel.yaml
import sys; sys.exit(0 if torch.cuda.is_available() else 1)'
fi

if ! "$PY" -c "$check" 2>/dev/null; then
  venv="${FAIRXRAY_GPU_VENV:-/tmp/fairxray-gpu-venv}"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
    PY="$venv/bin/python"
  else
    echo "gpu.sh: installing the benchmark's pins from requirements.lock" >&2
    pins=$("$PY" - "$DISTS" <<'PYEOF'
import re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
want = {norm(n) for n in sys.argv[1].split()}
out = []
for line in open("requirements.lock"):
    line = line.split("#")[0].strip()
    if "==" not in line:
        continue
    name = norm(line.split("==")[0].split("[")[0])
    if name in want or name.startswith(("nvidia-", "cuda-")):
        out.append(line)
        want.discard(name)
if want:
    sys.exit(f"gpu.sh: not pinned in requirements.lock: {sorted(want)}")
print(" ".join(out))
PYEOF
)
    if "$PY" -m venv "$venv" 2>/dev/null && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
      PY="$venv/bin/python"
      # shellcheck disable=SC2086
      "$PY" -m pip install --quiet --no-deps $pins
    else  # no venv module (e.g. Debian without python3-venv): a plain target folder
      # shellcheck disable=SC2086
      "$PY" -m pip install --quiet --no-deps --target "$venv/site" $pins
      export PYTHONPATH="$venv/site:$PYTHONPATH"
    fi
  fi
  "$PY" -c "$check" || { echo "gpu.sh: torch sees no CUDA device (or an import failed)" >&2; exit 1; }
fi

budget=$(( ${FAIRXRAY_GPU_BUDGET_S:-480} - ($(date +%s) - start) - 60 ))
[ "$budget" -lt 60 ] && budget=60
out="${OUT:-.}/gpu.json"
"$PY" benchmarks/gpu.py --budget-s "$budget" --out "$out" "$@"
