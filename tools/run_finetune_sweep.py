#!/usr/bin/env python
"""The fine-tuning chapter's `full` experiment: every strategy x seeds on the whole Rotten Tomatoes training split.

Writes results/finetune_strategies.json (with provenance), which nbs/06_finetuning.ipynb reads. Each run also keeps
its model folder under runs/sweep/<strategy>-seed<seed>/ (delete them afterwards if disk matters). Runs that already
finished are reused, so the sweep can be interrupted and restarted.

Runs go seed by seed (every strategy with the first seed, then every strategy with the next), so a sweep stopped
early still compares all strategies. `--reuse-only` trains nothing: it collects the runs that finished.

usage: .venv/bin/python tools/run_finetune_sweep.py [--strategies head last-k full lora] [--seeds 42 43 44]
                                                    [--epochs 2] [--reuse-only]
"""

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from llmbook import config
from llmbook.finetune import STRATEGIES, FinetuneArgs, finetune

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--runs-dir", default="runs/sweep")
p.add_argument("--reuse-only", action="store_true", help="train nothing; collect the runs that finished")
p.add_argument(
    "--allow-dirty", action="store_true", help="write the record even with uncommitted changes, marked dirty"
)
a = p.parse_args()
config.require_clean(allow_dirty=a.allow_dirty)  # before hours of training, not after

t0 = time.perf_counter()
runs, baseline = {}, None
for seed in a.seeds:
    for strategy in a.strategies:
        out = Path(a.runs_dir) / f"{strategy}-seed{seed}"
        if (out / "metrics.json").is_file():
            res = json.loads((out / "metrics.json").read_text())
        elif a.reuse_only:
            print(f"{strategy:>6} seed {seed}: not run", flush=True)
            continue
        else:
            args = FinetuneArgs(
                strategy=strategy, seed=seed, epochs=a.epochs, output_dir=str(out), resume=out.exists(), progress=False
            )
            res = finetune(args)
        print(
            f"{strategy:>6} seed {seed}: test accuracy {res['test']['accuracy']:.4f} "
            f"({res.get('wall_time_s', 0) / 60:.1f} min)",
            flush=True,
        )
        run = {
            k: res[k]
            for k in (
                "test",
                "validation",
                "trainable_parameters",
                "learning_rate",
                "epochs",
                "seed",
                "wall_time_s",
                "resumed",
                "train_examples",
            )
            if k in res
        }
        if (out / "history.json").is_file():  # the training curve: loss, lr, validation metrics per logged step
            run["history"] = [
                {k: h[k] for k in ("step", "epoch", "loss", "eval_loss", "eval_accuracy") if k in h}
                for h in json.loads((out / "history.json").read_text())
            ]
        runs.setdefault(strategy, []).append(run)
        baseline = baseline or res.get("baseline")
if baseline:
    runs["TF-IDF + logistic regression"] = [{"test": baseline}]
scratch = config.read_results("scratch_classifier")
if scratch:
    runs["transformer from random init (training chapter)"] = [
        {"test": scratch["results"]["test"]} if "test" in scratch["results"] else scratch["results"]
    ]
runs = {k: runs[k] for k in [*a.strategies, *[k for k in runs if k not in a.strategies]] if k in runs}
shared = {
    k: v
    for k, v in asdict(FinetuneArgs(epochs=a.epochs)).items()
    if k not in ("strategy", "seed", "output_dir", "resume", "progress")
}  # what every run of the sweep used (strategy and seed vary)
path = config.write_results(
    "finetune_strategies",
    {"runs": runs, "epochs": a.epochs, "seeds": a.seeds},
    args=dict(vars(a), profile="full", finetune=shared),
    settings=config.load(profile="full"),  # every run used all the training data
    wall_time_s=sum(r.get("wall_time_s", 0) for rs in runs.values() for r in rs),  # compute time of the runs
    allow_dirty=a.allow_dirty,
)
print("wrote", path)
