"""The tokenization chapter's claims, checked against `transformers` and `tokenizers`.

- WordPiece equals MiniLM's `AutoTokenizer` on every text of the Rotten Tomatoes file and on edge cases, called with
  `truncation=False` and with `truncation=True, max_length=128` (named explicitly: MiniLM's tokenizer.json stores a
  truncation to 128 that `transformers` overrides on every call); decode equals too.
- `train_bpe` learns exactly the merges (same order) and vocabulary (same ids) of `tokenizers`' BpeTrainer with the
  same settings, on Hamlet, for several sizes up to exhaustion; encode/decode round trips are exact.
- `ByteLevelBPE.from_tokenizer_json` on SmolLM2's tokenizer.json equals SmolLM2's `AutoTokenizer` (which adds no
  special tokens: `add_special_tokens=True` and `False` give the same ids, asserted) on every text and edge case.
- From scratch means from scratch: the teaching modules import neither `transformers` nor `tokenizers` outside a
  marked adapter section (`ADAPTER_MARKER` to the end of the file).
- Bad files give TokenizerFileError naming the file and the command to run.
- Each exercise has a solution that its check accepts, and the untouched stub reports "not yet solved".
"""

import ast
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from llmbook import resources
from llmbook.tokenization import (
    BYTE_TO_UNICODE,
    UNICODE_TO_BYTE,
    ByteLevelBPE,
    TokenizerFileError,
    WordPiece,
    bert_normalize,
    byte_level_words,
    check_decode_exercise,
    check_pair_exercise,
    check_wordpiece_exercise,
    train_bpe,
    wordpiece_word,
)

ROOT = Path(__file__).resolve().parent.parent
EDGE_CASES = [
    "Café déjà vu", "这部电影很好看", "great 👍🎬 film", "!!!...???", "a" * 150, "", "tabs\tand\nnew\r\nlines",
    "a bell\x07 control", "MiXeD CaSe WoRdS", "ΟΔΟΣ İstanbul", "x\u2028y\u00a0z\x0bw\x1cv\x85u", "中文English混合",
    "$5 + 3^2 = `14`", "a [MASK] b [mask]", "x[SEP]y", "[UNK]", "<|im_start|>user\nhi<|im_end|>",
    "it's  we'll   they've\n\n", "1234567 3.14159", "  leading and trailing  ", "e\u0301 combining accent",
    "zero\u200bwidth", "\x00nul\ufffdreplacement", "a" * 100, "a" * 101, "한국어 텍스트", "日本語のテキスト",
]  # fmt: skip


@pytest.fixture(scope="module")
def texts():
    raw = pd.read_csv(resources.get("rotten_tomatoes"))
    out = raw["text"].dropna().tolist()
    assert len(out) == 13891
    return out + EDGE_CASES


@pytest.fixture(scope="module")
def minilm_dir():
    return resources.get("minilm")


@pytest.fixture(scope="module")
def smol_dir():
    from llmbook.apps import chat_model_dir

    return chat_model_dir()


@pytest.fixture(scope="module")
def hamlet():
    return resources.get("hamlet").read_text(encoding="utf-8")


def _auto_tokenizer(path):
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.AutoTokenizer.from_pretrained(path)


# --- WordPiece ---------------------------------------------------------------------------------------------------


def test_wordpiece_equals_transformers_on_every_text(texts, minilm_dir):
    ref = _auto_tokenizer(minilm_dir)
    wp = WordPiece.from_file(minilm_dir / "vocab.txt")
    ours, theirs = wp(texts), ref(texts, truncation=False)
    assert ours["input_ids"] == theirs["input_ids"]
    assert ours["token_type_ids"] == theirs["token_type_ids"]
    assert ours["attention_mask"] == theirs["attention_mask"]
    assert max(map(len, ours["input_ids"])) > 1000  # the untruncated comparison does include very long texts
    ours128 = wp(texts, truncation=True, max_length=128)["input_ids"]
    assert ours128 == ref(texts, truncation=True, max_length=128)["input_ids"]
    assert sum(len(x) == 128 for x in ours128) > 400  # and truncation really happens
    for ids in theirs["input_ids"][:2000] + theirs["input_ids"][-len(EDGE_CASES) :]:
        for skip in (False, True):
            assert wp.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)


def test_minilm_reference_truncation_is_set_per_call(minilm_dir):
    "Why the comparisons name their truncation: the stored 128 applies to the backend, transformers overrides it."
    ref = _auto_tokenizer(minilm_dir)
    long_text = " ".join(["wonderful"] * 300)
    assert ref.backend_tokenizer.truncation["max_length"] == 128
    assert len(ref.backend_tokenizer.encode(long_text).ids) == 128
    assert len(ref(long_text)["input_ids"]) == 302  # no truncation argument: none at all
    assert ref.backend_tokenizer.truncation is None  # ... and the shared backend is left that way
    assert len(ref(long_text, truncation=True, max_length=128)["input_ids"]) == 128


def test_wordpiece_details(minilm_dir):
    wp = WordPiece.from_file(minilm_dir / "vocab.txt")
    assert wp.tokenize("Café déjà vu") == ["cafe", "de", "##ja", "vu"]
    assert wp.tokenize("a" * 101) == ["[UNK]"] and wp.tokenize("a" * 100) != ["[UNK]"]
    assert wp.tokenize("a [MASK] b [mask]") == ["a", "[MASK]", "b", "[", "mask", "]"]
    assert wp("")["input_ids"] == [101, 102]
    assert wp("hello world", truncation=True, max_length=3)["input_ids"] == [101, wp.vocab["hello"], 102]
    assert len(wp(" ".join(["fun"] * 600), truncation=True)["input_ids"]) == 512  # model_max_length by default
    with pytest.raises(ValueError, match="max_length=1"):
        wp.encode("hello", truncation=True, max_length=1)
    assert bert_normalize("x\u2028y\x0bz\x85w") == "x yzw"  # U+2028 is White_Space; \x0b, \x85 are controls: dropped
    assert wordpiece_word("tokenization", wp.vocab) == ["token", "##ization"]


def test_wordpiece_missing_vocab(tmp_path):
    missing = tmp_path / "vocab.txt"
    with pytest.raises(TokenizerFileError, match="resources.get\\('minilm'\\)") as e:
        WordPiece.from_file(missing)
    assert str(missing) in str(e.value)
    (tmp_path / "dup.txt").write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="repeated lines"):
        WordPiece.from_file(tmp_path / "dup.txt")
    (tmp_path / "nospecial.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="special tokens"):
        WordPiece.from_file(tmp_path / "nospecial.txt")


# --- byte-level BPE training ---------------------------------------------------------------------------------------


def _reference_bpe(text, vocab_size, min_frequency):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([text], trainer)
    model = json.loads(tok.to_str())["model"]
    return tok, model["vocab"], [tuple(m) for m in model["merges"]]


def test_byte_map_and_pre_tokenizer_equal_tokenizers(hamlet):
    from tokenizers import pre_tokenizers

    assert sorted(BYTE_TO_UNICODE.values()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert len(set(BYTE_TO_UNICODE.values())) == 256 and BYTE_TO_UNICODE[32] == "Ġ"
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    for text in [hamlet, *EDGE_CASES]:
        assert byte_level_words(text) == [w for w, _ in pre.pre_tokenize_str(text)]


@pytest.mark.parametrize("vocab_size,min_frequency", [(300, 0), (1000, 0), (3000, 2), (20000, 0)])
def test_train_bpe_equals_bpe_trainer(hamlet, vocab_size, min_frequency):
    ref_tok, ref_vocab, ref_merges = _reference_bpe(hamlet, vocab_size, min_frequency)
    vocab, merges = train_bpe(hamlet, vocab_size, min_frequency=min_frequency)
    assert merges == ref_merges  # the same merges in the same order: the tie rule is the same
    assert vocab == ref_vocab  # and the same ids
    if vocab_size == 20000:
        assert len(merges) == 8742 and len(vocab) < vocab_size  # ran out of pairs: every word is one token
    bpe = ByteLevelBPE(vocab, merges)
    ids = bpe.encode(hamlet)
    assert ids == ref_tok.encode(hamlet).ids
    assert bpe.decode(ids) == hamlet


def test_train_bpe_special_tokens_and_errors():
    vocab, merges = train_bpe("low lower lowest", 260, special_tokens=("<pad>",))
    assert vocab["<pad>"] == 0 and vocab["!"] == 1 and len(vocab) == 260 and len(merges) == 3
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_bpe("abc", 100)


def test_bpe_round_trip_edge_cases(hamlet):
    vocab, merges = train_bpe(hamlet, 600)
    bpe = ByteLevelBPE(vocab, merges)
    for text in EDGE_CASES:
        assert bpe.decode(bpe.encode(text)) == text


# --- SmolLM2 -------------------------------------------------------------------------------------------------------


def test_smollm2_equals_transformers_on_every_text(texts, smol_dir):
    ref = _auto_tokenizer(smol_dir)
    smol = ByteLevelBPE.from_tokenizer_json(smol_dir / "tokenizer.json")
    ours = [smol.encode(t) for t in texts]
    theirs = ref(texts)["input_ids"]  # add_special_tokens=True (the default) ...
    assert theirs == ref(texts, add_special_tokens=False)["input_ids"]  # ... adds nothing for SmolLM2
    assert ours == theirs
    for ids, text in zip(ours, texts):
        assert smol.decode(ids) == text == ref.decode(ids)
    assert smol.tokenize("<|im_start|>user\nhi<|im_end|>") == ["<|im_start|>", "user", "Ċ", "hi", "<|im_end|>"]


def test_from_tokenizer_json_errors(tmp_path, minilm_dir):
    fix = "chat_model_dir"
    with pytest.raises(TokenizerFileError, match=fix) as e:
        ByteLevelBPE.from_tokenizer_json(tmp_path / "tokenizer.json")
    assert str(tmp_path / "tokenizer.json") in str(e.value)
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"type": "BPE"', encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="not valid JSON"):
        ByteLevelBPE.from_tokenizer_json(bad)
    with pytest.raises(TokenizerFileError, match="'WordPiece', not a BPE"):
        ByteLevelBPE.from_tokenizer_json(minilm_dir / "tokenizer.json")
    with pytest.raises(TypeError, match="takes a str"):
        ByteLevelBPE({"a": 0}, []).encode(None)


# --- from scratch means from scratch -------------------------------------------------------------------------------

ADAPTER_MARKER = "# --- adapter: reference comparisons ---"
REFERENCE_PACKAGES = ("transformers", "tokenizers")
# the inside-the-model teaching modules; the siblings are checked as soon as they exist
TEACHING_MODULES = ["llmbook/tokenization.py", "llmbook/transformer.py", "llmbook/pretraining.py"]


def reference_imports(source: str) -> list[int]:
    """Line numbers where `source` imports a reference package (import, from-import, importlib.import_module or
    __import__ with a literal name) before the line holding `ADAPTER_MARKER`; everything after the marker, to the end
    of the file, is the adapter section where such imports are allowed."""
    lines = source.splitlines()
    marker = next((i + 1 for i, line in enumerate(lines) if line.strip() == ADAPTER_MARKER), len(lines) + 1)

    def is_reference(name):
        return name is not None and name.split(".")[0] in REFERENCE_PACKAGES

    bad = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module] if node.level == 0 else []
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if fname in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        if any(map(is_reference, names)) and node.lineno < marker:
            bad.append(node.lineno)
    return sorted(bad)


def test_import_rule_catches_violations():
    assert reference_imports("import transformers\n") == [1]
    assert reference_imports("x = 1\nfrom tokenizers import models\n") == [2]
    assert reference_imports("def f():\n    import transformers.models.bert as b\n") == [2]
    assert reference_imports("import importlib\nm = importlib.import_module('tokenizers')\n") == [2]
    assert reference_imports(f"import torch\n{ADAPTER_MARKER}\nimport transformers\n") == []
    assert reference_imports("import tokenizers_extra\nfrom . import tokenizers\nimport regex\n") == []


@pytest.mark.parametrize("module", TEACHING_MODULES)
def test_teaching_modules_do_not_import_references(module):
    path = ROOT / module
    if module != "llmbook/tokenization.py" and not path.exists():
        pytest.skip(f"{module} does not exist yet")
    assert path.is_file(), f"{module} is missing: run nbdev-export"
    assert reference_imports(path.read_text(encoding="utf-8")) == [], f"{module} imports a reference package"


# --- exercises -----------------------------------------------------------------------------------------------------


def solution_wordpiece(word, vocab):
    if len(word) > 100:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start and (("##" if start else "") + word[start:end]) not in vocab:
            end -= 1
        if end == start:
            return ["[UNK]"]
        pieces.append(("##" if start else "") + word[start:end])
        start = end
    return pieces


def solution_pair(word_counts):
    counts = {}
    for word, f in word_counts.items():
        for pair in zip(word, word[1:]):
            counts[pair] = counts.get(pair, 0) + f
    return min(counts, key=lambda p: (-counts[p], p))


def solution_decode(tokens):
    return bytes(UNICODE_TO_BYTE[c] for c in "".join(tokens)).decode("utf-8", errors="replace")


def stub(*args):
    raise NotImplementedError


def test_exercise_checks(minilm_dir, smol_dir, hamlet):
    vocab = WordPiece.from_file(minilm_dir / "vocab.txt").vocab
    smol = ByteLevelBPE.from_tokenizer_json(smol_dir / "tokenizer.json")
    assert check_wordpiece_exercise(solution_wordpiece, vocab) == "tokenization-1: correct"
    assert check_pair_exercise(solution_pair, hamlet) == "tokenization-2: correct"
    assert check_decode_exercise(solution_decode, smol) == "tokenization-3: correct"
    assert check_wordpiece_exercise(stub, vocab).startswith("tokenization-1: not yet solved")
    assert check_pair_exercise(stub, hamlet).startswith("tokenization-2: not yet solved")
    assert check_decode_exercise(stub, smol).startswith("tokenization-3: not yet solved")
    assert check_decode_exercise(returns_none, smol).startswith("tokenization-3: not yet solved")
    # wrong answers get a hint (never the answer, never an exception)
    hint = "not quite: "
    assert check_wordpiece_exercise(no_unk_limit, vocab).startswith("tokenization-1: " + hint)
    assert check_wordpiece_exercise(divide_by_zero, vocab).startswith(
        f"tokenization-1: {hint}your function raised Zero"
    )
    assert check_pair_exercise(unweighted_pair, hamlet).startswith("tokenization-2: " + hint)
    assert check_pair_exercise(divide_by_zero, hamlet).startswith("tokenization-2: " + hint)
    assert (
        check_pair_exercise(returns_an_int, hamlet)
        == "tokenization-2: not quite: return a pair (x, y) of two strings; got int"
    )
    assert check_decode_exercise(decode_each_token, smol).startswith("tokenization-3: " + hint)
    assert check_decode_exercise("".join, smol).startswith("tokenization-3: " + hint)
    # a hint never contains the answer: for exercise 2, the pair itself
    right = solution_pair(Counter(tuple(w) for w in byte_level_words(hamlet)))
    assert repr(right) not in check_pair_exercise(unweighted_pair, hamlet)


def no_unk_limit(word, vocab):
    "Wrong: forgets that words over 100 characters are [UNK]."
    return solution_wordpiece(word[:100], vocab)


def divide_by_zero(*args):
    return 1 / 0


def returns_none(*args):
    return None


def returns_an_int(word_counts):
    return 7


def unweighted_pair(word_counts):
    "Wrong: ignores how often each word occurs."
    return solution_pair({w: 1 for w in word_counts})


def decode_each_token(tokens):
    "Wrong: reads each token's bytes as UTF-8 alone, which breaks characters split across tokens."
    return "".join(solution_decode([t]) for t in tokens)
