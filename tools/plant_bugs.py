"""Plant realistic bugs in the library ONE AT A TIME and check that a test in `tests/` catches each (mutation testing by
hand-picked mutants).

For every bug in `BUGS`: copy the repository's `llmbook/`, `tests/`, `conftest.py`, `pyproject.toml` and
`settings.ini` into a fresh temporary folder, apply the bug's single text replacement to the copied `llmbook/*.py`
(the generated modules are what the tests import), check the file still compiles, then run pytest on the bug's
targets with `PYTHONPATH` and the working directory set to the copy (subprocesses the tests start, such as the
`llmbook` CLI, import the mutated copy too). The bug counts as caught when at least one test fails with an
`AssertionError` or a pytest failure (`DID NOT RAISE`, ...); the report names the failing tests.

Each bug's `old` text must occur exactly once in its file; otherwise the script stops with an error naming the bug,
so the list stays honest when code moves between modules (update `file`/`old` then). Before the bugs, the union of
all targets runs once on the unmodified copy: they must pass, or every "caught" would mean nothing.

Usage (from the repository root, with the project's Python; takes about 15 minutes on 2 idle cores, most of it the
two SIGKILL tests):

    python tools/plant_bugs.py                 # baseline, then every bug; prints a table, exit 1 if one is missed
    python tools/plant_bugs.py --check         # only check that every replacement applies exactly once
    python tools/plant_bugs.py --only lastk-bottom --only split-val-ungrouped --no-baseline
    python tools/plant_bugs.py --list          # names and descriptions
"""

from __future__ import annotations

import argparse
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPY = ("llmbook", "tests", "conftest.py", "pyproject.toml", "settings.ini")


@dataclass
class Bug:
    name: str
    what: str  # the mistake, in words
    file: str  # relative to the repository root
    old: str  # must occur exactly once in `file`
    new: str
    targets: tuple[str, ...]  # pytest arguments: files, node ids, -k expressions


BUGS = [
    Bug(
        "lastk-k-minus-1",
        "last-k unfreezes k-1 layers (off by one)",
        "llmbook/finetune.py",
        "for layer in layers[-last_k:]:",
        "for layer in layers[len(layers) - last_k + 1 :]:",
        ("tests/test_finetune.py", "-k", "last_k_unfreezes or last_k_top_layers"),
    ),
    Bug(
        "lastk-bottom",
        "last-k unfreezes the bottom k layers",
        "llmbook/finetune.py",
        "for layer in layers[-last_k:]:",
        "for layer in layers[:last_k]:",
        ("tests/test_finetune.py", "-k", "last_k_unfreezes or last_k_top_layers"),
    ),
    Bug(
        "lastk-no-pooler",
        "last-k leaves the pooler (on top of the last layer) frozen",
        "llmbook/finetune.py",
        "            if pooler is not None:",
        "            if pooler is None:",
        ("tests/test_finetune.py", "-k", "last_k_unfreezes"),
    ),
    Bug(
        "lora-frozen-train-mode",
        "LoRA: frozen modules left in train mode (dropout on)",
        "llmbook/finetune.py",
        "    _keep_frozen_in_eval(model)\n    return model",
        '    if strategy != "lora":\n        _keep_frozen_in_eval(model)\n    return model',
        ("tests/test_finetune.py", "-k", "frozen_submodules"),
    ),
    Bug(
        "lastk-frozen-train-mode",
        "last-k: frozen modules left in train mode (dropout on)",
        "llmbook/finetune.py",
        "    _keep_frozen_in_eval(model)\n    return model",
        '    if strategy != "last-k":\n        _keep_frozen_in_eval(model)\n    return model',
        ("tests/test_finetune.py", "-k", "frozen_submodules"),
    ),
    Bug(
        "qwen2-no-attn-bias",
        "param_count forgets the Qwen2 q/k/v biases",
        "llmbook/scale.py",
        'p["attention_bias"] = L * (H * hd + 2 * kv * hd)  # Qwen2: q, k, v biases, none on o',
        'p["attention_bias"] = 0  # Qwen2',
        ("tests/test_scale.py", "-k", "every_named"),
    ),
    Bug(
        "mistral-tied-head",
        "param_count takes Mistral's output matrix as tied (forgets its untied head)",
        "llmbook/scale.py",
        'untied = 0 if _cfg(config, "tie_word_embeddings", False) else V * d',
        'untied = 0 if mt == "mistral" or _cfg(config, "tie_word_embeddings", False) else V * d',
        ("tests/test_scale.py", "-k", "every_named"),
    ),
    Bug(
        "clip-before-scale",
        "gradients clipped before the accumulation scaling (norm of the summed gradient)",
        "llmbook/train.py",
        "    torch._foreach_mul_(grads, scale)\n    if max_norm is None:\n"
        "        return torch.nn.utils.get_total_norm(grads)\n    return accelerator.clip_grad_norm_(params, max_norm)",
        "    if max_norm is None:\n        norm = torch.nn.utils.get_total_norm(grads)\n    else:\n"
        "        norm = accelerator.clip_grad_norm_(params, max_norm)\n"
        "    torch._foreach_mul_(grads, scale)\n    return norm",
        ("tests/test_train.py", "-k", "clipping_in_train or scale_and_clip"),
    ),
    Bug(
        "clip-ignored",
        "the loop ignores max_grad_norm (never clips)",
        "llmbook/train.py",
        "grad_norm = _scale_and_clip(accelerator, params, scale, cfg.max_grad_norm)",
        "grad_norm = _scale_and_clip(accelerator, params, scale, None)",
        ("tests/test_train.py", "-k", "clipping_in_train or scale_and_clip"),
    ),
    Bug(
        "loss-per-sequence-mean",
        "default loss: per-sequence mean (each sequence's mean, one term per sequence) instead of per-token",
        "llmbook/train.py",
        "    return sums.sum(), counts.sum()",
        "    return (sums / counts.clamp(min=1)).sum(), (counts > 0).sum()",
        ("tests/test_train.py", "-k", "sgd_step or clipping_in_train or accumulation or default_loss"),
    ),
    Bug(
        "loop-normalised-by-sequences",
        "the loop divides the window's summed gradient by its number of sequences, not of tokens",
        "llmbook/train.py",
        "scale = accelerator.num_processes / tot[1].clamp(min=1).item()",
        "scale = accelerator.num_processes / tot[2].clamp(min=1).item()",
        ("tests/test_train.py", "-k", "sgd_step or clipping_in_train or accumulation"),
    ),
    Bug(
        "split-val-ungrouped",
        "train/validation split not grouped: a movie leaks between train and validation",
        "llmbook/data.py",
        "tr, va = _one_fold(groups[rest], labels[rest], validation_size / (1 - test_size), seed)",
        "tr, va = _one_fold_ungrouped(labels[rest], validation_size / (1 - test_size), seed)",
        ("tests/test_data.py",),
    ),
    Bug(
        "rt-split-not-grouped",
        "rotten_tomatoes_splits forgets the movie grouping",
        "llmbook/data.py",
        '        group_column="movie_name",',
        "        group_column=None,",
        ("tests/test_data.py",),
    ),
    Bug(
        "dedup-no-whitespace",
        "normalisation before de-duplication does not collapse whitespace",
        "llmbook/data.py",
        'return re.sub(r"\\s+", " ", unicodedata.normalize("NFC", text)).strip()',
        'return unicodedata.normalize("NFC", text).strip()',
        ("tests/test_data.py",),
    ),
    Bug(
        "dedup-no-nfc",
        "normalisation before de-duplication skips Unicode NFC (composed and decomposed accents differ)",
        "llmbook/data.py",
        'return re.sub(r"\\s+", " ", unicodedata.normalize("NFC", text)).strip()',
        'return re.sub(r"\\s+", " ", text).strip()',
        ("tests/test_data.py",),
    ),
    Bug(
        "dedup-keeps-conflicts",
        "de-duplication keeps one copy of texts with conflicting labels",
        "llmbook/data.py",
        'return df[~conflicting].drop_duplicates(subset=[text_column], keep="first")',
        'return df.drop_duplicates(subset=[text_column], keep="first")',
        ("tests/test_data.py",),
    ),
    Bug(
        "macro-as-weighted-finetune",
        "the fine-tuning metrics report the weighted average as macro",
        "llmbook/finetune.py",
        'labels, predictions, average="macro", num_classes=n, zero_division=0',
        'labels, predictions, average="weighted", num_classes=n, zero_division=0',
        ("tests/test_metrics.py", "-k", "finetune_classification"),
    ),
    Bug(
        "macro-as-weighted-metrics",
        "precision_recall_fscore_support weights the macro average by support",
        "llmbook/metrics.py",
        'weights = true_sum if average == "weighted" else None',
        'weights = true_sum if average in ("weighted", "macro") else None',
        ("tests/test_metrics.py", "-k", "finetune_classification or classification_report_equals"),
    ),
    Bug(
        "checkpoint-in-place",
        "checkpoints written in place (no temporary folder renamed at the end: not atomic)",
        "llmbook/train.py",
        'tmp = ckroot / f".tmp-step-{step:07d}"',
        "tmp = final",
        ("tests/test_finetune.py", "tests/test_train.py", "-k", "killed_inside or sigkill_and_resume"),
    ),
]


def copy_repo(dest: Path) -> None:
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)


def apply(bug: Bug, root: Path) -> None:
    "Apply the bug's replacement in `root`; raise SystemExit if `old` does not occur exactly once or it won't compile."
    path = root / bug.file
    text = path.read_text()
    n = text.count(bug.old)
    if n != 1:
        raise SystemExit(
            f"bug {bug.name!r}: the text to replace occurs {n} times in {bug.file} (must be exactly once); "
            f"the code moved or changed: update this bug in tools/plant_bugs.py.\n--- old ---\n{bug.old}"
        )
    path.write_text(text.replace(bug.old, bug.new))
    try:
        py_compile.compile(str(path), doraise=True)
    except py_compile.PyCompileError as e:
        raise SystemExit(f"bug {bug.name!r}: the mutated {bug.file} does not compile: {e}") from None


def run_pytest(root: Path, targets, log: Path) -> tuple[int, list[tuple[str, str]], float]:
    """Run pytest on `targets` inside `root`; returns (exit code, [(test id, failure kind)], seconds)."""
    xml = log.with_suffix(".xml")
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", f"--junitxml={xml}"]
    t0 = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.call(cmd + list(targets), cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT)
    failed = []
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            for kind in ("failure", "error"):
                el = case.find(kind)
                if el is not None:
                    msg = el.get("message", "")
                    tid = f"{Path(case.get('classname', '').replace('.', '/')).name}::{case.get('name')}"
                    failed.append((tid, kind if kind == "error" else _kind(msg)))
    return code, failed, time.perf_counter() - t0


def _kind(message: str) -> str:
    "'assert' for an AssertionError or a pytest failure (DID NOT RAISE, ...), else the exception's name."
    head = message.split(":", 1)[0].strip()
    if message.startswith("assert") or head in ("AssertionError", "Failed") or "DID NOT RAISE" in message:
        return "assert"
    return head or "failure"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", help="run only this bug (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the bugs and exit")
    ap.add_argument("--check", action="store_true", help="only check that every bug applies exactly once")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of all targets on the unmodified copy")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies and logs")
    a = ap.parse_args(argv)
    bugs = [b for b in BUGS if not a.only or b.name in a.only]
    unknown = set(a.only or ()) - {b.name for b in BUGS}
    if unknown:
        raise SystemExit(f"unknown bug(s) {sorted(unknown)}; see --list")
    if a.list:
        for b in bugs:
            print(f"{b.name:30s} {b.file:22s} {b.what}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="plant-bugs-"))
    clean = work / "clean"
    clean.mkdir()
    copy_repo(clean)
    for b in bugs:  # fail loudly before running anything if a bug no longer applies
        tmp = work / "check" / b.name
        tmp.mkdir(parents=True)
        shutil.copy2(clean / b.file, tmp / Path(b.file).name)
        apply(Bug(b.name, b.what, Path(b.file).name, b.old, b.new, ()), tmp)
    shutil.rmtree(work / "check")
    if a.check:
        print(f"all {len(bugs)} bugs apply exactly once")
        shutil.rmtree(work)
        return 0
    if not a.no_baseline:
        files = sorted({t for b in bugs for t in b.targets if t.startswith("tests/")})
        exprs = []
        for b in bugs:
            t = list(b.targets)
            exprs += [f"({t[t.index('-k') + 1]})"] if "-k" in t else [Path(f).stem for f in t if f.startswith("tests/")]
        targets = [*files, "-k", " or ".join(dict.fromkeys(exprs))]
        print(f"baseline: {' '.join(targets)} on the unmodified copy ...", flush=True)
        code, failed, dt = run_pytest(clean, targets, work / "baseline.log")
        if code != 0:
            print(f"baseline FAILED (exit {code}: {failed}); logs in {work}")
            return 2
        print(f"baseline passed ({dt:.0f} s)", flush=True)
    rows = []
    for b in bugs:
        root = work / b.name
        root.mkdir()
        copy_repo(root)
        apply(b, root)
        code, failed, dt = run_pytest(root, b.targets, work / f"{b.name}.log")
        asserted = [t for t, k in failed if k == "assert"]
        verdict = "caught" if asserted else ("MISSED" if code == 0 else f"ERROR (exit {code})")
        rows.append((b, verdict, asserted or [f"{t} ({k})" for t, k in failed], dt))
        print(f"{b.name:30s} {verdict:8s} {dt:5.0f} s  {', '.join(rows[-1][2][:3])}", flush=True)
        if not a.keep:
            shutil.rmtree(root)
    print()
    print("| bug | file | verdict | failing tests (first 3) |")
    print("|---|---|---|---|")
    for b, verdict, tests, _ in rows:
        shown = "<br>".join(tests[:3]) + (f" (+{len(tests) - 3})" if len(tests) > 3 else "")
        print(f"| {b.name}: {b.what} | {b.file} | {verdict} | {shown} |")
    missed = [b.name for b, v, _, _ in rows if v != "caught"]
    print(
        f"\n{len(rows) - len(missed)} of {len(rows)} planted bugs caught"
        + (f"; not caught: {missed}" if missed else "")
    )
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"copies and logs kept in {work}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
