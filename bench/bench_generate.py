"""Generation speed of the from-scratch decoder (without and with its KV cache) against transformers' `generate`.

Model: SmolLM2-135M-Instruct (the pinned 4-bit GGUF dequantised to float32, `llmbook.resources.smollm2_dir()`),
loaded into `llmbook.transformer.Decoder` and into transformers' `LlamaForCausalLM`; float32 and SDPA attention for
both, greedy decoding, the same left-padded prompts (Rotten Tomatoes snippets) and exactly `--max-new-tokens` new
tokens for every implementation (no end-of-sequence stop for ours; `min_new_tokens = max_new_tokens` for
transformers). Each configuration is warmed up once, then timed in `--rounds` rounds whose order of implementations
is shuffled per round, so a busy machine slows all three alike; the median per implementation is reported as
generated tokens per second (batch x new tokens / seconds) and as a ratio to transformers. The run also records the
time of every step at batch 1 for the two from-scratch variants (the chapter's plot of cost against position), and
checks that the cached decoder produced exactly transformers' tokens. Results go to results/bench_generate.json.

usage: python bench/bench_generate.py [--batch-sizes 1 8] [--max-new-tokens 64] [--rounds 5] [--threads N]
The table and plot are shown in nbs/02b_transformer.ipynb.
A measurement, not a test: nothing here is asserted about speed.
"""

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from llmbook import transformer as tr
from llmbook.config import write_results
from llmbook.data import load_rotten_tomatoes
from llmbook.resources import smollm2_dir

IMPLEMENTATIONS = ("from scratch, no cache", "from scratch, KV cache", "transformers generate")


def prompts(batch_size: int, prompt_tokens: int, tok) -> dict:
    "A left-padded batch of review snippets, each cut to at most `prompt_tokens` tokens."
    texts = load_rotten_tomatoes()["text"][:batch_size]
    tok.padding_side = "left"
    return tok(texts, padding=True, truncation=True, max_length=prompt_tokens, return_tensors="pt")


def run(name: str, ours, hf, batch: dict, max_new: int, pad_id: int):
    "Generated ids (B, T + max_new) of one implementation."
    ids, am = batch["input_ids"], batch["attention_mask"]
    if name == "from scratch, no cache":
        return tr.generate(ours, ids, am, max_new_tokens=max_new, use_cache=False)
    if name == "from scratch, KV cache":
        return tr.generate(ours, ids, am, max_new_tokens=max_new)
    with torch.no_grad():
        return hf.generate(
            input_ids=ids,
            attention_mask=am,
            max_new_tokens=max_new,
            min_new_tokens=max_new,
            do_sample=False,
            pad_token_id=pad_id,
        )


def same_until_eos(outs: dict, eos_id: int, prompt_len: int) -> bool:
    """True when all implementations produced the same ids up to each row's first end-of-sequence token (after it,
    transformers keeps generating with `min_new_tokens` set while ours, given no eos, may not)."""
    ref = outs["transformers generate"]
    for o in outs.values():
        if o.shape != ref.shape:
            return False
        for a, b in zip(o, ref):
            stop = (a[prompt_len:] == eos_id).nonzero()  # the prompt's left padding is eos too
            end = prompt_len + int(stop.min()) if len(stop) else len(a)
            if not torch.equal(a[:end], b[:end]):
                return False
    return True


def step_times(ours, batch: dict, max_new: int, use_cache: bool) -> list[float]:
    "Milliseconds of each forward pass (one per generated token) of the from-scratch decoder at this batch."
    times, orig = [], ours.forward

    def timed(*args, **kw):
        t = time.perf_counter()
        out = orig(*args, **kw)
        times.append(1e3 * (time.perf_counter() - t))
        return out

    ours.forward = timed
    try:
        tr.generate(ours, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new, use_cache=use_cache)
    finally:
        del ours.forward
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per sequence (default 64)")
    ap.add_argument("--prompt-tokens", type=int, default=24, help="prompt length cap in tokens (default 24)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per configuration (default 5)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: the CPU affinity, <= 2)"
    )
    ap.add_argument("--no-write", action="store_true", help="print only; do not write results/bench_generate.json")
    args = ap.parse_args(argv)
    threads = args.threads or min(2, len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)
    from transformers import AutoTokenizer, LlamaForCausalLM
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    t0 = time.time()
    folder = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    ours = tr.load_decoder(folder, attn_implementation="sdpa")
    hf = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()
    rng = random.Random(0)
    table, identical, load = [], True, os.getloadavg()[0]
    for bs in args.batch_sizes:
        batch = prompts(bs, args.prompt_tokens, tok)
        outs = {name: run(name, ours, hf, batch, args.max_new_tokens, tok.pad_token_id) for name in IMPLEMENTATIONS}
        identical &= same_until_eos(outs, tok.eos_token_id, batch["input_ids"].shape[1])
        secs = {name: [] for name in IMPLEMENTATIONS}
        for _ in range(args.rounds):
            order = list(IMPLEMENTATIONS)
            rng.shuffle(order)
            for name in order:
                t = time.perf_counter()
                run(name, ours, hf, batch, args.max_new_tokens, tok.pad_token_id)
                secs[name].append(time.perf_counter() - t)
        ref = statistics.median(secs["transformers generate"])
        for name in IMPLEMENTATIONS:
            med = statistics.median(secs[name])
            table.append(
                dict(
                    implementation=name,
                    batch_size=bs,
                    median_s=round(med, 4),
                    tokens_per_s=round(bs * args.max_new_tokens / med, 2),
                    ratio_to_transformers=round(ref / med, 3),
                )
            )
            print(f"batch {bs:2d}  {name:26s} {bs * args.max_new_tokens / med:8.1f} tokens/s  {ref / med:5.2f}x")
    one = prompts(1, args.prompt_tokens, tok)
    no_cache = step_times(ours, one, args.max_new_tokens, use_cache=False)
    cached = step_times(ours, one, args.max_new_tokens, use_cache=True)
    first = int(one["attention_mask"].sum())
    data = dict(
        model="SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to float32)",
        dtype="float32",
        attention="sdpa",
        threads=threads,
        rounds=args.rounds,
        max_new_tokens=args.max_new_tokens,
        prompt_tokens=first,
        load_average=round(load, 2),
        tokens_identical=bool(identical),
        table=table,
        step_ms_by_position={
            "positions": list(range(first, first + args.max_new_tokens)),
            "from scratch, no cache": [round(t, 3) for t in no_cache],
            "from scratch, KV cache": [round(t, 3) for t in cached],
        },
    )
    print("cached tokens identical to transformers':", identical)
    if not args.no_write:
        print("wrote", write_results("bench_generate", data, args=vars(args), wall_time_s=round(time.time() - t0, 1)))
    return data


if __name__ == "__main__":
    main()
