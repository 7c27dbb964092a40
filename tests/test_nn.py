"""Cross-checks of llmbook.nn: hand-written backward passes against autograd (float64, 1e-10), the from-scratch
training loop against torch.nn + torch.optim.SGD, and the pieces of the transfer-learning probe."""

import numpy as np
import pytest
import torch
from torch import nn

from llmbook.nn import (
    MLP,
    Linear,
    Neuron,
    ReLU,
    Sigmoid,
    Tanh,
    embed_texts,
    max_grad_difference,
    mean_pool,
    probe_accuracy,
    softmax_cross_entropy,
    to_torch,
    train_mlp,
)

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neuron_backward_matches_autograd(seed):
    g = gen(seed)
    n = Neuron(7, generator=g)
    x, gy = torch.randn(11, 7, generator=g, dtype=F64), torch.randn(11, generator=g, dtype=F64)
    n.forward(x)
    gx = n.backward(gy)
    w, b, xa = n.weight.clone().requires_grad_(), n.bias.clone().requires_grad_(), x.clone().requires_grad_()
    torch.sigmoid(xa @ w + b).backward(gy)
    for mine, ref in [(n.grad_weight, w.grad), (n.grad_bias, b.grad), (gx, xa.grad)]:
        assert (mine - ref).abs().max() < 1e-10


@pytest.mark.parametrize("act,ref", [(ReLU, torch.relu), (Tanh, torch.tanh), (Sigmoid, torch.sigmoid)])
def test_linear_and_activation_backward(act, ref):
    g = gen(3)
    lin, a = Linear(5, 4, generator=g), act()
    x, gy = torch.randn(6, 5, generator=g, dtype=F64), torch.randn(6, 4, generator=g, dtype=F64)
    y = a.forward(lin.forward(x))
    gx = lin.backward(a.backward(gy))
    W, b, xa = lin.weight.clone().requires_grad_(), lin.bias.clone().requires_grad_(), x.clone().requires_grad_()
    yt = ref(nn.functional.linear(xa, W, b))
    assert torch.allclose(y, yt, atol=1e-12, rtol=0)
    yt.backward(gy)
    for mine, r in [(lin.grad_weight, W.grad), (lin.grad_bias, b.grad), (gx, xa.grad)]:
        assert (mine - r).abs().max() < 1e-10


def test_softmax_cross_entropy_matches_torch():
    g = gen(4)
    z, y = torch.randn(9, 5, generator=g, dtype=F64) * 10, torch.randint(0, 5, (9,), generator=g)
    loss, grad = softmax_cross_entropy(z, y)
    za = z.clone().requires_grad_()
    ref = nn.functional.cross_entropy(za, y)
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-12 and (grad - za.grad).abs().max() < 1e-12
    with pytest.raises(ValueError):
        softmax_cross_entropy(z, y[:3])


@pytest.mark.parametrize(
    "sizes,act", [([3, 2], "relu"), ([10, 8, 8, 3], "tanh"), ([64, 32, 16, 10], "sigmoid"), ([20, 50, 5], "relu")]
)
def test_mlp_gradients_equal_autograd(sizes, act):
    g = gen(5)
    mlp = MLP(sizes, activation=act, seed=6)
    x, y = torch.randn(13, sizes[0], generator=g, dtype=F64), torch.randint(0, sizes[-1], (13,), generator=g)
    assert max_grad_difference(mlp, x, y) < 1e-10


def test_max_grad_difference_can_fail():
    "The check is not vacuous: a wrong backward pass is caught."
    mlp = MLP([6, 5, 3], seed=0)
    mlp.layers[1].backward = lambda g: g  # pretend ReLU's derivative were 1 everywhere
    x, y = torch.randn(8, 6, generator=gen(0), dtype=F64), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    assert max_grad_difference(mlp, x, y) > 1e-3


def test_to_torch_same_function_and_errors():
    mlp = MLP([4, 6, 2], activation="tanh", seed=1)
    x = torch.randn(3, 4, generator=gen(1), dtype=F64)
    assert torch.allclose(mlp.forward(x), to_torch(mlp)(x), atol=1e-14, rtol=0)
    assert sum(p.numel() for p in to_torch(mlp).parameters()) == sum(p.numel() for p in mlp.parameters()) == 44
    with pytest.raises(ValueError, match="activation"):
        MLP([2, 2], activation="swish")
    with pytest.raises(ValueError, match="expects x"):
        mlp.forward(torch.zeros(3, 5, dtype=F64))


def test_scratch_training_equals_torch_sgd_on_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = torch.tensor(d.data[:400] / 16.0), torch.tensor(d.target[:400])
    mlp = MLP([64, 32, 10], seed=2)
    h1 = train_mlp(mlp, X[:300], y[:300], X[300:], y[300:], epochs=3, lr=0.2, batch_size=16, seed=3)
    h2 = train_mlp(
        to_torch(MLP([64, 32, 10], seed=2)), X[:300], y[:300], X[300:], y[300:], epochs=3, lr=0.2, batch_size=16, seed=3
    )
    for k in h1:
        assert np.allclose(h1[k], h2[k], atol=1e-10, rtol=0)
    assert h1["train_loss"][-1] < h1["train_loss"][0]


def test_mean_pool_ignores_padding():
    h = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    m = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = mean_pool(h, m)
    assert torch.equal(out[0], h[0, :2].mean(0)) and torch.equal(out[1], h[1].mean(0))


def test_embed_texts_batching_does_not_change_embeddings():
    from transformers import AutoModel, AutoTokenizer

    from llmbook import resources

    p = resources.get("minilm")
    tok, model = AutoTokenizer.from_pretrained(p), AutoModel.from_pretrained(p)
    texts = ["A triumph.", "The plot is thin, the acting wooden and the jokes fall flat.", "Worth seeing twice."]
    together = embed_texts(model, tok, texts, batch_size=3)
    alone = np.concatenate([embed_texts(model, tok, [t]) for t in texts])
    assert together.shape == (3, 384) and np.abs(together - alone).max() < 1e-5
    with pytest.raises(TypeError):
        embed_texts(model, tok, "one string")


def test_probe_accuracy_sampling():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    y = (X[:, 0] > 0).astype(int)
    Xt = rng.normal(size=(200, 5))
    yt = (Xt[:, 0] > 0).astype(int)
    assert probe_accuracy(X, y, Xt, yt, k=0) > 0.95
    assert probe_accuracy(X, y, Xt, yt, k=16, seed=1) == probe_accuracy(X, y, Xt, yt, k=16, seed=1)
    assert probe_accuracy(X, y, Xt, yt, k=10_000) == probe_accuracy(X, y, Xt, yt, k=0)
    with pytest.raises(ValueError, match="k=1"):
        probe_accuracy(X, y, Xt, yt, k=1)
