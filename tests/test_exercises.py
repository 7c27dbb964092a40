"""Every exercise check against its solution, its untouched stub and its stored wrong answers.

Solutions live in `nbs/solutions/<chapter>.py` (plain Python, outside the chapters; see `nbs/00b_check.ipynb` for
why). Each file defines `SOLUTIONS` (exercise name -> answer) and `WRONG` (name -> plausible wrong answers). For every
check registered in `llmbook.check`:

- the solution prints exactly `<name>: correct`;
- the untouched stubs (`...` for a value; for a function, one whose body raises NotImplementedError and one whose
  body is `...`) print `<name>: not yet solved (...)` and do not raise;
- every stored wrong answer prints `<name>: not quite: ...`, and for value exercises no message (hint, stub or
  wrong) contains the solution's value in any common formatting;
- the chapter notebook has one cell calling `check.exercise("<name>", ...)`, whose stored output is "not yet solved"
  (strict nbval then proves the cell still prints that);
- the website's solution blocks (`docs/prepare.py`) are built from the solution cells, one per exercise.
"""

import contextlib
import importlib.util
import io
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from llmbook import check

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS_DIR = ROOT / "nbs" / "solutions"
sys.path.insert(0, str(ROOT / "docs"))
import prepare  # noqa: E402 (docs/prepare.py: the website's solution blocks)


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"llmbook_solutions_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SOLUTION_FILES = {p.stem: _load(p) for p in sorted(SOLUTIONS_DIR.glob("*.py"))}
SOLUTIONS = {name: (stem, ans) for stem, m in SOLUTION_FILES.items() for name, ans in m.SOLUTIONS.items()}
NAMES = sorted(check.CHECKS)


def run(name, answer) -> tuple[bool, str]:
    "`check.exercise(name, answer)` -> (result, the printed text); fails the test if it raises."
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ok = check.exercise(name, answer)
    out = buf.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n"), f"exercise must print exactly one line; printed {out!r}"
    return bool(ok), out.strip()


def value_spellings(v) -> set[str]:
    "How a numeric answer might appear in a message: repr, str, %g and 2 to 6 decimals."
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return set()
    out = {repr(v), str(v), f"{v:g}"}
    out |= {f"{v:.{k}f}" for k in range(2, 7)}
    if float(v).is_integer():
        out -= {str(int(v))}  # a bare small integer ("2") occurs in any hint; its decimals still count
    return out


def stub_raise(*args, **kwargs):
    raise NotImplementedError


def stub_ellipsis(*args, **kwargs): ...


def test_registry_and_solutions_match():
    assert NAMES, "no exercise checks registered"
    assert sorted(SOLUTIONS) == NAMES, "every registered check needs a solution, and every solution a check"
    for stem, m in SOLUTION_FILES.items():
        assert (ROOT / "nbs" / f"{stem}.ipynb").is_file(), f"nbs/solutions/{stem}.py has no chapter {stem}.ipynb"
        assert not stem.startswith("test_"), "a solution file must not look like a test module to pytest"
        assert set(m.WRONG) == set(m.SOLUTIONS), f"{stem}: WRONG needs an entry (>= 1 answer) per exercise"
    for name in NAMES:
        assert SOLUTIONS[name][0] == check.CHECKS[name].chapter, f"{name}: solution file and chapter differ"


@pytest.mark.parametrize("name", NAMES)
def test_solution_is_correct(name):
    ok, out = run(name, SOLUTIONS[name][1])
    assert ok and out == f"{name}: correct", out


@pytest.mark.parametrize("name", NAMES)
def test_stub_is_not_yet_solved(name):
    stubs = [...] if check.CHECKS[name].kind == "value" else [..., stub_raise, stub_ellipsis]
    for stub in stubs:
        ok, out = run(name, stub)
        assert not ok and out.startswith(f"{name}: not yet solved ("), out


@pytest.mark.parametrize("name", NAMES)
def test_wrong_answers_are_rejected_without_the_answer(name):
    stem, solution = SOLUTIONS[name]
    wrong = SOLUTION_FILES[stem].WRONG[name]
    assert len(wrong) >= 1
    messages = []
    for w in wrong:
        ok, out = run(name, w)
        assert not ok and out.startswith(f"{name}: not quite: "), out
        messages.append(out)
    if check.CHECKS[name].kind == "value":
        messages += [run(name, ...)[1], run(name, "not a number")[1], run(name, -1e9)[1], run(name, math.pi)[1]]
        for spelling in value_spellings(solution):
            for msg in messages:
                assert spelling not in msg, f"{name}: the message {msg!r} gives away the answer ({spelling})"


def test_checks_keep_the_random_state():
    "Solving an exercise (or not) must not change the numbers the rest of a chapter prints."
    torch.manual_seed(123)
    before = torch.get_rng_state()
    for name in NAMES:
        run(name, SOLUTIONS[name][1])
        run(name, ...)
    assert torch.equal(torch.get_rng_state(), before)


def test_unknown_name_is_a_clear_error():
    with pytest.raises(KeyError, match="no exercise named 'nope-1'; known exercises: "):
        check.exercise("nope-1", 1.0)


def _exercise_cells(stem: str) -> dict[str, list]:
    nb = json.loads((ROOT / "nbs" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    found = {}
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code":
            for name in re.findall(r"check\.exercise\(\s*[\"']([\w-]+)[\"']", src):
                found.setdefault(name, []).append(cell)
    return found


@pytest.mark.parametrize("stem", sorted(SOLUTION_FILES))
def test_chapter_cells_hold_untouched_stubs(stem):
    cells = _exercise_cells(stem)
    expected = sorted(n for n in NAMES if check.CHECKS[n].chapter == stem)
    assert sorted(cells) == expected, f"{stem}.ipynb: exercise cells {sorted(cells)}, checks {expected}"
    for name, cs in cells.items():
        assert len(cs) == 1, f"{name}: called from {len(cs)} cells"
        text = "".join("".join(o.get("text", "")) for o in cs[0].get("outputs", []))
        assert text.startswith(f"{name}: not yet solved ("), f"{stem}.ipynb: stored output of {name}: {text!r}"


@pytest.mark.parametrize("stem", sorted(SOLUTION_FILES))
def test_website_solution_blocks(stem):
    blocks = prepare.solution_blocks(SOLUTIONS_DIR / f"{stem}.py")
    assert sorted(blocks) == sorted(SOLUTION_FILES[stem].SOLUTIONS)
    nb = json.loads((ROOT / "nbs" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    out = prepare.add_solutions(nb, SOLUTIONS_DIR / f"{stem}.py")
    for name in blocks:
        i = next(i for i, c in enumerate(out["cells"]) if f'check.exercise("{name}"' in prepare.src_text(c))
        nxt = prepare.src_text(out["cells"][i + 1])
        assert out["cells"][i + 1]["cell_type"] == "markdown" and "<details" in nxt and "Show solution" in nxt
        assert blocks[name].strip() in nxt and "raise NotImplementedError" not in nxt
