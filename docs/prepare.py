"""Turn the notebooks in `nbs/` and the pages in `docs/` into a Sphinx + MyST-NB source tree (`_build/src/`).

Called by `tools/build_docs.sh`; usage: `python docs/prepare.py [--nbs nbs] [--proc _build/proc] [--out _build/src]`.

Step 1, nbdev's processing (`nbdev_process`): the same pipeline as `nbdev.serve.proc_nbs()` / `nbdev-proc-nbs`
(nbdev's `FilterDefaults` processors: front matter, show_doc cells added after exported code, exported cells hidden,
`#| hide` and friends, doc links), run without Quarto, with ONE processor swapped: nbdev's `exec_show_docs`
re-executes every exported cell and every cell that contains an import (including any other code in such a cell,
which breaks when that code uses a variable from a non-import cell, and overwrites stored outputs). Here
`show_doc(...)` cells are rendered from the library modules instead (`llmbook.<default_exp>`, which nbdev-export
generated from the very same cells), and no notebook code runs at all: every page shows the outputs stored in the
notebook. Results go to `_build/proc/`, reprocessing only notebooks newer than their processed copy.

Step 2, staging for MyST-NB (`stage`). nbdev writes notebooks prepared for Quarto; this step turns them into what
MyST-NB expects:
- the title cell, which nbdev turns into a raw YAML front-matter cell (dropping any prose after the `> summary`
  line), is replaced by the original first markdown cell from `nbs/` (`# Title`, `> summary`, the rest), so each
  page gets its title and keeps its introduction;
- Quarto cell options (`#| echo: false`, `#| output: false`, `#| include: false`, `#| code-fold: true`,
  `#| output: asis`) are removed from the code and mapped to MyST-NB tags (`remove-input`, `remove-output`,
  `remove-cell`, `hide-input`); nbdev's `show_doc` cells therefore show only their rendered output;
- show_doc output loses its leading `---` and its Pandoc `{target=... style=...}` link attributes; its
  `[source](github...)` link points at this site's own highlighted source (`_modules/...`, sphinx.ext.viewcode);
- links to chapter notebooks that do not exist yet (the home page's chapter map) become plain text, with a
  warning, instead of dead links; links to existing notebooks are left for MyST-NB, which makes them page links;
- nbdev's links to its hosted docs (`https://<doc_host>/<baseurl>/config.html#load`) become local
  cross-references: `{py:obj}` roles into the API reference for library symbols, links to the notebook otherwise;
- exercise solutions (`nbs/solutions/<chapter>.py`, outside the chapters) are shown under their exercise, folded
  behind "Show solution": after each code cell calling `check.exercise("<name>", ...)` comes a markdown cell with an
  HTML `<details>` block holding the code of the file's `# %% solution: <name>` cell;
- every cell gets an id (nbformat 4.5) and nbdev's extra `has_sd` cell key is dropped;
- the home page (index) gets a hidden toctree listing every chapter in file order, then the pages of `docs/`.

Files are written only when their content changes, and staged files whose source is gone are deleted, so Sphinx's
incremental build re-renders only what changed. The script is idempotent.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import pkgutil
import posixpath
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
DOCS_PAGES = ["api.md", "about.md"]  # docs/ pages, in sidebar order after the chapters
API_DIR = "api"  # autosummary writes the per-module stubs here (see api.md)
SKIP_NAMES = {"_quarto.yml", "nbdev.yml", "sidebar.yml", "_brand.yml", "styles.css", "_metadata.yml"}

_re_directive = re.compile(r"^#\|\s*([\w-]+)\s*:\s*(.*?)\s*$")
_re_target_attr = re.compile(r"\{\s*target=[^{}]*\}")
_re_md_link = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(([^()\s]+)\)")
_re_sd_heading = re.compile(r"^#{2,4}\s+(\S+)\s*$", re.MULTILINE)


# ---- helpers ---------------------------------------------------------------------------------------------------
def write_if_changed(path: Path, data: bytes) -> bool:
    "Write `data` to `path` unless it already holds exactly that; True when written."
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def src_text(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else (s or "")


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def load_modidx(root: Path) -> dict:
    "nbdev's `llmbook/_modidx.py` dict (settings + symbol -> doc url), read without importing the package."
    p = root / "llmbook" / "_modidx.py"
    if not p.is_file():
        return {"settings": {}, "syms": {}}
    tree = ast.parse(p.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "d" for t in node.targets):
            return ast.literal_eval(node.value)
    return {"settings": {}, "syms": {}}


def public_modules(root: Path, package: str = "llmbook") -> list[str]:
    "Dotted names of every public module of the package (what autosummary's recursive API reference lists)."
    names = [package]
    for m in pkgutil.walk_packages([str(root / package)], prefix=package + "."):
        if not any(part.startswith("_") for part in m.name.split(".")):
            names.append(m.name)
    return names


# ---- link rewriting --------------------------------------------------------------------------------------------
class Links:
    "Rewrites nbdev's links to its hosted docs and to GitHub source into links inside this site."

    def __init__(self, modidx: dict, pages: dict[str, str]):
        st = modidx.get("settings", {})
        host, base = st.get("doc_host", "").rstrip("/"), st.get("doc_baseurl", "").strip("/")
        self.doc_prefix = f"{host}/{base}/" if base else f"{host}/"
        git, branch = st.get("git_url", "").rstrip("/"), st.get("branch", "main")
        self.src_prefix = f"{git}/blob/{branch}/" if git else None
        self.lib_path = st.get("lib_path", "llmbook")
        self.by_url, self.syms = {}, set()
        for mod, syms in modidx.get("syms", {}).items():
            for sym, (url, _src) in syms.items():
                self.by_url.setdefault(url, sym)
                self.syms.add(sym)
        self.pages = pages  # nbdev output-file ("config.html") -> staged page name ("00_config")
        self.existing: set[str] = set()  # staged notebooks, "00_config.ipynb"
        self.here, self.missing = "", []  # folder of the notebook being rewritten; links to absent notebooks

    def local_link(self, text: str, url: str) -> str | None:
        "A link to a chapter notebook that does not exist (yet) becomes plain text (and a warning)."
        if re.match(r"^[a-z][a-z0-9+.-]*:", url, flags=re.I) or ".ipynb" not in url:
            return None
        path = url.split("#")[0]
        if not path.endswith(".ipynb"):
            return None
        target = posixpath.normpath(posixpath.join(self.here, path))
        if target in self.existing:
            return None
        self.missing.append(target)
        return text

    def doc_link(self, text: str, url: str) -> str | None:
        if not self.doc_prefix.startswith("http") or not url.startswith(self.doc_prefix):
            return None
        rel = url[len(self.doc_prefix) :]
        label = text.strip().strip("`") or rel
        if rel in self.by_url:  # a library symbol: cross-reference the API page
            return f"{{py:obj}}`{label} <{self.by_url[rel]}>`"
        page, _, anchor = rel.partition("#")
        if page in self.pages:  # a chapter page: link the notebook
            return f"[{text}]({self.pages[page]}.ipynb{'#' + anchor if anchor else ''})"
        return None

    def source_link(self, url: str, sym: str | None, depth: int) -> str | None:
        "`[source](github .../llmbook/x.py#L12)` -> raw HTML link to viewcode's page for module llmbook.x."
        if not self.src_prefix or not url.startswith(self.src_prefix):
            return None
        path = url[len(self.src_prefix) :].split("#")[0]
        if not (path.startswith(self.lib_path + "/") and path.endswith(".py")):
            return None
        mod = path[:-3].replace("/", ".")
        anchor = f"#{mod}.{sym}" if sym and f"{mod}.{sym}" in self.syms else ""
        href = "../" * depth + f"_modules/{path[:-3]}.html{anchor}"
        return f'<a class="reference internal sd-source-link" href="{href}">[source]</a>'

    def rewrite(self, md: str, depth: int = 0, sym: str | None = None) -> str:
        def sub(m):
            text, url = m.group(1), m.group(2)
            if text == "source":
                new = self.source_link(url, sym, depth)
                if new:
                    return new
            new = self.doc_link(text, url)
            if new is None:
                new = self.local_link(text, url)
            return new if new is not None else m.group(0)

        return _re_md_link.sub(sub, md)


# ---- notebook transformation -----------------------------------------------------------------------------------
def front_matter(text: str) -> dict:
    import yaml

    m = re.match(r"^\s*---\s*\n(.*?)\n---\s*$", text, flags=re.DOTALL)
    if not m:
        return {}
    try:
        return yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError:
        return {}


def title_cell(original: Path | None, fm: dict) -> str:
    "The page's opening markdown: the source notebook's own title cell when it has one, else one made from `fm`."
    if original is not None and original.is_file():
        nb = json.loads(original.read_text(encoding="utf-8"))
        first = next((c for c in nb.get("cells", []) if c.get("cell_type") == "markdown"), None)
        if first is not None and src_text(first).lstrip().startswith("# "):
            return src_text(first).strip() + "\n"
    title = fm.get("title") or (original.stem if original else "Untitled")
    desc = fm.get("description")
    return f"# {title}\n" + (f"\n> {desc}\n" if desc else "")


def code_directives(cell) -> None:
    "Move Quarto `#| key: value` options out of the code into MyST-NB tags."
    kept, tags = [], list(cell.get("metadata", {}).get("tags", []))
    for ln in lines(src_text(cell)):
        m = _re_directive.match(ln.rstrip("\n"))
        if not m:
            kept.append(ln)
            continue
        key, val = m.group(1).lower(), m.group(2).strip().strip("'\"").lower()
        if key == "echo" and val == "false":
            tags.append("remove-input")
        elif key == "output" and val == "false":
            tags.append("remove-output")
        elif key == "include" and val == "false":
            tags.append("remove-cell")
        elif key == "code-fold" and val in ("true", "show"):
            tags.append("hide-input")
        elif key in ("output", "echo", "eval", "warning", "error", "label", "fig-cap", "code-fold", "code-summary"):
            pass  # Quarto-only, no MyST-NB meaning (output: asis is the default)
        else:
            kept.append(ln)  # not a Quarto option we know: leave the line as code
    while kept and not kept[0].strip():
        kept.pop(0)
    cell["source"] = "".join(kept).rstrip("\n")
    if tags:
        cell.setdefault("metadata", {})["tags"] = list(dict.fromkeys(tags))


def fix_markdown_output(md: str, links: Links, depth: int) -> str:
    md = md.lstrip()
    if md.startswith("---"):
        md = md[3:].lstrip("-").lstrip("\n")  # show_doc's leading rule
    md = _re_target_attr.sub("", md)
    h = _re_sd_heading.search(md)
    return links.rewrite(md, depth=depth, sym=h.group(1) if h else None)


def transform(nb: dict, original: Path | None, links: Links, depth: int, toctree: str | None = None) -> dict:
    cells, out = nb.get("cells", []), []
    for i, cell in enumerate(cells):
        if cell.pop("has_sd", None):
            cell.pop("id", None)  # nbdev's inserted show_doc cells get random ids
        ctype, text = cell.get("cell_type"), src_text(cell)
        if i == 0 and ctype == "raw" and text.lstrip().startswith("---"):
            out.append(
                dict(
                    cell_type="markdown",
                    metadata={},
                    source=links.rewrite(title_cell(original, front_matter(text)), depth=depth),
                )
            )
            continue
        if ctype == "markdown":
            if text.strip().startswith("<!-- WARNING: THIS FILE WAS AUTOGENERATED!") and text.strip().endswith("-->"):
                continue
            cell["source"] = links.rewrite(text, depth=depth)
        elif ctype == "code":
            code_directives(cell)
            for o in cell.get("outputs", []):
                data = o.get("data", {})
                if "text/markdown" in data:
                    md = data["text/markdown"]
                    md = "".join(md) if isinstance(md, list) else md
                    data["text/markdown"] = fix_markdown_output(md, links, depth)
        out.append(cell)
    if not out or not src_text(out[0]).lstrip().startswith("# "):  # every page needs a title
        out.insert(0, dict(cell_type="markdown", metadata={}, source=title_cell(original, {})))
    if toctree:
        out.append(dict(cell_type="markdown", metadata={}, source=toctree))
    seen = set()
    for k, c in enumerate(out):  # ids: unique, stable across runs
        cid = c.get("id")
        if not cid or cid in seen:
            cid = hashlib.sha1(f"{src_text(c)}".encode()).hexdigest()[:8]
            while cid in seen:
                cid = hashlib.sha1(cid.encode()).hexdigest()[:8]
        c["id"] = cid
        seen.add(cid)
        if c.get("cell_type") in ("markdown", "raw"):
            c.pop("outputs", None)
            c.pop("execution_count", None)
    nb["cells"] = out
    md = nb.setdefault("metadata", {})  # nbdev-clean strips these; MyST-NB needs a
    md.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})  # lexer
    md.setdefault("language_info", {"name": "python", "pygments_lexer": "ipython3"})
    nb["nbformat"], nb["nbformat_minor"] = 4, max(5, nb.get("nbformat_minor", 5))
    return nb


def make_toctree(chapters: list[str], pages: list[str]) -> str:
    blocks = []
    if chapters:
        blocks.append("```{toctree}\n:hidden:\n:maxdepth: 2\n:caption: Chapters\n\n" + "\n".join(chapters) + "\n```")
    if pages:
        blocks.append("```{toctree}\n:hidden:\n:maxdepth: 1\n:caption: Reference\n\n" + "\n".join(pages) + "\n```")
    return "\n\n".join(blocks) + "\n"


# ---- step 1: nbdev's processing, show_doc rendered from the package ---------------------------------------------
def warn(msg: str) -> None:
    print(f"WARNING: {msg}", file=sys.stderr, flush=True)


class _Resolver:
    "Evaluates show_doc arguments in the namespace of the notebook's module, then of any module nbdev indexed."

    def __init__(self, default_exp: str | None, lib: str, modidx: dict):
        self.lib, self.ns, self.loaded = lib, {}, set()
        self.sym_module = {
            sym.rsplit(".", 1)[-1]: mod
            for mod, syms in modidx.get("syms", {}).items()
            for sym in syms
            if sym.count(".") == mod.count(".") + 1
        }
        self.default = f"{lib}.{default_exp}" if default_exp else None
        if self.default:
            self._load(self.default)

    def _load(self, modname: str) -> None:
        import importlib

        if modname in self.loaded:
            return
        self.loaded.add(modname)
        mod = importlib.import_module(modname)
        self.ns.update({k: v for k, v in vars(mod).items() if not k.startswith("__")})
        if self.default and modname != self.default:  # the notebook's own module wins name clashes
            self.ns.update(
                {k: v for k, v in vars(importlib.import_module(self.default)).items() if not k.startswith("__")}
            )

    def eval(self, expr: str):
        for _ in range(4):
            try:
                return eval(expr, {"__builtins__": __builtins__, self.lib: __import__(self.lib)}, self.ns)
            except NameError as e:
                name = getattr(e, "name", None)
                if name in self.sym_module and self.sym_module[name] not in self.loaded:
                    self._load(self.sym_module[name])
                else:
                    raise
        return eval(expr, {}, self.ns)


def _show_doc_processor(modidx: dict, lib: str):
    from fastcore.nbio import read_nb
    from nbdev.process import Processor
    from nbdev.processors import _default_exp, _is_showdoc
    from nbdev.showdoc import show_doc

    class show_docs_from_package(Processor):
        "Replaces nbdev's exec_show_docs: renders `show_doc(x)` cells by importing x from the library."

        def begin(self):
            self.title = getattr(self.nb, "frontmatter_", {}).get("title", "?")
            # nbdev has already stripped `#| default_exp` from the cells: read it from the notebook file
            path = getattr(self.nb, "path_", None)
            self.res = _Resolver(_default_exp(read_nb(path)) if path else None, lib, modidx)

        def __call__(self, cell):
            if not _is_showdoc(cell):
                return
            outputs = []
            for node in ast.parse(cell.source).body:
                call = getattr(node, "value", None)
                if not (
                    isinstance(node, ast.Expr)
                    and isinstance(call, ast.Call)
                    and getattr(call.func, "id", None) == "show_doc"
                    and call.args
                ):
                    continue
                expr = ast.unparse(call.args[0])
                try:
                    obj = self.res.eval(expr)
                    kw = {k.arg: self.res.eval(ast.unparse(k.value)) for k in call.keywords if k.arg}
                    md = show_doc(obj, **kw)._repr_markdown_()
                except Exception as e:
                    if cell.get("outputs"):
                        return  # keep what the author's run stored
                    warn(
                        f"{self.title}: cannot render show_doc({expr}) from the {lib} package "
                        f"({type(e).__name__}: {e}); export it, or drop the show_doc cell"
                    )
                    return
                outputs.append(
                    dict(
                        output_type="execute_result",
                        execution_count=None,
                        metadata={},
                        data={"text/markdown": md, "text/plain": f"show_doc({expr})"},
                    )
                )
            if outputs:
                cell["outputs"] = outputs

    return show_docs_from_package


def nbdev_process(nbs: Path, proc: Path) -> int:
    "nbdev's doc processing of `nbs` into `proc` (see the module docstring). Returns how many notebooks were redone."
    import warnings  # nbdev tries `- key: value` bullet lists in a title cell as YAML front matter; the title

    from nbdev.config import get_config
    from nbdev.doclinks import nbglob
    from nbdev.processors import FilterDefaults, exec_show_docs
    from nbdev.serve import _proc_file, _rm_stale
    from nbdev.serve_drv import exec_nb

    warnings.filterwarnings("ignore", message="Failed to create YAML dict", category=UserWarning)  # cell is kept
    cfg = get_config()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the checkout's llmbook/, not another install
    lib = cfg.get("lib_name") or Path(cfg.lib_path).name
    sd = _show_doc_processor(load_modidx(ROOT), lib)

    class SiteFilter(FilterDefaults):
        def base_procs(self):
            return [sd if p is exec_show_docs else p for p in super().base_procs()]

    # like proc_nbs: everything is redone when the configuration, nbdev, this script or the library changed
    import nbdev.processors

    deps = [Path(cfg.config_file), Path(__file__), Path(nbdev.processors.__file__)]
    deps += list((ROOT / lib).glob("*.py"))
    proc.mkdir(parents=True, exist_ok=True)
    stamp = proc / ".processed"
    if not stamp.exists() or stamp.stat().st_mtime < max(p.stat().st_mtime for p in deps if p.exists()):
        shutil.rmtree(proc)
        proc.mkdir(parents=True)
    _rm_stale(proc, nbs)
    files = nbglob(nbs, func=Path, file_glob="", file_re="")
    todo = [t for t in (_proc_file(f, proc, nbs) for f in files) if t]
    os.environ["IN_TEST"] = "1"  # what nbdev's worker sets while processing
    try:
        for src, dst, _ in todo:
            try:
                exec_nb(src, dst, SiteFilter)
            except Exception as e:
                dst.unlink(missing_ok=True)
                sys.exit(f"prepare.py: nbdev's processing of {src} failed: {type(e).__name__}: {e}")
    finally:
        os.environ.pop("IN_TEST", None)
    stamp.touch()
    return len(todo)


# ---- exercise solutions ---------------------------------------------------------------------------------------
_re_solution_cell = re.compile(r"^#\s*%%\s*solution:\s*([\w-]+)\s*$")
_re_cell_marker = re.compile(r"^#\s*%%")
_re_exercise_call = re.compile(r"check\.exercise\(\s*[\"']([\w-]+)[\"']")


def solution_blocks(path: Path) -> dict[str, str]:
    """Exercise name -> its solution code, from a solutions file (`nbs/solutions/<chapter>.py`): the lines of each
    `# %% solution: <name>` cell, up to the next `# %%` marker, blank lines at both ends dropped."""
    blocks, name, buf = {}, None, []

    def flush():
        if name is not None:
            blocks[name] = "".join(buf).strip("\n") + "\n"

    for ln in lines(path.read_text(encoding="utf-8")):
        if _re_cell_marker.match(ln):
            flush()
            m = _re_solution_cell.match(ln.rstrip("\n"))
            name, buf = (m.group(1) if m else None), []
        elif name is not None:
            buf.append(ln)
    flush()
    return blocks


def solution_markdown(code: str) -> str:
    "A folded 'Show solution' block (HTML <details>, so no Sphinx extension is needed) around highlighted code."
    return (
        '<details class="llmbook-solution">\n<summary>Show solution</summary>\n\n'
        f"```python\n{code.rstrip()}\n```\n\n</details>\n"
    )


def add_solutions(nb: dict, path: Path) -> dict:
    """After every code cell that calls `check.exercise("<name>", ...)`, a markdown cell with that exercise's
    solution from `path`, folded. Warns about solutions no cell asks for (they are not shown)."""
    blocks = solution_blocks(path)
    out, used = [], set()
    for cell in nb.get("cells", []):
        out.append(cell)
        if cell.get("cell_type") != "code":
            continue
        for name in _re_exercise_call.findall(src_text(cell)):
            if name in blocks and name not in used:
                out.append(dict(cell_type="markdown", metadata={}, source=solution_markdown(blocks[name])))
                used.add(name)
    for name in sorted(set(blocks) - used):
        warn(f"{path.name}: the solution of {name} has no cell calling check.exercise({name!r}, ...); not shown")
    return dict(nb, cells=out)


# ---- main ------------------------------------------------------------------------------------------------------
def stage(proc: Path, nbs: Path, out: Path) -> dict:
    if not proc.is_dir():
        sys.exit(f"prepare.py: {proc} does not exist; run nbdev.serve.proc_nbs() first")
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(
        p
        for p in proc.rglob("*")
        if p.is_file()
        and p.name not in SKIP_NAMES
        and not any(part.startswith(".") for part in p.relative_to(proc).parts)
    )
    notebooks = [p for p in files if p.suffix == ".ipynb"]
    if not any(p.relative_to(proc).as_posix() == "index.ipynb" for p in notebooks):
        sys.exit(f"prepare.py: {proc}/index.ipynb is missing; the book's home page is nbs/index.ipynb")

    # nbdev's page names (output-file in the front matter) -> our page names, for link rewriting
    page_names, parsed = {}, {}
    for p in notebooks:
        nb = json.loads(p.read_text(encoding="utf-8"))
        parsed[p] = nb
        first = nb.get("cells", [{}])[0] if nb.get("cells") else {}
        fm = front_matter(src_text(first)) if first.get("cell_type") == "raw" else {}
        rel = p.relative_to(proc).with_suffix("").as_posix()
        page_names[fm.get("output-file", Path(rel).name + ".html")] = rel
    links = Links(load_modidx(ROOT), page_names)
    links.existing = {p.relative_to(proc).as_posix() for p in notebooks}

    chapters = [p.relative_to(proc).with_suffix("").as_posix() for p in notebooks]
    chapters = [c for c in chapters if c != "index"]
    pages = [Path(n).stem for n in DOCS_PAGES if (DOCS / n).is_file()]

    wanted, changed = set(), 0
    for p in files:
        rel = p.relative_to(proc)
        dest = out / rel
        wanted.add(dest)
        if p.suffix != ".ipynb":
            changed += write_if_changed(dest, p.read_bytes())
            continue
        original = nbs / rel
        toc = make_toctree(chapters, pages) if rel.as_posix() == "index.ipynb" else None
        links.here, links.missing = posixpath.dirname(rel.as_posix()), []
        solutions = nbs / "solutions" / f"{rel.stem}.py"
        nb = parsed[p]
        if len(rel.parts) == 1 and solutions.is_file():
            nb = add_solutions(nb, solutions)
        nb = transform(nb, original, links, depth=len(rel.parts) - 1, toctree=toc)
        for target in dict.fromkeys(links.missing):
            warn(f"{rel}: links to {target}, which does not exist (yet); shown as plain text")
        changed += write_if_changed(dest, (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode())
    for n in DOCS_PAGES:
        if (DOCS / n).is_file():
            dest = out / n
            wanted.add(dest)
            changed += write_if_changed(dest, (DOCS / n).read_bytes())

    # stale files: pages whose source is gone; API stubs of modules that no longer exist
    modules = set(public_modules(ROOT))
    removed = 0
    for f in list(out.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(out)
        if rel.parts[0] == API_DIR:
            if f.suffix != ".rst" or f.stem not in modules:
                f.unlink()
                removed += 1
        elif f not in wanted:
            f.unlink()
            removed += 1
    return dict(
        notebooks=len(notebooks),
        chapters=chapters,
        pages=pages,
        changed=changed,
        removed=removed,
        modules=sorted(modules),
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nbs", default=str(ROOT / "nbs"))
    ap.add_argument("--proc", default=str(ROOT / "_build" / "proc"))
    ap.add_argument("--out", default=str(ROOT / "_build" / "src"))
    a = ap.parse_args(argv)
    n = nbdev_process(Path(a.nbs).resolve(), Path(a.proc).resolve())
    print(f"nbdev processing: {n} notebook(s) (re)processed into {a.proc}")
    r = stage(Path(a.proc), Path(a.nbs), Path(a.out))
    print(
        f"staged {r['notebooks']} notebooks + {len(r['pages'])} pages into {a.out} "
        f"({r['changed']} written, {r['removed']} stale removed); API modules: {', '.join(r['modules'])}"
    )


if __name__ == "__main__":
    main()
