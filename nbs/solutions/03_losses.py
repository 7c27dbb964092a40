"""Solutions to the exercises of chapter 3, loss functions (`nbs/03_losses.ipynb`).

Plain Python in the `# %%` cell format. A `# %% solution: <name>` cell is what the website shows behind "Show
solution" under that exercise; `SOLUTIONS` and `WRONG` at the end are what `tests/test_exercises.py` checks: every
solution must print `correct`, every wrong answer must be rejected. Try the exercise before reading on.
"""

# %% imports
import math

import torch

# %% solution: losses-1
# l = -z_0 + log(e^2 + e^1 + e^0)
losses_1 = -2 + math.log(math.e**2 + math.e + 1)  # 0.4076


# %% solution: losses-2
def my_cross_entropy(logits, labels):
    "logits (N, C) float32, labels (N,) int64 -> the mean cross-entropy, a 0-d tensor."
    m = logits.max(dim=1, keepdim=True).values  # subtract the row max: every exponent is <= 0
    log_z = m.squeeze(1) + torch.log(torch.exp(logits - m).sum(dim=1))  # log sum_k e^{z_k}
    true_logit = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
    return (log_z - true_logit).mean()


# %% solution: losses-3
def my_cross_entropy_grad(logits, labels):
    "logits (N, C), labels (N,) -> d(mean cross-entropy)/d(logits), shape (N, C): (softmax - one-hot) / N."
    p = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    p = p / p.sum(dim=1, keepdim=True)
    one_hot = torch.zeros_like(p)
    one_hot[torch.arange(len(labels)), labels] = 1.0
    return (p - one_hot) / len(labels)


# %% solution: losses-4
# Cross-entropy against a target distribution t is smallest when the prediction equals t. The smoothed target puts
# 1 - eps + eps / C on the true class.
eps, C = 0.1, 4
losses_4 = 1 - eps + eps / C  # 0.925


# %% solution: losses-5
# Each batch's summed loss is its mean times its count; the mean over all tokens is total loss / total count.
losses_5 = (2 * 1.0 + 6 * 3.0) / (2 + 6)  # 2.5, where averaging the two batch means gives 2.0


# %% wrong answers (each must be rejected by its check)
def _ce_naive(logits, labels):
    "Right formula, no max subtracted: overflows for large logits."
    log_z = torch.log(torch.exp(logits).sum(dim=1))
    return (log_z - logits.gather(1, labels.unsqueeze(1)).squeeze(1)).mean()


def _ce_sum(logits, labels):
    "Sum instead of mean."
    return my_cross_entropy(logits, labels) * len(labels)


def _ce_shortcut(logits, labels):
    "Calls the library function the exercise re-implements."
    return torch.nn.functional.cross_entropy(logits, labels)


def _grad_no_mean(logits, labels):
    "Forgets the 1/N of the mean."
    return my_cross_entropy_grad(logits, labels) * len(labels)


def _grad_flipped(logits, labels):
    "Target minus prediction."
    return -my_cross_entropy_grad(logits, labels)


def _grad_softmax_only(logits, labels):
    "Forgets the one-hot term."
    return torch.softmax(logits, dim=1) / len(labels)


def _grad_autograd(logits, labels):
    "Asks autograd instead of deriving the gradient."
    z = logits.clone().requires_grad_(True)
    return torch.autograd.grad(torch.nn.functional.cross_entropy(z, labels), z)[0]


SOLUTIONS = {
    "losses-1": losses_1,
    "losses-2": my_cross_entropy,
    "losses-3": my_cross_entropy_grad,
    "losses-4": losses_4,
    "losses-5": losses_5,
}
WRONG = {
    "losses-1": [math.exp(2) / (math.exp(2) + math.e + 1), 2 + math.log(math.e**2 + math.e + 1), 0.5],
    "losses-2": [_ce_naive, _ce_sum, _ce_shortcut],
    "losses-3": [_grad_no_mean, _grad_flipped, _grad_softmax_only, _grad_autograd],
    "losses-4": [1.0, 0.9, 0.95],
    "losses-5": [2.0, 20.0],
}
