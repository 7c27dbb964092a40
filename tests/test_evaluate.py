"""Tests of `llmbook.evaluate` (chapter 09): frozen-feature probes, the learning-rate range test, temperature scaling,
and the `llmbook.metrics` functions the chapter applies, against scikit-learn on a real model's predictions."""

import numpy as np
import pytest
import sklearn.metrics as skm
import torch

from llmbook import evaluate, metrics


def test_mean_pooled_features_ignore_padding():
    from transformers import AutoModel, AutoTokenizer

    from llmbook.finetune import resolve_model

    d = resolve_model("minilm")
    model, tok = AutoModel.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d)
    texts = ["a fine film", "an overlong, joyless and badly acted sequel to a film nobody liked"]
    batched = evaluate.mean_pooled_features(model, tok, texts, batch_size=2)  # first text padded
    alone = np.concatenate([evaluate.mean_pooled_features(model, tok, [t]) for t in texts])
    assert batched.shape == (2, 384) and batched.dtype == np.float32
    assert np.allclose(batched, alone, atol=1e-5)
    assert evaluate.weights_mb(model) == pytest.approx(sum(p.numel() for p in model.parameters()) * 4 / 1e6, rel=1e-3)


def test_probe_accuracy_separable_and_chance():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] > 0).astype(int)
    assert evaluate.probe_accuracy(X[:150], y[:150], X[150:], y[150:]) >= 0.96
    y_rand = rng.integers(0, 2, 200)
    assert evaluate.probe_accuracy(X[:150], y_rand[:150], X[150:], y_rand[150:]) < 0.75


def test_lr_range_test_schedule_and_divergence():
    torch.manual_seed(0)
    X = torch.randn(64, 4)
    y = (X[:, 0] > 0).long()
    model = torch.nn.Linear(4, 2)
    batches = [(X[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]

    def ce(m, b):
        return torch.nn.functional.cross_entropy(m(b[0]), b[1])

    r = evaluate.lr_range_test(model, batches, ce, min_lr=1e-5, max_lr=100.0, num_steps=60, diverge_factor=1e9)
    gamma = (100.0 / 1e-5) ** (1 / 59)
    assert len(r["lrs"]) == 60 and np.allclose(r["lrs"], 1e-5 * gamma ** np.arange(60))
    assert 1e-5 <= r["lr_steepest"] <= 100.0 and r["lr_min_div10"] <= 10.0
    # divergence: loss w^2 under Adam, whose steps have size ~lr, so the loss grows like lr^2 once lr > |w|
    w = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        w.weight.fill_(1.0)

    def sq(m, b):
        return (m.weight**2).sum()

    d = evaluate.lr_range_test(w, [None], sq, min_lr=1e-4, max_lr=1e3, num_steps=80)
    n = len(d["lrs"])
    assert n < 80  # stopped before the end of the schedule
    assert d["smoothed"][-1] > 4 * np.min(d["smoothed"][:-1]) or not np.isfinite(d["smoothed"][-1])
    # bias-corrected smoothing, by hand
    s, out = 0.0, []
    for k, l in enumerate(r["losses"]):
        s = 0.9 * s + 0.1 * l
        out.append(s / (1 - 0.9 ** (k + 1)))
    assert np.allclose(out, r["smoothed"])
    with pytest.raises(ValueError):
        evaluate.lr_range_test(model, batches, ce, min_lr=1.0, max_lr=0.1)


def test_fit_temperature_recovers_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3.0, size=(8000, 3))
    p = torch.softmax(torch.tensor(z) / 2.5, -1).numpy()  # labels drawn with temperature 2.5
    y = np.array([rng.choice(3, p=row) for row in p])
    T = evaluate.fit_temperature(z, y)
    assert abs(T - 2.5) < 0.2

    def nll(t):
        return float(torch.nn.functional.cross_entropy(torch.tensor(z) / t, torch.tensor(y)))

    grid = np.linspace(1.5, 3.5, 201)
    assert nll(T) <= min(nll(t) for t in grid) + 1e-6


@pytest.fixture(scope="module")
def real_predictions():
    "TF-IDF + logistic regression on 1,000 real Rotten Tomatoes snippets: labels, predictions, probabilities (test)."
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from llmbook import data

    s = data.rotten_tomatoes_splits(seed=42, max_train_examples=1000, max_eval_examples=400)
    vec = TfidfVectorizer().fit(s["train"]["text"])
    clf = LogisticRegression(max_iter=2000).fit(vec.transform(s["train"]["text"]), s["train"]["label"])
    p = clf.predict_proba(vec.transform(s["test"]["text"]))
    return np.array(s["test"]["label"]), p.argmax(1), p


def test_metrics_used_in_chapter_equal_sklearn(real_predictions):
    y, yhat, _ = real_predictions
    assert metrics.accuracy_score(y, yhat) == pytest.approx(skm.accuracy_score(y, yhat), abs=1e-12)
    for avg in ("binary", "macro", "micro", "weighted"):
        ours = metrics.precision_recall_fscore_support(y, yhat, average=avg)[:3]
        ref = skm.precision_recall_fscore_support(y, yhat, average=avg)[:3]
        assert np.allclose(ours, ref, atol=1e-12), avg
        assert metrics.f1_score(y, yhat, average=avg) == pytest.approx(skm.f1_score(y, yhat, average=avg), abs=1e-12)
    assert (metrics.confusion_matrix(y, yhat, num_classes=2) == skm.confusion_matrix(y, yhat)).all()
    assert metrics.classification_report(y, yhat, digits=4) == skm.classification_report(y, yhat, digits=4)


def test_calibration_and_bootstrap_used_in_chapter(real_predictions):
    from sklearn.calibration import calibration_curve

    y, yhat, p = real_predictions
    ece = metrics.expected_calibration_error(p, y, n_bins=10)
    frac, conf = calibration_curve(yhat == y, p.max(1), n_bins=10, strategy="uniform")
    full = ece.table["count"] > 0
    assert np.allclose(ece.table["accuracy"][full], frac) and np.allclose(ece.table["confidence"][full], conf)
    assert ece.ece == pytest.approx(np.sum(ece.table["count"][full] / len(y) * np.abs(frac - conf)), abs=1e-12)
    ci = metrics.bootstrap_ci(metrics.accuracy_score, y, yhat, n_resamples=300, seed=3)
    idx = np.random.default_rng(3).integers(0, len(y), (300, len(y)))
    loop = [skm.accuracy_score(y[i], yhat[i]) for i in idx]
    assert np.allclose(np.quantile(loop, [0.025, 0.975]), [ci.low, ci.high])
    assert ci.low < ci.estimate < ci.high
