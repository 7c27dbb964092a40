"""Sphinx configuration of llmbook's offline website.

Build it with `tools/build_docs.sh` (not with sphinx-build directly): that script runs nbdev's notebook processing
(without Quarto), stages the processed notebooks plus the pages in this folder under `_build/src/` (see
`docs/prepare.py`), fetches MathJax 3 from npm once, and runs `sphinx-build -c docs _build/src _build/html`.

Nothing on the built site loads from the network: notebooks keep their stored outputs (no execution), MathJax is a
local copy under `_static/mathjax/`, search is Sphinx's own JavaScript index, and the ipywidgets loader (a CDN
script) is switched off.
"""

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
