"""Tests for `llmbook.transformer`: attention against torch's SDPA, the decoder's contract on random weights, the KV
cache, sampling; then MiniLM's encoder and SmolLM2's decoder with real weights against `transformers`."""

import pytest
import torch
import torch.nn.functional as F

from llmbook import scale
from llmbook import transformer as tr


def tiny_config(**kw):
    base = dict(
        vocab_size=101,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        intermediate_size=96,
        max_position_embeddings=64,
    )
    return tr.DecoderConfig(**{**base, **kw})


def close(a, b, tol):
    return a.shape == b.shape and torch.allclose(a, b, atol=tol, rtol=tol)


# ---------------------------------------------------------------- attention
def test_attention_equals_sdpa_with_padding_and_causal_mask():
    torch.manual_seed(0)
    B, H, T, d = 3, 4, 9, 16
    q, k, v = torch.randn(3, B, H, T, d).unbind(0)
    am = torch.ones(B, T, dtype=torch.long)
    am[0, :3] = 0  # left padding
    am[1, -2:] = 0  # right padding
    for mask in (tr.padding_mask(am), tr.causal_mask(T, T) & tr.padding_mask(am), tr.causal_mask(T, T)):
        ours = tr.attention(q, k, v, mask)
        theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert close(ours, theirs, 1e-5)
        assert not ours.isnan().any()
    assert close(tr.attention(q, k, v), F.scaled_dot_product_attention(q, k, v), 1e-5)
    # fully masked rows (left pad queries under a causal mask) are exactly 0, as in SDPA
    ours = tr.attention(q, k, v, tr.causal_mask(T, T) & tr.padding_mask(am))
    assert (ours[0, :, :3] == 0).all()


def test_attention_weights_sum_to_one_and_respect_mask():
    torch.manual_seed(1)
    q, k, v = torch.randn(3, 2, 2, 5, 4).unbind(0)
    am = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    mask = tr.causal_mask(5, 5) & tr.padding_mask(am)
    _, w = tr.attention(q, k, v, mask, return_weights=True)
    assert (w[~mask.expand_as(w)] == 0).all()
    assert torch.allclose(w[1].sum(-1), torch.ones(2, 5))


def test_padded_values_never_contaminate_real_positions():
    torch.manual_seed(2)
    B, H, T, d = 2, 3, 7, 8
    q, k, v = torch.randn(3, B, H, T, d).unbind(0)
    am = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    mask = tr.causal_mask(T, T) & tr.padding_mask(am)
    out = tr.attention(q, k, v, mask)
    k2, v2 = k.clone(), v.clone()
    k2[0, :, :3], v2[0, :, :3] = 1e4, -1e4  # change the pads' keys and values wildly
    out2 = tr.attention(q, k2, v2, mask)
    assert torch.equal(out[:, :, 3:][0], out2[:, :, 3:][0]) and torch.equal(out[1], out2[1])


def test_grouped_query_attention_equals_sdpa_gqa():
    torch.manual_seed(3)
    q, k, v = torch.randn(2, 6, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    am = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    mask = tr.causal_mask(5, 5) & tr.padding_mask(am)
    ours = tr.attention(q, tr.repeat_kv(k, 3), tr.repeat_kv(v, 3), mask)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert close(ours, theirs, 1e-5)


def test_split_merge_heads_roundtrip():
    x = torch.randn(2, 5, 12)
    assert torch.equal(tr.merge_heads(tr.split_heads(x, 3)), x)
    assert tr.split_heads(x, 3).shape == (2, 3, 5, 4)


# ---------------------------------------------------------------- the decoder on random weights
def test_decoder_contract_random_weights():
    cfg = tr.DecoderConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    model = tr.Decoder(cfg).eval()
    ids = torch.randint(0, 50, (3, 7))
    with torch.no_grad():
        logits = model(ids)
        logits_masked = model(ids, attention_mask=torch.ones(3, 7, dtype=torch.long), cache=None)
    assert logits.shape == (3, 7, 50) and logits.dtype == torch.float32
    assert torch.equal(logits, logits_masked)
    assert model.lm_head.weight is model.embed.weight  # tied by default
    untied = tr.Decoder(tiny_config(tie_word_embeddings=False))
    assert untied.lm_head.weight is not untied.embed.weight


def test_decoder_is_causal_and_left_padding_invariant():
    torch.manual_seed(4)
    model = tr.Decoder(tiny_config()).eval()
    ids = torch.randint(0, 101, (1, 10))
    with torch.no_grad():
        full = model(ids)
        changed = ids.clone()
        changed[0, 6:] = (changed[0, 6:] + 1) % 101
        assert torch.equal(model(changed)[:, :6], full[:, :6])  # the future does not leak into the past
        padded = torch.cat([torch.full((1, 4), 7), ids], 1)
        mask = torch.tensor([[0] * 4 + [1] * 10])
        assert close(model(padded, mask)[:, 4:], full, 1e-5)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_decoder_eager_equals_sdpa(impl):
    torch.manual_seed(5)
    ref = tr.Decoder(tiny_config()).eval()
    other = tr.Decoder(tiny_config(attn_implementation=impl)).eval()
    other.load_state_dict(ref.state_dict())
    ids = torch.randint(0, 101, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :5] = 0
    with torch.no_grad():
        assert close(other(ids, mask)[mask.bool()], ref(ids, mask)[mask.bool()], 1e-5)


def test_decoder_param_count_matches_scale():
    for tie in (True, False):
        cfg = tiny_config(tie_word_embeddings=tie)
        model = tr.Decoder(cfg)
        assert sum(p.numel() for p in model.parameters()) == scale.param_count(cfg)["total"]


def test_config_errors():
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        tiny_config(num_key_value_heads=4)
    with pytest.raises(ValueError, match="attn_implementation"):
        tiny_config(attn_implementation="flash")


def test_prompt_longer_than_position_limit_is_refused():
    model = tr.Decoder(tiny_config(max_position_embeddings=8)).eval()
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(
        ValueError,
        match="max_new_tokens=5 exceed this model's max_position_embeddings=8; lower max_new_tokens to at most 2",
    ):
        tr.generate(model, torch.zeros(1, 6, dtype=torch.long), max_new_tokens=5)  # refused before any step
    with pytest.raises(ValueError, match="for one prompt pass ids\\[None\\]"):
        tr.generate(model, torch.zeros(6, dtype=torch.long), max_new_tokens=1)


# ---------------------------------------------------------------- KV cache and generation on random weights
def test_cache_same_tokens_and_one_token_per_step():
    torch.manual_seed(6)
    model = tr.Decoder(tiny_config()).eval()
    ids = torch.randint(0, 101, (3, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6, [0, 1, 1, 1, 1, 1]])
    a, la = tr.generate(model, ids, mask, max_new_tokens=10, output_logits=True)
    b, lb = tr.generate(model, ids, mask, max_new_tokens=10, use_cache=False, output_logits=True)
    assert torch.equal(a, b)
    assert close(la, lb, 1e-4)
    cache = tr.KVCache(model.config, 3, 16)
    fed = []
    orig = model.forward

    def spy(input_ids, *args, **kw):
        fed.append(input_ids.shape[1])
        return orig(input_ids, *args, **kw)

    model.forward = spy
    try:
        tr.generate(model, ids, mask, max_new_tokens=10)
    finally:
        del model.forward
    assert fed == [6] + [1] * 9  # the prefill, then exactly one new token per cached step
    with torch.no_grad():
        model(ids, mask, cache)
        model(ids[:, :1], torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1), cache)
    assert cache.fed == [6, 1] and cache.length == 7


def test_cache_bytes_per_token():
    cfg = tiny_config()
    cache = tr.KVCache(cfg, batch_size=4, max_len=10)
    measured = cache.keys.numel() * cache.keys.element_size() + cache.values.numel() * cache.values.element_size()
    assert measured / (4 * 10) == tr.kv_cache_bytes_per_token(cfg) == 2 * 2 * 2 * 8 * 4
    with pytest.raises(ValueError, match="larger max_len"):
        cache.update(0, torch.zeros(4, 2, 11, 8), torch.zeros(4, 2, 11, 8))


# ---------------------------------------------------------------- sampling
def test_filter_logits_hand_computed():
    z = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = z.softmax(-1)[0]  # 0.644, 0.237, 0.087, 0.032
    assert filter_kept(z, top_p=0.8) == [0, 1]  # 0.644 < 0.8 <= 0.881
    assert filter_kept(z, top_p=0.6) == [0]
    assert filter_kept(z, top_k=3) == [0, 1, 2]
    assert filter_kept(z, top_k=3, top_p=0.9) == [0, 1]  # top-p on the top 3 renormalised: 0.665 + 0.245 >= 0.9
    kept = tr.filter_logits(z, top_p=0.8).softmax(-1)[0]
    assert torch.allclose(kept[:2], p[:2] / p[:2].sum()) and (kept[2:] == 0).all()
    assert torch.allclose(tr.filter_logits(z, temperature=0.5), z * 2)
    with pytest.raises(ValueError, match="temperature"):
        tr.filter_logits(z, temperature=0)


def filter_kept(z, **kw):
    return tr.filter_logits(z, **kw)[0].isfinite().nonzero().flatten().tolist()


def test_sampling_is_seeded_and_follows_the_filtered_distribution():
    z = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = tr.filter_logits(z, top_p=0.8).softmax(-1)[0]
    draws = tr.sample(z.expand(20000, 4), top_p=0.8, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4) / 20000
    assert (freq - p).abs().max() < 0.01  # binomial sd at most 0.0035: 0.01 is ~3 sd
    again = tr.sample(z.expand(20000, 4), top_p=0.8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


def test_filter_logits_matches_transformers_processors():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(7)
    logits = torch.randn(5, 300) * 4
    for t, k, p in [(0.7, 50, 1.0), (1.0, 0, 0.9), (1.3, 20, 0.95), (1.0, 1, 1.0)]:
        ref = TemperatureLogitsWarper(t)(None, logits.clone())
        ref = TopKLogitsWarper(k)(None, ref) if k else ref
        ref = TopPLogitsWarper(p)(None, ref) if p < 1 else ref
        ours = tr.filter_logits(logits, t, k, p)
        assert torch.equal(ours.isfinite(), ref.isfinite())
        assert torch.allclose(ours.softmax(-1), ref.softmax(-1), atol=1e-6)


def test_top_k_1_sampling_is_greedy():
    torch.manual_seed(8)
    model = tr.Decoder(tiny_config()).eval()
    ids = torch.randint(0, 101, (2, 5))
    g = torch.Generator().manual_seed(0)
    greedy = tr.generate(model, ids, max_new_tokens=8)
    assert torch.equal(tr.generate(model, ids, max_new_tokens=8, do_sample=True, top_k=1, generator=g), greedy)


def test_generate_eos_pads_finished_rows():
    torch.manual_seed(9)
    model = tr.Decoder(tiny_config()).eval()
    ids = torch.randint(0, 101, (2, 5))
    free = tr.generate(model, ids, max_new_tokens=6)
    eos = int(free[0, 5])  # row 0's first generated token becomes the end-of-sequence token
    out = tr.generate(model, ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=100)
    assert out[0, 5] == eos and (out[0, 6:] == 100).all()
    assert out.shape[1] <= 11


# ---------------------------------------------------------------- bad input for the weight loader
def test_load_weights_names_the_first_mismatch():
    model = tr.Decoder(tiny_config())
    sd = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    tr.load_weights(tr.Decoder(tiny_config()), sd)  # round trip works
    bad = dict(sd)
    bad["blocks.1.attn.k.weight"] = torch.zeros(8, 48)
    with pytest.raises(ValueError, match=r"'blocks.1.attn.k.weight'.*checkpoint \(8, 48\), model \(16, 48\)"):
        tr.load_weights(tr.Decoder(tiny_config()), bad)
    missing = {k: v for k, v in sd.items() if k != "blocks.0.mlp.up.weight"}
    with pytest.raises(ValueError, match=r"no checkpoint tensor for parameter 'blocks.0.mlp.up.weight'"):
        tr.load_weights(tr.Decoder(tiny_config()), missing)
    with pytest.raises(ValueError, match=r"'extra.weight' has no place"):
        tr.load_weights(tr.Decoder(tiny_config()), {**sd, "extra.weight": torch.zeros(1)})


def test_renamer_tables():
    bert = tr.renamer(tr.BERT_NAMES, tr.BERT_UNUSED, strip_prefix="bert.")
    assert bert("bert.encoder.layer.11.attention.self.query.bias") == "blocks.11.attn.q.bias"
    assert bert("embeddings.LayerNorm.weight") == "emb_norm.weight"
    assert bert("pooler.dense.weight") is None and bert("embeddings.position_ids") is None
    llama = tr.renamer(tr.LLAMA_NAMES, tr.LLAMA_UNUSED)
    assert llama("model.layers.3.mlp.gate_proj.weight") == "blocks.3.mlp.gate.weight"
    assert llama("model.something.else") == "model.something.else"  # unknown: reported by load_weights


# ---------------------------------------------------------------- real weights: MiniLM
@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoTokenizer

    from llmbook.resources import get

    path = get("minilm")
    return path, AutoTokenizer.from_pretrained(path), tr.load_encoder(path)


def real_reviews(n):
    from llmbook.data import load_rotten_tomatoes

    return load_rotten_tomatoes()["text"][:n]


def test_encoder_equals_bert_on_real_reviews(minilm):
    from transformers import BertModel

    from llmbook.nn import mean_pool

    path, tok, ours = minilm
    batch = tok(real_reviews(8), padding=True, truncation=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    assert (~real).any()  # the batch is really padded
    eager = BertModel.from_pretrained(path, attn_implementation="eager").eval()
    sdpa = BertModel.from_pretrained(path, attn_implementation="sdpa").eval()
    with torch.no_grad():
        h = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        he, hs = eager(**batch).last_hidden_state, sdpa(**batch).last_hidden_state
        _, att = ours(batch["input_ids"][:1], batch["attention_mask"][:1], output_attentions=True)
        ref_att = eager(**{k: v[:1] for k, v in batch.items()}, output_attentions=True).attentions
    tol = max(1e-5, 3 * (he[real] - hs[real]).abs().max().item())
    assert (h[real] - he[real]).abs().max().item() <= tol
    am = batch["attention_mask"]
    assert (mean_pool(h, am) - mean_pool(he, am)).abs().max().item() <= tol
    assert all(torch.allclose(a, r, atol=1e-5) for a, r in zip(att, ref_att))
    # the sdpa path of our encoder gives the same
    fast = tr.load_encoder(path, attn_implementation="sdpa")
    with torch.no_grad():
        hf_ = fast(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert (hf_[real] - he[real]).abs().max().item() <= tol


def test_encoder_counts_and_flops(minilm):
    from torch.utils.flop_counter import FlopCounterMode

    _, _, ours = minilm
    c = ours.config
    pc = scale.param_count(c, head=False)
    assert sum(p.numel() for p in ours.parameters()) == pc["total"]
    n_mm = pc["attention"] + pc["mlp"]
    T = 40
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        ours(torch.randint(1000, 2000, (1, T)))
    kaplan = scale.flops_per_token(n_mm, c.num_hidden_layers, T, c.hidden_size, training=False)
    assert counter.get_total_flops() == T * (kaplan + 2 * c.num_hidden_layers * T * c.hidden_size)


def test_encoder_refuses_too_long_input(minilm):
    _, _, ours = minilm
    with pytest.raises(ValueError, match="max_position_embeddings=512"):
        ours(torch.zeros(1, 513, dtype=torch.long))


def test_loading_minilm_into_a_wrong_config_names_the_tensor(minilm):
    path = minilm[0]
    with pytest.raises(
        ValueError,
        match=r"'embeddings.word_embeddings.weight' -> 'tok_emb.weight': "
        r"checkpoint \(30522, 384\), model \(30522, 256\)",
    ):
        tr.load_encoder(path, hidden_size=256)


# ---------------------------------------------------------------- real weights: SmolLM2
@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoTokenizer, LlamaForCausalLM

    from llmbook.resources import smollm2_dir

    folder = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    ours = tr.load_decoder(folder)
    eager = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    sdpa = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()
    return tok, ours, eager, sdpa


PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village at the edge of a great forest, there lived an old woodcutter and his "
    "three children. Every morning, before the sun rose over the hills, he",
    "Critics said the film was",
]


def test_decoder_logits_equal_llama(smollm2):
    tok, ours, eager, sdpa = smollm2
    enc = tok(PROMPTS, padding=True, return_tensors="pt")
    ids, am = enc["input_ids"], enc["attention_mask"]
    pos = (am.cumsum(-1) - 1).clamp(min=0)
    assert pos.max() >= 30 and (~am.bool()).any()
    with torch.no_grad():
        lo = ours(ids, am)
        le = eager(input_ids=ids, attention_mask=am, position_ids=pos).logits
        ls = sdpa(input_ids=ids, attention_mask=am, position_ids=pos).logits
    real = am.bool()
    tol = max(1e-4, 3 * (le[real] - ls[real]).abs().max().item())
    assert (lo[real] - le[real]).abs().max().item() <= tol
    assert (lo[real & (pos >= 30)] - le[real & (pos >= 30)]).abs().max().item() <= tol
    assert sum(p.numel() for p in ours.parameters()) == scale.param_count(ours.config)["total"]
    assert ours.lm_head.weight is ours.embed.weight


def test_greedy_generation_identical_to_transformers(smollm2):
    tok, ours, _, sdpa = smollm2
    enc = tok(PROMPTS, padding=True, return_tensors="pt")
    ids, am = enc["input_ids"], enc["attention_mask"]
    stop = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    got, logits = tr.generate(ours, ids, am, max_new_tokens=40, output_logits=True, **stop)
    with torch.no_grad():
        want = sdpa.generate(input_ids=ids, attention_mask=am, max_new_tokens=40, do_sample=False, **stop)
    new = got[:, ids.shape[1] :]
    is_eos = (new == tok.eos_token_id).long()
    live = (is_eos.cumsum(1) - is_eos) == 0  # each row's steps up to and including its end of sequence
    top2 = logits.topk(2, dim=-1).values
    margin = (top2[..., 0] - top2[..., 1])[live].min().item()
    assert margin > 1e-3, f"a near-tie (margin {margin:.1e}) could flip a token; choose other prompts"
    assert got.shape == (3, ids.shape[1] + 40)  # at least one row runs all 40 steps
    assert torch.equal(got, want)
    no_cache = tr.generate(ours, ids[:, -12:], am[:, -12:], max_new_tokens=10, use_cache=False)
    assert torch.equal(no_cache, tr.generate(ours, ids[:, -12:], am[:, -12:], max_new_tokens=10))


def test_real_cache_bytes_per_token(smollm2):
    _, ours, _, _ = smollm2
    c = ours.config
    cache = tr.KVCache(c, batch_size=2, max_len=7)
    measured = cache.keys.numel() * cache.keys.element_size() + cache.values.numel() * cache.values.element_size()
    assert measured / (2 * 7) == tr.kv_cache_bytes_per_token(c) == 2 * 30 * 3 * 64 * 4


def test_decoder_refuses_prompt_over_position_limit(smollm2):
    _, ours, _, _ = smollm2
    with pytest.raises(ValueError, match="max_position_embeddings=8192"):
        ours(torch.zeros(1, 8193, dtype=torch.long))


# ---------------------------------------------------------------- exercises: the notebook's checks, run on solutions
def exercise_checks():
    "The notebook's cell that defines the exercise checks, executed here with the names it needs."
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parent.parent / "nbs" / "02b_transformer.ipynb").read_text())
    src = next("".join(c["source"]) for c in nb["cells"] if "def check_mha" in "".join(c["source"]))
    ns = {"torch": torch, "nn": torch.nn, "rope_angles": tr.rope_angles, "apply_rope": tr.apply_rope}
    exec(src, ns)
    return ns


def solution_mha(x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads, key_padding_mask):
    q, k, v = (tr.split_heads(t, num_heads) for t in F.linear(x, in_proj_weight, in_proj_bias).chunk(3, dim=-1))
    y = tr.attention(q, k, v, tr.padding_mask((~key_padding_mask).long()))
    return F.linear(tr.merge_heads(y), out_proj_weight, out_proj_bias)


def solution_interleaved_rope(x, positions):
    d = x.shape[-1]
    angles = positions[..., None].float() / (10000 ** (torch.arange(0, d, 2).float() / d))
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def solution_min_p(logits, min_p):
    probs = logits.softmax(-1)
    return logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, float("-inf"))


def test_exercise_solutions_pass_and_stubs_do_not():
    ns = exercise_checks()

    def stub(*args):
        raise NotImplementedError

    for check, solution in [
        ("check_mha", solution_mha),
        ("check_interleaved_rope", solution_interleaved_rope),
        ("check_min_p", solution_min_p),
    ]:
        assert ns[check](solution) == "correct", check
        assert ns[check](stub) == "not yet solved", check
        wrong = ns[check](lambda x, *a: x * 0)  # a wrong attempt: a hint, never an exception
        assert wrong.startswith("not yet solved") and wrong != "not yet solved", check
