"""Time of the book's from-scratch tokenizers against `transformers` (Rust `tokenizers` backend) on the whole corpus.

Each round tokenizes every text of the Rotten Tomatoes file (13,891) with four tokenizers, in a shuffled order per
round so that a busy machine slows all of them alike: the book's `WordPiece` and MiniLM's `AutoTokenizer`
(`truncation=False`), the book's `ByteLevelBPE` and SmolLM2's `AutoTokenizer`. The book's tokenizers are built fresh
each round, so their word caches start empty (a cold run, which is what a reader's first call costs). The median
seconds per pass and the ratio to the matching reference are printed and written to results/bench_tokenization.json.
The run also checks that the ids are the same, so it never times two different computations.

usage: python bench/bench_tokenization.py [--repeats 5]
A measurement, not a test: nothing here is asserted about speed. Numbers recorded on a busy machine are not results.
"""

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from llmbook.apps import chat_model_dir
from llmbook.config import write_results
from llmbook.resources import get
from llmbook.tokenization import ByteLevelBPE, WordPiece


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import transformers

    transformers.logging.set_verbosity_error()
    texts = pd.read_csv(get("rotten_tomatoes"))["text"].dropna().tolist()
    minilm, smol_dir = get("minilm"), chat_model_dir()
    ref_wp = transformers.AutoTokenizer.from_pretrained(minilm)
    ref_bpe = transformers.AutoTokenizer.from_pretrained(smol_dir)
    runs = {
        "wordpiece (book)": lambda: WordPiece.from_file(minilm / "vocab.txt")(texts)["input_ids"],
        "wordpiece (transformers)": lambda: ref_wp(texts, truncation=False)["input_ids"],
        "byte-level BPE (book)": lambda: [
            b.encode(t) for b in [ByteLevelBPE.from_tokenizer_json(smol_dir / "tokenizer.json")] for t in texts
        ],
        "byte-level BPE (transformers)": lambda: ref_bpe(texts)["input_ids"],
    }
    outputs = {name: fn() for name, fn in runs.items()}  # warm-up, and the parity check
    assert outputs["wordpiece (book)"] == outputs["wordpiece (transformers)"]
    assert outputs["byte-level BPE (book)"] == outputs["byte-level BPE (transformers)"]
    seconds = {name: [] for name in runs}
    rng = random.Random(0)
    for _ in range(args.repeats):
        order = list(runs)
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    rows = []
    for name in runs:
        ref = name.split(" (")[0] + " (transformers)"
        rows.append({"tokenizer": name, "seconds": median[name], "ratio_to_transformers": median[name] / median[ref]})
        ratio = rows[-1]["ratio_to_transformers"]
        print(f"{name:32} {median[name]:7.2f} s per pass over {len(texts)} texts   x{ratio:.2f}")
    write_results("bench_tokenization", {"n_texts": len(texts), "repeats": args.repeats, "rows": rows}, args=vars(args))


if __name__ == "__main__":
    main()
