"""Tests of `llmbook.train` that are too heavy for the notebook: accumulation equivalence, the default loss against
Hugging Face's own, schedules against transformers', divergence and early stopping, SIGKILL + resume (bitwise), and a
real 2-process CPU run (gloo) through `accelerate launch`.

The subprocess tests use `tests/_train_worker.py` (a tiny GPT-2 on fixed random tokens, one thread)."""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmbook.train import (
    TrainingConfig,
    TrainingDivergedError,
    checkpoint_dir,
    cross_entropy_loss,
    evaluate,
    latest_checkpoint,
    list_checkpoints,
    load_model_weights,
    per_example_cross_entropy,
    train,
)

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _train_worker import collate, make_data, make_model  # noqa: E402

torch.set_num_threads(1)  # tiny models: one thread is fastest and deterministic
ENV = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1", PYTHONHASHSEED="0", TOKENIZERS_PARALLELISM="false")


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def cfg(tmp_path, **kw):
    base = dict(
        num_epochs=1,
        per_device_batch_size=8,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        log_every_steps=1,
        progress=False,
        eval_batch_size=8,
    )
    base.update(kw)
    return TrainingConfig(str(tmp_path), **base)


# ------------------------------------------------------------------ loss
def test_default_loss_equals_hf_causal_lm_loss():
    m = make_model()
    batch = collate(make_data(6))
    out = m(**batch)  # HF computes its own shifted, -100-masked mean loss
    s, c = cross_entropy_loss(m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]), batch)
    assert int(c) == int((batch["labels"][:, 1:] != -100).sum())
    assert abs((s / c).item() - out.loss.item()) < 1e-6


def test_default_loss_classification_and_bad_shapes():
    torch.manual_seed(0)
    logits, labels = torch.randn(7, 3), torch.tensor([0, 2, 1, -100, 2, 0, 1])
    sums, counts = per_example_cross_entropy({"logits": logits}, {"labels": labels})
    ref = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    assert torch.allclose(sums.sum(), ref) and counts.tolist() == [1, 1, 1, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="pass loss_fn"):
        per_example_cross_entropy({"logits": torch.randn(2, 3, 4)}, {"labels": torch.zeros(2, dtype=torch.long)})


# ------------------------------------------------------------------ accumulation
def test_accumulation_equals_big_batch(tmp_path):
    """k micro-batches of b examples == one batch of k*b, in the logged loss and in the update (SGD exposes the
    gradient: p1 = p0 - lr*g). Sequences have different lengths, so a per-micro-batch mean would NOT agree."""
    data = make_data(40)
    res = {}
    for b, k in [(8, 1), (2, 4), (4, 2)]:
        m = make_model()
        r = train(
            m,
            data,
            config=cfg(
                tmp_path / f"{b}x{k}",
                per_device_batch_size=b,
                gradient_accumulation_steps=k,
                max_grad_norm=None,
                lr_schedule="constant",
                num_epochs=2,
            ),
            collate_fn=collate,
            optimizer=torch.optim.SGD(m.parameters(), lr=0.5),
        )
        res[k] = (flat(r.model), [h["loss"] for h in r.history if "loss" in h], r.global_step)
    assert res[1][2] == res[4][2] == res[2][2] == 10
    for k in (2, 4):
        assert (res[1][0] - res[k][0]).abs().max().item() < 1e-6
        assert max(abs(x - y) for x, y in zip(res[1][1], res[k][1])) < 1e-6
    # the naive loop (mean per micro-batch, divided by k) is measurably different: the test can fail
    m = make_model()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(42)).tolist()
    for i in range(4):
        mb = collate([data[j] for j in order[2 * i : 2 * i + 2]])
        (m(**mb).loss / 4).backward()
    opt.step()
    m2 = make_model()
    opt2 = torch.optim.SGD(m2.parameters(), lr=0.5)
    m2(**collate([data[j] for j in order[:8]])).loss.backward()
    opt2.step()
    assert (flat(m) - flat(m2)).abs().max().item() > 1e-4


def test_partial_last_window(tmp_path):
    "10 batches with k=4: windows of 4, 4 and 2 micro-batches -> 3 optimizer steps per epoch."
    r = train(
        make_model(),
        make_data(40),
        config=cfg(tmp_path, per_device_batch_size=4, gradient_accumulation_steps=4),
        collate_fn=collate,
    )
    assert r.global_step == 3 and [h["epoch"] for h in r.history if "loss" in h] == [0.4, 0.8, 1.0]


# ------------------------------------------------------------------ schedules
@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_loop_lr_sequence_matches_transformers(tmp_path, name):
    """The learning rate used at every optimizer step of a run with accumulation (k=2, 10 batches -> 5 steps per
    epoch, 2 epochs) equals transformers' schedule stepped once per optimizer step."""
    import transformers

    fn = dict(
        linear=transformers.get_linear_schedule_with_warmup,
        cosine=transformers.get_cosine_schedule_with_warmup,
        constant=transformers.get_constant_schedule_with_warmup,
    )[name]
    r = train(
        make_model(),
        make_data(40),
        config=cfg(
            tmp_path,
            per_device_batch_size=4,
            gradient_accumulation_steps=2,
            num_epochs=2,
            lr_schedule=name,
            warmup_steps=3,
            learning_rate=0.1,
        ),
        collate_fn=collate,
    )
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sch = fn(opt, 3, 10) if name != "constant" else fn(opt, 3)
    expected = []
    for _ in range(10):
        expected.append(sch.get_last_lr()[0])
        opt.step()
        sch.step()
    got = [h["lr"] for h in r.history if "loss" in h]
    assert r.global_step == 10 and max(abs(a - b) for a, b in zip(got, expected)) < 1e-15


def test_config_validation():
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainingConfig("x", lr_schedule="step")
    with pytest.raises(ValueError, match="keep_last"):
        TrainingConfig("x", keep_last=0)


# ------------------------------------------------------------------ checkpoints, divergence, early stopping
def test_checkpoints_keep_last_and_history_files(tmp_path):
    r = train(
        make_model(),
        make_data(40),
        make_data(8, seed=1),
        config=cfg(
            tmp_path,
            per_device_batch_size=4,
            save_every_steps=2,
            eval_every_steps=5,
            keep_last=2,
            metric_for_best_model="loss",
        ),
        collate_fn=collate,
    )
    steps = [int(p.name.split("-")[1]) for p in list_checkpoints(tmp_path)]
    best = int(Path(r.best_checkpoint).name.split("-")[1])
    assert steps[-2:] == [8, 10] and set(steps) <= {8, 10, best}
    assert (tmp_path / "history.json").is_file() and (tmp_path / "history.csv").is_file()
    assert r.eval_metrics["eval_examples"] == 8
    m = load_model_weights(make_model(seed=5), latest_checkpoint(tmp_path))
    assert torch.equal(flat(m), flat(r.model))


def test_divergence_raises_and_keeps_checkpoint(tmp_path):
    def exploding_loss(outputs, batch):
        s, c = cross_entropy_loss(outputs, batch)
        return (s * float("nan") if exploding_loss.calls >= 3 else s), c

    exploding_loss.calls = 0

    def count(state):
        exploding_loss.calls = state["global_step"]

    with pytest.raises(TrainingDivergedError, match="step 4"):
        train(
            make_model(),
            make_data(40),
            config=cfg(tmp_path, per_device_batch_size=4, save_every_steps=2),
            collate_fn=collate,
            loss_fn=exploding_loss,
            callbacks=(count,),
        )
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 2)


def test_early_stopping(tmp_path):
    """Patience 2 on a metric where higher is better ('loss' with greater_is_better=True, which training works
    against): the run must stop at the 2nd evaluation in a row without a new best, and the best checkpoint is the
    step of the highest eval loss. The expected stop is recomputed from the evaluation history."""
    r = train(
        make_model(),
        make_data(40),
        make_data(8, seed=1),
        config=cfg(
            tmp_path,
            per_device_batch_size=4,
            num_epochs=5,
            eval_every_steps=1,
            early_stopping_patience=2,
            metric_for_best_model="loss",
            greater_is_better=True,
            learning_rate=1e-2,
        ),
        collate_fn=collate,
    )
    evals = [(h["step"], h["eval_loss"]) for h in r.history if "eval_loss" in h]
    best, bad, stop = None, 0, None
    for step, v in evals:
        if best is None or v > best[1]:
            best, bad = (step, v), 0
        else:
            bad += 1
            if bad == 2:
                stop = step
                break
    assert r.stopped_early and stop is not None and r.global_step == stop < 50
    assert Path(r.best_checkpoint) == checkpoint_dir(tmp_path, best[0]) and Path(r.best_checkpoint).is_dir()


def test_early_stopping_after_an_epoch_end_evaluation_takes_no_further_step(tmp_path):
    """With evaluation after every epoch, the decision to stop is taken at an epoch's end: no optimizer step may
    follow it (the run ends at that evaluation's step), and each epoch is evaluated once."""
    r = train(
        make_model(),
        make_data(40),
        make_data(8, seed=1),
        config=cfg(
            tmp_path,
            per_device_batch_size=4,
            num_epochs=5,
            early_stopping_patience=1,
            metric_for_best_model="loss",
            greater_is_better=True,
            learning_rate=1e-3,
        ),
        collate_fn=collate,
    )
    evals = [h for h in r.history if "eval_loss" in h]
    assert r.stopped_early and len(evals) < 5, [h["eval_loss"] for h in evals]
    assert r.global_step == evals[-1]["step"] == 10 * len(evals)  # 10 steps per epoch, none after the stop
    assert [h["epoch"] for h in evals] == list(range(1, len(evals) + 1))


def test_load_best_model_at_end(tmp_path):
    "load_best_model_at_end restores the weights of the best evaluation's checkpoint and reports its metrics."
    r = train(
        make_model(),
        make_data(40),
        make_data(8, seed=1),
        config=cfg(
            tmp_path,
            per_device_batch_size=4,
            num_epochs=2,
            eval_every_steps=1,
            keep_last=1,
            metric_for_best_model="loss",
            greater_is_better=True,
            load_best_model_at_end=True,
        ),
        collate_fn=collate,
    )
    evals = [h for h in r.history if "eval_loss" in h]
    best = max(evals, key=lambda h: h["eval_loss"])
    assert Path(r.best_checkpoint) == checkpoint_dir(tmp_path, best["step"]) and best["step"] < r.global_step
    assert r.eval_metrics["eval_loss"] == best["eval_loss"]
    m = load_model_weights(make_model(seed=9), r.best_checkpoint)
    assert torch.equal(flat(m), flat(r.model))


def test_bf16_on_cpu_runs_and_fp16_refused(tmp_path):
    r = train(make_model(), make_data(16), config=cfg(tmp_path, mixed_precision="bf16", cpu=True), collate_fn=collate)
    assert math.isfinite(r.train_loss)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp16"):
            train(make_model(), make_data(16), config=cfg(tmp_path / "b", mixed_precision="fp16"), collate_fn=collate)


def test_frozen_eval_modules_stay_in_eval(tmp_path):
    m = make_model(dropout=0.1)
    for p in m.transformer.h.parameters():
        p.requires_grad_(False)
    m.transformer.h.eval()
    seen = {}

    def spy(state):
        seen["h"] = m.transformer.h.training
        seen["root"] = m.training

    train(m, make_data(16), config=cfg(tmp_path), collate_fn=collate, callbacks=(spy,))
    assert seen == {"h": False, "root": True}


# ------------------------------------------------------------------ subprocess tests
def run_worker(*args, launcher=(), env=None):
    return subprocess.run(
        [*launcher, *(() if launcher else (sys.executable,)), str(HERE / "_train_worker.py"), *map(str, args)],
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_sigkill_and_resume_is_bitwise_equal(tmp_path):
    """A run SIGKILLed while writing a checkpoint (temp folder written, not yet renamed), resumed, SIGKILLed again
    mid-epoch, and resumed again ends with parameters bitwise equal to an uninterrupted run (dropout on)."""
    common = ["--dropout", "0.1", "--save-every", "3"]
    ref = run_worker(tmp_path / "ref", tmp_path / "ref.pt", *common)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "run"
    p = run_worker(run, tmp_path / "run.pt", *common, "--kill-in-save", 9)
    assert p.returncode == -9, p.stderr[-2000:]
    assert (run / "checkpoints" / ".tmp-step-0000009").is_dir()  # the torn write ...
    assert latest_checkpoint(run) == checkpoint_dir(run, 6)  # ... is not a checkpoint
    p = run_worker(run, tmp_path / "run.pt", *common, "--resume", "--kill-at-step", 14)
    assert p.returncode == -9, p.stderr[-2000:]
    assert "resumed from" in p.stdout and "step 6, epoch 0, batch 6/10" in p.stdout
    assert latest_checkpoint(run) == checkpoint_dir(run, 12)
    p = run_worker(run, tmp_path / "run.pt", *common, "--resume")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "step 12, epoch 1, batch 2/10" in p.stdout
    a, b = torch.load(tmp_path / "ref.pt"), torch.load(tmp_path / "run.pt")
    assert a["global_step"] == b["global_step"] == 20
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    assert not (run / "checkpoints" / ".tmp-step-0000009").exists()  # cleaned up on resume


@pytest.mark.slow
def test_two_cpu_processes(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` with cpu=True: 2 gloo ranks (NOT `--cpu`, which runs one).
    Parameters equal across ranks, equal to one process with the same global batch (2 x 2 = 4) within 1e-5, every one
    of 13 evaluation examples counted once, and the 2-process checkpoint loads into a plain model."""
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29533",
    ]
    p = run_worker(
        tmp_path / "mp",
        tmp_path / "mp.pt",
        "--cpu",
        "--batch",
        2,
        launcher=launcher,
        env=dict(ENV, ACCELERATE_USE_CPU="1"),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    mp = torch.load(tmp_path / "mp.pt")
    assert mp["num_processes"] == 2 and mp["distributed_type"].endswith("MULTI_CPU")
    assert mp["rank_diff"] == 0.0
    torch.set_num_threads(1)
    ref = train(
        make_model(),
        make_data(40),
        make_data(13, seed=1),
        config=cfg(
            tmp_path / "sp",
            num_epochs=2,
            per_device_batch_size=4,
            learning_rate=3e-3,
            warmup_steps=2,
            eval_batch_size=4,
        ),
        collate_fn=collate,
    )
    diff = max((mp["params"][k] - v).abs().max().item() for k, v in ref.model.state_dict().items())
    assert diff < 1e-5, diff
    assert mp["eval_metrics"]["eval_examples"] == ref.eval_metrics["eval_examples"] == 13
    assert abs(mp["eval_metrics"]["eval_loss"] - ref.eval_metrics["eval_loss"]) < 1e-5
    assert mp["eval2"]["eval_examples"] == 13  # evaluate() without an accelerator, inside the 2-process run
    assert abs(mp["eval2"]["eval_loss"] - ref.eval_metrics["eval_loss"]) < 1e-5
    plain = load_model_weights(make_model(seed=3), latest_checkpoint(tmp_path / "mp"))
    for k, v in plain.state_dict().items():
        assert torch.equal(v, mp["params"][k]), k


# ------------------------------------------------------------------ optimizer choice
def test_optim_choices_train_the_same(tmp_path):
    """`optim` picks the AdamW implementation. The book's AdamW and torch's foreach AdamW give bit-identical
    parameters after a run; torch's fused kernel the same update up to float rounding; all of them move the model."""
    from llmbook.optim import AdamW
    from llmbook.train import OPTIMIZERS, make_optimizer

    data = make_data(40)
    start = flat(make_model())
    out = {
        o: flat(train(make_model(), data, config=cfg(tmp_path / o, optim=o), collate_fn=collate).model)
        for o in OPTIMIZERS
    }
    assert torch.equal(out["adamw_llmbook"], out["adamw_torch"])
    d = (out["adamw_torch_fused"] - out["adamw_torch"]).abs().max().item()
    assert 0 < d < 1e-6  # > 0: the fused kernel really ran (it rounds differently), so config.optim is used
    assert (out["adamw_torch"] - start).abs().max().item() > 1e-3  # 5 AdamW steps at lr 1e-3 moved it
    m = make_model()
    opts = {o: make_optimizer(m, 1e-3, 0.01, o) for o in OPTIMIZERS}
    assert type(opts["adamw_llmbook"]) is AdamW and type(opts["adamw_torch"]) is torch.optim.AdamW
    assert opts["adamw_torch_fused"].param_groups[0]["fused"] is True
    assert [len(g["params"]) for g in opts["adamw_torch_fused"].param_groups] == [
        len(g["params"]) for g in opts["adamw_llmbook"].param_groups
    ]  # same decay / no-decay groups
    with pytest.raises(ValueError, match="adamw_torch_fused"):
        make_optimizer(m, 1e-3, 0.01, "adam")
    with pytest.raises(ValueError, match="optim"):
        cfg(tmp_path, optim="sgd")


# ------------------------------------------------------------------ length-grouped batches
def test_group_by_length_pads_less_and_resumes_exactly(tmp_path):
    """`group_by_length=True` batches similar lengths (fewer padded positions than random batches of the same data),
    visits every example once per epoch, and a run stopped at step 7 and resumed ends bitwise equal to one that ran
    through (the grouped order is a function of (seed, epoch), like the plain one)."""
    data = make_data(80)
    seen = {}

    def recording(name):
        def c(rows):
            b = collate(rows)
            seen.setdefault(name, []).append((b["input_ids"].shape, [len(r["input_ids"]) for r in rows]))
            return b

        return c

    common = dict(per_device_batch_size=4, num_epochs=2, lr_schedule="constant", save_every_steps=7)
    ref = {}
    for g in (False, True):
        r = train(
            make_model(), data, config=cfg(tmp_path / f"g{g}", group_by_length=g, **common), collate_fn=recording(g)
        )
        ref[g] = flat(r.model)
        padded = sum(s[0] * s[1] for s, _ in seen[g])
        useful = sum(sum(ls) for _, ls in seen[g])
        seen[g] = (padded, useful, sorted(L for _, ls in seen[g][:20] for L in ls))
    assert seen[True][1] == seen[False][1]  # the same tokens were trained on ...
    assert seen[True][2] == seen[False][2] == sorted(len(x["input_ids"]) for x in data)  # epoch 1: each example once
    pads = {g: seen[g][0] - seen[g][1] for g in seen}  # ... with far fewer pad positions
    assert pads[True] < 0.5 * pads[False], pads
    # stop after 7 optimizer steps (a checkpoint is saved there), then resume to the end: bitwise the same
    d = tmp_path / "stopped"
    train(make_model(), data, config=cfg(d, group_by_length=True, max_steps=7, **common), collate_fn=collate)
    r = train(make_model(), data, config=cfg(d, group_by_length=True, resume=True, **common), collate_fn=collate)
    assert r.global_step == 40 and torch.equal(flat(r.model), ref[True])
    umask = os.umask(0)
    os.umask(umask)  # checkpoint weights are as readable as the other files
    assert {f.stat().st_mode & 0o777 for f in (d / "checkpoints").glob("*/*.safetensors")} == {0o666 & ~umask}
    with pytest.raises(ValueError, match="input_ids"):
        train(make_model(), [dict(x=1)] * 8, config=cfg(tmp_path / "bad", group_by_length=True), collate_fn=collate)


# ------------------------------------------------------------------ gradient scaling and clipping
@pytest.mark.parametrize("max_norm", [None, 0.5, 1e6])
def test_scale_and_clip_equals_scaling_then_clip_grad_norm(max_norm):
    """The loop's `_scale_and_clip` is bitwise torch's: multiply by the scale, then `torch.nn.utils.clip_grad_norm_`
    (norm reported before clipping; 0.5 clips, 1e6 does not, None only measures)."""
    from llmbook.train import _make_accelerator, _scale_and_clip

    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(3))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    for p, q in zip(a, b):
        p.grad = torch.randn_like(p) * 4
        q.grad = p.grad.clone()
    scale = 1 / 37
    norm = _scale_and_clip(_make_accelerator(cpu=True, mixed_precision="no"), a, scale, max_norm)
    for q in b:
        q.grad.mul_(scale)
    ref = torch.nn.utils.clip_grad_norm_(b, max_norm if max_norm is not None else float("inf"))
    assert torch.equal(norm, ref)
    for p, q in zip(a, b):
        assert torch.equal(p.grad, q.grad)
    clipped = torch.cat([p.grad.flatten() for p in a]).norm().item()
    assert (abs(clipped - 0.5) < 1e-5) if max_norm == 0.5 else abs(clipped - ref.item()) < 1e-6


# ------------------------------------------------------------------ the loop's update against hand-written torch
def _hand_window_loss(model, rows):
    """Per-token mean cross-entropy over a whole accumulation window (a list of micro-batches of examples), written
    out with torch alone: shifted next-token targets, padding (-100) ignored, one mean over every target."""
    total, count = 0.0, 0
    for mb in rows:
        b = collate(mb)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        targets = b["labels"][:, 1:]
        total = total + torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="sum"
        )
        count += int((targets != -100).sum())
    return total / count


def _windows(data, batch, k, steps, seed=42):
    "The examples of each accumulation window, in the loop's order (SeededRandomSampler: randperm seeded seed+epoch)."
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    mbs = [[data[j] for j in order[i : i + batch]] for i in range(0, len(order), batch)]
    return [mbs[s * k : (s + 1) * k] for s in range(steps)]


def test_one_sgd_step_is_minus_lr_times_the_per_token_mean_gradient(tmp_path):
    """One optimizer step over 2 micro-batches of sequences of different lengths equals p - lr * grad of the per-token
    mean loss of the whole window, computed by hand (SGD exposes the gradient; tolerance 1e-6 covers the different
    summation order). A per-sequence mean, or a mean per micro-batch, moves the weights measurably elsewhere."""
    data, lr = make_data(16), 0.5
    m = make_model()
    r = train(
        m,
        data,
        config=cfg(
            tmp_path,
            per_device_batch_size=4,
            gradient_accumulation_steps=2,
            max_steps=1,
            max_grad_norm=None,
            lr_schedule="constant",
        ),
        collate_fn=collate,
        optimizer=torch.optim.SGD(m.parameters(), lr=lr),
    )
    ref = make_model()
    (window,) = _windows(data, 4, 2, 1)
    loss = _hand_window_loss(ref, window)
    loss.backward()
    expected = torch.cat([(p - lr * p.grad).detach().flatten() for p in ref.parameters()])
    moved = (flat(r.model) - flat(make_model())).abs().max().item()
    assert moved > 1e-3  # the step is not negligible, so 1e-6 below is a real check
    assert (flat(r.model) - expected).abs().max().item() < 1e-6
    assert abs(r.history[0]["loss"] - loss.item()) < 1e-6
    # the per-sequence mean over the same window gives another update (the test can fail)
    seq = make_model()
    per_seq = []
    for mb in window:
        b = collate(mb)
        lg = seq(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
        ce = torch.nn.functional.cross_entropy(
            lg.transpose(1, 2), b["labels"][:, 1:], ignore_index=-100, reduction="none"
        )
        per_seq.append(ce.sum(1) / (b["labels"][:, 1:] != -100).sum(1))
    torch.cat(per_seq).mean().backward()
    other = torch.cat([(p - lr * p.grad).detach().flatten() for p in seq.parameters()])
    assert (other - expected).abs().max().item() > 1e-4


def test_clipping_in_train_equals_torch_loop(tmp_path):
    """3 SGD steps with accumulation (k=2) and max_grad_norm=0.05 (every step clips: the gradient norms are about 1)
    through `train` equal a hand-written torch loop: per-token mean loss of the window, backward,
    `clip_grad_norm_`, step. The logged grad_norm is the norm before clipping."""
    data, lr, max_norm = make_data(24), 0.3, 0.05
    m = make_model()
    r = train(
        m,
        data,
        config=cfg(
            tmp_path,
            per_device_batch_size=4,
            gradient_accumulation_steps=2,
            max_steps=3,
            max_grad_norm=max_norm,
            lr_schedule="constant",
        ),
        collate_fn=collate,
        optimizer=torch.optim.SGD(m.parameters(), lr=lr),
    )
    ref = make_model()
    opt = torch.optim.SGD(ref.parameters(), lr=lr)
    norms = []
    for window in _windows(data, 4, 2, 3):
        _hand_window_loss(ref, window).backward()
        norms.append(torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm).item())
        opt.step()
        opt.zero_grad()
    assert min(norms) > 10 * max_norm  # clipping really acted at every step
    logged = [h["grad_norm"] for h in r.history if "grad_norm" in h]
    assert r.global_step == 3 and max(abs(a - b) / b for a, b in zip(logged, norms)) < 1e-5
    assert (flat(r.model) - flat(ref)).abs().max().item() < 1e-6
