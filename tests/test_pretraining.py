"""llmbook.pretraining against transformers and torch: the causal LM loss equals the `.loss` of LlamaForCausalLM and
GPT2LMHeadModel, the masked-LM loss equals BertForMaskedLM's, the masker passes the same 4-sigma binomial checks as
transformers' DataCollatorForLanguageModeling on real text, the decoder's parameter count equals
`scale.param_count`, the training loop learns and is deterministic, bad input gets clear errors, and the chapter's
exercise checks accept correct solutions and report untouched stubs. The chapter (nbs/02c_pretraining.ipynb)
teaches; these tests cover the edges."""

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llmbook import scale
from llmbook.pretraining import (
    IGNORE_INDEX,
    bits_per_token,
    causal_lm_labels,
    causal_lm_loss,
    check_bits_per_char,
    check_causal_shift,
    check_decoder_params,
    check_positions,
    hamlet_pretraining,
    init_weights,
    mask_tokens,
    masking_tally,
    mlm_loss,
    pretrain_decoder,
    pretraining_summary,
    random_windows,
    sliding_generate,
    within_sigmas,
)
from llmbook.transformer import Decoder, DecoderConfig, generate

REL = 1e-5  # float32 log-softmax over the same logits, summed in a different order: a few roundings apart


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def padded_batch(V=50, B=4, T=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(V, (B, T), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[3, 2:] = 0
    return input_ids, attention_mask


def tiny_decoder(V=30, max_positions=16, seed=0, tie=True):
    torch.manual_seed(seed)
    return Decoder(
        DecoderConfig(
            vocab_size=V,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=max_positions,
            tie_word_embeddings=tie,
        )
    )


# --- causal LM loss -------------------------------------------------------------------------------------------------


def test_causal_labels_mark_padding():
    ids, am = padded_batch()
    labels = causal_lm_labels(ids, am)
    assert torch.equal(labels[am == 1], ids[am == 1])
    assert (labels[am == 0] == IGNORE_INDEX).all()
    assert torch.equal(causal_lm_labels(ids), ids)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_causal_loss_equals_torch_shift(reduction):
    torch.manual_seed(1)
    logits = torch.randn(3, 9, 17)
    labels = torch.randint(17, (3, 9))
    labels[0, 5:] = IGNORE_INDEX
    want = F.cross_entropy(logits[:, :-1].reshape(-1, 17), labels[:, 1:].reshape(-1), reduction=reduction)
    torch.testing.assert_close(causal_lm_loss(logits, labels, reduction=reduction), want, rtol=REL, atol=1e-6)


def test_causal_loss_bf16_logits_computed_in_float32():
    torch.manual_seed(2)
    logits = torch.randn(2, 6, 11).bfloat16()
    labels = torch.randint(11, (2, 6))
    out = causal_lm_loss(logits, labels)
    assert out.dtype == torch.float32
    want = F.cross_entropy(logits[:, :-1].float().reshape(-1, 11), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(out, want, rtol=REL, atol=1e-6)


def hf_models(V):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    return {
        "llama": LlamaForCausalLM(
            LlamaConfig(
                vocab_size=V,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=64,
                max_position_embeddings=32,
            )
        ).eval(),
        "gpt2": GPT2LMHeadModel(
            GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=0, eos_token_id=0)
        ).eval(),
    }


def test_causal_loss_equals_transformers_loss():
    V = 50
    for seed in range(3):
        ids, am = padded_batch(V=V, seed=seed)
        labels = causal_lm_labels(ids, am)
        for name, model in hf_models(V).items():
            with torch.no_grad():
                out = model(input_ids=ids, attention_mask=am, labels=labels)
            ours = causal_lm_loss(out.logits, labels)
            assert abs(ours.item() - out.loss.item()) <= REL * out.loss.item(), (name, seed)


def test_causal_loss_bad_shapes():
    with pytest.raises(ValueError, match=r"logits \(B, T, V\) and labels \(B, T\)"):
        causal_lm_loss(torch.randn(5, 7), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        causal_lm_loss(torch.randn(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))


# --- masked LM ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_corpus():
    "MiniLM's tokenizer and the whole Rotten Tomatoes corpus tokenized with it (about 320k maskable tokens)."
    from transformers import AutoTokenizer

    from llmbook import resources
    from llmbook.data import load_rotten_tomatoes

    tok = AutoTokenizer.from_pretrained(resources.get("minilm"))
    texts = list(load_rotten_tomatoes()["text"])
    return tok, tok(texts, return_special_tokens_mask=True)


def test_masking_statistics_match_collator(minilm_corpus):
    """Both maskers on >= 100k real tokens: the 15% pick rate and the observed [MASK] / unchanged / random shares
    within 4 binomial sigmas of their exact expectations (a random id can equal [MASK] or the original, 1/V each);
    special and pad tokens never picked; labels -100 off the picks and the original id on them."""
    from transformers import DataCollatorForLanguageModeling

    tok, rows = minilm_corpus
    V = len(tok)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15, seed=123, return_tensors="pt")
    g = torch.Generator().manual_seed(123)
    tallies = {"ours": {}, "collator": {}}
    for i in range(0, len(rows["input_ids"]), 512):
        chunk = [
            dict(input_ids=a, special_tokens_mask=s)
            for a, s in zip(rows["input_ids"][i : i + 512], rows["special_tokens_mask"][i : i + 512])
        ]
        batch = tok.pad(chunk, return_tensors="pt")
        original = batch["input_ids"].clone()
        never = batch["special_tokens_mask"].bool() | (batch["attention_mask"] == 0)
        theirs = collator([dict(c) for c in chunk])
        ours = mask_tokens(
            batch["input_ids"],
            tok.mask_token_id,
            V,
            batch["special_tokens_mask"],
            batch["attention_mask"],
            generator=g,
        )
        assert torch.equal(batch["input_ids"], original)  # the input is not modified in place
        for name, (m, y) in (("ours", ours), ("collator", (theirs["input_ids"], theirs["labels"]))):
            for k, v in masking_tally(original, m, y, never, tok.mask_token_id).items():
                tallies[name][k] = tallies[name].get(k, 0) + v
    expected = dict(mask=0.8 + 0.1 / V, unchanged=0.1 + 0.1 / V, random=0.1 * (1 - 2 / V))
    for name, t in tallies.items():
        assert t["maskable"] >= 100_000
        assert within_sigmas(t["picked"], t["maskable"], 0.15), (name, t)
        for c, p in expected.items():
            assert within_sigmas(t[c], t["picked"], p), (name, c, t)
        assert t["mask"] + t["unchanged"] + t["random"] == t["picked"]
        assert t["picked_never"] == t["wrong_label"] == t["unpicked_changed"] == 0, (name, t)


def test_within_sigmas_can_fail():
    assert within_sigmas(150, 1000, 0.15)
    assert not within_sigmas(200, 1000, 0.15)  # 4.4 sigma above
    assert not within_sigmas(100, 1000, 0.15)


def test_mask_tokens_deterministic_and_extreme_shares():
    ids = torch.randint(5, 100, (8, 64), generator=torch.Generator().manual_seed(0))
    a = mask_tokens(ids, 3, 100, generator=torch.Generator().manual_seed(7))
    b = mask_tokens(ids, 3, 100, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    m, y = mask_tokens(ids, 3, 100, mlm_probability=0.5, mask_replace_prob=1.0, random_replace_prob=0.0)
    assert (m[y != IGNORE_INDEX] == 3).all() and torch.equal(m[y == IGNORE_INDEX], ids[y == IGNORE_INDEX])
    m, y = mask_tokens(ids, 3, 100, mlm_probability=0.5, mask_replace_prob=0.0, random_replace_prob=0.0)
    assert torch.equal(m, ids) and (y != IGNORE_INDEX).any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mlm_probability=0.0), r"mlm_probability must be in \(0, 1\)"),
        (dict(mlm_probability=1.0), r"mlm_probability must be in \(0, 1\)"),
        (dict(mlm_probability=1.5), r"mlm_probability must be in \(0, 1\)"),
        (dict(mlm_probability=-0.1), r"mlm_probability must be in \(0, 1\)"),
        (dict(mask_replace_prob=0.8, random_replace_prob=0.3), "exceeds 1"),
        (dict(mask_replace_prob=-0.1), r"must be in \[0, 1\]"),
        (dict(mask_token_id=100), r"mask_token_id \(100\) in \[0, 100\)"),
    ],
)
def test_mask_tokens_bad_input(kwargs, match):
    kw = dict(mask_token_id=3, vocab_size=100)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        mask_tokens(torch.zeros(2, 5, dtype=torch.long), **kw)


def test_mask_tokens_float_ids_refused():
    with pytest.raises(ValueError, match="integer ids"):
        mask_tokens(torch.zeros(2, 5), 3, 100)


def test_mlm_loss_equals_bert_for_masked_lm():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    ).eval()
    ids, am = padded_batch(V=60, seed=3)
    special = torch.zeros_like(ids)
    special[:, 0] = 1
    masked, labels = mask_tokens(
        ids, 4, 60, special, am, mlm_probability=0.3, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        out = model(input_ids=masked, attention_mask=am, labels=labels)
    assert abs(mlm_loss(out.logits, labels).item() - out.loss.item()) <= REL * out.loss.item()
    want = F.cross_entropy(out.logits.reshape(-1, 60), labels.reshape(-1))
    torch.testing.assert_close(mlm_loss(out.logits, labels), want, rtol=REL, atol=1e-6)
    with pytest.raises(ValueError, match="mlm_loss needs"):
        mlm_loss(out.logits[0], labels[0])


# --- the decoder: size, training, generation -----------------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("kv", [1, 2, 4])
def test_decoder_numel_equals_param_count(tie, kv):
    cfg = DecoderConfig(
        vocab_size=77,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=kv,
        intermediate_size=120,
        tie_word_embeddings=tie,
    )
    model = Decoder(cfg)
    assert sum(p.numel() for p in model.parameters()) == scale.param_count(cfg)["total"]


def test_training_flops_is_six_n_d():
    cfg = DecoderConfig(
        vocab_size=66,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=172,
    )
    n = scale.param_count(cfg)["non_embedding"]
    assert scale.training_flops(n, 1000) == 6 * n * 1000


def hamlet_ids(n=6000):
    from llmbook.train import hamlet_splits

    _, _, _, train_ids, val_ids = hamlet_splits(block_size=16)
    return train_ids[:n], val_ids[: 20 * 16].view(20, 16)


def test_pretrain_learns_and_is_deterministic():
    train_ids, val = hamlet_ids()
    runs = []
    for _ in range(2):
        model = init_weights(tiny_decoder(V=66, max_positions=16))
        before = bits_per_token(model, val)
        hist = pretrain_decoder(
            model, train_ids, val, steps=40, batch_size=8, block_size=16, lr=1e-2, warmup=5, eval_every=20
        )
        runs.append(hist)
    assert [r["step"] for r in hist] == list(range(1, 41))
    assert [r["loss"] for r in runs[0]] == [r["loss"] for r in runs[1]]  # same seed, same machine: bitwise
    assert "val_bits" in hist[19] and "val_bits" in hist[39] and "val_bits" not in hist[10]
    assert hist[-1]["val_bits"] < before - 1.0  # from ~log2(66) = 6.04 bits, 40 steps learn the character frequencies
    assert hist[-1]["lr"] < hist[20]["lr"]  # cosine decay


def test_init_weights_starts_near_uniform():
    """After init_weights the untrained model is close to uniform (log2 V bits per token), the matrices have std
    0.02, the norm scales are untouched and the tied output matrix is still the embedding."""
    torch.manual_seed(0)
    model = init_weights(tiny_decoder(V=66, max_positions=16))
    _, val = hamlet_ids()
    assert abs(bits_per_token(model, val) - math.log2(66)) < 0.05
    for name, p in model.named_parameters():
        if p.dim() == 2:
            assert abs(p.std().item() - 0.02) < 0.002, name
        else:
            assert torch.equal(p, torch.ones_like(p)), name
    assert model.lm_head.weight is model.embed.weight


def test_bits_per_token_is_mean_causal_loss_in_bits():
    _, val = hamlet_ids()
    model = tiny_decoder(V=66, max_positions=16)
    with torch.no_grad():
        want = causal_lm_loss(model(val), val).item() / math.log(2)
    assert math.isclose(bits_per_token(model, val, batch_size=7), want, rel_tol=1e-5)
    assert model.training  # restored


def test_position_limit_errors():
    model = tiny_decoder(max_positions=16)
    with pytest.raises(ValueError, match=r"17 positions .*max_position_embeddings=16"):
        check_positions(17, model)
    with pytest.raises(ValueError, match="position limit"):
        bits_per_token(model, torch.zeros(2, 20, dtype=torch.long))
    with pytest.raises(ValueError, match="position limit"):
        pretrain_decoder(
            model,
            torch.zeros(100, dtype=torch.long),
            torch.zeros(1, 8, dtype=torch.long),
            steps=1,
            batch_size=2,
            block_size=32,
            lr=1e-3,
            warmup=1,
            eval_every=1,
        )
    with pytest.raises(ValueError, match="need more than block_size"):
        pretrain_decoder(
            model,
            torch.zeros(10, dtype=torch.long),
            torch.zeros(1, 8, dtype=torch.long),
            steps=1,
            batch_size=2,
            block_size=16,
            lr=1e-3,
            warmup=1,
            eval_every=1,
        )


def test_random_windows_are_slices():
    ids = torch.arange(100)
    w = random_windows(ids, 10, 5, torch.Generator().manual_seed(0))
    assert w.shape == (5, 10)
    assert ((w[:, 1:] - w[:, :-1]) == 1).all() and w.min() >= 0 and w.max() <= 99


def test_sliding_generate_greedy_matches_argmax_and_crops_context():
    model = tiny_decoder(max_positions=8)
    prompt = torch.tensor([[1, 2, 3, 4, 5]])
    out = sliding_generate(model, prompt, 10)  # 15 > 8 positions: the context is cut, no error
    assert out.shape == (1, 15) and torch.equal(out[:, :5], prompt)
    ids = prompt
    with torch.no_grad():
        for _ in range(10):
            ids = torch.cat([ids, model(ids[:, -8:])[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ids)
    a = sliding_generate(model, prompt, 6, temperature=0.9, generator=torch.Generator().manual_seed(2))
    b = sliding_generate(model, prompt, 6, temperature=0.9, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="temperature"):
        sliding_generate(model, prompt, 1, temperature=-1.0)


def test_sliding_generate_equals_part_2_generate_within_the_limit():
    """Inside the position limit the sliding window never slides: greedy and seeded sampling give the tokens of
    llmbook.transformer.generate (which uses a KV cache; its logits differ from ours by rounding only)."""
    model = tiny_decoder(max_positions=16, seed=3).eval()
    prompt = torch.tensor([[4, 7, 1]])
    assert torch.equal(sliding_generate(model, prompt, 13), generate(model, prompt, max_new_tokens=13))
    ours = sliding_generate(model, prompt, 13, temperature=0.7, generator=torch.Generator().manual_seed(5))
    theirs = generate(
        model, prompt, max_new_tokens=13, do_sample=True, temperature=0.7, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(ours, theirs)


def test_hamlet_pretraining_record_is_json_and_summarised(tmp_path):
    """The full-profile path on a tiny size: the record it returns is JSON-serialisable, its parameter count is
    checked, and pretraining_summary reads it back from results/ as write_results stores it."""
    import llmbook.config as llmbook_config

    sizes = dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=32,
        block_size=16,
        steps=3,
        batch_size=4,
        lr=1e-3,
        warmup=1,
        eval_every=2,
    )
    res = hamlet_pretraining(sizes, seed=0, sample_chars=20)
    assert res["parameters"] == res["param_count"] and res["train_tokens"] == 3 * 4 * 16
    assert res["training_flops"] == 6 * res["non_embedding"] * res["train_tokens"]
    assert [r["step"] for r in res["history"] if "val_bits" in r] == [2, 3]
    assert len(res["samples"]["sampled"]) == len("HAMLET\n") + 20
    llmbook_config.write_results(
        "pretraining",
        res,
        args=dict(sizes, seed=0),
        wall_time_s=res["train_seconds"],
        folder=tmp_path,
        source="nbs/02c_pretraining.ipynb",
        allow_dirty=True,
    )
    line = pretraining_summary(llmbook_config.read_results("pretraining", folder=tmp_path))
    assert line.startswith("full profile:") and f"{res['parameters']:,} parameters" in line


def test_pretraining_summary():
    assert "not yet run" in pretraining_summary(None)
    rec = dict(
        wall_time_s=600.0,
        provenance=dict(cpu="Some CPU"),
        results=dict(
            parameters=1000,
            steps=10,
            train_tokens=5000,
            training_flops=3e10,
            val_bits=2.5,
            baselines_bpc=dict(unigram=4.8, bigram=3.6),
        ),
    )
    line = pretraining_summary(rec)
    assert "1,000 parameters" in line and "2.50 bits per character" in line and "10.0 min" in line


# --- exercises: solutions pass, stubs are reported, wrong answers get hints -----------------------------------------


def stub(*args):
    raise NotImplementedError


def solution_shift(logits, labels):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)


def solution_params(V, d, L, H, K, ff, tie):
    hd = d // H
    per_layer = 2 * d * H * hd + 2 * d * K * hd + 3 * d * ff + 2 * d
    return V * d + L * per_layer + d + (0 if tie else V * d)


def solution_bpc(mean_loss_nats, n_tokens, n_chars):
    return mean_loss_nats * n_tokens / n_chars / math.log(2)


def test_exercise_solutions_pass_and_stubs_report():
    assert check_causal_shift(solution_shift) == "correct"
    assert check_decoder_params(solution_params) == "correct"
    assert check_bits_per_char(solution_bpc) == "correct"
    for check in (check_causal_shift, check_decoder_params, check_bits_per_char):
        assert check(stub) == "not yet solved"


def test_exercise_solution_params_matches_the_real_decoder():
    cfg = DecoderConfig(
        vocab_size=66,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=172,
    )
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
    fields = [getattr(cfg, k) for k in (*keys, "intermediate_size", "tie_word_embeddings")]
    assert solution_params(*fields) == sum(p.numel() for p in Decoder(cfg).parameters())


def test_exercise_hints_do_not_give_the_answer():
    def unshifted(logits, labels):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    def counts_ignored(logits, labels):
        V = logits.shape[-1]
        lab = labels[:, 1:].reshape(-1)
        per = F.cross_entropy(logits[:, :-1].reshape(-1, V), lab.clamp(min=0), reduction="none")
        return per.mean()

    def broken(logits, labels):
        return logits.missing_attribute

    assert "t + 1" in check_causal_shift(unshifted)
    assert "-100" in check_causal_shift(counts_ignored)
    assert check_causal_shift(broken).startswith("not yet: your function raised AttributeError")

    def no_untied_head(V, d, L, H, K, ff, tie):
        return solution_params(V, d, L, H, K, ff, True)

    def no_norms(V, d, L, H, K, ff, tie):
        return solution_params(V, d, L, H, K, ff, tie) - (2 * L + 1) * d

    assert "untied output matrix" in check_decoder_params(no_untied_head)
    assert "RMSNorm" in check_decoder_params(no_norms)
    assert "bits per token" in check_bits_per_char(lambda loss, t, c: loss / math.log(2))
    assert "ln 2" in check_bits_per_char(lambda loss, t, c: loss * t / c)
    for wrong_type in (lambda *a: None, lambda *a: "12", lambda *a: torch.zeros(3, dtype=torch.float64)):
        for check in (check_causal_shift, check_decoder_params, check_bits_per_char):
            assert check(wrong_type).startswith("not yet")  # a message, never an exception
    for msg in (check_causal_shift(unshifted), check_decoder_params(no_norms), check_bits_per_char(lambda *a: 0.0)):
        assert msg.startswith("not yet") and "math.log(2)" not in msg


# --- the library stays free of transformers outside its adapter section ---------------------------------------------


def test_library_imports_no_transformers_outside_adapter():
    src = (Path(__file__).resolve().parents[1] / "llmbook" / "pretraining.py").read_text()
    marker = "# --- adapter: reference comparisons ---"
    before = src.split(marker)[0]
    assert not re.search(r"^\s*(import|from)\s+(transformers|tokenizers)\b", before, re.M)
