"""Benchmark of `llmbook.train` (issue 5): MiniLM fine-tuning a 2-class classifier on Rotten Tomatoes, on CPU.

    python bench/bench_train.py [--steps 12] [--rounds 2] [--batch-size 16] [--threads N] [--no-write]

Every number is a ratio of two measurements made in this same run (never compared with a stored constant):
  (a) step time of `llmbook.train` vs a plain PyTorch loop vs Hugging Face `Trainer`, same model, same fixed-length
      batches (64 tokens), same optimizer (torch's fused AdamW, `Trainer`'s default; `llmbook.train` with
      `optim="adamw_torch_fused"`); goals: train <= 1.03x plain, train faster than Trainer. Extra rows show what the
      book's own AdamW (`optim="adamw_llmbook"`, the library default) costs per step;
  (b) achieved FLOP/s of the training step, FLOPs = 6 * non-embedding parameters * tokens + 12 * layers * T * d * tokens
      (attention scores and mixing, forward + backward), as a fraction of a 2048x2048 fp32 matmul's FLOP/s; goal >= 75%.
      Also for forward + backward alone (no optimizer), from the phase timings of the plain loop;
  (c) bf16 autocast vs fp32 step time with `llmbook.train`; goal >= 1.25x (needs CPU bf16 support: AMX / AVX512-BF16);
  (d) dynamic padding vs padding every batch to 128 tokens, useful (non-pad) tokens per second; goal >= 3x. Measured
      for random batches and for length-grouped batches (`TrainingConfig(group_by_length=True)`).
Variants run in `--rounds` interleaved rounds (the order rotates each round, so drift in the machine's speed does
not favour whichever runs first); each number is the median over all rounds' steps after 2 warm-up steps per round.
The table is printed and, unless --no-write, stored with provenance (CPU model, threads, load average) in
results/bench_train.json for the training chapter."""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

SEQ = 64


def load(n_examples):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    from llmbook import data, resources

    logging.set_verbosity_error()  # "classifier.weight MISSING": expected for a new head
    path = resources.get("minilm")
    tok = AutoTokenizer.from_pretrained(path)
    dsd = data.rotten_tomatoes_splits(max_train_examples=n_examples)
    ds = data.tokenize(dsd["train"], tok, max_length=128)

    def model():
        torch.manual_seed(0)
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    return tok, ds, model


def fixed_collate(tok, length):
    from transformers import DataCollatorWithPadding

    c = DataCollatorWithPadding(tok, padding="max_length", max_length=length, return_tensors="pt")

    def collate(rows):
        rows = [{k: (v[:length] if k != "labels" else v) for k, v in r.items()} for r in rows]
        return c(rows)

    return collate


def durations(stamps, warmup=2):
    "Step durations from consecutive time stamps, without the first `warmup` steps."
    return [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :])]


def plain_loop(model, batches, optim="adamw_torch_fused", lr=5e-5, phases=None):
    """The plain PyTorch loop: forward, mean cross-entropy, backward, clip, AdamW, schedule step. Returns the time
    stamps after each step; with a `phases` dict, also appends each step's forward/backward/clip/optimizer seconds."""
    from llmbook.train import make_optimizer, make_scheduler

    opt = make_optimizer(model, lr, 0.01, optim)
    sch = make_scheduler(opt, "linear", 0, len(batches))
    model.train()
    stamps = [time.perf_counter()]
    for b in batches:
        t0 = time.perf_counter()
        out = model(**{k: v for k, v in b.items() if k != "labels"})
        loss = F.cross_entropy(out.logits, b["labels"])
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        t3 = time.perf_counter()
        opt.step()
        sch.step()
        opt.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
        if phases is not None:
            for k, v in zip(("forward", "backward", "clip", "optimizer"), (t1 - t0, t2 - t1, t3 - t2, stamps[-1] - t3)):
                phases.setdefault(k, []).append(v)
    return stamps


def llmbook_loop(model, ds, collate, steps, batch_size, mixed_precision="no", optim="adamw_torch_fused"):
    from llmbook.train import TrainingConfig, train

    stamps = [time.perf_counter()]
    with tempfile.TemporaryDirectory() as d:
        train(
            model,
            ds,
            collate_fn=collate,
            callbacks=(lambda st: stamps.append(time.perf_counter()),),
            config=TrainingConfig(
                d,
                max_steps=steps,
                per_device_batch_size=batch_size,
                learning_rate=5e-5,
                warmup_ratio=0,
                mixed_precision=mixed_precision,
                cpu=True,
                progress=False,
                save_every_steps=10**9,
                log_every_steps=10**9,
                optim=optim,
            ),
        )
    return stamps


def hf_trainer(model, ds, collate, steps, batch_size):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    stamps = []

    class Stamp(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not stamps:
                stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(
            d,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=5e-5,
            weight_decay=0.01,
            warmup_steps=0,
            max_grad_norm=1.0,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            seed=42,
            optim="adamw_torch_fused",
        )
        Trainer(model=model, args=args, train_dataset=ds, data_collator=collate, callbacks=[Stamp()]).train()
    return stamps


def sgemm_flops(n=2048, reps=5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        t.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per variant and round (after 2 warm-up steps)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all variants")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    steps, B = a.steps + 2, a.batch_size
    pool = 100 * B  # two mega-batches of 50 batches for length grouping
    tok, ds, make_model = load(n_examples=pool)
    collate64 = fixed_collate(tok, SEQ)
    from llmbook.data import collator
    from llmbook.train import SeededRandomSampler

    order = list(SeededRandomSampler(len(ds), 42))

    def batch(idx, collate):
        return collate([ds[i] for i in idx])

    fixed = [batch(order[s * B : (s + 1) * B], collate64) for s in range(steps)]
    # (d) batches: random order vs length-grouped order (a seeded random choice of its batches, since each mega-batch
    # is sorted longest first), each with dynamic padding; the random batches also padded to 128
    grouped_order = list(SeededRandomSampler(len(ds), 42, lengths=[len(x) for x in ds["input_ids"]], batch_size=B))
    n_batches = len(ds) // B
    pick = torch.randperm(n_batches, generator=torch.Generator().manual_seed(0))[:steps].tolist()
    rand_idx = [order[s * B : (s + 1) * B] for s in range(steps)]
    group_idx = [grouped_order[s * B : (s + 1) * B] for s in pick]
    dyn, pad128 = collator(tok), fixed_collate(tok, 128)
    pad_batches = {
        "dynamic, random batches": [batch(i, dyn) for i in rand_idx],
        "dynamic, length-grouped": [batch(i, dyn) for i in group_idx],
        "pad to 128": [batch(i, pad128) for i in rand_idx],
    }
    useful = {
        "dynamic, random batches": [len(sum((ds[j]["input_ids"] for j in i), [])) for i in rand_idx],
        "dynamic, length-grouped": [len(sum((ds[j]["input_ids"] for j in i), [])) for i in group_idx],
    }
    useful["pad to 128"] = useful["dynamic, random batches"]

    phases = {"fused": {}, "book": {}}
    variants = {
        "plain PyTorch loop": lambda: durations(plain_loop(make_model(), fixed, phases=phases["fused"])),
        "llmbook.train": lambda: durations(llmbook_loop(make_model(), ds, collate64, steps, B)),
        "HF Trainer": lambda: durations(hf_trainer(make_model(), ds, collate64, steps, B)),
        "llmbook.train bf16": lambda: durations(llmbook_loop(make_model(), ds, collate64, steps, B, "bf16")),
        "plain loop, book AdamW": lambda: durations(
            plain_loop(make_model(), fixed, "adamw_llmbook", phases=phases["book"])
        ),
        "llmbook.train, book AdamW": lambda: durations(
            llmbook_loop(make_model(), ds, collate64, steps, B, optim="adamw_llmbook")
        ),
    }
    pad_times = {}

    def pad_variant(name):
        def run():
            d = durations(plain_loop(make_model(), pad_batches[name]))
            pad_times.setdefault(name, []).append(sum(useful[name][2:]) / sum(d))  # useful tokens / s
            return d

        return run

    variants.update({f"(d) {n}": pad_variant(n) for n in pad_batches})
    t0 = time.perf_counter()
    peaks = [sgemm_flops()]
    times = {k: [] for k in variants}
    names = list(variants)
    for r in range(a.rounds):
        k = r * len(names) // a.rounds  # rotate the order each round
        for name in names[k:] + names[:k]:
            print(f"round {r + 1}/{a.rounds}: {name}", flush=True)
            times[name] += variants[name]()
    peaks.append(sgemm_flops())
    rows = {k: statistics.median(v) for k, v in times.items()}

    def med(d):
        return {k: round(statistics.median(v) * 1000, 1) for k, v in d.items()}

    tok_s = {n: statistics.median(v) for n, v in pad_times.items()}

    m = make_model()
    cfg = m.config
    n_emb = sum(p.numel() for n, p in m.named_parameters() if "embeddings" in n)
    n_nonemb = m.num_parameters() - n_emb
    flops = 6 * n_nonemb * B * SEQ + 12 * cfg.num_hidden_layers * SEQ * cfg.hidden_size * B * SEQ
    peak = max(peaks)  # the better of two sgemm measurements
    fwd_bwd = statistics.median([f + b for f, b in zip(phases["fused"]["forward"], phases["fused"]["backward"])])
    res = dict(
        step_time_s={k: round(v, 4) for k, v in rows.items() if not k.startswith("(d)")},
        phases_ms={"torch fused AdamW": med(phases["fused"]), "book AdamW": med(phases["book"])},
        useful_tokens_per_s={k: round(v, 1) for k, v in tok_s.items()},
        train_vs_plain=rows["llmbook.train"] / rows["plain PyTorch loop"],
        trainer_vs_train=rows["HF Trainer"] / rows["llmbook.train"],
        trainer_vs_train_book_adamw=rows["HF Trainer"] / rows["llmbook.train, book AdamW"],
        achieved_gflops=flops / rows["llmbook.train"] / 1e9,
        sgemm_gflops=peak / 1e9,
        sgemm_gflops_measured=[round(p / 1e9, 1) for p in peaks],
        flops_fraction=flops / rows["llmbook.train"] / peak,
        flops_fraction_fwd_bwd=flops / fwd_bwd / peak,
        bf16_speedup=rows["llmbook.train"] / rows["llmbook.train bf16"],
        dynamic_vs_pad128_useful_tokens=tok_s["dynamic, random batches"] / tok_s["pad to 128"],
        grouped_vs_pad128_useful_tokens=tok_s["dynamic, length-grouped"] / tok_s["pad to 128"],
        padded_length_random=statistics.mean(b["input_ids"].shape[1] for b in pad_batches["dynamic, random batches"]),
        padded_length_grouped=statistics.mean(b["input_ids"].shape[1] for b in pad_batches["dynamic, length-grouped"]),
        mean_length=statistics.mean(len(x) for x in ds["input_ids"]),
        batch_size=B,
        seq_len=SEQ,
        steps_timed=a.steps,
        rounds=a.rounds,
        threads=torch.get_num_threads(),
        load_average=os.getloadavg()[0],
        wall_time_s=time.perf_counter() - t0,
    )
    goals = [
        ("(a) llmbook.train / plain loop step time", res["train_vs_plain"], "<= 1.03"),
        ("(a) HF Trainer / llmbook.train step time", res["trainer_vs_train"], "> 1"),
        ("(a) HF Trainer / llmbook.train with the book's AdamW", res["trainer_vs_train_book_adamw"], "(> 1)"),
        ("(b) achieved FLOP/s / sgemm FLOP/s", res["flops_fraction"], ">= 0.75"),
        ("(b) same, forward + backward only", res["flops_fraction_fwd_bwd"], "(>= 0.75)"),
        ("(c) bf16 speed-up over fp32", res["bf16_speedup"], ">= 1.25"),
        ("(d) dynamic padding / pad-to-128, useful tokens/s", res["dynamic_vs_pad128_useful_tokens"], ">= 3"),
        ("(d) same, length-grouped batches", res["grouped_vs_pad128_useful_tokens"], "(>= 3)"),
    ]
    print(
        f"MiniLM classifier, batch {B} x {SEQ} tokens, {torch.get_num_threads()} threads, "
        f"load average {res['load_average']:.1f}, {a.rounds} rounds x {a.steps} timed steps"
    )
    for k, v in rows.items():
        if not k.startswith("(d)"):
            print(f"  {k:<26} {v * 1000:8.1f} ms/step  {B / v:6.1f} samples/s")
    for k, v in res["phases_ms"].items():
        print(f"  plain loop phases, {k}: {v} ms")
    print(f"  achieved {res['achieved_gflops']:.1f} GFLOP/s, sgemm {res['sgemm_gflops_measured']} GFLOP/s")
    print(
        f"  padded length per batch: random {res['padded_length_random']:.1f}, grouped "
        f"{res['padded_length_grouped']:.1f} (mean text {res['mean_length']:.1f} tokens); useful tokens/s {res['useful_tokens_per_s']}"
    )
    for name, v, goal in goals:
        print(f"{name:<55} {v:6.3f}   goal {goal}")
    res["table"] = [dict(measure=n, ratio=round(v, 3), goal=g) for n, v, g in goals]
    if not a.no_write:
        from llmbook.config import write_results

        print("stored", write_results("bench_train", res, args=vars(a), wall_time_s=res["wall_time_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
