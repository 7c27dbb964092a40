#!/usr/bin/env bash
# Execute notebooks in place (storing their outputs), then nbdev-clean and nbdev-export.
# Uses the same environment as the nbval run in conftest.py, so stored outputs are what CI reproduces.
# usage: tools/execute_notebooks.sh nbs/03_losses.ipynb [more.ipynb ...]     (default: every notebook)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(dirname "$(command -v python)")"; [ -x .venv/bin/python ] && bin=.venv/bin
export TQDM_DISABLE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 \
       TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0 \
       PYTHONWARNINGS="${PYTHONWARNINGS:-ignore:IProgress not found}"
nbs=("$@"); [ ${#nbs[@]} -gt 0 ] || nbs=(nbs/*.ipynb)
"$bin/nbdev-export"
for nb in "${nbs[@]}"; do
  echo "== executing $nb"
  log=$(mktemp)
  if ! "$bin/jupyter" nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=${LLMBOOK_CELL_TIMEOUT:-900} "$nb" >"$log" 2>&1
  then grep -v 'Kernel is running over TCP' "$log" | tail -40; echo "FAILED: $nb"; rm -f "$log"; exit 1; fi
  rm -f "$log"
done
for nb in "${nbs[@]}"; do "$bin/nbdev-clean" --fname "$nb"; done
"$bin/nbdev-export"
