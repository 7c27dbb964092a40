#!/usr/bin/env bash
# One-command set-up on a fresh machine (Debian/Ubuntu, CPU): system packages, a venv with the CPU torch wheel,
# the library with its notebook/test/docs tools, and the pinned offline models and data. Safe to run again.
#
#   tools/setup.sh                 everything
#   LLMBOOK_SKIP_APT=1 tools/setup.sh   skip the system packages (website test and translation demo need them)
#
# System packages: chromium (the website's browser test), npm (fetches MathJax once for the offline website),
# sword-text-web + sword-text-sparv (English/Spanish Bible texts for the translation demo).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${LLMBOOK_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  for p in sword-text-web sword-text-sparv; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "== system packages: ${missing[*]}"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

echo "== python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first and pinned: on a CPU machine this takes the local CPU wheel instead of a multi-GB CUDA build
.venv/bin/pip install -q torch==2.13.0 -e ".[dev,docs]"

echo "== pinned offline models and data (checked by sha256)"
.venv/bin/llmbook resources fetch >/dev/null
echo "done: .venv/bin/llmbook finetune  |  .venv/bin/pytest  |  tools/build_docs.sh"
