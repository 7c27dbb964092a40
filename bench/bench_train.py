"""Benchmark of `llmbook.train` (issue 5): MiniLM fine-tuning a 2-class classifier on Rotten Tomatoes, on CPU.

    python bench/bench_train.py [--steps 6] [--batch-size 16] [--threads N] [--no-write]

Every number is a ratio of two measurements made in this same run (never compared with a stored constant):
  (a) step time of `llmbook.train` vs a plain PyTorch loop vs Hugging Face `Trainer`, same model, same fixed-length
      batches (64 tokens), same optimizer settings; goals: train <= 1.03x plain, train faster than Trainer;
  (b) achieved FLOP/s of the training step, FLOPs = 6 * non-embedding parameters * tokens + 12 * layers * T * d * tokens
      (attention scores and mixing, forward + backward), as a fraction of a 2048x2048 fp32 matmul's FLOP/s; goal >= 75%;
  (c) bf16 autocast vs fp32 step time with `llmbook.train`; goal >= 1.25x (needs CPU bf16 support: AMX / AVX512-BF16);
  (d) dynamic padding vs padding every batch to 128 tokens, useful (non-pad) tokens per second; goal >= 3x.
Step times are medians over `--steps` steps after 2 warm-up steps. The table is printed and, unless --no-write,
stored with provenance (CPU model, threads, load average) in results/bench_train.json for the training chapter."""
import argparse, os, statistics, sys, tempfile, time

import torch
import torch.nn.functional as F


def load(batch_size, n_examples):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from llmbook import data, resources
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


def median_step(stamps, warmup=2):
    d = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]
    return statistics.median(d)


def plain_loop(model, batches, lr=5e-5):
    "The plain PyTorch loop: forward, mean cross-entropy, backward, clip, AdamW, schedule step."
    from llmbook.train import make_optimizer, make_scheduler
    opt = make_optimizer(model, lr, 0.01); sch = make_scheduler(opt, "linear", 0, len(batches))
    model.train(); stamps = [time.perf_counter()]
    for b in batches:
        out = model(**{k: v for k, v in b.items() if k != "labels"})
        F.cross_entropy(out.logits, b["labels"]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sch.step(); opt.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    return stamps


def llmbook_loop(model, ds, collate, steps, batch_size, mixed_precision="no"):
    from llmbook.train import TrainingConfig, train
    stamps = [time.perf_counter()]
    with tempfile.TemporaryDirectory() as d:
        train(model, ds, collate_fn=collate, callbacks=(lambda st: stamps.append(time.perf_counter()),),
              config=TrainingConfig(d, max_steps=steps, per_device_batch_size=batch_size, learning_rate=5e-5,
                                    warmup_ratio=0, mixed_precision=mixed_precision, cpu=True, progress=False,
                                    save_every_steps=10**9, log_every_steps=10**9))
    return stamps


def hf_trainer(model, ds, collate, steps, batch_size):
    from transformers import Trainer, TrainerCallback, TrainingArguments
    stamps = []
    class Stamp(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not stamps: stamps.append(time.perf_counter())
        def on_step_end(self, args, state, control, **kw): stamps.append(time.perf_counter())
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(d, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=5e-5,
                                 weight_decay=0.01, warmup_steps=0, max_grad_norm=1.0, use_cpu=True, report_to=[],
                                 save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=42)
        Trainer(model=model, args=args, train_dataset=ds, data_collator=collate, callbacks=[Stamp()]).train()
    return stamps


def sgemm_flops(n=2048, reps=5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = []
    for _ in range(reps):
        t0 = time.perf_counter(); a @ b; t.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6); ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None); ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    steps, B, T = a.steps + 2, a.batch_size, 64
    tok, ds, make_model = load(B, n_examples=steps * B)
    collate64 = fixed_collate(tok, T)
    from llmbook.train import SeededRandomSampler
    order = list(SeededRandomSampler(len(ds), 42))
    batches = [collate64([ds[i] for i in order[s * B:(s + 1) * B]]) for s in range(steps)]
    t0 = time.perf_counter()
    rows = {}
    rows["plain PyTorch loop"] = median_step(plain_loop(make_model(), batches))
    rows["llmbook.train"] = median_step(llmbook_loop(make_model(), ds, collate64, steps, B))
    rows["HF Trainer"] = median_step(hf_trainer(make_model(), ds, collate64, steps, B))
    rows["llmbook.train bf16"] = median_step(llmbook_loop(make_model(), ds, collate64, steps, B, "bf16"))
    # (d) dynamic padding vs pad-to-128, plain loop, useful tokens per second
    from llmbook.data import collator
    dyn = collator(tok); pad128 = fixed_collate(tok, 128)
    useful = [sum(len(ds[i]["input_ids"]) for i in order[s * B:(s + 1) * B]) for s in range(steps)]
    useful_tokens = statistics.median(useful[2:])
    t_dyn = median_step(plain_loop(make_model(), [dyn([ds[i] for i in order[s * B:(s + 1) * B]]) for s in range(steps)]))
    t_128 = median_step(plain_loop(make_model(), [pad128([ds[i] for i in order[s * B:(s + 1) * B]]) for s in range(steps)]))
    # (b) FLOP/s of the llmbook.train step vs an sgemm
    m = make_model(); cfg = m.config
    n_emb = sum(p.numel() for n, p in m.named_parameters() if "embeddings" in n)
    n_nonemb = m.num_parameters() - n_emb
    tokens = B * T
    flops = 6 * n_nonemb * tokens + 12 * cfg.num_hidden_layers * T * cfg.hidden_size * tokens
    achieved, peak = flops / rows["llmbook.train"], sgemm_flops()
    res = dict(
        step_time_s={k: round(v, 4) for k, v in rows.items()},
        train_vs_plain=rows["llmbook.train"] / rows["plain PyTorch loop"],
        trainer_vs_train=rows["HF Trainer"] / rows["llmbook.train"],
        achieved_gflops=achieved / 1e9, sgemm_gflops=peak / 1e9, flops_fraction=achieved / peak,
        bf16_speedup=rows["llmbook.train"] / rows["llmbook.train bf16"],
        dynamic_vs_pad128_useful_tokens=(useful_tokens / t_dyn) / (useful_tokens / t_128),
        batch_size=B, seq_len=T, steps_timed=a.steps, threads=torch.get_num_threads(),
        load_average=os.getloadavg()[0], wall_time_s=time.perf_counter() - t0)
    goals = [("(a) llmbook.train / plain loop step time", res["train_vs_plain"], "<= 1.03"),
             ("(a) HF Trainer / llmbook.train step time", res["trainer_vs_train"], "> 1"),
             ("(b) achieved FLOP/s / sgemm FLOP/s", res["flops_fraction"], ">= 0.75"),
             ("(c) bf16 speed-up over fp32", res["bf16_speedup"], ">= 1.25"),
             ("(d) dynamic padding / pad-to-128, useful tokens/s", res["dynamic_vs_pad128_useful_tokens"], ">= 3")]
    print(f"MiniLM classifier, batch {B} x {T} tokens, {torch.get_num_threads()} threads, "
          f"load average {res['load_average']:.1f}")
    for k, v in rows.items(): print(f"  {k:<22} {v * 1000:8.1f} ms/step  {B / v:6.1f} samples/s")
    print(f"  achieved {res['achieved_gflops']:.1f} GFLOP/s, sgemm {res['sgemm_gflops']:.1f} GFLOP/s")
    for name, v, goal in goals: print(f"{name:<52} {v:6.3f}   goal {goal}")
    res["table"] = [dict(measure=n, ratio=round(v, 3), goal=g) for n, v, g in goals]
    if not a.no_write:
        from llmbook.config import write_results
        print("stored", write_results("bench_train", res, wall_time_s=res["wall_time_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
