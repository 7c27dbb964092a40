"""Step time of llmbook's AdamW (for-loop and foreach paths) against torch's for-loop, foreach and fused AdamW.

The parameter set has exactly the shapes of the MiniLM encoder the book fine-tunes (all-MiniLM-L6-v2: 103 tensors,
22.7M float32 numbers), built from its config on the `meta` device, so no weights are loaded. Every implementation
gets its own copy of the same parameters and the same fixed gradients; the timed steps are interleaved in a shuffled
order per round, so a busy machine slows all implementations alike, and the median per implementation is reported
as milliseconds per step and as a ratio to torch's foreach AdamW. The run also checks that each llmbook path ended
with exactly the parameters of the matching torch path. Results go to results/bench_optim.json.

usage: python bench/bench_optim.py [--repeats 15] [--warmup 3] [--threads N]
The table is shown in nbs/04_optimizers.ipynb.
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
from llmbook import optim
from llmbook.config import write_results
from llmbook.resources import get


def minilm_shapes() -> list[tuple[int, ...]]:
    "Shapes of every parameter of the MiniLM encoder, from its pinned config (no weights read)."
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(get("minilm"))
    with torch.device("meta"):
        model = AutoModel.from_config(cfg)
    return [tuple(p.shape) for p in model.parameters()]


IMPLEMENTATIONS = {
    "llmbook AdamW for-loop": lambda ps: optim.AdamW(ps, lr=1e-4, weight_decay=0.01, foreach=False),
    "llmbook AdamW foreach": lambda ps: optim.AdamW(ps, lr=1e-4, weight_decay=0.01, foreach=True),
    "torch AdamW for-loop": lambda ps: torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.01, foreach=False),
    "torch AdamW foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.01, foreach=True),
    "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.01, fused=True),
}
SAME_AS = {"llmbook AdamW for-loop": "torch AdamW for-loop", "llmbook AdamW foreach": "torch AdamW foreach"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed steps per implementation (default 15)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    shapes = minilm_shapes()
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=g) * 0.02 for s in shapes]
    grads = [torch.randn(s, generator=g) * 1e-3 for s in shapes]
    opts, params = {}, {}
    for name, make in IMPLEMENTATIONS.items():
        ps = [torch.nn.Parameter(x.clone()) for x in init]
        for p, gr in zip(ps, grads):
            p.grad = gr.clone()
        params[name], opts[name] = ps, make(ps)
    for _ in range(args.warmup):
        for opt in opts.values():
            opt.step()
    times = {name: [] for name in opts}
    rng = random.Random(0)
    for _ in range(args.repeats):
        order = list(opts)
        rng.shuffle(order)
        for name in order:
            t = time.perf_counter()
            opts[name].step()
            times[name].append(time.perf_counter() - t)
    load_average = round(os.getloadavg()[1], 1)  # 5-minute load: how busy the machine was while we timed
    identical = {
        ours: all(torch.equal(a, b) for a, b in zip(params[ours], params[ref])) for ours, ref in SAME_AS.items()
    }
    ref_ms = statistics.median(times["torch AdamW foreach"]) * 1e3
    table = {}
    for name, ts in times.items():
        ms = statistics.median(ts) * 1e3
        table[name] = dict(
            ms=round(ms, 2),
            ratio_to_torch_foreach=round(ms / ref_ms, 3),
            min_ms=round(min(ts) * 1e3, 2),
            max_ms=round(max(ts) * 1e3, 2),
        )
    n_params = sum(x.numel() for x in init)
    result = dict(
        n_tensors=len(shapes),
        n_params=n_params,
        dtype="float32",
        threads=torch.get_num_threads(),
        repeats=args.repeats,
        warmup=args.warmup,
        load_average=load_average,
        table=table,
        bit_identical_to_torch_after_all_steps=identical,
    )
    print(
        f"AdamW step on MiniLM-shaped parameters: {len(shapes)} tensors, {n_params / 1e6:.2f}M float32, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} interleaved steps"
    )
    print(f"{'implementation':26s} {'ms/step':>9s} {'vs torch foreach':>17s} {'min..max ms':>16s}")
    for name, row in table.items():
        print(
            f"{name:26s} {row['ms']:9.1f} {row['ratio_to_torch_foreach']:16.2f}x "
            f"{row['min_ms']:7.1f}..{row['max_ms']:<7.1f}"
        )
    print("llmbook paths bit-identical to torch's after all steps:", identical)
    print(f"5-minute load average {load_average} on {os.cpu_count()} cores (above the core count, timings are noisy)")
    path = write_results("bench_optim", result, args=vars(args), wall_time_s=round(time.time() - t0, 1))
    print("wrote", path)


if __name__ == "__main__":
    main()
