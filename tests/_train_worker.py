"""Subprocess worker for tests/test_train.py: trains a tiny GPT-2 on a fixed random token set with `llmbook.train`.

usage: python _train_worker.py OUT_DIR RESULT_FILE [--resume] [--kill-at-step N] [--kill-in-save N] [--dropout P]
       [--batch B] [--accum K] [--epochs E] [--save-every S] [--cpu]
Writes RESULT_FILE (torch.save) on the main process: final parameters, eval metrics, number of processes, and the
largest parameter difference between ranks. Run under `accelerate launch` / torchrun for several processes."""

import argparse
import os
import signal
import sys

import torch


def make_data(n, seed=0):
    "n random token sequences of length 3..11 over a vocabulary of 50 (fixed by `seed`)."
    g = torch.Generator().manual_seed(seed)
    return [
        dict(input_ids=torch.randint(0, 50, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g))
        for _ in range(n)
    ]


def collate(rows):
    "Right-pad to the longest sequence; labels are the inputs with padding set to -100."
    T = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    am = torch.zeros_like(ids)
    lab = torch.full_like(ids, -100)
    for i, r in enumerate(rows):
        L = len(r["input_ids"])
        ids[i, :L] = r["input_ids"]
        am[i, :L] = 1
        lab[i, :L] = r["input_ids"]
    return dict(input_ids=ids, attention_mask=am, labels=lab)


def make_model(dropout=0.0, seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=50,
        n_positions=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(cfg)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("result")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--kill-at-step", type=int)
    ap.add_argument("--kill-in-save", type=int)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--save-every", type=int)
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--n-eval", type=int, default=13)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from llmbook.train import TrainingConfig, train

    if a.kill_in_save is not None:  # die after writing the temp folder, before it is renamed into place
        import accelerate

        orig = accelerate.Accelerator.save_state

        def save_state(self, output_dir=None, **kw):
            r = orig(self, output_dir, **kw)
            if output_dir and f"step-{a.kill_in_save:07d}" in str(output_dir):
                os.kill(os.getpid(), signal.SIGKILL)
            return r

        accelerate.Accelerator.save_state = save_state

    def killer(state):
        if state["global_step"] == a.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    cfg = TrainingConfig(
        a.out,
        num_epochs=a.epochs,
        per_device_batch_size=a.batch,
        gradient_accumulation_steps=a.accum,
        learning_rate=3e-3,
        warmup_steps=2,
        save_every_steps=a.save_every,
        keep_last=2,
        log_every_steps=1,
        resume=a.resume,
        cpu=a.cpu,
        progress=False,
        eval_batch_size=4,
    )
    res = train(
        make_model(a.dropout),
        make_data(a.n_train),
        make_data(a.n_eval, seed=1),
        config=cfg,
        collate_fn=collate,
        callbacks=(killer,) if a.kill_at_step else (),
    )
    from llmbook.train import evaluate

    ev2, _, _ = evaluate(res.model, make_data(a.n_eval, seed=1), collate, batch_size=3)  # no accelerator passed
    from accelerate import PartialState

    ps = PartialState()
    flat = torch.cat([p.detach().flatten() for p in res.model.parameters()])
    if ps.num_processes > 1:
        import torch.distributed as dist

        gathered = [torch.zeros_like(flat) for _ in range(ps.num_processes)]
        dist.all_gather(gathered, flat)
        rank_diff = max((g - flat).abs().max().item() for g in gathered)
    else:
        rank_diff = 0.0
    if ps.is_main_process:
        torch.save(
            dict(
                params={k: v.detach().clone() for k, v in res.model.state_dict().items()},
                eval_metrics=res.eval_metrics,
                eval2=ev2,
                num_processes=ps.num_processes,
                distributed_type=str(ps.distributed_type),
                rank_diff=rank_diff,
                global_step=res.global_step,
                history=res.history,
                checkpoint=str(res.output_dir),
            ),
            a.result,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
