#!/usr/bin/env python
"""The fine-tuning chapter's `full` experiment: every strategy x seeds on the whole Rotten Tomatoes training split.

Writes results/finetune_strategies.json (with provenance), which nbs/06_finetuning.ipynb reads. Each run also keeps
its model folder under runs/sweep/<strategy>-seed<seed>/ (delete them afterwards if disk matters). Runs that already
finished are reused, so the sweep can be interrupted and restarted.

usage: .venv/bin/python tools/run_finetune_sweep.py [--strategies head last-k full lora] [--seeds 0 1 2] [--epochs 2]
"""
import argparse, json, time
from pathlib import Path
from llmbook import config
from llmbook.finetune import FinetuneArgs, STRATEGIES, finetune

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--runs-dir", default="runs/sweep")
a = p.parse_args()

t0 = time.perf_counter()
runs, baseline = {}, None
for strategy in a.strategies:
    for seed in a.seeds:
        out = Path(a.runs_dir) / f"{strategy}-seed{seed}"
        if (out / "metrics.json").is_file():
            res = json.loads((out / "metrics.json").read_text())
        else:
            args = FinetuneArgs(strategy=strategy, seed=seed, epochs=a.epochs, output_dir=str(out),
                                resume=out.exists(), progress=False)
            res = finetune(args)
        print(f"{strategy:>6} seed {seed}: test accuracy {res['test']['accuracy']:.4f} "
              f"({res.get('wall_time_s', 0) / 60:.1f} min)", flush=True)
        runs.setdefault(strategy, []).append({k: res[k] for k in ("test", "validation", "trainable_parameters",
                                                                  "learning_rate", "epochs", "seed", "wall_time_s",
                                                                  "train_examples") if k in res})
        baseline = baseline or res.get("baseline")
if baseline: runs["TF-IDF + logistic regression"] = [{"test": baseline}]
scratch = config.read_results("scratch_classifier")
if scratch: runs["transformer from random init (training chapter)"] = [{"test": scratch["results"]["test"]}
                                                                         if "test" in scratch["results"] else scratch["results"]]
path = config.write_results("finetune_strategies", {"runs": runs, "epochs": a.epochs, "seeds": a.seeds},
                            wall_time_s=time.perf_counter() - t0)
print("wrote", path)
