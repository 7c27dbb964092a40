"""A user's own labelled file read as a careful analyst would: labels, duplicates, rare classes, odd CSVs.

Each case is one a real file can contain and that used to give a silently wrong model (a phantom class, a text in two
splits, a 'pos' and ' pos' class, ...): the test asserts the message or the behaviour that replaced it.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from llmbook import finetune as ft
from llmbook.data import DataError, group_ids, label_ids, load_labeled_file, split_dataset


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def rows(labels, n=60, text="review number {i}") -> str:
    "CSV body: n rows, label i taken from `labels` in turn."
    return "".join(f"{text.format(i=i)},{labels[i % len(labels)]}\n" for i in range(n))


def load_quiet(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_labeled_file(path, **kw)


# ---------------------------------------------------------------- labels
def test_integer_labels_that_are_not_0_to_k_minus_1_are_names_never_a_phantom_class(tmp_path, capsys):
    ds, names = load_labeled_file(write(tmp_path / "d.csv", "text,label\n" + rows([1, 2])))
    assert names == ["1", "2"] and set(ds["label"]) == {0, 1}  # was ['0', '1', '2']: a class 0 with no example
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "taken as class names" in out and "1 -> 0, 2 -> 1" in out
    # labels that are exactly 0..K-1 are ids, as before, and nothing is printed
    ds, names = load_labeled_file(write(tmp_path / "e.csv", "text,label\n" + rows([0, 1, 2])))
    assert names == ["0", "1", "2"] and ds["label"][:3] == [0, 1, 2] and capsys.readouterr().out == ""
    # a gap (0 and 2) is not 0..K-1 either
    assert load_labeled_file(write(tmp_path / "f.csv", "text,label\n" + rows([0, 2])))[1] == ["0", "2"]


def test_numeric_labels_sort_as_numbers_not_as_text(tmp_path, capsys):
    ds, names = load_labeled_file(write(tmp_path / "d.csv", "text,label\n" + rows(["1", "10", "2"])))
    assert names == ["1", "2", "10"]  # as text they would sort 1, 10, 2
    assert ds["label"][:3] == [0, 2, 1]
    assert "1 -> 0, 2 -> 1, 10 -> 2" in capsys.readouterr().out
    assert label_ids(["-1", "1", "-1"])[1] == ["-1", "1"]


def test_labels_turned_into_floats_by_missing_values(tmp_path):
    # what pandas writes for an int column with gaps: 1.0 / 0.0 / empty; and JSON with null
    f = write(tmp_path / "d.csv", "text,label\n" + rows(["1.0", "0.0", ""]))
    with pytest.warns(UserWarning, match="dropped 20 row\\(s\\) with no label in column 'label'"):
        ds, names = load_labeled_file(f)
    assert names == ["0", "1"] and len(ds) == 40 and ds["label"][:2] == [1, 0]
    j = write(
        tmp_path / "d.jsonl",
        "".join(json.dumps({"text": f"t {i}", "label": [1.0, 2.0, None][i % 3]}) + "\n" for i in range(30)),
    )
    with pytest.warns(UserWarning, match="dropped 10 row"):
        ds, names = load_labeled_file(j)
    assert names == ["1", "2"] and len(ds) == 20


def test_boolean_labels(tmp_path):
    j = write(
        tmp_path / "d.jsonl", "".join(json.dumps({"text": f"t {i}", "label": i % 2 == 0}) + "\n" for i in range(10))
    )
    ds, names = load_labeled_file(j)
    assert names == ["False", "True"] and ds["label"][:2] == [1, 0]
    ds, names = load_labeled_file(write(tmp_path / "d.csv", "text,label\n" + rows(["true", "false"])))
    assert names == ["false", "true"] and ds["label"][:2] == [1, 0]


def test_spaces_around_labels_are_stripped_and_case_variants_are_flagged(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\n" + rows(["pos", " pos", "neg ", "neg"]))
    with pytest.warns(UserWarning, match="stripped spaces around 30 label value"):
        ds, names = load_labeled_file(f)
    assert names == ["neg", "pos"]  # not four classes
    g = write(tmp_path / "g.csv", "text,label\n" + rows(["pos", "Pos", "neg"]))
    with pytest.warns(UserWarning, match=r"labels \[\['Pos', 'pos'\]\] differ only in upper/lower case"):
        assert load_labeled_file(g)[1] == ["Pos", "neg", "pos"]


def test_free_text_label_column_is_refused_with_the_count(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\n" + "".join(f"t {i},note {i}\n" for i in range(300)))
    with pytest.raises(DataError, match="has 300 distinct values in 300 rows.*free text"):
        load_labeled_file(f)
    f = write(tmp_path / "e.csv", "text,label\n" + "".join(f"t {i},note {i}\n" for i in range(40)))
    with pytest.raises(DataError, match="has 40 distinct values in 40 rows"):
        load_labeled_file(f)


def test_evaluation_file_labels_match_the_model_names_before_ids(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\n" + rows([1, 2], n=4))
    ds, _ = load_labeled_file(f, label_names=["1", "2"])  # a model trained on labels 1/2
    assert ds["label"] == [0, 1, 0, 1]
    ds, _ = load_labeled_file(write(tmp_path / "e.csv", "text,label\n" + rows([0, 1], n=4)), label_names=["neg", "pos"])
    assert ds["label"] == [0, 1, 0, 1]  # ids, when they are not names
    with pytest.raises(DataError, match=r"labels \['3'\] are not in the label set"):
        load_labeled_file(write(tmp_path / "g.csv", "text,label\n" + rows([1, 3], n=4)), label_names=["1", "2"])


# ---------------------------------------------------------------- the file itself
def test_byte_order_mark_semicolons_tabs_and_spaced_header(tmp_path, capsys):
    body = rows(["pos", "neg"], n=6)
    for name, text in [
        ("bom.csv", "\ufefftext,label\n" + body),
        ("semi.csv", "text;label\n" + body.replace(",", ";")),
        ("tab.csv", "text\tlabel\n" + body.replace(",", "\t")),
        ("spaced.csv", "text, label\n" + body),
        ("tab.tsv", "text\tlabel\n" + body.replace(",", "\t")),
    ]:
        ds, names = load_quiet(write(tmp_path / name, text))
        assert names == ["neg", "pos"] and ds["text"][0] == "review number 0", name
    out = capsys.readouterr().out
    assert "semi.csv: the header is semicolon-separated" in out and "tab.csv: the header is tab-separated" in out


def test_duplicated_header_names_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"column name\(s\) \['label'\] appear more than once"):
        load_labeled_file(write(tmp_path / "d.csv", "text,label,label\na,1,0\nb,0,1\n"))


def test_missing_and_whitespace_only_texts_dropped_and_na_is_a_text(tmp_path):
    f = write(tmp_path / "d.csv", 'text,label\n,pos\n"   ",neg\n"\t",pos\nNA,pos\nnull,neg\nfine,neg\n')
    with pytest.warns(UserWarning, match="dropped 3 row\\(s\\) with an empty text"):
        ds, _ = load_labeled_file(f)
    assert ds["text"] == ["NA", "null", "fine"]  # a review reading 'NA' is a text, not a missing value


# ---------------------------------------------------------------- duplicates and splits
def test_group_ids_is_union_find_over_all_keys():
    texts = ["a", "b", "a", "c", "d", "e"]
    groups = ["g1", "g2", "g3", "g3", None, None]
    # row 0 ~ row 2 (text), row 2 ~ row 3 (group): {0, 2, 3}; {1}; {4}; {5}
    ids = group_ids(texts, groups)
    assert ids[0] == ids[2] == ids[3] and len({ids[1], ids[4], ids[5], ids[0]}) == 4


def test_same_text_stays_in_one_split_and_conflicts_are_dropped(tmp_path, capsys):
    lines = ["text,label,author"]
    for i in range(200):
        lines.append(f"review {i} of a film,{'pos' if i % 2 else 'neg'},a{i % 40}")
    for i in range(0, 40, 2):  # 20 texts repeated with other case and spacing, same label, other author
        lines.append(f"REVIEW  {i} of a film,neg,b{i}")
    lines += ["a contested one,pos,x1", "A contested one,neg,x2"]
    f = write(tmp_path / "d.csv", "\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="dropped 2 row.*appears with different labels"):
        raw, _, names = ft.prepare_data(ft.load_classifier("minilm", ["a", "b"])[1], data=str(f), max_length=16)
    assert "40 rows share their text with another row (20 distinct texts" in capsys.readouterr().out
    where = {}
    for split, part in raw.items():
        for t in part["text"]:
            where.setdefault(" ".join(t.split()).casefold(), set()).add(split)
    assert all(len(s) == 1 for s in where.values()) and "a contested one" not in where
    # with --group-column the text links merge author groups: no author and no text in two splits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw, _, _ = ft.prepare_data(
            ft.load_classifier("minilm", ["a", "b"])[1], data=str(f), group_column="author", max_length=16
        )
    seen = {}
    for split, part in raw.items():
        for t, a in zip(part["text"], part["author"]):
            seen.setdefault(("t", " ".join(t.split()).casefold()), set()).add(split)
            seen.setdefault(("a", a), set()).add(split)
    assert all(len(s) == 1 for s in seen.values())


def test_rare_classes_warned_or_refused(tmp_path):
    ds, names = load_quiet(write(tmp_path / "d.csv", "text,label\n" + rows(["a", "b"], n=400) + "x1,rare\nx2,rare\n"))
    with pytest.raises(DataError, match="class 'rare' has only 2 row\\(s\\); it cannot appear in each of train"):
        split_dataset(ds, label_names=names, text_column="text")
    extra = "".join(f"x{i},rare\n" for i in range(12))
    ds, names = load_quiet(write(tmp_path / "e.csv", "text,label\n" + rows(["a", "b"], n=400) + extra))
    with pytest.warns(UserWarning, match="class 'rare' has only 12 of 412 rows: about 2 land in the test split"):
        parts = split_dataset(ds, label_names=names, text_column="text")
    assert all(names.index("rare") in p["label"] for p in parts.values())
    # grouped: 12 rows but in 2 groups cannot reach 3 splits
    grp = "".join(f"x{i},rare,g{i % 2}\n" for i in range(12))
    body = "".join(f"review {i},{'ab'[i % 2]},h{i % 50}\n" for i in range(400))
    ds, names = load_quiet(write(tmp_path / "g.csv", "text,label,who\n" + body + grp))
    with pytest.raises(DataError, match="class 'rare' has only 2 group\\(s\\) of rows \\(12 rows\\)"):
        split_dataset(ds, label_names=names, text_column="text", group_column="who")


def test_builtin_corpus_split_unchanged():
    "The Rotten Tomatoes split (movie groups, no text keys) is the one every recorded result was made on."
    from llmbook.data import content_hash, rotten_tomatoes_splits

    parts = rotten_tomatoes_splits(seed=42)
    assert {k: len(v) for k, v in parts.items()} == {"train": 8933, "validation": 1266, "test": 2553}
    assert [content_hash(parts[k]) for k in ("train", "validation", "test")] == [
        "9ec3ab956b79",
        "f68d19ac8df8",
        "b595c8fbaecc",
    ]  # the hashes the data chapter prints


def test_a_cap_that_leaves_a_class_out_of_a_split_is_reported(tmp_path):
    f = write(tmp_path / "d.csv", "text,label\n" + rows(["a", "b"], n=400) + "".join(f"x{i},rare\n" for i in range(12)))
    tok = ft.load_classifier("minilm", ["a", "b"])[1]
    with pytest.warns(UserWarning, match=r"left no example of \[.*'rare'\] in the (validation|test) split"):
        ft.prepare_data(tok, data=str(f), max_eval_examples=1, max_length=16)


# ---------------------------------------------------------------- empty evaluation sets
def test_empty_eval_dataset_is_refused_before_training(tmp_path):
    import torch

    from llmbook.train import TrainingConfig, train

    model = torch.nn.Linear(2, 2)
    data = [{"x": torch.zeros(2), "labels": torch.tensor(0)}] * 4
    with pytest.raises(ValueError, match="eval_dataset is empty"):
        train(model, data, [], config=TrainingConfig(output_dir=str(tmp_path / "o")), collate_fn=lambda b: b)
    assert not (tmp_path / "o").exists()  # nothing was written: the check comes first


# ---------------------------------------------------------------- end to end, as a user runs it
def test_cli_on_a_file_with_labels_1_and_2(tmp_path):
    pos = ["a wonderful film", "moving and funny", "a delight", "superb acting", "great fun"]
    neg = ["a dull mess", "tedious and long", "badly acted", "a boring film", "awful script"]
    lines = (
        ["text,stars"]
        + [f"{pos[i % 5]} number {i},2" for i in range(60)]
        + [f"{neg[i % 5]} number {i},1" for i in range(60)]
    )
    f = write(tmp_path / "mine.csv", "\n".join(lines) + "\n")
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-c",
        "import sys; from llmbook.cli import main; sys.exit(main())",
        "finetune",
        "--data",
        str(f),
        "--label-column",
        "stars",
        "--output-dir",
        str(out),
        "--max-length",
        "16",
        "--epochs",
        "1",
        "--strategy",
        "head",
        "--no-progress",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "labels are the numbers 1..2, not the ids 0..1: taken as class names, in numeric order: 1 -> 0, 2 -> 1" in (
        r.stdout
    )
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["test"]["per_class"]) == ["1", "2"] and np.asarray(m["test"]["confusion_matrix"]).shape == (2, 2)
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "1", "1": "2"}


def test_label_words_that_often_mean_missing_are_classes_with_a_warning(tmp_path):
    """'none' is a real class in moderation data and 'NA' one in region codes: such values are kept as class names
    (never dropped silently), with a warning saying how to drop them if they meant 'no label'."""
    f = write(tmp_path / "d.csv", "text,label\n" + rows(["none", "insult", "threat"]))
    with pytest.warns(UserWarning, match=r"'none' \(20 rows\) in column 'label' are taken as class names"):
        ds, names = load_labeled_file(f)
    assert names == ["insult", "none", "threat"] and len(ds) == 60
    g = write(tmp_path / "e.csv", "text,label\n" + rows(["NA", "EU"]))
    with pytest.warns(UserWarning, match="'NA' \\(30 rows\\)"):
        ds, names = load_labeled_file(g)
    assert names == ["EU", "NA"] and len(ds) == 60
