#!/usr/bin/env bash
# Build the book's offline website into _build/html (open _build/html/index.html, or serve it with
# `python -m http.server -d _build/html`). No Quarto, no CDN: the only network use is a one-time
# `npm install mathjax@3` from the npm registry into a cache folder.
#
# usage: tools/build_docs.sh [OUTDIR]        (default OUTDIR: _build/html)
#   env: LLMBOOK_DOCS_CACHE  where npm's MathJax is cached (default ~/.cache/llmbook/docs)
#        SPHINXOPTS          extra sphinx-build options, e.g. "-E" to rebuild every page
#
# Steps: 1. nbdev's notebook processing (its proc_nbs pipeline, run from Python: `nbdev-proc-nbs` would try to
#        install Quarto) -> _build/proc/  2. adapt that for MyST-NB, add the docs/ pages -> _build/src/
#        (both in docs/prepare.py)  3. MathJax 3 -> _build/mathjax_static/mathjax/  4. sphinx-build -c docs _build/src OUTDIR
#        5. fail on any Sphinx ERROR, autodoc import failure, or a remote <script>/<link> in the output.
# Incremental and idempotent: a second run with nothing changed re-renders nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${1:-_build/html}
t0=$(date +%s.%N)

py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python
MATHJAX_VERSION=3.2.2
# sha256 of es5/tex-mml-chtml.js in npm mathjax@3.2.2 (checked after every install)
MATHJAX_SHA256=300480069078b5892d2363a2b65e2dfbbf30fe5c80f83edbfecf4610fd093862
cache=${LLMBOOK_DOCS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmbook/docs}
mkdir -p _build
if command -v flock >/dev/null; then exec 9>_build/.build_docs.lock; flock 9; fi   # one build at a time

# 1+2. nbdev's notebook processing (nbs/ -> _build/proc/, no Quarto, no notebook code executed) and staging for
#      MyST-NB (-> _build/src/); see docs/prepare.py
echo "== nbdev processing + staging for Sphinx"
"$py" docs/prepare.py --nbs nbs --proc _build/proc --out _build/src

# 3. local MathJax 3 (npm registry, cached; no CDN)
mj_pkg="$cache/mathjax-$MATHJAX_VERSION/node_modules/mathjax"
if [ ! -f "$mj_pkg/es5/tex-mml-chtml.js" ]; then
  command -v npm >/dev/null || { echo "ERROR: npm is needed once to fetch MathJax (apt-get install npm)"; exit 1; }
  echo "== npm: installing mathjax@$MATHJAX_VERSION into $cache"
  mkdir -p "$cache/mathjax-$MATHJAX_VERSION"
  npm install --prefix "$cache/mathjax-$MATHJAX_VERSION" --no-audit --no-fund --ignore-scripts --no-save \
      --no-package-lock --loglevel=error "mathjax@$MATHJAX_VERSION" >/dev/null
fi
got=$(sha256sum "$mj_pkg/es5/tex-mml-chtml.js" | cut -d' ' -f1)
if [ "$got" != "$MATHJAX_SHA256" ]; then
  echo "ERROR: $mj_pkg/es5/tex-mml-chtml.js has sha256 $got, expected $MATHJAX_SHA256 (mathjax@$MATHJAX_VERSION)."
  echo "       Delete $cache/mathjax-$MATHJAX_VERSION and run this script again to re-fetch it."
  exit 1
fi
mj_static=_build/mathjax_static/mathjax
if [ "$(cat "$mj_static/.version" 2>/dev/null)" != "$MATHJAX_VERSION" ]; then
  rm -rf "$mj_static"; mkdir -p "$mj_static/output"
  # the CommonHTML bundle plus what it loads on demand: TeX extensions, fonts, menu, accessibility (~9 MB)
  cp -r "$mj_pkg/es5/tex-mml-chtml.js" "$mj_pkg/es5/input" "$mj_pkg/es5/ui" "$mj_pkg/es5/a11y" \
        "$mj_pkg/es5/adaptors" "$mj_pkg/es5/sre" "$mj_static/"
  cp -r "$mj_pkg/es5/output/chtml" "$mj_pkg/es5/output/chtml.js" "$mj_static/output/"
  cp "$mj_pkg/LICENSE" "$mj_static/LICENSE"
  echo "$MATHJAX_VERSION" > "$mj_static/.version"
fi

# 4. Sphinx (warnings are printed and kept in _build/sphinx-warnings.log; missing chapter links are warnings)
echo "== sphinx-build -> $out"
log=_build/sphinx-warnings.log
# shellcheck disable=SC2086
LLMBOOK_MATHJAX_STATIC="$root/_build/mathjax_static" \
  "$py" -m sphinx -b html -q -c docs -w "$log" ${SPHINXOPTS:-} _build/src "$out"

# 5. fail loudly
# (warnings are listed only for pages re-read in this run; `SPHINXOPTS=-E` re-reads all of them)
nwarn=$(grep -cE '(^|: )WARNING:' "$log" || true)
errors='(^|: )(ERROR|CRITICAL|SEVERE):|[Ff]ailed to import'
if grep -E "$errors" "$log" >/dev/null; then
  echo "FAILED: Sphinx reported errors (full log: $log):"
  grep -E -A3 "$errors" "$log" | head -60
  exit 1
fi
remote=$(grep -rlE '<script[^>]+src="(https?:)?//|<link[^>]+href="(https?:)?//[^"]*"[^>]*rel="(stylesheet|preload|modulepreload)"|<link[^>]+rel="(stylesheet|preload|modulepreload)"[^>]+href="(https?:)?//' \
         --include='*.html' "$out" || true)
if [ -n "$remote" ]; then
  echo "FAILED: pages load scripts or stylesheets from the network:"; echo "$remote" | head; exit 1
fi
[ -f "$out/_static/mathjax/tex-mml-chtml.js" ] || { echo "FAILED: $out/_static/mathjax/ is missing"; exit 1; }
date -u +%FT%TZ > "$out/.llmbook-build-stamp"
printf '== site built in %s s: %s/index.html (%s pages, %s warnings, see %s)\n' \
  "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')" "$out" "$(find "$out" -name '*.html' | wc -l)" "$nwarn" "$log"
