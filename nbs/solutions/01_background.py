"""Solutions to the exercises of chapter 1, background (`nbs/01_background.ipynb`).

Plain Python in the `# %%` cell format. A `# %% solution: <name>` cell is what the website shows behind "Show
solution" under that exercise; `SOLUTIONS` and `WRONG` at the end are what `tests/test_exercises.py` checks: every
solution must print `correct`, every wrong answer must be rejected. Try the exercise before reading on.
"""

# %% imports
import math

# %% solution: background-1
# BERT-base has 109,482,240 parameters; its pooler is one d x d dense layer with d biases (d = 768).
d = 768
background_1 = 109_482_240 - (d * d + d)  # 108,891,648

# %% solution: background-2
# C = 6 N D and D = 20 N give C = 120 N^2, so N = sqrt(C / 120): about 2.9B parameters on 20 N = 58B tokens.
# One H200 at 40% of 989 TFLOP/s: 1e21 / (0.4 * 989e12) s, about 29 days.
background_2 = math.sqrt(1e21 / 120)

# %% solution: background-3
# An untied output projection is one more V x d matrix (GPT-2's has no bias): 50257 * 768.
background_3 = 50257 * 768  # 38,597,376


# %% solution: background-4
def gpt2_params(d, L, V, P):
    "width d, L blocks, vocabulary V, P positions -> the number of parameters of GPT2LMHeadModel (tied head)."
    embeddings = V * d + P * d  # token and position tables; the tied output projection adds nothing
    attention = (d * 3 * d + 3 * d) + (d * d + d)  # c_attn (q, k, v at once) and c_proj, with biases
    mlp = (d * 4 * d + 4 * d) + (4 * d * d + d)  # c_fc and c_proj, with biases
    norms = 2 * (2 * d)  # ln_1 and ln_2: scale and shift
    return embeddings + L * (attention + mlp + norms) + 2 * d  # + the final ln_f; per block 12 d^2 + 13 d


# %% solution: background-5
# Mixed precision with Adam: 2 (bf16 weights) + 2 (gradients) + 8 (fp32 moments) + 4 (fp32 master) = 16 bytes.
n7 = 6_738_415_616
background_5 = 16 * n7 / 1e9  # about 108 GB: most of one 141 GB H200 before any activation


# %% wrong answers (each must be rejected by its check)
def _gpt2_untied(d, L, V, P):
    "Counts the output projection as a separate matrix."
    return gpt2_params(d, L, V, P) + V * d


def _gpt2_no_final_norm(d, L, V, P):
    "Forgets ln_f."
    return gpt2_params(d, L, V, P) - 2 * d


def _gpt2_no_biases(d, L, V, P):
    "Weights and norms only: 12 d^2 per block."
    return V * d + P * d + L * (12 * d * d + 4 * d) + 2 * d


SOLUTIONS = {
    "background-1": background_1,
    "background-2": background_2,
    "background-3": background_3,
    "background-4": gpt2_params,
    "background-5": background_5,
}
WRONG = {
    "background-1": [109_482_240, 109_482_240 - d * d],
    "background-2": [20 * math.sqrt(1e21 / 120), 1e21 / 120, math.sqrt(1e21 / 6), 2.89],
    "background-3": [50257 * 768 + 50257, 2 * 50257 * 768],
    "background-4": [_gpt2_untied, _gpt2_no_final_norm, _gpt2_no_biases],
    "background-5": [8 * n7 / 1e9, 12 * n7 / 1e9, 16 * n7 / 2**30, 4 * n7 / 1e9],
}
