"""Solutions to the exercises of chapter 4, optimizers (`nbs/04_optimizers.ipynb`).

Plain Python in the `# %%` cell format. A `# %% solution: <name>` cell is what the website shows behind "Show
solution" under that exercise; `SOLUTIONS` and `WRONG` at the end are what `tests/test_exercises.py` checks: every
solution must print `correct`, every wrong answer must be rejected. Try the exercise before reading on.
"""

# %% imports
import math

import torch
from sklearn.datasets import load_diabetes


# %% solution: optim-1
def my_adam(p0, grads, lr, betas=(0.9, 0.999), eps=1e-8):
    "p0: tensor; grads: list of tensors of p0's shape, one per step -> the parameter after len(grads) Adam steps."
    beta1, beta2 = betas
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        p = p - lr * m_hat / (v_hat.sqrt() + eps)  # eps after the bias correction, as torch does
    return p


# After one step m_hat = g and sqrt(v_hat) = |g|, so the update is lr * g / (|g| + eps) = lr * sign(g): every
# coordinate moves by almost exactly lr, whatever the size of its gradient.


# %% solution: optim-2
# Adam's own step is m_hat / (sqrt(v_hat) + eps) = 0 / eps = 0; the decoupled decay multiplies the weight by
# (1 - lr * weight_decay) = 0.99 every step.
optim_2 = 5.0 * (1 - 0.1 * 0.1) ** 100  # 1.83
# Adam with L2 decay feeds the gradient 0.1 * w into m and v; normalised, it moves the weight by about lr per step
# towards 0, where it then oscillates.


# %% solution: optim-3
# The error along an eigenvector with eigenvalue lam is multiplied by (1 - lr * lam) per step; all factors stay
# inside (-1, 1) exactly when lr < 2 / lam_max (about 0.249 here).
X = torch.tensor(load_diabetes(return_X_y=True)[0])
X = (X - X.mean(0)) / X.std(0)
X = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
lam_max = torch.linalg.eigvalsh(2 / len(X) * X.T @ X)[-1].item()
optim_3 = 2 / lam_max  # in the chapter: 2 / lam_max


# %% solution: optim-4
# Update k uses f(k); the last of 10 updates is k = 9, past the warmup W = 4: f(9) = (T - k)/(T - W) = 1/6.
optim_4 = (10 - 9) / (10 - 4)


# %% solution: optim-5
def my_cosine(k, W, T):
    "k: updates done so far (0..T), W: warmup steps, T: total steps -> the learning-rate factor f(k), a float."
    if k < W:
        return k / W  # f(0) = 0: the first update of a warmup does nothing
    progress = (k - W) / max(1, T - W)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


# %% wrong answers (each must be rejected by its check)
def _adam_eps_before_correction(p0, grads, lr, betas=(0.9, 0.999), eps=1e-8):
    "The paper's 'efficient version': bias corrections folded into the step size, eps added to sqrt(v) itself."
    beta1, beta2 = betas
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) * m / (v.sqrt() + eps)
    return p


def _adam_no_bias_correction(p0, grads, lr, betas=(0.9, 0.999), eps=1e-8):
    "Forgets the bias corrections."
    beta1, beta2 = betas
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for g in grads:
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr * m / (v.sqrt() + eps)
    return p


def _adam_shortcut(p0, grads, lr, betas=(0.9, 0.999), eps=1e-8):
    "Uses torch.optim.Adam."
    p = torch.nn.Parameter(p0.clone())
    opt = torch.optim.Adam([p], lr=lr, betas=betas, eps=eps)
    for g in grads:
        p.grad = g
        opt.step()
    return p.detach()


def _cosine_warmup_plus_one(k, W, T):
    "Warmup (k + 1)/W: the first update already gets a nonzero rate."
    return min(1.0, (k + 1) / W) if k < W else my_cosine(k, W, T)


def _cosine_over_all_steps(k, W, T):
    "Cosine over all T steps instead of the T - W after warmup."
    return k / W if k < W else 0.5 * (1 + math.cos(math.pi * k / T))


SOLUTIONS = {
    "optim-1": my_adam,
    "optim-2": optim_2,
    "optim-3": optim_3,
    "optim-4": optim_4,
    "optim-5": my_cosine,
}
WRONG = {
    "optim-1": [_adam_eps_before_correction, _adam_no_bias_correction, _adam_shortcut],
    "optim-2": [5.0, -0.039, 5.0 * 0.9**100, 5.0 * math.exp(-1)],
    "optim-3": [1 / lam_max, 2 / (lam_max + 0.0171), 0.25],
    "optim-4": [0.0, 0.1, 2 / 6],
    "optim-5": [_cosine_warmup_plus_one, _cosine_over_all_steps],
}
