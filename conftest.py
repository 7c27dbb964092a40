"""pytest set-up shared by `tests/` and the notebooks in `nbs/` (run as tests with nbval).

Why strict nbval, and how it copes with `nbdev-clean`
-----------------------------------------------------
Notebooks are committed with their outputs (readers and the website see them), and `pytest` re-executes every
notebook with nbval in *strict* mode (`--nbval`): each code cell's fresh output must equal the stored one, after the
sanitizers in `tests/nbval_sanitize.cfg` (temporary paths, memory addresses, timings, rates). Strict mode is what
makes "every number printed in the book is what the code computes" a checked claim rather than a hope; cells whose
output truly varies (timings, benchmarks, progress) carry the cell tag `nbval-ignore-output`, which `nbdev-clean`
keeps because `[tool.nbdev] allowed_cell_metadata_keys = ["tags"]`.

`nbdev-clean` sets every cell's `execution_count` to null to keep diffs small. nbval reads a null count as "this
reference cell was never run" and then fails any such cell that has stored outputs ("Unrun reference cell has
outputs"), or skips comparing it. The hook below restores the meaning the book wants: every code cell of a committed
notebook is a run reference, so its count is set to 0 at collection time. Nothing on disk changes.

The environment below is also what `tools/execute_notebooks.sh` uses to produce the stored outputs, so reference and
re-run see the same settings: progress bars off (their rates vary, and the warning tqdm prints when ipywidgets is
missing is silenced: it only concerns the bars), offline hub, the fast profile unless the caller chose another.

Outputs that depend on the CPU: the policy
------------------------------------------
The stored outputs are made on one machine; the tests must pass on any x86-64 CPU. PyTorch, oneDNN, MKL and FBGEMM
pick their kernels at run time (AVX2, AVX-512, AMX, VNNI) and the kernels round differently: a float32 dot product of
length K is summed in another order (error up to about K * eps * sum|x_i y_i| in the worst case, sqrt(K) * eps * that
for random rounding; eps = 1.19e-7 for float32, 2.2e-16 for float64), and dynamic int8 quantisation amplifies such
differences (a value one float ulp away from a rounding point of its int8 grid lands on the neighbouring level, a jump
of 1/255 of the batch's range, and the layers after it carry the jump on). So:

* Strict nbval stays the default. A cell whose printed output is a deterministic function of the code and data
  (integer counts, shapes, exact-arithmetic results, text, values rounded far above their kernel error) is compared
  character for character.
* A printed number that depends on CPU kernels is not printed at full precision. The cell asserts it within a
  tolerance *derived from the arithmetic* (accumulation length and precision, as above; for int8 dynamic
  quantisation, the share of examples whose float32 margin is smaller than the quantisation error can change its
  prediction) and prints it coarsely: a bound ("max |diff| < 1e-12: True"), or digits well above the tolerance.
* Where the value itself varies (timings, rates, benchmark records, the machine's description) the cell is tagged
  `nbval-ignore-output` and still asserts what must hold (the computation it timed is right, a record's invariants).
  `tests/test_notebook_hygiene.py` caps the number of such cells and requires an `assert` in each, refuses
  sanitizers that would blank numbers in general, and keeps warnings, ANSI codes and machine paths out of stored
  outputs. `tests/README.md` explains this in more detail.
* CI runs the notebooks twice: natively, and with every kernel library forced to AVX2
  (`ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2`),
  so the outputs are shown to survive a change of kernels. With `LLMBOOK_EXPECT_CPU_CAPABILITY=AVX2` set, the run
  refuses to start unless torch reports that capability.

Time per chapter
----------------
The hooks at the end sum the setup, call and teardown time of each notebook's cells (kernel start included), print a
per-chapter table in the terminal summary, and, when every notebook in nbs/ ran and `LLMBOOK_WRITE_CHAPTER_TIMES=1`
is set, write `results/chapter_times.json`:
`{"chapters": {"nbs/01_background.ipynb": 12.3, ...}, "total_s": ..., "failed_cells": ..., "provenance": ...}`.
"""

import json
import os
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

NOTEBOOK_ENV = {
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONHASHSEED": "0",
    # tqdm.auto warns on import when ipywidgets is missing; the warning is about progress bars, which are off
    "PYTHONWARNINGS": "ignore:IProgress not found",
}
for k, v in NOTEBOOK_ENV.items():
    os.environ.setdefault(k, v)


def pytest_configure(config):
    """Refuse to run under the wrong CPU kernels when `LLMBOOK_EXPECT_CPU_CAPABILITY` is set (CI's AVX2 run).

    Add machine-specific sanitizers to the static ones in tests/nbval_sanitize.cfg: the repository's own path and
    the Python environment's path. Stored outputs were made in one checkout, CI runs in a fresh clone elsewhere, so an
    absolute path in a warning or message must not count as a difference."""
    expected = os.environ.get("LLMBOOK_EXPECT_CPU_CAPABILITY")
    if expected:
        import pytest
        import torch

        found = torch.backends.cpu.get_cpu_capability()
        if found != expected:
            raise pytest.UsageError(
                f"LLMBOOK_EXPECT_CPU_CAPABILITY={expected} but torch reports CPU capability {found}: set "
                f"ATEN_CPU_CAPABILITY={expected.lower()} (and the MKL/oneDNN/FBGEMM variables, see conftest.py)."
            )
    static = getattr(config.option, "nbval_sanitize_with", None)
    if not static or not Path(static).is_file():
        return
    root = Path(__file__).resolve().parent
    extra = [
        ("repository path", re.escape(str(root)), "<REPO>"),
        ("python prefix", re.escape(sys.prefix), "<PREFIX>"),
        ("site-packages", r"[^\s'\"]*/(site|dist)-packages/", "<SITE-PACKAGES>/"),
    ]
    # first, so that a checkout under /tmp becomes <REPO> before the generic temporary-path rule sees it
    text = "".join(f"[{n}]\nregex: {rx}\nreplace: {rep}\n\n" for n, rx, rep in extra) + Path(static).read_text()
    fd, path = tempfile.mkstemp(prefix="nbval-sanitize-", suffix=".cfg")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    config.option.nbval_sanitize_with = path


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        if type(item).__name__ != "IPyNbCell":
            continue
        cell = getattr(item, "cell", None)
        if cell is not None and cell.get("cell_type") == "code" and cell.get("execution_count") is None:
            cell["execution_count"] = 0


# ---- time per chapter ----------------------------------------------------------------------------------------------
_ROOT = Path(__file__).resolve().parent
_chapter_seconds: dict[str, float] = defaultdict(float)
_chapter_failures: dict[str, int] = defaultdict(int)


def _notebook_of(nodeid: str) -> str | None:
    "'nbs/03_losses.ipynb::Cell 4' -> 'nbs/03_losses.ipynb'; None for anything that is not a notebook cell."
    path = nodeid.split("::", 1)[0]
    return path if path.endswith(".ipynb") else None


def pytest_runtest_logreport(report):
    nb = _notebook_of(report.nodeid)
    if nb is None:
        return
    _chapter_seconds[nb] += report.duration  # setup (the kernel starts in the first cell's), call, teardown
    if report.failed:
        _chapter_failures[nb] += 1


def _chapter_record() -> dict:
    "The per-chapter times of this session as the record `results/chapter_times.json` holds them."
    from llmbook import config as llmbook_config

    chapters = {nb: round(s, 1) for nb, s in sorted(_chapter_seconds.items())}
    prov = llmbook_config.provenance()
    prov["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])  # no machine path
    import torch

    return dict(
        name="chapter_times",
        chapters=chapters,
        total_s=round(sum(_chapter_seconds.values()), 1),
        failed_cells=sum(_chapter_failures.values()),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        provenance=prov,
        settings=llmbook_config.load().as_dict(),
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _chapter_seconds:
        return
    tr = terminalreporter
    tr.write_sep("-", "nbval time per chapter (setup + cells + teardown)")
    for nb, s in sorted(_chapter_seconds.items()):
        note = f"   ({_chapter_failures[nb]} failed cells)" if _chapter_failures.get(nb) else ""
        tr.write_line(f"{nb:36s} {s:8.1f} s{note}")
    tr.write_line(f"{'total':36s} {sum(_chapter_seconds.values()):8.1f} s")
    all_notebooks = {str(p.relative_to(_ROOT)) for p in (_ROOT / "nbs").glob("*.ipynb")}
    if os.environ.get("LLMBOOK_WRITE_CHAPTER_TIMES") == "1":
        if set(_chapter_seconds) >= all_notebooks:
            rec = _chapter_record()
            out = _ROOT / "results" / "chapter_times.json"
            out.parent.mkdir(exist_ok=True)
            tmp = out.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(rec, indent=2) + "\n")
            os.replace(tmp, out)
            tr.write_line(f"wrote {out.relative_to(_ROOT)}")
        else:
            missing = sorted(all_notebooks - set(_chapter_seconds))
            tr.write_line(f"results/chapter_times.json not written: not every notebook ran (missing {missing})")
