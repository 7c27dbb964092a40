"""Results records: effective arguments, a clean commit, no machine paths, and `check_record` on synthetic records.

Every test works in a throw-away git repository, so it does not depend on the state of the checkout it runs in.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmbook import config
from llmbook.config import RecordError, check_record, uncommitted_changes, write_results

NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "id": "a1", "metadata": {}, "source": ["print(1)\n"], "outputs": [], "execution_count": 1}
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "book"
    r.mkdir()
    git(r, "init", "-q")
    git(r, "config", "user.email", "t@example.org")
    git(r, "config", "user.name", "t")
    (r / "settings.ini").write_text("[book]\nprofile = fast\n")
    (r / "lib.py").write_text("X = 1\n")
    (r / "nb.ipynb").write_text(json.dumps(NOTEBOOK, indent=1))
    (r / "results").mkdir()
    (r / "results" / "old.json").write_text("{}")
    git(r, "add", ".")
    git(r, "commit", "-q", "-m", "start")
    return r


def settings(repo):
    return config.load(path=repo / "settings.ini", env={})


# ---------------------------------------------------------------- what counts as an uncommitted change
def test_only_changes_that_can_change_a_run_count(repo):
    assert uncommitted_changes(repo) == []
    (repo / "results" / "old.json").write_text('{"new": 1}')  # results files do not count
    nb = dict(NOTEBOOK, cells=[dict(NOTEBOOK["cells"][0], execution_count=7, outputs=[{"output_type": "stream"}])])
    (repo / "nb.ipynb").write_text(json.dumps(nb))  # stored outputs and execution counts do not count
    (repo / "plot.png").write_bytes(b"\x89PNG")  # an untracked non-source file does not count
    assert uncommitted_changes(repo) == []
    nb["cells"][0]["source"] = ["print(2)\n"]
    (repo / "nb.ipynb").write_text(json.dumps(nb))  # a changed cell source counts
    (repo / "lib.py").write_text("X = 2\n")
    (repo / "new_module.py").write_text("")  # an untracked source file counts
    assert uncommitted_changes(repo) == ["lib.py", "nb.ipynb", "new_module.py"]
    assert uncommitted_changes(repo.parent) is None  # not a git checkout


# ---------------------------------------------------------------- write_results
def test_dirty_tree_is_refused_unless_marked(repo):
    (repo / "lib.py").write_text("X = 2\n")
    with pytest.raises(RecordError, match="uncommitted changes in lib.py.*allow_dirty=True"):
        write_results("r", {"a": 1}, args={"epochs": 1}, repo=repo, settings=settings(repo))
    assert not (repo / "results" / "r.json").exists()
    p = write_results("r", {"a": 1}, args={"epochs": 1}, repo=repo, settings=settings(repo), allow_dirty=True)
    rec = json.loads(p.read_text())
    assert rec["provenance"]["dirty"] is True and rec["provenance"]["changed_files"] == ["lib.py"]
    assert check_record(rec, repo=repo) == ["dirty: written from a tree with uncommitted changes (dirty=True)"]


def test_clean_record_holds_effective_args_and_no_machine_paths(repo, monkeypatch):
    monkeypatch.setattr(
        sys, "argv", [str(repo / ".venv" / "bin" / "llmbook"), "finetune", "--data", str(repo / "d.csv")]
    )
    data = {
        "output_dir": str(repo / "runs" / "finetune"),
        "nested": [{"file": str(Path.home() / "data" / "mine.csv")}],
        "root": str(repo),
    }
    args = {"epochs": 2, "max_train_examples": 1000, "output_dir": str(repo / "runs" / "x")}
    p = write_results("main_job", data, args=args, repo=repo, settings=settings(repo), wall_time_s=1.5)
    rec = json.loads(p.read_text())
    assert p == repo / "results" / "main_job.json"
    assert rec["args"] == {"epochs": 2, "max_train_examples": 1000, "output_dir": "runs/x"}
    assert rec["results"] == {"output_dir": "runs/finetune", "nested": [{"file": "~/data/mine.csv"}], "root": "."}
    assert rec["provenance"]["command"] == "llmbook finetune --data d.csv"
    assert rec["provenance"]["dirty"] is False and rec["provenance"]["commit"] == git(repo, "rev-parse", "HEAD")
    assert rec["settings"]["source"] == "settings.ini" and rec["settings"]["profile"] == "fast"
    assert str(repo) not in p.read_text() and str(Path.home()) + os.sep not in p.read_text()
    assert check_record(rec, repo=repo) == []


def test_a_notebook_record_names_its_notebook(repo, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/x/ipykernel_launcher.py", "-f", "/root/.local/kernel-1.json"])
    with pytest.raises(RecordError, match="pass source='nbs/NAME.ipynb'"):
        write_results("nb", {}, args={}, repo=repo, settings=settings(repo))
    p = write_results("nb", {}, args={"profile": "fast"}, repo=repo, settings=settings(repo), source="nbs/09_faq.ipynb")
    assert json.loads(p.read_text())["provenance"]["command"] == "nbs/09_faq.ipynb"


def test_provenance_without_a_load_average(repo, monkeypatch):
    monkeypatch.delattr(os, "getloadavg")  # Windows has none
    assert config.provenance(repo)["load_average"] is None


# ---------------------------------------------------------------- check_record on synthetic records
def record(repo, **changes):
    rec = dict(
        name="x",
        provenance=dict(commit=git(repo, "rev-parse", "HEAD"), dirty=False, command="llmbook finetune"),
        args=dict(profile="full", max_train_examples=0),
        settings=dict(profile="full", source="settings.ini", cache_dir="~/.cache/llmbook"),
        results=dict(accuracy=0.8, output_dir="runs/finetune", url="https://example.org/a/b"),
    )
    for key, value in changes.items():
        rec[key] = None if value is None else {**rec[key], **value}
    return rec


def test_check_record_accepts_a_good_record(repo):
    assert check_record(record(repo), repo=repo) == []


@pytest.mark.parametrize(
    "changes,problem",
    [
        ({"provenance": {"dirty": True}}, "dirty: written from a tree with uncommitted changes"),
        ({"provenance": {"dirty": None}}, "dirty: written from a tree with uncommitted changes (dirty=None)"),
        (
            {"settings": {"profile": "fast"}, "args": {"profile": "fast", "max_train_examples": 0}},
            "profile mislabelled: settings.profile 'fast' but the run used all the training data",
        ),
        (
            {"args": {"profile": "full", "max_train_examples": 1000}},
            "profile mislabelled: settings.profile 'full' but training was capped at 1000 examples",
        ),
        ({"args": {"profile": "fast"}}, "profile mislabelled: settings.profile 'full' but args.profile 'fast'"),
        ({"results": {"files": ["ok", "saved to /root/runs/a.bin"]}}, "absolute path in record.results.files[1]"),
        ({"settings": {"source": "/work/main/settings.ini"}}, "absolute path in record.settings.source"),
        ({"args": {"data": "C:\\Users\\ann\\d.csv"}}, "absolute path in record.args.data"),
        ({"provenance": {"commit": "0" * 40}}, "commit 000000000000 is not an ancestor of HEAD (unknown here)"),
        ({"provenance": {"commit": None}}, "no commit recorded"),
    ],
)
def test_check_record_finds_each_problem(repo, changes, problem):
    problems = check_record(record(repo, **changes), repo=repo)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_check_record_commit_must_be_an_ancestor_of_head(repo):
    (repo / "lib.py").write_text("X = 3\n")
    git(repo, "commit", "-q", "-am", "side")
    side = git(repo, "rev-parse", "HEAD")
    git(repo, "reset", "-q", "--hard", "HEAD~1")  # the commit still exists, but is not in HEAD's history
    problems = check_record(record(repo, provenance={"commit": side}), repo=repo)
    assert problems == [f"commit {side[:12]} is not an ancestor of HEAD"]
    assert check_record(record(repo, args=None), repo=repo)[0] == "no effective arguments (args) recorded"


def test_cli_refuses_to_record_from_a_dirty_tree_before_training(repo, tmp_path):
    (repo / "lib.py").write_text("X = 2\n")
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "import sys; from llmbook.cli import main; sys.exit(main())", "finetune"]
    cmd += ["--record-results", "--output-dir", str(out), "--profile", "fast", "--no-progress"]
    env = dict(os.environ, LLMBOOK_SETTINGS=str(repo / "settings.ini"))  # this throw-away repository is the book
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 2 and "uncommitted changes in lib.py" in r.stderr and "--allow-dirty" in r.stderr
    assert not out.exists() and not (repo / "results" / "main_job.json").exists()
