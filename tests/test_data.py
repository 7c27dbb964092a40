"""llmbook.data: the film-grouped split and the de-duplication, by what they promise rather than by printed numbers.

On the real corpus (the Rotten Tomatoes splits every chapter uses): no film and no normalised text in two splits, the
three splits partition the cleaned corpus, and the label shares agree. On a small hand-made corpus in the same file
format with planted duplicates (exact, whitespace, Unicode-composition variants, copies under another film, conflicting
labels): exactly the documented rows survive, and no split shares a film or a normalised text with another."""

import unicodedata

import numpy as np
import pandas as pd
import pytest

from llmbook import data
from llmbook.finetune import prepare_data


def fold(text: str) -> str:
    "A stricter key than the library's: NFC, whitespace runs collapsed, case folded."
    return " ".join(unicodedata.normalize("NFC", text).split()).casefold()


def shared(dsd, key) -> dict:
    "{value: splits} for every value of `key(row)` that occurs in more than one split."
    where = {}
    for name, part in dsd.items():
        for row in part:
            where.setdefault(key(row), set()).add(name)
    return {v: s for v, s in where.items() if len(s) > 1}


# ---------------------------------------------------------------- the real corpus
@pytest.fixture(scope="module")
def corpus():
    return data.load_rotten_tomatoes()


@pytest.fixture(scope="module")
def rt_splits():
    return data.rotten_tomatoes_splits(seed=42)


def test_real_splits_share_no_film_and_no_text(rt_splits):
    assert shared(rt_splits, lambda r: r["movie_name"]) == {}
    assert shared(rt_splits, lambda r: fold(r["text"])) == {}


def test_real_splits_partition_the_cleaned_corpus(rt_splits, corpus):
    "Every cleaned snippet is in exactly one split; sizes are about 70/10/20 % and each split has the corpus's mix."
    texts = [t for part in rt_splits.values() for t in part["text"]]
    assert len(texts) == len(set(texts)) == len(corpus)
    assert set(texts) == set(corpus["text"])
    n = len(corpus)
    sizes = {k: len(v) / n for k, v in rt_splits.items()}
    assert abs(sizes["test"] - 0.2) < 0.02 and abs(sizes["validation"] - 0.1) < 0.02, sizes
    share = np.mean(corpus["label"])
    for name, part in rt_splits.items():
        assert abs(np.mean(part["label"]) - share) < 0.03, name  # stratified by label


def test_other_seed_and_subsample_keep_the_guarantees(corpus, rt_splits):
    "Another seed gives another split with the same guarantees; the fast profile's subsample only drops rows."
    other = data.split_dataset(corpus, seed=7, group_column="movie_name")
    assert data.content_hash(other["test"]) != data.content_hash(rt_splits["test"])
    assert shared(other, lambda r: r["movie_name"]) == {}
    small = data.subsample(rt_splits, 1000, 500, 42)
    assert [len(small[k]) for k in ("train", "validation", "test")] == [1000, 500, 500]
    for k in small:
        assert set(small[k]["text"]) <= set(rt_splits[k]["text"])


def test_corpus_has_no_duplicate_normalised_text(corpus):
    "After cleaning, no two snippets have the same text up to Unicode composition and whitespace."
    keys = [" ".join(unicodedata.normalize("NFC", t).split()) for t in corpus["text"]]
    assert len(keys) == len(set(keys))
    assert all(t == data.normalize_text(t) and t for t in corpus["text"])


# ---------------------------------------------------------------- a hand-made corpus with planted duplicates
MOVIES = [f"film {i:02d}" for i in range(40)]
ADJ = ["gripping", "tedious", "charming", "clumsy"]


def _base_rows():
    return [
        dict(category=["fresh", "rotten"][j % 2], text=f"A {ADJ[j]} picture, scene {j} of {m}.", movie_name=m)
        for m in MOVIES
        for j in range(4)
    ]


PLANTED = [
    # (category, text, movie): copies of texts already in other films, or of each other
    ("fresh", "A gripping picture, scene 0 of film 03.", "film 21"),  # exact copy under another film
    ("fresh", "  A gripping   picture, scene 0 of\tfilm 05.\n", "film 33"),  # whitespace variant
    ("fresh", "Caf\u00e9 society, done right.", "film 08"),  # composed é ...
    ("fresh", "Cafe\u0301 society,  done right.", "film 27"),  # ... decomposed e + accent, other spacing
    ("fresh", "Mixed feelings.", "film 11"),  # the same text with conflicting labels: both go
    ("rotten", "Mixed feelings.", "film 30"),
    ("plot", "A family moves to the coast.", "film 12"),  # plot rows carry no label
    ("fresh", "   ", "film 13"),  # empty after normalisation
]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    rows = _base_rows() + [dict(category=c, text=t, movie_name=m) for c, t, m in PLANTED]
    path = tmp_path_factory.mktemp("rt") / "rt.csv"
    pd.DataFrame(rows).sample(frac=1, random_state=0).to_csv(path, index=False)  # duplicates not adjacent
    return path


def test_planted_duplicates_are_removed(planted):
    ds = data.load_rotten_tomatoes(planted)
    texts = ds["text"]
    # 160 base rows + 1 cafe (its variant is a duplicate); the 3 copies, both "Mixed feelings", plot and empty go
    assert len(ds) == 161, len(ds)
    assert len({fold(t) for t in texts}) == len(texts)
    assert "Mixed feelings." not in texts
    assert texts.count("A gripping picture, scene 0 of film 03.") == 1
    assert texts.count("A gripping picture, scene 0 of film 05.") == 1
    assert sum(fold(t) == fold("Caf\u00e9 society, done right.") for t in texts) == 1
    assert all(t == data.normalize_text(t) for t in texts)


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_planted_corpus_split_shares_no_film_and_no_text(planted, seed):
    ds = data.load_rotten_tomatoes(planted)
    dsd = data.split_dataset(ds, seed=seed, group_column="movie_name")
    assert sum(len(p) for p in dsd.values()) == len(ds)
    assert shared(dsd, lambda r: r["movie_name"]) == {}
    assert shared(dsd, lambda r: fold(r["text"])) == {}
    assert all(len(set(p["movie_name"])) >= 3 for p in dsd.values())


def test_ungrouped_split_would_leak_films(planted):
    "The check above can fail: the same corpus split without groups puts films in two splits."
    ds = data.load_rotten_tomatoes(planted)
    assert shared(data.split_dataset(ds, seed=0), lambda r: r["movie_name"]) != {}


def test_group_column_of_a_user_file_keeps_groups_apart(tmp_path):
    "A user's labelled file with --group-column: no group in two splits (prepare_data's path)."
    rows = [dict(text=f"review {i} by {a}", label=["neg", "pos"][i % 2], author=a) for a in MOVIES for i in range(3)]
    f = tmp_path / "reviews.csv"
    pd.DataFrame(rows).to_csv(f, index=False)
    raw, _, names = prepare_data(_NoTokenizer(), data=str(f), group_column="author")
    assert names == ["neg", "pos"]
    assert shared(raw, lambda r: r["author"]) == {}
    assert sum(len(p) for p in raw.values()) == len(rows)


class _NoTokenizer:
    "Just enough of a tokenizer for prepare_data (lengths do not matter here)."

    model_max_length = 64

    def __call__(self, texts, truncation=True, max_length=None):
        return {"input_ids": [[1] * 3 for _ in texts], "attention_mask": [[1] * 3 for _ in texts]}


@pytest.mark.xfail(
    strict=True,
    reason="deduplicate compares texts case-sensitively: 'Great film.' and 'great film.' are both kept (the real "
    "corpus has one such pair, in one film). Remove this mark when de-duplication folds case.",
)
def test_case_variants_count_as_duplicates():
    df = pd.DataFrame(dict(text=["Great film.", "great film.", "GREAT FILM."], label=[1, 1, 1]))
    assert len(data.deduplicate(df)) == 1


def test_user_file_duplicates_do_not_straddle_splits(tmp_path):
    rows = [dict(text=f"review number {i % 40}", label=["neg", "pos"][i % 40 % 2]) for i in range(200)]
    f = tmp_path / "dups.csv"
    pd.DataFrame(rows).to_csv(f, index=False)
    raw, _, _ = prepare_data(_NoTokenizer(), data=str(f))
    assert shared(raw, lambda r: fold(r["text"])) == {}
