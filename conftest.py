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

NOTEBOOK_ENV = {
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONHASHSEED": "0",
}
for k, v in NOTEBOOK_ENV.items(): os.environ.setdefault(k, v)


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        if type(item).__name__ != "IPyNbCell": continue
        cell = getattr(item, "cell", None)
        if cell is not None and cell.get("cell_type") == "code" and cell.get("execution_count") is None:
            cell["execution_count"] = 0
