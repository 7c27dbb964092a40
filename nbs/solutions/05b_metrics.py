"""Solutions to the exercises of chapter 5b, metrics (`nbs/05b_metrics.ipynb`).

Plain Python in the `# %%` cell format. A `# %% solution: <name>` cell is what the website shows behind "Show
solution" under that exercise; `SOLUTIONS` and `WRONG` at the end are what `tests/test_exercises.py` checks: every
solution must print `correct`, every wrong answer must be rejected. Try the exercise before reading on.
"""

# %% imports
import numpy as np
import torch

from llmbook.metrics import calibration_table, confusion_matrix

# %% solution: metrics-1
# Always "fresh": fresh has precision q and recall 1, so F1 = 2q / (1 + q); rotten is never predicted and never
# found, F1 = 0 (zero_division=0). Macro F1 = q / (1 + q), well below the accuracy q: macro averaging exposes the
# trivial model.
q = 0.6
metrics_1 = q / (1 + q)  # 0.375


# %% solution: metrics-2
def my_macro_f1(y_true, y_pred, num_classes):
    "y_true, y_pred: (N,) int64 numpy arrays, labels 0..num_classes-1 -> macro F1 (zero_division=0), a float."
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(float)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    den = 2 * tp + fp + fn  # F1_c = 2 TP / (2 TP + FP + FN): one division, 0/0 only if c occurs nowhere
    f1 = np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)
    return float(f1.mean())


# %% solution: metrics-3
def my_mce(probs, labels, n_bins=15):
    "probs (N, C) float64, labels (N,) int64 -> the maximum calibration error over non-empty bins, a float."
    t = calibration_table(probs.max(1), probs.argmax(1) == labels, n_bins)
    return float(np.abs(t["gap"][t["count"] > 0]).max())


# The MCE is a maximum of the gaps, the ECE a weighted mean of the same gaps, so MCE >= ECE. On the real run:
#   my_mce(probs_test, y_test)  ->  about 0.06, against an ECE of about 0.035.


# %% solution: metrics-4
def fit_temperature(logits, labels, grid):
    "logits (N, C) float64, labels (N,) int64, grid (K,) float64 -> the T in grid with the smallest mean NLL."
    nll = [-(torch.log_softmax(logits / t, dim=1)[torch.arange(len(labels)), labels]).mean() for t in grid]
    return float(grid[int(torch.stack(nll).argmin())])


# On the real run (T comes out below 1: the L2 penalty shrinks the weights, so the probabilities are pulled towards
# 1/2 and the model is slightly under-confident; dividing by T < 1 sharpens them; deep networks usually need T > 1):
#   val_logits = torch.tensor(clf.predict_log_proba(vectorizer.transform(splits["validation"]["text"])))
#   T = fit_temperature(val_logits, torch.tensor(splits["validation"]["label"]), torch.arange(0.5, 2.51, 0.05).double())
#   scaled = torch.softmax(torch.log(torch.tensor(probs_test)) / T, dim=1).numpy()
#   expected_calibration_error(probs_test, y_test).ece, expected_calibration_error(scaled, y_test).ece


# %% solution: metrics-5
# Pool the drawn films' snippets, film 0 twice: hits 8 + 8 + 10 + 3 over snippets 10 + 10 + 20 + 6.
metrics_5 = (8 + 8 + 10 + 3) / (10 + 10 + 20 + 6)  # 29 / 46


# %% wrong answers (each must be rejected by its check)
def _f1_micro(y_true, y_pred, num_classes):
    "Pooled counts: micro F1 (= accuracy)."
    return float((np.asarray(y_true) == np.asarray(y_pred)).mean())


def _f1_of_macro_pr(y_true, y_pred, num_classes):
    "F1 of macro precision and macro recall."
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(float)
    p = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0).mean()
    r = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0).mean()
    return float(2 * p * r / (p + r)) if p + r > 0 else 0.0


def _f1_present_only(y_true, y_pred, num_classes):
    "Averages over the classes that occur only."
    present = np.union1d(y_true, y_pred)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(float)
    den = 2 * tp + (cm.sum(0) - tp) + (cm.sum(1) - tp)
    return float((2 * tp[present] / den[present]).mean())


def _f1_shortcut(y_true, y_pred, num_classes):
    "Calls the library function the exercise re-implements."
    from sklearn.metrics import f1_score

    return f1_score(y_true, y_pred, average="macro", labels=range(num_classes), zero_division=0)


def _mce_is_ece(probs, labels, n_bins=15):
    "The weighted mean gap, i.e. the ECE."
    t = calibration_table(probs.max(1), probs.argmax(1) == labels, n_bins)
    full = t["count"] > 0
    return float((t["count"][full] / len(labels) * np.abs(t["gap"][full])).sum())


def _mce_no_abs(probs, labels, n_bins=15):
    "Largest signed gap (accuracy - confidence), no absolute value."
    t = calibration_table(probs.max(1), probs.argmax(1) == labels, n_bins)
    return float(t["gap"][t["count"] > 0].max())


def _temperature_times(logits, labels, grid):
    "Multiplies the logits by T."
    nll = [torch.nn.functional.cross_entropy(logits * t, labels) for t in grid]
    return float(grid[int(torch.stack(nll).argmin())])


def _temperature_argmax(logits, labels, grid):
    "Picks the largest NLL."
    nll = [torch.nn.functional.cross_entropy(logits / t, labels) for t in grid]
    return float(grid[int(torch.stack(nll).argmax())])


SOLUTIONS = {
    "metrics-1": metrics_1,
    "metrics-2": my_macro_f1,
    "metrics-3": my_mce,
    "metrics-4": fit_temperature,
    "metrics-5": metrics_5,
}
WRONG = {
    "metrics-1": [0.6, 0.75, 0.45],
    "metrics-2": [_f1_micro, _f1_of_macro_pr, _f1_present_only, _f1_shortcut],
    "metrics-3": [_mce_is_ece, _mce_no_abs],
    "metrics-4": [_temperature_times, _temperature_argmax],
    "metrics-5": [(0.8 + 0.8 + 0.5 + 0.5) / 4, 21 / 36, 22 / 38],
}
