"""Tests of `llmbook.probes` (chapter 08): attributions, faithfulness, quantisation, distillation, membership inference.

The attribution tests use a tiny hand-built classifier whose right answer is known (one word carries the sentiment),
and the real MiniLM encoder for shapes and integrated-gradients completeness. Quantisation is checked on a small
network trained on scikit-learn's real digits data (seconds), and on the book's fine-tuned classifier (slow mark)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from llmbook import probes


class BagOfEmbeddings(torch.nn.Module):
    """A fixed-case classifier with the `transformers` calling convention: logits = W tanh(mean of word embeddings).
    Token 6 ('great' in ToyTokenizer) has a large positive direction; every other token a small random one."""

    def __init__(self, vocab=20, dim=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Embedding(vocab, dim)
        with torch.no_grad():
            self.emb.weight.copy_(0.05 * torch.randn(vocab, dim, generator=g))
            self.emb.weight[6] = 2.0
            self.emb.weight[0] = 0.0  # pad
        self.head = torch.nn.Linear(dim, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.stack([-torch.ones(dim), torch.ones(dim)]) / dim)
            self.head.bias.zero_()
        self.config = SimpleNamespace(max_position_embeddings=64, num_labels=2)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None):
        e = self.emb(input_ids) if inputs_embeds is None else inputs_embeds
        m = torch.ones(e.shape[:2]) if attention_mask is None else attention_mask.float()
        h = torch.tanh((e * m[..., None]).sum(1) / m.sum(1, keepdim=True))
        return SimpleNamespace(logits=self.head(h))


class ToyTokenizer:
    "Word -> id over a fixed vocabulary; [CLS]=1 and [SEP]=2 wrap every text; pad 0."

    vocab = {w: i for i, w in enumerate("[PAD] [CLS] [SEP] the film is great a plot and very long".split())}
    pad_token_id, all_special_ids = 0, [0, 1, 2]

    def __call__(self, text, truncation=True, max_length=128, return_tensors="pt"):
        ids = [1] + [self.vocab[w] for w in text.split()] + [2]
        return {"input_ids": torch.tensor([ids])}


def test_attribution_shapes_and_special_tokens_on_fixed_case():
    model, tok = BagOfEmbeddings().eval(), ToyTokenizer()
    ids = tok("the film is great")["input_ids"][0]
    gxi, target = probes.gradient_x_input(model, ids)
    ig = probes.integrated_gradients(model, ids, probes.pad_baseline(ids, tok), steps=64)
    assert target == 1 and gxi.shape == ig["attributions"].shape == (6,)
    assert ig["attributions"][0] == 0 and ig["attributions"][-1] == 0  # [CLS]/[SEP] equal the baseline
    assert int(gxi.argmax()) == 4 and int(ig["attributions"].argmax()) == 4  # 'great' carries the prediction
    assert abs(ig["delta"]) < 1e-3  # completeness


def test_faithfulness_direction_on_fixed_case():
    model, tok = BagOfEmbeddings().eval(), ToyTokenizer()
    texts = ["the film is great", "a great film and the plot is very long", "great the film is long", "the great plot"]

    def fn(m, ids):
        return probes.integrated_gradients(m, ids, probes.pad_baseline(ids, tok), steps=16)["attributions"].numpy()

    r = probes.deletion_test(model, tok, texts, fn, frac=0.2, n_random=5, seed=0)
    assert r["p"].shape == r["p_top"].shape == r["p_random"].shape == (4,)
    assert np.all(r["drop_top"] > r["drop_random"])  # deleting 'great' hurts most
    # control: the reversed ranking deletes the least important tokens first, so the test must not pass for it
    rev = probes.deletion_test(model, tok, texts, lambda m, ids: -fn(m, ids), frac=0.2, n_random=5, seed=0)
    assert np.all(rev["drop_top"] < r["drop_top"]) and rev["drop_top"].mean() < rev["drop_random"].mean()


def test_delete_tokens():
    assert probes.delete_tokens(torch.tensor([1, 7, 8, 9, 2]), [1, 3]).tolist() == [1, 8, 2]


@pytest.fixture(scope="module")
def minilm():
    from llmbook.finetune import load_classifier

    torch.manual_seed(0)
    model, tok = load_classifier("minilm", ["rotten", "fresh"])
    return model.eval(), tok


def test_integrated_gradients_completeness_on_minilm(minilm):
    model, tok = minilm
    ids = tok("An unexpectedly moving film.", return_tensors="pt")["input_ids"][0]
    r = probes.integrated_gradients(model, ids, probes.pad_baseline(ids, tok), steps=32)
    assert r["attributions"].shape == (len(ids),)
    assert abs(float(r["attributions"].sum()) - (r["f_x"] - r["f_baseline"])) < 0.01  # stated tolerance
    with torch.no_grad():  # f_x really is the model's probability of the explained class
        p = torch.softmax(model(input_ids=ids[None]).logits, -1)[0, r["target"]]
    assert abs(float(p) - r["f_x"]) < 1e-5


def test_make_student_copies_teacher_layers(minilm):
    teacher, _ = minilm
    student = probes.make_student(teacher, num_layers=2, teacher_layers=[0, 3])
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 6
    t, s = teacher.bert.encoder.layer, student.bert.encoder.layer
    assert torch.equal(s[1].attention.self.query.weight, t[3].attention.self.query.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    with pytest.raises(ValueError):
        probes.make_student(teacher, num_layers=2, teacher_layers=[0, 9])


def test_distillation_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    zs, zt, y = (
        torch.randn(16, 3, generator=g),
        torch.randn(16, 3, generator=g),
        torch.randint(0, 3, (16,), generator=g),
    )
    T, a = 4.0, 0.3
    pt, ps = torch.softmax(zt / T, -1), torch.softmax(zs / T, -1)
    expected = a * T * T * (pt * (pt / ps).log()).sum(-1).mean() + (1 - a) * torch.nn.functional.cross_entropy(zs, y)
    assert torch.allclose(probes.distillation_loss(zs, zt, y, T, a), expected, atol=1e-6)
    assert torch.allclose(probes.distillation_loss(zs, zt, y, T, 0.0), torch.nn.functional.cross_entropy(zs, y))


def test_int8_quantised_accuracy_within_tolerance_digits():
    "Real data (scikit-learn's 1,797 handwritten digits): int8 dynamic quantisation costs at most 2 points."
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X[:1400]), y[:1400]).backward()
        opt.step()
    q = probes.quantize_int8(net)

    def acc(m):
        return float((m(X[1400:]).argmax(1) == y[1400:]).float().mean())

    assert acc(net) > 0.9
    assert abs(acc(q) - acc(net)) <= 0.02  # stated tolerance: 2 points
    # int8 weights are a quarter of float32; the per-row scales (float64) and zero points (int64) add 16 bytes per
    # output row, which on this small network (138 rows, 9,472 weights) brings the ratio to about 0.41
    assert probes.state_dict_bytes(q) < 0.45 * probes.state_dict_bytes(net)
    assert isinstance(net[0], torch.nn.Linear)  # the original is not modified


@pytest.mark.slow
def test_int8_quantised_finetuned_classifier_within_tolerance():
    "The book's fine-tuned MiniLM (trained once and cached): int8 accuracy within 2 points on 200 test snippets."
    from llmbook import config, data
    from llmbook.finetune import finetuned_classifier, load_folder, predict_proba

    cfg = config.load(profile="fast")
    model, tok = load_folder(finetuned_classifier(cfg))
    test = data.rotten_tomatoes_splits(seed=cfg.seed, max_eval_examples=200)["test"]
    y = np.array(test["label"])

    def acc(m):
        return float((predict_proba(m, tok, test["text"]).argmax(1) == y).mean())

    assert abs(acc(probes.quantize_int8(model)) - acc(model)) <= 0.02


def test_roc_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        s, y = rng.integers(0, 6, 300).astype(float), rng.integers(0, 2, 300)
        assert abs(probes.roc_auc(s, y) - roc_auc_score(y, s)) < 1e-12
    fpr, tpr, _ = probes.roc_curve(s, y)
    assert abs(np.trapezoid(tpr, fpr) - roc_auc_score(y, s)) < 1e-12
    with pytest.raises(ValueError):
        probes.roc_auc([0.1, 0.2], [1, 1])


def test_membership_inference_auc_equals_sklearn():
    rng = np.random.default_rng(1)
    members, non = rng.gamma(1.0, 0.3, 400), rng.gamma(1.0, 0.5, 300)  # members: lower loss
    r = probes.loss_threshold_attack(members, non)
    y = np.r_[np.ones(400), np.zeros(300)]
    assert abs(r["auc"] - roc_auc_score(y, -np.r_[members, non])) < 1e-12
    assert r["auc"] > 0.55 and r["threshold"] == pytest.approx(members.mean())
    assert r["tpr"] == pytest.approx((members <= members.mean()).mean()) and r["advantage"] == pytest.approx(
        r["tpr"] - r["fpr"]
    )
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert np.allclose(probes.per_example_loss(p, [0, 0]), [-np.log(0.9), -np.log(0.2)])


def test_counterfactual_gap_and_card_checklist():
    def predict(texts):
        return np.array([[0.3, 0.7] if "Ann" in t else [0.6, 0.4] for t in texts])

    df = probes.counterfactual_probs(predict, ["{X} acts.", "A film by {X}."], {"a": ["Ann", "Ann"], "b": ["Bob"]})
    gaps, ci = probes.counterfactual_gap(df, "a", "b", n_resamples=200)
    assert np.allclose(gaps, 0.3) and ci.low == pytest.approx(0.3) and ci.high == pytest.approx(0.3)
    with pytest.raises(ValueError):
        probes.counterfactual_probs(predict, ["no slot"], {"a": ["x"]})
    card = "---\nlicense: apache-2.0\n---\n## Intended use\n## Limitations and risks\n"
    c = probes.card_checklist(card + probes.card_addendum(bias={"gap": 0.1}))
    assert c["intended use"] and c["bias probe results"] and not c["privacy probe results"]
