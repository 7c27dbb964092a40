"""llmbook.metrics against scikit-learn (and scipy, and hand-computed numbers).

Random cases: 180 seeds over the tests, 2..6 classes, every average, every zero_division setting, betas 0.5/1/2; results must equal
scikit-learn's to 1e-12 with NaNs in the same places and the same UndefinedMetricWarning messages. Edge cases one by
one: a class never predicted, no positives, a class absent from y_true, all correct, all wrong, a single example.
"""

import math
import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.exceptions import UndefinedMetricWarning as SkUndefinedMetricWarning

from llmbook import metrics as M

ZERO_DIVISIONS = ("warn", 0, 1, np.nan)
TOL = dict(atol=1e-12, rtol=0, equal_nan=True)


def _random_case(seed):
    "Labels with 2..6 classes; predictions often drawn from a subset of classes, sometimes all right or all wrong."
    rng = np.random.default_rng(seed)
    C, N = int(rng.integers(2, 7)), int(rng.integers(1, 80))
    yt = rng.integers(0, C, N)
    if seed % 3 == 0:
        yt = rng.choice(rng.permutation(C)[: rng.integers(1, C + 1)], N)  # classes absent from y_true
    yp = rng.choice(rng.permutation(C)[: rng.integers(1, C + 1)], N)  # classes never predicted
    if seed % 11 == 0:
        yp = yt.copy()  # all correct
    if seed % 13 == 0:
        yp = (yt + 1) % C  # all wrong
    if seed % 4 == 0:
        yp = np.where(rng.random(N) < 0.6, yt, yp)  # mostly right
    return yt, yp, C


def _run(fn, *args, **kw):
    "Call fn with every warning recorded; return (result, [messages of undefined-metric warnings])."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kw)
    msgs = [
        str(w.message) for w in caught if issubclass(w.category, (M.UndefinedMetricWarning, SkUndefinedMetricWarning))
    ]
    return out, msgs


def _assert_same(ours, theirs):
    a, b = np.atleast_1d(np.asarray(ours, dtype=float)), np.atleast_1d(np.asarray(theirs, dtype=float))
    assert a.shape == b.shape, (a, b)
    assert (np.isnan(a) == np.isnan(b)).all(), (a, b)
    np.testing.assert_allclose(a, b, **TOL)


def _averages(C):
    return (None, "micro", "macro", "weighted") + (("binary",) if C == 2 else ())


def _sk_labels(avg, C):
    return None if avg == "binary" else list(range(C))


@pytest.mark.parametrize("seed", range(0, 120, 4))
def test_prfs_random_equals_sklearn(seed):
    for s in range(seed, seed + 4):
        yt, yp, C = _random_case(s)
        for avg in _averages(C):
            for zd in ZERO_DIVISIONS:
                for beta in (0.5, 1.0, 2.0) if s % 5 == 0 else (1.0, 2.0):
                    ours, w1 = _run(
                        M.precision_recall_fscore_support,
                        yt,
                        yp,
                        beta=beta,
                        average=avg,
                        num_classes=C,
                        zero_division=zd,
                    )
                    theirs, w2 = _run(
                        skm.precision_recall_fscore_support,
                        yt,
                        yp,
                        beta=beta,
                        average=avg,
                        labels=_sk_labels(avg, C),
                        zero_division=zd,
                    )
                    for a, b in zip(ours[:3], theirs[:3]):
                        _assert_same(a, b)
                    if avg is None:
                        assert ours[3].dtype == np.int64 and (ours[3] == theirs[3]).all()
                    else:
                        assert ours[3] is None and theirs[3] is None
                        assert all(isinstance(v, float) for v in ours[:3])
                    assert w1 == w2, (s, avg, zd, w1, w2)


@pytest.mark.parametrize("seed", range(1000, 1060, 6))
def test_score_functions_random_equal_sklearn(seed):
    for s in range(seed, seed + 6):
        yt, yp, C = _random_case(s)
        assert M.accuracy_score(yt, yp) == skm.accuracy_score(yt, yp)
        assert M.accuracy_score(yt, yp, normalize=False) == skm.accuracy_score(yt, yp, normalize=False)
        assert (M.confusion_matrix(yt, yp, C) == skm.confusion_matrix(yt, yp, labels=range(C))).all()
        for norm in ("true", "pred", "all"):
            np.testing.assert_allclose(
                M.confusion_matrix(yt, yp, C, normalize=norm),
                skm.confusion_matrix(yt, yp, labels=range(C), normalize=norm),
                **TOL,
            )
        for avg in _averages(C):
            for zd in ZERO_DIVISIONS:
                kw, skw = (
                    dict(average=avg, num_classes=C, zero_division=zd),
                    dict(average=avg, labels=_sk_labels(avg, C), zero_division=zd),
                )
                for ours_fn, sk_fn in [
                    (M.precision_score, skm.precision_score),
                    (M.recall_score, skm.recall_score),
                    (M.f1_score, skm.f1_score),
                ]:
                    a, w1 = _run(ours_fn, yt, yp, **kw)
                    b, w2 = _run(sk_fn, yt, yp, **skw)
                    _assert_same(a, b)
                    assert w1 == w2, (ours_fn.__name__, s, avg, zd, w1, w2)
                a, _ = _run(M.fbeta_score, yt, yp, beta=0.5, **kw)
                b, _ = _run(skm.fbeta_score, yt, yp, beta=0.5, **skw)
                _assert_same(a, b)


@pytest.mark.parametrize("seed", range(2000, 2036, 3))
def test_classification_report_equals_sklearn(seed):
    for s in range(seed, seed + 3):
        yt, yp, C = _random_case(s)
        names = None if s % 2 else [f"class_{i}" * (i % 3 + 1) for i in range(C)]
        for zd in ZERO_DIVISIONS:
            ours, _ = _run(
                M.classification_report, yt, yp, num_classes=C, target_names=names, output_dict=True, zero_division=zd
            )
            theirs, _ = _run(
                skm.classification_report,
                yt,
                yp,
                labels=range(C),
                target_names=names,
                output_dict=True,
                zero_division=zd,
            )
            assert list(ours) == list(theirs)
            for k in ours:
                if isinstance(ours[k], dict):
                    assert list(ours[k]) == list(theirs[k])
                    _assert_same(list(ours[k].values()), list(theirs[k].values()))
                else:
                    _assert_same(ours[k], theirs[k])
            # scikit-learn prints supports as floats ("3.0") when no prediction at all is right (a quirk of its
            # all-wrong code path); otherwise the text tables are identical
            if (yt == yp).any():
                for digits in (2, 4):
                    a, _ = _run(
                        M.classification_report,
                        yt,
                        yp,
                        num_classes=C,
                        target_names=names,
                        digits=digits,
                        zero_division=zd,
                    )
                    b, _ = _run(
                        skm.classification_report,
                        yt,
                        yp,
                        labels=range(C),
                        target_names=names,
                        digits=digits,
                        zero_division=zd,
                    )
                    assert a == b


EDGE_CASES = {
    "class never predicted": ([0, 1, 2, 2, 1, 0], [0, 1, 1, 1, 1, 0], 3),
    "no positives (binary)": ([0, 0, 0, 0], [0, 1, 0, 1], 2),
    "no positives, none predicted": ([0, 0, 0], [0, 0, 0], 2),
    "class absent from y_true": ([0, 0, 1, 1], [0, 2, 1, 2], 3),
    "class in neither array": ([0, 2, 2], [0, 2, 0], 4),
    "all correct": ([0, 1, 2, 3, 3], [0, 1, 2, 3, 3], 4),
    "all wrong": ([0, 1, 2, 0], [1, 2, 0, 2], 3),
    "single example": ([1], [1], 2),
    "single example wrong": ([1], [0], 2),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_equal_sklearn(case):
    yt, yp, C = EDGE_CASES[case]
    assert M.accuracy_score(yt, yp) == skm.accuracy_score(yt, yp)
    assert (M.confusion_matrix(yt, yp, C) == skm.confusion_matrix(yt, yp, labels=range(C))).all()
    for avg in _averages(C):
        for zd in ZERO_DIVISIONS:
            for pos in (0, 1) if avg == "binary" else (1,):
                ours, w1 = _run(
                    M.precision_recall_fscore_support,
                    yt,
                    yp,
                    average=avg,
                    pos_label=pos,
                    num_classes=C,
                    zero_division=zd,
                )
                theirs, w2 = _run(
                    skm.precision_recall_fscore_support,
                    yt,
                    yp,
                    average=avg,
                    pos_label=pos,
                    labels=_sk_labels(avg, C),
                    zero_division=zd,
                )
                for a, b in zip(ours[:3], theirs[:3]):
                    _assert_same(a, b)
                assert w1 == w2


def test_edge_case_values_by_hand():
    # class 2 never predicted: its precision is 0/0 -> zero_division; its recall is 0/2 = 0 whatever the setting
    p, r, f, s = M.precision_recall_fscore_support([0, 1, 2, 2, 1, 0], [0, 1, 1, 1, 1, 0], zero_division=1)
    assert p.tolist() == [1.0, 0.5, 1.0] and r.tolist() == [1.0, 1.0, 0.0] and s.tolist() == [2, 2, 2]
    assert np.allclose(f, [1.0, 2 / 3, 0.0])  # F: 2TP/(2TP+FN+FP) = 0/2, defined
    # no positives in y_true and none predicted: binary precision, recall and F are all 0/0
    for zd, want in [(0, 0.0), (1, 1.0)]:
        assert M.precision_recall_fscore_support([0, 0], [0, 0], average="binary", zero_division=zd)[:3] == (want,) * 3
    assert all(
        math.isnan(v)
        for v in M.precision_recall_fscore_support([0, 0], [0, 0], average="binary", zero_division=np.nan)[:3]
    )
    with pytest.warns(M.UndefinedMetricWarning, match="Recall is ill-defined"):
        assert M.recall_score([0, 0, 0], [0, 1, 0]) == 0.0
    with pytest.warns(M.UndefinedMetricWarning, match="Precision is ill-defined"):
        assert M.precision_score([0, 1, 1], [0, 0, 0]) == 0.0
    # all correct: everything is 1; all wrong: everything is 0
    assert M.f1_score([0, 1, 2], [0, 1, 2], average="macro") == 1.0
    assert M.f1_score([0, 1, 2], [1, 2, 0], average="macro") == 0.0
    # micro averages equal accuracy for single-label data
    yt, yp, C = _random_case(5)
    assert all(
        abs(v - M.accuracy_score(yt, yp)) < 1e-15
        for v in M.precision_recall_fscore_support(yt, yp, average="micro", num_classes=C)[:3]
    )


def test_num_classes_none_matches_sklearn_default_when_all_classes_occur():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        C = int(rng.integers(2, 6))
        yt, yp = rng.integers(0, C, 50), rng.integers(0, C, 50)
        yt[:C] = np.arange(C)
        for avg in ("micro", "macro", "weighted"):
            _assert_same(M.f1_score(yt, yp, average=avg), skm.f1_score(yt, yp, average=avg))


def test_inputs_lists_numpy_torch_bool_float():
    yt, yp = [0, 1, 1, 0, 1], [0, 1, 0, 0, 1]
    want = skm.f1_score(yt, yp)
    variants = [
        (yt, yp),
        (np.array(yt), np.array(yp)),
        (torch.tensor(yt), torch.tensor(yp)),
        (np.array(yt, dtype=bool), np.array(yp, dtype=bool)),
        (np.array(yt, float), np.array(yp, float)),
        (torch.tensor(yt, dtype=torch.int32), np.array(yp, dtype=np.uint8)),
        (torch.tensor(yt, requires_grad=False).float(), torch.tensor(yp)),
    ]
    for a, b in variants:
        assert M.f1_score(a, b) == want
        assert (M.confusion_matrix(a, b) == skm.confusion_matrix(yt, yp)).all()


@pytest.mark.parametrize(
    "args, kw, match",
    [
        (([0, 1, 1], [0, 1]), {}, "y_true has 3 labels but y_pred has 2"),
        (([0, 1], [0.5, 1.0]), {}, "non-integer label"),
        (([0, 1], [0, float("nan")]), {}, "non-integer label"),
        (([0, -1], [0, 1]), {}, "negative label"),
        ((["a", "b"], [0, 1]), {}, "integer class indices"),
        (([], []), {}, "empty"),
        ((np.zeros((3, 2)), [0, 1, 0]), {}, r"shape \(N,\)"),
        (([0, 3], [0, 1]), dict(num_classes=3), "y_true contains label 3 but num_classes=3"),
        (([0, 1], [0, 5]), dict(num_classes=3), "y_pred contains label 5"),
        (([0, 1], [0, 1]), dict(num_classes=0), "num_classes must be a positive integer"),
    ],
)
def test_bad_input_errors(args, kw, match):
    for fn in (M.confusion_matrix, M.precision_recall_fscore_support, M.classification_report):
        with pytest.raises(ValueError, match=match):
            fn(*args, **kw)
    if "num_classes" not in kw:
        with pytest.raises(ValueError, match=match):
            M.accuracy_score(*args)


def test_bad_option_errors():
    with pytest.raises(ValueError, match="average must be one of"):
        M.f1_score([0, 1], [0, 1], average="samples")
    with pytest.raises(ValueError, match="zero_division must be"):
        M.f1_score([0, 1], [0, 1], zero_division=0.5)
    with pytest.raises(ValueError, match="zero_division must be"):
        M.f1_score([0, 1], [0, 1], zero_division="nan")
    with pytest.raises(ValueError, match="needs a 2-class problem but there are 3"):
        M.f1_score([0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="needs a 2-class problem"):
        M.f1_score([0, 1], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="pos_label=2 is not a valid label"):
        M.f1_score([0, 1], [0, 1], pos_label=2)
    with pytest.raises(ValueError, match="beta must be"):
        M.fbeta_score([0, 1], [0, 1], beta=-1.0)
    with pytest.raises(ValueError, match="normalize must be"):
        M.confusion_matrix([0, 1], [0, 1], normalize="rows")
    with pytest.raises(ValueError, match="target_names has 3 names but there are 2 classes"):
        M.classification_report([0, 1], [0, 1], target_names=["a", "b", "c"])
    with pytest.warns(UserWarning, match="pos_label"):
        M.f1_score([0, 1, 2], [0, 1, 2], average="macro", pos_label=2)


# ---- bootstrap -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, confidence, batch", [(0, 0.95, None), (1, 0.9, None), (7, 0.99, 64)])
def test_bootstrap_equals_scipy_percentile(seed, confidence, batch):
    rng = np.random.default_rng(100 + seed)
    yt = rng.integers(0, 3, 150)
    yp = np.where(rng.random(150) < 0.6, yt, rng.integers(0, 3, 150))
    metric = lambda a, b: M.f1_score(a, b, average="weighted", num_classes=3, zero_division=0)
    ours = M.bootstrap_ci(metric, yt, yp, n_resamples=300, confidence=confidence, seed=seed, batch=batch)
    ref = stats.bootstrap(
        (yt, yp),
        metric,
        paired=True,
        vectorized=False,
        method="percentile",
        n_resamples=300,
        confidence_level=confidence,
        batch=batch,
        rng=np.random.default_rng(seed),
    )
    np.testing.assert_allclose(ours.distribution, ref.bootstrap_distribution, atol=1e-12, rtol=0)
    np.testing.assert_allclose(
        [ours.low, ours.high], [ref.confidence_interval.low, ref.confidence_interval.high], atol=1e-12, rtol=0
    )
    assert ours.estimate == metric(yt, yp) and ours.n_resamples == 300 and ours.confidence == confidence


def test_bootstrap_accuracy_interval_is_sensible():
    # accuracy of 0/1 hits with p = 0.8, N = 2000: the 95% interval is close to p_hat +- 1.96 sqrt(p(1-p)/N)
    rng = np.random.default_rng(0)
    yt = rng.integers(0, 2, 2000)
    yp = np.where(rng.random(2000) < 0.8, yt, 1 - yt)
    ci = M.bootstrap_ci(M.accuracy_score, torch.tensor(yt), torch.tensor(yp), n_resamples=2000, seed=3)
    half = 1.96 * math.sqrt(ci.estimate * (1 - ci.estimate) / 2000)
    assert ci.low < ci.estimate < ci.high
    assert abs((ci.high - ci.low) / 2 - half) < 0.15 * half
    a, b = (M.bootstrap_ci(M.accuracy_score, yt, yp, n_resamples=50, seed=3) for _ in range(2))
    assert (a.low, a.high) == (b.low, b.high) and (a.distribution == b.distribution).all()  # seeded
    c = M.bootstrap_ci(M.accuracy_score, yt, yp, n_resamples=50, seed=4)
    assert not (a.distribution == c.distribution).all()


def test_bootstrap_errors_and_nan_resamples():
    with pytest.raises(ValueError, match="same first dimension"):
        M.bootstrap_ci(M.accuracy_score, [0, 1], [0])
    with pytest.raises(ValueError, match="confidence"):
        M.bootstrap_ci(M.accuracy_score, [0, 1], [0, 1], confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        M.bootstrap_ci(M.accuracy_score, [0, 1], [0, 1], n_resamples=0)
    # with zero_division=nan, resamples without any positive give NaN recall: warned about and left out
    yt, yp = np.array([0] * 9 + [1]), np.array([0] * 9 + [1])
    rec = lambda a, b: M.recall_score(a, b, num_classes=2, zero_division=np.nan)
    with pytest.warns(RuntimeWarning, match="NaN on"):
        ci = M.bootstrap_ci(rec, yt, yp, n_resamples=200, seed=0)
    assert ci.low == ci.high == 1.0


def test_cluster_bootstrap_one_example_per_cluster_is_the_ordinary_bootstrap():
    rng = np.random.default_rng(11)
    yt = rng.integers(0, 3, 120)
    yp = np.where(rng.random(120) < 0.6, yt, rng.integers(0, 3, 120))

    def metric(a, b):
        return M.f1_score(a, b, average="macro", num_classes=3, zero_division=0)

    for batch in (None, 37):
        ours = M.cluster_bootstrap_ci(metric, yt, yp, np.arange(120), n_resamples=150, seed=4, batch=batch)
        ref = M.bootstrap_ci(metric, yt, yp, n_resamples=150, seed=4, batch=batch)
        assert (ours.distribution == ref.distribution).all() and (ours.low, ours.high) == (ref.low, ref.high)
    # string labels in sorted order are the same clusters
    names = np.array([f"film{i:03d}" for i in range(120)])
    s = M.cluster_bootstrap_ci(metric, yt, yp, names, n_resamples=150, seed=4)
    assert (s.distribution == ref.distribution).all()


def test_cluster_bootstrap_hand_computed_and_scipy():
    # two clusters: a = examples 0,1 (1 hit of 2), b = examples 2,3,4 (3 hits of 3); groups given out of order
    yt = np.array([0, 1, 1, 0, 1])
    yp = np.array([0, 1, 0, 0, 1])
    groups = np.array(["b", "b", "a", "b", "a"])  # a: indices 2, 4 (1 hit of 2); b: 0, 1, 3 (3 of 3)
    ci = M.cluster_bootstrap_ci(M.accuracy_score, yt, yp, groups, n_resamples=400, seed=0)
    draws = np.random.default_rng(0).integers(0, 2, (400, 2))  # cluster 0 = "a", 1 = "b"
    hits, n = np.array([1, 3]), np.array([2, 3])
    expected = hits[draws].sum(1) / n[draws].sum(1)  # {a,a}: 1/2, {a,b}: 4/5, {b,b}: 1
    np.testing.assert_allclose(ci.distribution, expected, atol=1e-15, rtol=0)
    assert set(np.round(ci.distribution, 12)) == {0.5, 0.8, 1.0} and ci.estimate == 0.8

    # accuracy by cluster = scipy's percentile bootstrap of total hits / total examples over per-cluster totals
    rng = np.random.default_rng(5)
    g = rng.integers(0, 60, 900)
    p = rng.uniform(0.4, 1.0, 60)[g]
    y = rng.integers(0, 2, 900)
    pred = np.where(rng.random(900) < p, y, 1 - y)
    ours = M.cluster_bootstrap_ci(M.accuracy_score, torch.tensor(y), torch.tensor(pred), torch.tensor(g), seed=8)
    h, k = np.bincount(g, weights=pred == y), np.bincount(g)
    ref = stats.bootstrap(
        (h[k > 0], k[k > 0]),
        lambda a, b: a.sum() / b.sum(),
        paired=True,
        vectorized=False,
        method="percentile",
        n_resamples=1000,
        rng=np.random.default_rng(8),
    )
    np.testing.assert_allclose(ours.distribution, ref.bootstrap_distribution, atol=1e-12, rtol=0)
    np.testing.assert_allclose(
        [ours.low, ours.high], [ref.confidence_interval.low, ref.confidence_interval.high], atol=1e-12, rtol=0
    )


def test_cluster_bootstrap_is_wider_on_clustered_data():
    # 50 clusters of 20 examples, cluster accuracies uniform on [0.3, 1]: intra-cluster correlation
    # var(p) / (p(1-p)) = (0.7^2 / 12) / (0.65 * 0.35) = 0.18, design effect 1 + 19 * 0.18 = 4.4, so the interval
    # should be about sqrt(4.4) = 2.1 times wider (1.8 to 2.3 over seeds 0-4); 1.5 leaves room for resampling noise
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(50), 20)
    y = rng.integers(0, 2, 1000)
    pred = np.where(rng.random(1000) < rng.uniform(0.3, 1.0, 50)[g], y, 1 - y)
    by_cluster = M.cluster_bootstrap_ci(M.accuracy_score, y, pred, g, seed=1)
    by_example = M.bootstrap_ci(M.accuracy_score, y, pred, seed=1)
    assert by_cluster.estimate == by_example.estimate
    assert by_cluster.high - by_cluster.low > 1.5 * (by_example.high - by_example.low)


def test_cluster_bootstrap_errors():
    acc = M.accuracy_score
    with pytest.raises(ValueError, match="same first dimension"):
        M.cluster_bootstrap_ci(acc, [0, 1, 1], [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="same first dimension"):
        M.cluster_bootstrap_ci(acc, [0, 1], [0], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        M.cluster_bootstrap_ci(acc, [], [], [])
    with pytest.raises(ValueError, match="single cluster.*at least 2 clusters"):
        M.cluster_bootstrap_ci(acc, [0, 1, 1], [0, 1, 0], ["x", "x", "x"])
    with pytest.raises(ValueError, match="confidence"):
        M.cluster_bootstrap_ci(acc, [0, 1], [0, 1], [0, 1], confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        M.cluster_bootstrap_ci(acc, [0, 1], [0, 1], [0, 1], n_resamples=0)


# ---- calibration -----------------------------------------------------------------------------------------------------


def _ece_by_loops(probs, labels, n_bins):
    "Guo et al. 2017, eq. (3), literally: bins (lo, hi], one Python loop per bin."
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inb = (conf > lo) & (conf <= hi)
        if inb.any():
            ece += inb.mean() * abs((pred[inb] == labels[inb]).mean() - conf[inb].mean())
    return ece


def test_ece_hand_computed():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.35, 0.65], [0.55, 0.45]])
    ece, table = M.expected_calibration_error(probs, [0, 0, 1, 0], n_bins=5)
    assert abs(ece - 0.225) < 1e-12  # 1/4*|1-0.55| + 2/4*|0.5-0.675| + 1/4*|1-0.9|
    assert table["count"].tolist() == [0, 0, 1, 2, 1]
    np.testing.assert_allclose(table["confidence"][2:], [0.55, 0.675, 0.9], atol=1e-12)
    np.testing.assert_allclose(table["accuracy"][2:], [1.0, 0.5, 1.0], atol=1e-12)
    assert np.isnan(table["accuracy"][:2]).all()
    # three classes, M = 2: confidences 0.6 (right), 0.5 (wrong: bin (0, .5]), 0.8 (wrong)
    probs3 = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    assert (
        abs(M.expected_calibration_error(probs3, [0, 2, 0], n_bins=2).ece - (1 / 3 * 0.5 + 2 / 3 * abs(0.5 - 0.7)))
        < 1e-12
    )
    # perfectly right and sure: 0
    assert M.expected_calibration_error(np.eye(3), [0, 1, 2]).ece == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_ece_equals_definition_and_torch_input(seed):
    rng = np.random.default_rng(seed)
    C, N = int(rng.integers(2, 6)), 500
    logits = rng.normal(0, 2, (N, C))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, C, N)
    for n_bins in (1, 5, 15, 20):
        want = _ece_by_loops(probs, labels, n_bins)
        assert abs(M.expected_calibration_error(probs, labels, n_bins).ece - want) < 1e-12
        got = M.expected_calibration_error(torch.softmax(torch.tensor(logits), 1), torch.tensor(labels), n_bins).ece
        assert abs(got - want) < 1e-12


@pytest.mark.parametrize("n_bins", [2, 5, 10, 15])
def test_calibration_table_equals_sklearn_calibration_curve(n_bins):
    rng = np.random.default_rng(n_bins)
    p = rng.random(1000) ** 1.5
    edges = np.linspace(0, 1, n_bins + 1)
    p[: 2 * len(edges)] = edges.repeat(2)  # values exactly on bin edges
    y = (rng.random(1000) < p).astype(int)
    t = M.calibration_table(p, y, n_bins)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    full = t["count"] > 0
    np.testing.assert_allclose(t["accuracy"][full], prob_true, atol=1e-12, rtol=0)
    np.testing.assert_allclose(t["confidence"][full], prob_pred, atol=1e-12, rtol=0)
    assert t["count"].sum() == 1000


def test_ece_small_for_calibrated_large_for_overconfident():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (20000, 4))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = (p.cumsum(1) < rng.random((20000, 1))).sum(1)  # y ~ Categorical(p): calibrated
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    assert M.expected_calibration_error(p, y).ece < 0.02
    assert M.expected_calibration_error(sharp, y).ece > 0.1


def test_calibration_errors():
    with pytest.raises(ValueError, match="sum to 1"):
        M.expected_calibration_error([[0.5, 0.6]], [0])
    with pytest.raises(ValueError, match="logits"):
        M.expected_calibration_error([[2.0, -1.0]], [0])
    with pytest.raises(ValueError, match="only 2 classes"):
        M.expected_calibration_error([[0.5, 0.5]], [2])
    with pytest.raises(ValueError, match="rows but labels"):
        M.expected_calibration_error([[0.5, 0.5]], [0, 1])
    with pytest.raises(ValueError, match="n_bins"):
        M.calibration_table([0.5], [1], n_bins=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.calibration_table([1.5], [1])


def test_plots_return_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), 200)
    fig = M.reliability_diagram(p, rng.integers(0, 3, 200))
    assert len(fig.axes) == 2
    fig2 = M.plot_confusion_matrix(M.confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1]), ["a", "b", "c"])
    assert fig2.axes[0].get_xlabel() == "predicted"
    plt.close("all")


# ------------------------------------------------------------------ the fine-tuning job's metrics dict
@pytest.mark.parametrize("seed", range(8))
def test_finetune_classification_metrics_equal_sklearn(seed):
    """`llmbook.finetune.classification_metrics` (what metrics.json, the model card and `llmbook evaluate` report):
    accuracy, macro precision/recall/F1, per-class values and the confusion matrix equal scikit-learn's on random
    multi-class labels with one class never predicted and unequal class sizes (so macro and weighted averages differ,
    which is checked, and a weighted average in place of the macro one would fail). Tolerance 1e-12."""
    from llmbook.finetune import classification_metrics

    rng = np.random.default_rng(seed)
    C = int(rng.integers(3, 6))
    yt = rng.choice(C, 200, p=np.arange(1, C + 1) / np.arange(1, C + 1).sum())
    never = int(rng.integers(C))
    yp = np.where(rng.random(200) < 0.6, yt, rng.integers(0, C, 200))
    yp[yp == never] = (never + 1) % C
    names = [f"c{i}" for i in range(C)]
    got = classification_metrics(yp, yt, names)
    kw = dict(labels=list(range(C)), zero_division=0)
    p, r, f, _ = skm.precision_recall_fscore_support(yt, yp, average="macro", **kw)
    wp, wr, wf, _ = skm.precision_recall_fscore_support(yt, yp, average="weighted", **kw)
    assert min(abs(p - wp), abs(r - wr), abs(f - wf)) > 1e-3  # the two averages are told apart
    for k, v in dict(accuracy=skm.accuracy_score(yt, yp), precision_macro=p, recall_macro=r, f1_macro=f).items():
        assert abs(got[k] - v) < 1e-12, k
    pc, rc, fc, sc = skm.precision_recall_fscore_support(yt, yp, average=None, **kw)
    for i, n in enumerate(names):
        np.testing.assert_allclose(
            [got["per_class"][n][k] for k in ("precision", "recall", "f1")], [pc[i], rc[i], fc[i]], atol=1e-12
        )
        assert got["per_class"][n]["support"] == sc[i]
    assert got["per_class"][names[never]]["precision"] == 0.0  # never predicted: zero_division=0
    assert got["confusion_matrix"] == skm.confusion_matrix(yt, yp, labels=range(C)).tolist()
    assert got["examples"] == 200
    # the library's weighted average (classification_report, precision_recall_fscore_support) against scikit-learn
    ours = M.precision_recall_fscore_support(yt, yp, average="weighted", num_classes=C, zero_division=0)
    np.testing.assert_allclose(ours[:3], [wp, wr, wf], atol=1e-12)
    rep = M.classification_report(yt, yp, num_classes=C, output_dict=True, zero_division=0)
    np.testing.assert_allclose(
        [rep["macro avg"][k] for k in ("precision", "recall", "f1-score")], [p, r, f], atol=1e-12
    )
