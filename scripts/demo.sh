#!/usr/bin/env bash
# README command 1: set up (scripts/install.sh) and run the whole pipeline on the embedded demo.
# DEMO = the real NIH metadata (from the torchxrayvision wheel), synthetic images, small random
# models: it shows the pipeline working, not NIH results.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install.sh
export PATH="$root/.venv/bin:$PATH" HF_HUB_OFFLINE=1 DVC_NO_ANALYTICS=1 MLFLOW_ENABLE_TELEMETRY=false
dvc repro "$@"
echo
echo "Demo finished (DEMO: synthetic images and small random models, not NIH results)."
if [ -f reports/gap_inference.csv ]; then
  echo "Measured in this run (* = significant after correction; the planted effect is age, not sex):"
  python -c 'from fairxray.report.cells import result_lines; print("\n".join("  " + s for s in result_lines()))'
fi
echo "  splits and leakage report: data/splits/<protocol>/manifest.json"
echo "  image caches:              data/images/<protocol>/"
[ -d reports ] && echo "  comparison report:         reports/report.html (and report.md, *.csv)"
[ -d metrics ] && echo "  metrics per run:           metrics/<model>/<method>/seed<k>/metrics.json; dvc metrics show"
[ -f mlruns/mlflow.db ] && echo "  MLflow runs:               .venv/bin/fairxray ui  (http://127.0.0.1:5000)"
exit 0
