"""llmbook.optim against torch.optim and transformers: bit-identical trajectories, state dicts, frozen parameters,
schedules. The chapter (nbs/04_optimizers.ipynb) teaches; these tests cover the full matrix of options."""

import math

import pytest
import torch

from llmbook.optim import SCHEDULES, SGD, Adam, AdamW, Schedule, get_scheduler, schedule_lambda

SHAPE_SETS = {"mixed": [(7,), (3, 5), (2, 3, 4), (1,), (16, 8)], "matrix": [(32, 16), (16,)], "scalar": [()]}
FROZEN = 1  # this parameter index never gets a gradient (when the set has more than one)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest
    yield
    torch.set_num_threads(n)


def make_params(shapes, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes]


def train(opt, params, steps, seed=1, sign=1.0, sparse_freeze=True):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        live = [p for i, p in enumerate(params) if not (sparse_freeze and len(params) > 1 and i == FROZEN)]
        loss = sum(
            ((p - 0.3) ** 4).sum() + (p.sin() * torch.randn(p.shape, generator=g, dtype=p.dtype)).sum() for p in live
        )
        (sign * loss).backward()
        opt.step()


def run_pair(ours, theirs, shapes, dtype, steps=200, **kw):
    out = []
    for cls in (ours, theirs):
        ps = make_params(shapes, dtype)
        opt = cls(ps, **kw)
        train(opt, ps, steps, sign=-1.0 if kw.get("maximize") else 1.0)
        out.append((ps, opt))
    return out


def assert_identical(a, b):
    (pa, oa), (pb, ob) = a, b
    for x, y in zip(pa, pb):
        assert torch.equal(x, y), f"max diff {(x - y).abs().max().item():.3g}"
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for i in sb["state"]:
        assert sa["state"][i].keys() == sb["state"][i].keys()
        for k in sb["state"][i]:
            assert sa["state"][i][k].dtype == sb["state"][i][k].dtype, k
            assert torch.equal(sa["state"][i][k], sb["state"][i][k]), k


SGD_KW = [
    dict(lr=0.01),
    dict(lr=0.01, momentum=0.9),
    dict(lr=0.01, momentum=0.9, nesterov=True),
    dict(lr=0.01, momentum=0.5, dampening=0.3),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True),
    dict(lr=0.01, maximize=True),
]
ADAM_KW = [
    dict(),
    dict(lr=0.01),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.003, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, maximize=True),
    dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True),
]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", SGD_KW, ids=str)
def test_sgd_bit_identical(kw, dtype, foreach):
    assert_identical(*run_pair(SGD, torch.optim.SGD, SHAPE_SETS["mixed"], dtype, foreach=foreach, **kw))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", ADAM_KW, ids=str)
@pytest.mark.parametrize("ours,theirs", [(Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW)], ids=["Adam", "AdamW"])
def test_adam_bit_identical(ours, theirs, kw, dtype, foreach):
    assert_identical(*run_pair(ours, theirs, SHAPE_SETS["mixed"], dtype, foreach=foreach, **kw))


@pytest.mark.parametrize("shapes", ["matrix", "scalar"])
@pytest.mark.parametrize(
    "ours,theirs,kw",
    [(SGD, torch.optim.SGD, dict(lr=0.01, momentum=0.9)), (AdamW, torch.optim.AdamW, dict(lr=0.01, amsgrad=True))],
)
def test_other_shapes(shapes, ours, theirs, kw):
    for foreach in (False, True):
        assert_identical(*run_pair(ours, theirs, SHAPE_SETS[shapes], torch.float32, foreach=foreach, **kw))


def test_decoupled_adam_is_adamw():
    a = run_pair(Adam, AdamW, SHAPE_SETS["mixed"], torch.float32, steps=50, lr=0.01, weight_decay=0.1)
    # Adam(decoupled_weight_decay=True) vs AdamW: same numbers
    ps1 = make_params(SHAPE_SETS["mixed"], torch.float32)
    o1 = Adam(ps1, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)
    ps2 = make_params(SHAPE_SETS["mixed"], torch.float32)
    o2 = torch.optim.AdamW(ps2, lr=0.01, weight_decay=0.1)
    train(o1, ps1, 50)
    train(o2, ps2, 50)
    assert all(torch.equal(x, y) for x, y in zip(ps1, ps2))
    # and L2 Adam is a different optimizer
    assert not all(torch.equal(x, y) for x, y in zip(a[0][0], a[1][0]))


def test_mixed_dtypes_in_one_group_foreach():
    shapes = [(4, 3), (5,)]
    runs = []
    for cls in (AdamW, torch.optim.AdamW):
        ps = make_params(shapes, torch.float32) + make_params(shapes, torch.float64, seed=3)
        opt = cls(ps, lr=0.01, foreach=True)
        train(opt, ps, 30, sparse_freeze=False)
        runs.append(ps)
    assert all(torch.equal(x, y) for x, y in zip(*runs))


def test_param_groups_and_hand_computed_adam_step():
    # hand computation of the first two Adam steps for one scalar, in float64
    p = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
    opt = Adam([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    g1, g2 = 0.5, -0.2
    p.grad = torch.tensor(g1, dtype=torch.float64)
    opt.step()
    m, v = 0.1 * g1, 0.01 * g1**2
    expect = 1.0 - 0.1 / 0.1 * m / (math.sqrt(v) / math.sqrt(0.01) + 1e-8)
    assert p.item() == pytest.approx(expect, rel=1e-14, abs=1e-14)
    p.grad = torch.tensor(g2, dtype=torch.float64)
    opt.step()
    m, v = 0.9 * m + 0.1 * g2, 0.99 * v + 0.01 * g2**2
    expect = expect - 0.1 / (1 - 0.9**2) * m / (math.sqrt(v) / math.sqrt(1 - 0.99**2) + 1e-8)
    assert p.item() == pytest.approx(expect, rel=1e-13)
    # two groups with different lr: each uses its own
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad = torch.ones(2)
    b.grad = torch.ones(2)
    opt.step()
    assert torch.equal(a.detach(), torch.full((2,), -0.1)) and torch.equal(b.detach(), torch.full((2,), -0.5))


def test_hand_computed_sgd_momentum():
    p = torch.nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    opt = SGD([p], lr=0.1, momentum=0.5, weight_decay=0.1)
    buf, x = None, 2.0
    for g in [1.0, -3.0, 0.5]:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        d = g + 0.1 * x
        buf = d if buf is None else 0.5 * buf + d
        x = x - 0.1 * buf
        assert p.item() == pytest.approx(x, rel=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "cls,kw",
    [
        (SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
        (SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
        (Adam, dict(lr=0.1, weight_decay=0.1)),
        (AdamW, dict(lr=0.1, weight_decay=0.5)),
        (AdamW, dict(lr=0.1, amsgrad=True)),
    ],
)
def test_frozen_parameters_never_move(cls, kw, foreach):
    live, frozen, never = (torch.nn.Parameter(torch.ones(3)) for _ in range(3))
    opt = cls([live, frozen, never], foreach=foreach, **kw)
    for step in range(12):
        opt.zero_grad()
        loss = (live**2).sum() + ((frozen**2).sum() if step < 4 else 0)
        loss.backward()
        if step == 4:
            before = frozen.detach().clone()
            state = {k: v.clone() for k, v in opt.state[frozen].items()}
        opt.step()
    assert never.grad is None and torch.equal(never.detach(), torch.ones(3)) and len(opt.state[never]) == 0
    assert torch.equal(frozen.detach(), before)
    assert all(torch.equal(opt.state[frozen][k], v) for k, v in state.items())
    assert not torch.equal(live.detach(), torch.ones(3))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_state_dict_resume_interop(name, foreach):
    ours, theirs = {
        "SGD": (SGD, torch.optim.SGD),
        "Adam": (Adam, torch.optim.Adam),
        "AdamW": (AdamW, torch.optim.AdamW),
    }[name]
    kw = (
        dict(lr=0.01, momentum=0.9, weight_decay=0.1)
        if name == "SGD"
        else dict(lr=0.01, weight_decay=0.1, amsgrad=True)
    )
    shapes = SHAPE_SETS["mixed"]
    ref = make_params(shapes, torch.float32)
    o = theirs(ref, foreach=foreach, **kw)
    train(o, ref, 100, seed=1)
    train(o, ref, 100, seed=2)
    for first, second in [(theirs, ours), (ours, theirs), (ours, ours)]:
        ps = make_params(shapes, torch.float32)
        o1 = first(ps, foreach=foreach, **kw)
        train(o1, ps, 100, seed=1)
        sd = o1.state_dict()
        o2 = second(ps, foreach=foreach, **kw)
        o2.load_state_dict(sd)
        train(o2, ps, 100, seed=2)
        assert all(torch.equal(x, y) for x, y in zip(ps, ref)), (first, second)
    # a state dict survives torch.save/torch.load
    import io

    buf = io.BytesIO()
    torch.save(o2.state_dict(), buf)
    buf.seek(0)
    o3 = ours(ps, foreach=foreach, **kw)
    o3.load_state_dict(torch.load(buf))
    assert o3.state_dict()["param_groups"] == o2.state_dict()["param_groups"]


def test_closure_and_zero_grad():
    p = torch.nn.Parameter(torch.tensor([3.0]))
    opt = AdamW([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 9.0 and p.item() < 3.0


def test_bad_arguments_raise_clear_errors():
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="learning rate"):
        SGD(p, lr=-1)
    with pytest.raises(ValueError, match="momentum"):
        SGD(p, momentum=-0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta parameter at index 1"):
        Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="epsilon"):
        AdamW(p, eps=-1)
    with pytest.raises(ValueError, match="weight_decay"):
        AdamW(p, weight_decay=-0.1)
    with pytest.raises(NotImplementedError, match="fused"):
        AdamW(p, fused=True)
    with pytest.raises(NotImplementedError, match="capturable"):
        Adam(p, capturable=True)
    q = torch.nn.Parameter(torch.zeros(3))
    q.grad = torch.zeros(3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        AdamW([q]).step()


def test_defaults_equal_torch():
    p = [torch.nn.Parameter(torch.zeros(1))]
    for ours, theirs in [(SGD, torch.optim.SGD), (Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW)]:
        assert ours(p).defaults == theirs(p).defaults, ours


# ---- schedules -------------------------------------------------------------------------------------------------


def hf_lambda(name, W, T):
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = {
        "constant": lambda: get_constant_schedule_with_warmup(opt, W),
        "linear": lambda: get_linear_schedule_with_warmup(opt, W, T),
        "cosine": lambda: get_cosine_schedule_with_warmup(opt, W, T),
    }[name]()
    return s.lr_lambdas[0]


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("W,T", [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (7, 100), (100, 1000), (1, 37)])
def test_schedules_equal_transformers(name, W, T):
    f, hf = schedule_lambda(name, W, T), hf_lambda(name, W, T)
    assert [f(k) for k in range(T + 1)] == [float(hf(k)) for k in range(T + 1)]


def test_schedule_hand_values_and_past_the_end():
    f = schedule_lambda("linear", 4, 10)
    assert [f(k) for k in (0, 2, 4, 7, 10, 12)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    c = schedule_lambda("cosine", 0, 10)
    assert c(0) == 1.0 and c(5) == pytest.approx(0.5, abs=1e-15) and c(10) == 0.0
    assert c(15) == 0.0 and hf_lambda("cosine", 0, 10)(15) == pytest.approx(0.5)  # documented difference
    k = schedule_lambda("constant", 5)
    assert [k(i) for i in (0, 1, 5, 10**6)] == [0.0, 0.2, 1.0, 1.0]
    assert schedule_lambda("constant")(0) == 1.0


def test_get_scheduler_drives_lr_hf_convention():
    p = torch.nn.Parameter(torch.zeros(1))
    for name in SCHEDULES:
        ours_opt, hf_opt = SGD([p], lr=0.3), torch.optim.SGD([p], lr=0.3)
        ours = get_scheduler(name, ours_opt, num_warmup_steps=3, num_training_steps=12)
        from transformers import get_scheduler as hf_get

        hf = hf_get(
            name if name != "constant" else "constant_with_warmup", hf_opt, num_warmup_steps=3, num_training_steps=12
        )
        assert ours_opt.param_groups[0]["lr"] == 0.0  # the first update uses f(0) = 0
        for _ in range(12):
            assert ours_opt.param_groups[0]["lr"] == hf_opt.param_groups[0]["lr"]
            ours_opt.step()
            hf_opt.step()
            ours.step()
            hf.step()
    # scheduler state round-trips (the schedule is a dataclass, so LambdaLR saves its fields)
    sd = ours.state_dict()
    assert sd["lr_lambdas"][0] == dict(name="cosine", num_warmup_steps=3, num_training_steps=12)
    fresh = get_scheduler("cosine", SGD([p], lr=0.3), 0, 5)
    fresh.load_state_dict(sd)
    assert fresh.lr_lambdas[0] == Schedule("cosine", 3, 12) and fresh.last_epoch == 12


def test_schedule_errors():
    with pytest.raises(ValueError, match="unknown schedule 'cosin'"):
        schedule_lambda("cosin", 0, 10)
    with pytest.raises(ValueError, match="num_training_steps"):
        schedule_lambda("linear", 0)
    with pytest.raises(ValueError, match="larger than num_training_steps"):
        schedule_lambda("cosine", 20, 10)
    with pytest.raises(ValueError, match="num_warmup_steps"):
        schedule_lambda("linear", -1, 10)
