"""Sphinx configuration of llmbook's offline website.

Build it with `tools/build_docs.sh` (not with sphinx-build directly): that script runs nbdev's notebook processing
(without Quarto), stages the processed notebooks plus the pages in this folder under `_build/src/` (see
`docs/prepare.py`), fetches MathJax 3 from npm once, and runs `sphinx-build -c docs _build/src _build/html`.

Nothing on the built site loads from the network: notebooks keep their stored outputs (no execution), MathJax is a
local copy under `_static/mathjax/`, search is Sphinx's own JavaScript index (Chinese segmented with jieba, see
below), and the ipywidgets loader (a CDN script) is switched off.
"""

import ast
import json
import logging
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # autodoc documents the checkout's llmbook/, not some other installed copy
import llmbook

project = "llmbook"
author = "llmbook authors"
copyright = "llmbook authors, Apache-2.0"
release = version = llmbook.__version__

extensions = [
    "myst_nb",  # .ipynb and .md sources (MyST markdown)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",  # highlighted library source beside the API reference (offline)
]

# ---- notebooks (MyST-NB) --------------------------------------------------------------------------------------
nb_execution_mode = "off"  # notebooks carry their outputs; the site never runs code
nb_render_markdown_format = "myst"  # text/markdown outputs (nbdev show_doc) parsed as MyST, so `$..$` typesets
nb_merge_streams = True  # one block per cell for stdout/stderr written in pieces
nb_ipywidgets_js = {}  # default loads require.js and the widget manager from CDNs: never
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3  # `[x](00_config.ipynb#some-heading)` links resolve
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}  # .rst first: autosummary stubs
exclude_patterns = ["**.ipynb_checkpoints", "_quarto.yml", "nbdev.yml", "sidebar.yml"]
root_doc = "index"

# ---- math: a local MathJax 3 (tools/build_docs.sh copies npm `mathjax@3` to <stage>/../mathjax_static/mathjax) --
# A relative mathjax_path is resolved against _static/; Sphinx 9's default is a CDN URL.
mathjax_path = "mathjax/tex-mml-chtml.js"
_mathjax_static = os.environ.get("LLMBOOK_MATHJAX_STATIC", str(ROOT / "_build" / "mathjax_static"))
if not (Path(_mathjax_static) / "mathjax" / "tex-mml-chtml.js").is_file():
    raise RuntimeError(
        f"local MathJax not found under {_mathjax_static}/mathjax; build the site with "
        "tools/build_docs.sh, which installs npm mathjax@3 and copies it there."
    )

# ---- API reference, generated from the docstrings ---------------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False  # a module's public API is its nbdev-generated __all__
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
default_role = "code"  # docstrings are written markdown-style: `x` means code, not italics
templates_path = [str(DOCS / "_templates")]

# ---- HTML -------------------------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "llmbook"
html_logo = str(DOCS / "_static" / "logo.png")
html_static_path = [str(DOCS / "_static"), _mathjax_static]
html_css_files = ["llmbook.css"]
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,  # downloads the page's .ipynb from this site, no network
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "navigation_with_keys": False,
}
html_copy_source = True

# ---- search: Chinese as well as English ------------------------------------------------------------------------
# The glossary and the map of the Chinese source hold Chinese terms, also inside running Chinese text and compounds
# ("迁移学习与微调"). Sphinx's English indexer splits only on non-word characters, so such a run is one token and a
# search for 微调 misses it. The zh indexer segments Chinese with jieba (`cut_for_search`: words and their
# sub-words) and indexes Latin words with the English stemmer and stop words, so English search works as before.
# `html_search_language` switches only the search index: `language`, and with it the theme's labels, stays English.
# jieba's user dictionary gets the glossary's Chinese terms, so that 迁移学习 or 注意力机制 are words of their own.
try:
    import jieba
except ImportError:
    raise RuntimeError(
        "Chinese site search needs jieba (in the docs extra): pip install -e '.[docs]' or pip install jieba"
    ) from None
jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict" chatter in the build log


def _glossary_terms(nb_path: Path) -> list[str]:
    "The Chinese terms of the glossary notebook (its `GLOSSARY = {...}` literal), split at non-CJK characters."
    if not nb_path.is_file():
        return []
    for cell in json.loads(nb_path.read_text(encoding="utf-8"))["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] != "code" or "GLOSSARY = {" not in src:
            continue
        for node in ast.parse(src).body:
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "GLOSSARY":
                groups = ast.literal_eval(node.value)
                runs = (re.findall(r"[\u4e00-\u9fff]{2,}", zh) for rows in groups.values() for zh, *_ in rows)
                return sorted({r for rs in runs for r in rs})
    return []


_userdict = ROOT / "_build" / "jieba_userdict.txt"
_userdict.parent.mkdir(parents=True, exist_ok=True)
_words = "".join(w + "\n" for w in _glossary_terms(ROOT / "nbs" / "11_glossary.ipynb"))
if not _userdict.is_file() or _userdict.read_text(encoding="utf-8") != _words:
    _userdict.write_text(_words, encoding="utf-8")
html_search_language = "zh"
html_search_options = {"dict": str(_userdict)}


# Sphinx 9.0 writes `window.Stemmer = ChineseStemmer;` into language_data.js for zh, but zh uses the English stemmer
# (the JS defines EnglishStemmer only), so every search dies with "ReferenceError: ChineseStemmer is not defined"
# (sphinx-doc/sphinx#14229; fixed upstream by deriving the class name from the stemmer file, #14416). The JS class
# name is built from `language_name`: a subclass that names the stemmer it really ships fixes it on every version.
def _fix_zh_stemmer_name():
    from sphinx.search import languages
    from sphinx.search.zh import SearchChinese

    class SearchChineseEnglishStemmer(SearchChinese):
        language_name = "English"  # used for the JS stemmer class name (and a log line), nothing else

    languages["zh"] = SearchChineseEnglishStemmer


_fix_zh_stemmer_name()
html_show_sourcelink = False
html_last_updated_fmt = None


# ---- docstrings are markdown (nbdev style): parse them with MyST, not as reStructuredText ------------------------
# nbdev renders docstrings as markdown (show_doc), so the library's docstrings use `code`, $math$, [links](url),
# markdown lists and `|x|`, several of which are errors or something else in reStructuredText. Every docstring is
# wrapped in a `myst-docstring` directive whose content is parsed by MyST-Parser with this site's settings.
from docutils import nodes
from docutils.utils import new_document
from sphinx.util.docutils import SphinxDirective


class MystDocstring(SphinxDirective):
    has_content = True

    def run(self):
        from myst_parser.parsers.sphinx_ import MystParser

        doc = new_document(self.state.document["source"], self.state.document.settings)
        doc.reporter = self.state.document.reporter
        MystParser().parse("\n".join(self.content), doc)
        out = []
        for child in doc.children:
            if isinstance(child, nodes.section):  # a markdown heading in a docstring: keep it as a rubric
                title = child.next_node(nodes.title)
                out.append(nodes.rubric("", "", *title.children) if title else nodes.rubric())
                out.extend(c for c in child.children if not isinstance(c, nodes.title))
            else:
                out.append(child)
        return out


def _docstring_as_myst(app, what, name, obj, options, lines):
    if not lines or lines[0].startswith(".. myst-docstring::"):
        return
    if what == "module":  # nbdev appends "Docs: <hosted docs url>" to module docstrings; this site is the docs
        lines[:] = [ln for ln in lines if not re.match(r"\s*Docs: https?://\S+\s*$", ln)]
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            return
    body = ["   " + ln if ln.strip() else "" for ln in lines]
    # no blank line after the marker: the whole indented block is content, and autosummary's one-line summary
    # (which cuts the docstring at its first blank line) still gets the first paragraph
    lines[:] = [".. myst-docstring::"] + body + [""]


def setup(app):
    app.add_directive("myst-docstring", MystDocstring)
    app.connect("autodoc-process-docstring", _docstring_as_myst)
