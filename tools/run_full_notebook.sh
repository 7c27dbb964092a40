#!/usr/bin/env bash
# Execute chapter notebooks in the `full` profile WITHOUT changing them: each executed copy goes to
# ${LLMBOOK_FULL_OUT:-/tmp/llmbook-full}/<name>.ipynb; the chapters themselves store their headline numbers in
# results/<name>.json (config.write_results), which every profile then shows. Same environment as
# tools/execute_notebooks.sh and the nbval run. Afterwards, re-execute the fast notebooks so they show the record:
#   tools/execute_notebooks.sh nbs/08_challenges.ipynb
# usage: tools/run_full_notebook.sh nbs/08_challenges.ipynb [nbs/09_faq.ipynb ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(dirname "$(command -v python)")"; [ -x .venv/bin/python ] && bin=.venv/bin
export TQDM_DISABLE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 \
       TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0 LLMBOOK_PROFILE=full
[ $# -gt 0 ] || { echo "usage: $0 nbs/NOTEBOOK.ipynb [...]" >&2; exit 2; }
out="${LLMBOOK_FULL_OUT:-/tmp/llmbook-full}"; mkdir -p "$out"
"$bin/nbdev-export"
# the chapters' write_results refuses a tree with uncommitted changes: find out now, not after an hour of running
"$bin/python" - <<'PY' || exit 1
import sys
from llmbook.config import RecordError, require_clean
try:
    require_clean()
except RecordError as e:
    sys.exit(f"run_full_notebook: {e}")
PY
for nb in "$@"; do
  echo "== $(date -u +%H:%M:%S) executing $nb (full profile) -> $out/$(basename "$nb")"
  start=$(date +%s)
  "$bin/jupyter" nbconvert --to notebook --execute --output-dir "$out" \
    --ExecutePreprocessor.timeout=${LLMBOOK_CELL_TIMEOUT:-7200} "$nb"
  echo "== done in $(( $(date +%s) - start )) s"
done
