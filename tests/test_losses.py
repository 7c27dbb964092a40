"""llmbook.losses against torch.nn.functional: values and gradients on random inputs (several shapes, float32 and
float64), hand-computed small cases, and the edge cases people get wrong. The chapter (nbs/03_losses.ipynb) teaches;
these tests cover the full matrix."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from llmbook.losses import (
    REDUCTIONS,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_backward,
    cross_entropy,
    cross_entropy_backward,
    log_softmax,
    mean_denominator,
    mse_loss,
    mse_loss_backward,
    with_hand_gradient,
)

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def compare(ours, theirs, x, *args, dtype, **kw):
    """Values and input gradients (with a random upstream gradient for 'none') of ours vs torch's."""
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    la, lb = ours(xa, *args, **kw), theirs(xb, *args, **kw)
    assert la.shape == lb.shape and la.dtype == lb.dtype
    assert torch.allclose(la, lb, equal_nan=True, **TOL[dtype]), (la, lb)
    up = torch.randn_like(la)
    (la * up).sum().backward()
    (lb * up).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, **TOL[dtype]), (xa.grad - xb.grad).abs().max()
    return la


SHAPES = [(5,), (4, 3), (2, 3, 4), (1,), ()]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_random(reduction, shape, dtype):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)
    compare(mse_loss, F.mse_loss, x, y, dtype=dtype, reduction=reduction)
    w = torch.rand(shape, generator=g, dtype=dtype)
    compare(mse_loss, F.mse_loss, x, y, dtype=dtype, reduction=reduction, weight=w)


def test_mse_hand_and_broadcasting():
    assert mse_loss(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 1.0])).item() == pytest.approx(13 / 3)
    assert mse_loss(
        torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]), weight=torch.tensor([3.0, 1.0])
    ).item() == pytest.approx((3 * 1 + 1 * 4) / 4)
    x, y = torch.randn(4, 1), torch.randn(4)
    with pytest.warns(UserWarning, match="different to the input size"):
        ours = mse_loss(x, y, reduction="none")
    with pytest.warns(UserWarning):
        theirs = F.mse_loss(x, y, reduction="none")
    assert ours.shape == (4, 4) and torch.allclose(ours, theirs)
    with pytest.raises(ValueError, match="same size"):
        mse_loss(x, x, weight=torch.ones(4))
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        mse_loss(x, x, reduction="avg")
    # deprecated flags behave like torch's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(mse_loss(x, x + 1, reduce=False), F.mse_loss(x, x + 1, reduce=False))
        assert mse_loss(x, x + 1, size_average=False).item() == F.mse_loss(x, x + 1, size_average=False).item()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES[:4], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_random(reduction, shape, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g, dtype=dtype) * 10
    t = torch.rand(shape, generator=g, dtype=dtype)
    compare(
        binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, x, t, dtype=dtype, reduction=reduction
    )
    w = torch.rand(shape, generator=g, dtype=dtype)
    pw = torch.rand(shape[-1:], generator=g, dtype=dtype) * 3
    compare(
        binary_cross_entropy_with_logits,
        F.binary_cross_entropy_with_logits,
        x,
        t,
        w,
        dtype=dtype,
        reduction=reduction,
        pos_weight=pw,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_extreme_logits_and_zero(dtype):
    x = torch.tensor([-1e4, -100.0, -30.0, -1e-8, 0.0, 1e-8, 30.0, 100.0, 1e4], dtype=dtype)
    for t in (torch.zeros_like(x), torch.ones_like(x), torch.full_like(x, 0.3)):
        out = compare(
            binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits, x, t, dtype=dtype, reduction="none"
        )
        assert torch.isfinite(out).all()
    # exact hand values: x = 0 gives log 2 whatever the target; gradient at 0 is 0.5 - y
    z = torch.zeros(2, dtype=dtype, requires_grad=True)
    loss = binary_cross_entropy_with_logits(z, torch.tensor([1.0, 0.0], dtype=dtype), reduction="sum")
    loss.backward()
    assert loss.item() == pytest.approx(2 * math.log(2)) and z.grad.tolist() == [-0.5, 0.5]


def test_bce_errors():
    with pytest.raises(ValueError, match="must be the same as input size"):
        binary_cross_entropy_with_logits(torch.zeros(3), torch.zeros(3, 1))


def ce_cases():
    C = 5
    for ishape in [(C,), (4, C), (2, C, 3), (2, C, 3, 2), (1, C)]:
        tshape = (ishape[0],) + ishape[2:] if len(ishape) > 1 else ()
        yield ishape, tshape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ishape,tshape", list(ce_cases()), ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_cross_entropy_indices_random(ishape, tshape, dtype, reduction, label_smoothing, weighted, ignore_index):
    g = torch.Generator().manual_seed(2)
    C = ishape[0] if len(ishape) == 1 else ishape[1]
    z = torch.randn(ishape, generator=g, dtype=dtype) * 4
    y = torch.randint(0, C, tshape, generator=g)
    if y.numel() > 1:
        y.view(-1)[0] = ignore_index
    w = torch.rand(C, generator=g, dtype=dtype) + 0.1 if weighted else None
    compare(
        cross_entropy,
        F.cross_entropy,
        z,
        y,
        w,
        dtype=dtype,
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ishape,tshape", list(ce_cases()), ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_probabilities_random(ishape, tshape, dtype, reduction, label_smoothing, weighted):
    g = torch.Generator().manual_seed(3)
    C = ishape[0] if len(ishape) == 1 else ishape[1]
    z = torch.randn(ishape, generator=g, dtype=dtype) * 4
    t = torch.softmax(torch.randn(ishape, generator=g, dtype=dtype), 0 if len(ishape) == 1 else 1)
    w = torch.rand(C, generator=g, dtype=dtype) + 0.1 if weighted else None
    compare(cross_entropy, F.cross_entropy, z, t, w, dtype=dtype, reduction=reduction, label_smoothing=label_smoothing)


def test_cross_entropy_hand_values():
    z = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
    assert cross_entropy(z, torch.tensor([0])).item() == pytest.approx(-2 + math.log(math.e**2 + math.e + 1))
    # weighted mean divides by the weights of the targets present: (w0*l0 + w2*l2) / (w0 + w2)
    z = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 5.0, 5.0]], dtype=torch.float64)
    y = torch.tensor([0, 2, -100])
    w = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    l0 = math.log(3)
    l2 = -0.0 + math.log(math.e + 2)
    assert cross_entropy(z, y, w).item() == pytest.approx((1 * l0 + 3 * l2) / (1 + 3), rel=1e-14)
    assert cross_entropy(z, y, w, reduction="sum").item() == pytest.approx(l0 + 3 * l2, rel=1e-14)
    # label smoothing: the ignored row is excluded from the smoothing term and from the denominator
    eps = 0.3
    s0 = 3 * math.log(3)  # sum_c -log p_c for row 0
    lp1 = [1 - math.log(math.e + 2), -math.log(math.e + 2), -math.log(math.e + 2)]
    s1 = -sum(lp1)
    expect = (1 - eps) * (l0 + l2) / 2 + eps / 3 * (s0 + s1) / 2
    assert cross_entropy(z, y, label_smoothing=eps).item() == pytest.approx(expect, rel=1e-14)
    assert F.cross_entropy(z, y, label_smoothing=eps).item() == pytest.approx(expect, rel=1e-14)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5)])
def test_all_ignored_is_nan_with_zero_gradient(label_smoothing, weighted, shape):
    z = torch.randn(shape, requires_grad=True)
    y = torch.full((shape[0],) + shape[2:], -100)
    w = torch.rand(3) if weighted else None
    loss = cross_entropy(z, y, w, label_smoothing=label_smoothing)
    ref = F.cross_entropy(z, y, w, label_smoothing=label_smoothing)
    assert torch.isnan(loss) and torch.isnan(ref)
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    assert cross_entropy(z, y, w, reduction="sum").item() == 0.0
    assert mean_denominator(y, w).item() == 0


def test_extreme_logits():
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [3e38, 0.0, -3e38]])
    y = torch.tensor([1, 2, 0])
    out = compare(cross_entropy, F.cross_entropy, z, y, dtype=torch.float32, reduction="none")
    assert out.tolist() == [20000.0, 0.0, 0.0]
    assert torch.isfinite(log_softmax(z, 1)[:2]).all()


def test_mean_denominator_matches_mean():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(6, 4, 3, generator=g)
    y = torch.randint(0, 4, (6, 3), generator=g)
    y[0] = -100
    y[2, 1] = -100
    w = torch.rand(4, generator=g)
    for weight in (None, w):
        s = cross_entropy(z, y, weight, reduction="sum")
        assert torch.allclose(s / mean_denominator(y, weight), cross_entropy(z, y, weight))
    assert mean_denominator(y).item() == 18 - 3 - 1


def test_cross_entropy_errors():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"must have shape \(4,\)"):
        cross_entropy(z, torch.zeros(4, 1).long())
    with pytest.raises(ValueError, match="probability targets"):
        cross_entropy(z, torch.rand(4, 2))
    with pytest.raises(IndexError, match="out of bounds"):
        cross_entropy(z, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(IndexError, match="out of bounds"):
        cross_entropy(z, torch.tensor([0, 1, -1, 0]))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        cross_entropy(z, torch.zeros(4).long(), torch.ones(4))
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(z, torch.zeros(4).long(), label_smoothing=1.5)
    with pytest.raises(ValueError, match="0-d"):
        cross_entropy(torch.tensor(1.0), torch.tensor(0))


# ---- hand-derived gradients ---------------------------------------------------------------------------------------

f64 = dict(dtype=torch.float64)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_mse_and_bce(reduction):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, generator=g, **f64).requires_grad_()
    y, w = torch.randn(3, 4, generator=g, **f64), torch.rand(3, 4, generator=g, **f64)
    t, pw = torch.rand(3, 4, generator=g, **f64), torch.rand(4, generator=g, **f64) * 3
    hm = with_hand_gradient(mse_loss, mse_loss_backward)
    hb = with_hand_gradient(binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_backward)
    assert gradcheck(lambda x: hm(x, y, reduction=reduction), (x,))
    assert gradcheck(lambda x: hm(x, y, reduction=reduction, weight=w), (x,))
    assert gradcheck(lambda x: hb(x, t, reduction=reduction), (x,))
    assert gradcheck(lambda x: hb(x, t, reduction=reduction, weight=w, pos_weight=pw), (x,))
    # broadcast input: the gradient is summed back to the input's shape
    xb = torch.randn(3, 1, generator=g, **f64).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gradcheck(lambda x: hm(x, y, reduction=reduction), (xb,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("probabilities", [False, True])
@pytest.mark.parametrize("ishape", [(5,), (4, 5), (2, 5, 3)], ids=str)
def test_gradcheck_cross_entropy(reduction, label_smoothing, weighted, probabilities, ishape):
    g = torch.Generator().manual_seed(6)
    cd = 0 if len(ishape) == 1 else 1
    z = torch.randn(ishape, generator=g, **f64).requires_grad_()
    if probabilities:
        t = torch.softmax(torch.randn(ishape, generator=g, **f64), cd)
    else:
        t = torch.randint(0, 5, ishape[:cd] + ishape[cd + 1 :], generator=g)
        if t.numel() > 1:
            t.view(-1)[-1] = -100
    w = torch.rand(5, generator=g, **f64) + 0.1 if weighted else None
    kw = dict(weight=w, reduction=reduction, label_smoothing=label_smoothing)
    h = with_hand_gradient(cross_entropy, cross_entropy_backward)
    assert gradcheck(lambda z: h(z, t, **kw), (z,))
    # and equal to autograd through torch's implementation
    up = torch.randn(F.cross_entropy(z, t, **kw).shape, generator=g, **f64)
    zt = z.detach().clone().requires_grad_()
    (F.cross_entropy(zt, t, **kw) * up).sum().backward()
    assert torch.allclose(cross_entropy_backward(up, z.detach(), t, **kw), zt.grad, rtol=1e-12, atol=1e-14)


def test_simple_gradient_is_softmax_minus_onehot_over_n():
    z = torch.randn(6, 4, **f64)
    y = torch.randint(0, 4, (6,))
    g = cross_entropy_backward(torch.tensor(1.0, **f64), z, y)
    assert torch.allclose(g, (torch.softmax(z, 1) - F.one_hot(y, 4).to(z.dtype)) / 6, rtol=0, atol=1e-16)
    x, t = torch.randn(5, **f64), torch.randn(5, **f64)
    assert torch.allclose(mse_loss_backward(torch.tensor(1.0, **f64), x, t), 2 * (x - t) / 5, rtol=0, atol=1e-16)
