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
re-run see the same settings: progress bars off (their rates vary), offline hub, the fast profile unless the caller
chose another.
"""

import os
import re
import sys
import tempfile
from pathlib import Path

NOTEBOOK_ENV = {
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONHASHSEED": "0",
}
for k, v in NOTEBOOK_ENV.items():
    os.environ.setdefault(k, v)


def pytest_configure(config):
    """Add machine-specific sanitizers to the static ones in tests/nbval_sanitize.cfg: the repository's own path and
    the Python environment's path. Stored outputs were made in one checkout, CI runs in a fresh clone elsewhere, so an
    absolute path in a warning or message must not count as a difference."""
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
