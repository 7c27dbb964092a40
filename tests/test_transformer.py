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
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        tr.generate(model, torch.zeros(1, 6, dtype=torch.long), max_new_tokens=5)


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
