"""The offline website, end to end, in headless Chromium (Debian `chromium`).

Builds the site with `tools/build_docs.sh` when `_build/html` is missing or older than any notebook, docs page,
library module or the build script; serves it with `python -m http.server` on 127.0.0.1 (loopback only); and
drives Chromium with every non-loopback host unresolvable (`--host-resolver-rules`), so a page that needed the
network would fail here. What is checked, and how:

- math: a chapter page with LaTeX (the first chapter whose HTML has Sphinx math nodes; `about.html`, this site's own
  page, only when no chapter has math yet) is loaded inside a same-origin probe page; after MathJax's startup
  promise resolves, every math node must contain an `mjx-container` and none an `mjx-merror`;
- image: on a chapter page with a stored notebook plot (`_images/*.png`; the theme logo only when no chapter has a
  plot yet) every <img> must be `complete` with `naturalWidth > 0`, i.e. really decoded by the browser;
- screenshot: `_build/screenshots/<page>.png` of the math page, scrolled to its first formula, checked to be a
  non-blank PNG (look at it: it is the evidence a human can judge);
- search: `search.html?q=WORD`, WORD a long word from the math chapter's text, must list that chapter with a
  snippet containing WORD (snippets are fetched over HTTP, which is why the site is served); and Chinese terms
  (微调, 注意力机制) must be found inside running Chinese text, where only a segmenting indexer (jieba) sees them;
- links: every section link of the glossary points at an anchor that exists; every exercise of a chapter with
  solutions has its solution folded under it (`<details>` with highlighted code);
- no page loads a script or stylesheet from another host, and MathJax comes from `_static/mathjax/`.

Without Chromium the test skips, except under CI=true, where it fails (CI must never silently pass it).
"""

import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
STAMP = SITE / ".llmbook-build-stamp"
SHOTS = ROOT / "_build" / "screenshots"
NOT_CHAPTERS = {"about", "api", "search", "genindex", "py-modindex"}

pytestmark = pytest.mark.slow


# ---- build ------------------------------------------------------------------------------------------------------
def _sources():
    for folder in ("nbs", "docs", "llmbook"):
        for p in (ROOT / folder).rglob("*"):
            if p.is_file() and not any(
                part.startswith((".", "_proc", "__pycache__")) for part in p.relative_to(ROOT).parts
            ):
                yield p
    yield ROOT / "tools" / "build_docs.sh"


def _stale() -> bool:
    if not STAMP.is_file():
        return True
    built = STAMP.stat().st_mtime
    return any(p.stat().st_mtime > built for p in _sources())


@pytest.fixture(scope="module")
def site() -> Path:
    if _stale():
        r = subprocess.run(
            [str(ROOT / "tools" / "build_docs.sh")], cwd=ROOT, capture_output=True, text=True, timeout=900
        )
        assert r.returncode == 0, f"tools/build_docs.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert (SITE / "index.html").is_file() and (SITE / "search.html").is_file()
    return SITE


# ---- browser and server -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "Debian chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; CI=true, so this is a failure, not a skip")
        pytest.skip(msg)
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROBE = """<!doctype html><html><head><meta charset="utf-8"><title>probe</title></head><body>
<pre id="result">pending</pre>
<iframe id="f" style="width:1280px;height:4000px;border:0"></iframe>
<script>
const q = new URLSearchParams(location.search), mode = q.get("mode"), f = document.getElementById("f");
const out = o => { document.getElementById("result").textContent = "RESULT " + JSON.stringify(o); };
let tries = 0;
async function check() {
  tries += 1;
  const d = f.contentDocument, w = f.contentWindow;
  if (!d || d.readyState !== "complete") return setTimeout(check, 100);
  if (mode === "page") {
    if (d.querySelector(".math")) {
      if (!(w.MathJax && w.MathJax.startup && w.MathJax.startup.promise)) {
        if (tries < 300) return setTimeout(check, 100);
      } else { await w.MathJax.startup.promise; }
    }
    const imgs = [...d.images];
    if (imgs.some(i => !i.complete) && tries < 300) return setTimeout(check, 100);
    const math = [...d.querySelectorAll(".math")];
    const first = math.length ? math[0].getBoundingClientRect() : null;
    out({math: math.length, first_math_y: first ? Math.round(first.bottom + w.scrollY) : null, typeset: math.filter(m => m.querySelector("mjx-container")).length,
         mjx: d.querySelectorAll("mjx-container").length, errors: d.querySelectorAll("mjx-merror").length,
         mathjax: w.MathJax ? (w.MathJax.version || "?") : null,
         images: imgs.map(i => ({src: i.getAttribute("src"), complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))});
  } else {
    const items = [...d.querySelectorAll("ul.search li")];
    const done = d.querySelector("#search-results") && !d.querySelector("#search-progress:not(:empty)");
    if ((items.length === 0 || items.some(li => !li.querySelector("p.context"))) && tries < 300) return setTimeout(check, 100);
    out({hits: items.map(li => ({href: (li.querySelector("a") || {}).getAttribute ? li.querySelector("a").getAttribute("href") : null,
                                 snippet: ((li.querySelector("p.context") || {}).textContent || "").slice(0, 400)})),
         status: ((d.querySelector("#search-results p") || {}).textContent || "").trim().slice(0, 200), done: !!done});
  }
}
f.addEventListener("load", () => setTimeout(check, 50));
f.src = q.get("page");
</script></body></html>"""


@pytest.fixture(scope="module")
def server(site):
    "Serves a folder holding `site -> _build/html` and the probe page, on 127.0.0.1 only."
    root = Path(tempfile.mkdtemp(prefix="llmbook-site-"))
    (root / "site").symlink_to(site, target_is_directory=True)
    (root / "probe.html").write_text(PROBE, encoding="utf-8")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/site/index.html", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, "python -m http.server exited"
                time.sleep(0.1)
        else:
            pytest.fail("the site server did not answer")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def _run_chromium(exe: str, url: str, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="llmbook-chromium-") as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            *args,
            url,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _probe(exe: str, base: str, page: str, mode: str) -> dict:
    from urllib.parse import quote

    url = f"{base}/probe.html?mode={mode}&page={quote('site/' + page, safe='')}"
    r = _run_chromium(exe, url, "--dump-dom", "--virtual-time-budget=60000")
    m = re.search(r'<pre id="result">RESULT (.*?)</pre>', r.stdout, flags=re.DOTALL)
    assert m, (
        f"the probe of {page} did not report (chromium rc={r.returncode}):\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}"
    )
    return json.loads(html.unescape(m.group(1)))


# ---- choosing pages ---------------------------------------------------------------------------------------------
def _chapters(site: Path) -> list[Path]:
    return sorted(p for p in site.glob("*.html") if p.stem not in NOT_CHAPTERS and p.stem != "index") + [
        site / "index.html"
    ]


def _math_page(site: Path) -> tuple[Path, bool]:
    "(page, is_a_chapter): the first chapter with math, else this site's own about page."
    for p in _chapters(site):
        if 'class="math' in p.read_text(encoding="utf-8"):
            return p, True
    return site / "about.html", False


def _image_page(site: Path, prefer: Path) -> tuple[Path, bool]:
    "(page, has_a_plot): a chapter page with a stored notebook image (`_images/`), else `prefer` (logo only)."
    for p in [prefer] + _chapters(site):
        if re.search(r'<img[^>]+src="_images/[^"]+\.png"', p.read_text(encoding="utf-8")):
            return p, True
    return prefer, False


def _text(page: Path) -> str:
    s = page.read_text(encoding="utf-8")
    s = s[s.find("<article") : s.rfind("</article>")] if "<article" in s else s
    s = re.sub(r"<(script|style|mjx-container)[^>]*>.*?</\1>", " ", s, flags=re.DOTALL)
    s = re.sub(r'<span class="math[^"]*">.*?</span>|<div class="math[^"]*">.*?</div>', " ", s, flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", " ", s))


def _search_word(site: Path, page: Path) -> str:
    "The most distinctive long word of `page`'s prose: in the fewest other pages, then the longest."
    words = re.findall(r"\b[A-Za-z]{9,}\b", _text(page))
    assert words, f"{page.name} has no prose to search for"
    others = [_text(p).lower() for p in _chapters(site) if p != page]
    return min(dict.fromkeys(words), key=lambda w: (sum(w.lower() in o for o in others), -len(w)))


# ---- the tests --------------------------------------------------------------------------------------------------
def test_no_network_resources(site):
    remote = re.compile(
        r'<(?:script|img|iframe)[^>]+src="(?:https?:)?//|<link[^>]+(?:rel="(?:stylesheet|preload|modulepreload)"[^>]+href="(?:https?:)?//|href="(?:https?:)?//[^"]+"[^>]+rel="(?:stylesheet|preload|modulepreload)")'
    )
    bad = [str(p.relative_to(site)) for p in site.rglob("*.html") if remote.search(p.read_text(encoding="utf-8"))]
    assert not bad, f"pages load scripts/styles/images from the network: {bad[:10]}"
    page, _ = _math_page(site)
    assert "_static/mathjax/tex-mml-chtml.js" in page.read_text(encoding="utf-8")
    assert (site / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
    assert (site / "searchindex.js").is_file()
    # the API reference lists every public module of the package
    import pkgutil

    mods = [m.name for m in pkgutil.iter_modules([str(ROOT / "llmbook")]) if not m.name.startswith("_")]
    missing = [m for m in mods if not (site / "api" / f"llmbook.{m}.html").is_file()]
    assert not missing, f"no API page for llmbook modules {missing}"


def test_math_image_screenshot(site, server, chromium):
    page, is_chapter = _math_page(site)
    res = _probe(chromium, server, page.name, "page")
    print(
        f"\nmath page: {page.name} ({'a chapter' if is_chapter else 'no chapter has math yet: the about page'}); "
        f"MathJax {res['mathjax']}: {res['typeset']}/{res['math']} math nodes typeset, {res['mjx']} mjx-container"
    )
    assert res["mathjax"], "MathJax did not load"
    assert res["math"] > 0 and res["typeset"] == res["math"], res
    assert res["errors"] == 0, f"{res['errors']} formulas failed to typeset (mjx-merror)"

    img_page, has_plot = _image_page(site, page)
    ires = res if img_page == page else _probe(chromium, server, img_page.name, "page")
    imgs = ires["images"]
    print(f"image page: {img_page.name}: " + ", ".join(f"{i['src']} {i['w']}x{i['h']}" for i in imgs))
    assert imgs and all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in imgs), imgs
    if has_plot:
        assert any(i["src"].startswith("_images/") for i in imgs), imgs
    else:
        print("  (no chapter has a stored plot yet: only the theme logo was checked)")

    # screenshot of the top of the math page, tall enough to include its first formula (probe: same 1280 width)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{page.stem}.png"
    shot.unlink(missing_ok=True)
    height = min(max(1400, (res["first_math_y"] or 0) + 300), 4000)
    r = _run_chromium(
        chromium,
        f"{server}/site/{page.name}",
        f"--screenshot={shot}",
        f"--window-size=1280,{height}",
        "--hide-scrollbars",
        "--virtual-time-budget=30000",
    )
    assert shot.is_file(), f"no screenshot (rc={r.returncode}): {r.stderr[-1500:]}"
    import matplotlib.image

    pix = matplotlib.image.imread(shot)
    assert pix.shape[0] >= 1000 and pix.shape[1] >= 1200 and pix[..., :3].std() > 0.05, (pix.shape, pix.std())
    print(
        f"screenshot: {shot.relative_to(ROOT)} ({pix.shape[1]}x{pix.shape[0]}; first formula ends at y={res['first_math_y']})"
    )


def test_search_finds_a_chapter_word(site, server, chromium):
    page, _ = _math_page(site)
    if page.stem == "about":  # search must find a word of a chapter, never of our own page
        page = next(p for p in _chapters(site) if p.stem != "index")
    word = _search_word(site, page)
    res = _probe(chromium, server, f"search.html?q={word}", "search")
    print(
        f"\nsearch {word!r} (from {page.name}): {len(res['hits'])} hit(s): "
        + "; ".join(h["href"] or "?" for h in res["hits"][:5])
    )
    hits = [h for h in res["hits"] if (h["href"] or "").split("?")[0].split("#")[0] == page.name]
    assert hits, f"search for {word!r} did not list {page.name}: {res}"
    assert word.lower() in hits[0]["snippet"].lower(), f"the snippet does not show {word!r}: {hits[0]}"


@pytest.mark.parametrize("term", ["微调", "注意力机制"])
def test_search_finds_chinese_terms_in_prose(site, server, chromium, term):
    """A Chinese term inside a run of Chinese characters ("...预训练与微调的中文文章..."). Sphinx's English indexer
    makes the whole run one token, so it finds a page only where the term stands alone (a glossary cell); the
    jieba-segmented zh index (docs/conf.py) must also list a page where the term occurs ONLY inside longer runs."""
    res = _probe(chromium, server, f"search.html?q={term}", "search")
    print(f"\nsearch {term!r}: {len(res['hits'])} hit(s): " + "; ".join(h["href"] or "?" for h in res["hits"][:5]))
    only_in_runs = []
    for h in res["hits"]:
        runs = re.findall("[\u4e00-\u9fff]+", _text(site / (h["href"] or "").split("?")[0].split("#")[0]))
        if any(term in r for r in runs) and all(r != term for r in runs):
            only_in_runs.append(h)
    assert only_in_runs, f"no page where {term!r} occurs only inside Chinese prose was found: {res}"
    assert term in only_in_runs[0]["snippet"], f"the snippet does not show {term!r}: {only_in_runs[0]}"


def test_glossary_links_and_solution_blocks(site):
    glossary = next(site.glob("*glossary*.html"), None)
    assert glossary is not None, "no glossary page"
    links = re.findall(r'<a class="reference internal" href="([^"#]+\.html)#([^"]+)"', glossary.read_text("utf-8"))
    assert len(links) > 50, f"only {len(links)} section links in {glossary.name}"
    bad = []
    for page, anchor in sorted(set(links)):
        target = site / page
        if not target.is_file() or f'id="{anchor}"' not in target.read_text(encoding="utf-8"):
            bad.append(f"{page}#{anchor}")
    assert not bad, f"glossary links to anchors that do not exist: {bad}"
    # solutions: one folded block with highlighted code per exercise of each chapter that has a solutions file
    for sol in sorted((ROOT / "nbs" / "solutions").glob("*.py")):
        cells = json.loads((ROOT / "nbs" / f"{sol.stem}.ipynb").read_text(encoding="utf-8"))["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        names = set(re.findall(r"check\.exercise\(\s*[\"']([\w-]+)[\"']", source))
        page = (site / f"{sol.stem}.html").read_text(encoding="utf-8")
        blocks = re.findall(
            r'<details class="llmbook-solution">\s*<summary>Show solution</summary>(.*?)</details>', page, re.S
        )
        assert names and len(blocks) == len(names), f"{sol.stem}: {len(names)} exercises, {len(blocks)} solution blocks"
        assert all('<div class="highlight">' in b for b in blocks), f"{sol.stem}: a solution without highlighted code"
