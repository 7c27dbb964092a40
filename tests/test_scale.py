"""Cross-checks of llmbook.scale: parameter counts against models transformers builds, FLOP formulas against
torch's FLOP counter, Chinchilla arithmetic against the paper's table, and the memory measurement method."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
)

from llmbook.scale import (
    H200_BF16_DENSE_FLOPS,
    chinchilla_optimal,
    chinchilla_tokens,
    flops_per_token,
    gpt2_activation_bytes,
    measure_peak_memory,
    param_count,
    training_flops,
    training_memory,
    training_time_seconds,
)


def numel_on_meta(cls, config, **kw):
    with torch.device("meta"):
        return sum(p.numel() for p in cls(config, **kw).parameters())


BERTS = [
    BertConfig(),
    BertConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=12),
    BertConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        vocab_size=28996,
        type_vocab_size=1,
        max_position_embeddings=256,
    ),
]
GPT2S = [
    GPT2Config(),
    GPT2Config(n_embd=1600, n_layer=48, n_head=25),
    GPT2Config(n_embd=64, n_layer=3, n_head=4, vocab_size=1000, n_positions=128, n_inner=100),
    GPT2Config(n_embd=96, n_layer=2, n_head=4, tie_word_embeddings=False),
]
LLAMAS = [
    LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        vocab_size=32000,
        tie_word_embeddings=False,
    ),
    LlamaConfig(
        hidden_size=128,
        intermediate_size=300,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        vocab_size=500,
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=False,
    ),
]


@pytest.mark.parametrize("c", BERTS)
def test_bert_counts(c):
    assert param_count(c)["total"] == numel_on_meta(BertModel, c)
    assert param_count(c, head=False)["total"] == numel_on_meta(BertModel, c, add_pooling_layer=False)


@pytest.mark.parametrize("c", GPT2S)
def test_gpt2_counts(c):
    assert param_count(c)["total"] == numel_on_meta(GPT2LMHeadModel, c)
    assert param_count(c, head=False)["total"] == numel_on_meta(GPT2Model, c)


@pytest.mark.parametrize("c", LLAMAS)
def test_llama_counts(c):
    assert param_count(c)["total"] == numel_on_meta(LlamaForCausalLM, c)
    assert param_count(c, head=False)["total"] == numel_on_meta(LlamaModel, c)


def test_published_totals_and_non_embedding():
    assert param_count(BertConfig())["total"] == 109_482_240
    assert param_count(GPT2Config())["total"] == 124_439_808
    assert param_count(LLAMAS[1])["total"] == 6_738_415_616
    # non-embedding of GPT-2 = 12 L d^2 (Kaplan's N) + biases + norms
    c = GPT2Config()
    p = param_count(c)
    assert p["attention"] + p["mlp"] == 12 * c.n_layer * c.n_embd**2
    assert p["non_embedding"] == p["total"] - (c.vocab_size + c.n_positions) * c.n_embd
    # an untied output matrix is an embedding-type matrix too
    u = param_count(LLAMAS[1])
    assert u["non_embedding"] == u["total"] - 2 * 32000 * 4096


def test_real_minilm_count():
    from transformers import AutoModel

    from llmbook import resources

    m = AutoModel.from_pretrained(resources.get("minilm"))
    assert param_count(m.config)["total"] == sum(p.numel() for p in m.parameters()) == 22_713_216


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="model_type"):
        param_count({"model_type": "t5", "hidden_size": 8})


def _flops(model, ids):
    with FlopCounterMode(display=False) as fc:
        out = model(input_ids=ids)
    fwd = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        out.logits.sum().backward()
    return fwd, fc.get_total_flops()


def test_gpt2_forward_flops_match_kaplan_plus_head_and_full_attention():
    c = GPT2Config(n_embd=64, n_layer=3, n_head=4, vocab_size=300, n_positions=64)
    torch.manual_seed(0)
    T = 48
    fwd, bwd = _flops(GPT2LMHeadModel(c), torch.randint(0, 300, (1, T)))
    p = param_count(c)
    matrices = p["attention"] + p["mlp"]
    # Kaplan: 2N + 2 n_layer n_ctx d_attn per token (N = weight matrices); the counter also sees the output
    # projection (2 d V) and charges the fused attention kernel for both QK^T and AV over the full square (x2).
    kaplan = T * flops_per_token(matrices, c.n_layer, T, c.n_embd, training=False)
    assert fwd == kaplan + 2 * c.n_layer * T * T * c.n_embd + 2 * T * c.n_embd * c.vocab_size
    assert abs(bwd / fwd - 2) < 0.05  # training = 3 x forward
    assert flops_per_token(matrices, training=True) == 3 * flops_per_token(matrices, training=False) == 6 * matrices


def test_llama_forward_flops():
    c = LlamaConfig(
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=200,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    # eager attention: QK^T and AV are plain matmuls over all H query heads (keys/values repeated for GQA)
    torch.manual_seed(0)
    T = 32
    fwd, _ = _flops(LlamaForCausalLM(c), torch.randint(0, 200, (1, T)))
    p = param_count(c)
    expected = (
        T * (2 * (p["attention"] + p["mlp"]) + 2 * c.hidden_size * c.vocab_size)
        + 4 * c.num_hidden_layers * T * T * c.hidden_size
    )
    assert expected <= fwd <= expected + 2 * T * c.hidden_size  # + the rotary-angle product, if counted


def test_training_flops_and_chinchilla():
    assert training_flops(175e9, 300e9) == pytest.approx(3.14e23, rel=0.01)  # GPT-3, Brown et al. Table D.1
    # Hoffmann et al. 2022, Table 3 (parameters, FLOPs, tokens)
    for n, flops, tokens in [
        (400e6, 1.92e19, 8.0e9),
        (1e9, 1.21e20, 20.2e9),
        (10e9, 1.23e22, 205.1e9),
        (67e9, 5.76e23, 1.5e12),
    ]:
        # the table's ratio drifts from 20 (19.2 at 400M, 22.4 at 67B): "about 20" holds within 12%
        assert chinchilla_tokens(n) == pytest.approx(tokens, rel=0.12)
        n_opt, d_opt = chinchilla_optimal(flops)
        assert n_opt == pytest.approx(n, rel=0.05) and d_opt == pytest.approx(20 * n_opt)
        assert training_flops(n_opt, d_opt) == pytest.approx(flops)
    with pytest.raises(ValueError):
        chinchilla_optimal(0)
    assert training_time_seconds(1e9, 20e9, peak_flops=H200_BF16_DENSE_FLOPS, utilisation=0.5) == pytest.approx(
        6 * 1e9 * 20e9 / (0.5 * 989e12)
    )


def test_training_memory_bytes_per_parameter():
    assert training_memory(10, "fp32")["sum"] == 160
    assert training_memory(10, "mixed")["sum"] == 160
    assert training_memory(10, "bf16")["sum"] == 80
    m = training_memory(10, "fp32", activation_bytes=1000, backward_extra_bytes=10, step_extra_bytes=4)
    assert m["peak"] == 40 + 80 + 1010 and m["sum"] == 1160
    assert training_memory(1000, "fp32", activation_bytes=1)["peak"] == 16000  # gradient-bound
    with pytest.raises(ValueError, match="precision"):
        training_memory(10, "fp8")


def test_measure_peak_memory_sees_cpu_tensor_allocations():
    def two_alive():
        a = torch.ones(1_000_000)
        b = torch.ones(500_000)  # 4 MB + 2 MB alive together
        del a, b
        c = torch.ones(250_000)
        del c

    def one_at_a_time():
        for n in (1_000_000, 500_000):
            t = torch.ones(n)
            del t

    assert measure_peak_memory(two_alive) == 6_000_000
    assert measure_peak_memory(one_at_a_time) == 4_000_000


def test_gpt2_peak_memory_model_within_15_percent():
    c = GPT2Config(
        n_embd=128,
        n_layer=2,
        n_head=4,
        vocab_size=1000,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu_pytorch_tanh",
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(c).train()
    opt = torch.optim.AdamW(model.parameters(), foreach=False)
    B, T = 8, 64
    x = torch.randint(0, 1000, (B, T))

    def step():
        opt.zero_grad(set_to_none=True)
        model(input_ids=x, labels=x).loss.backward()
        opt.step()

    step()
    n = sum(p.numel() for p in model.parameters())
    measured = 12 * n + x.nbytes + measure_peak_memory(step)  # weights + Adam moments alive before the step
    est = training_memory(
        n,
        "fp32",
        gpt2_activation_bytes(c, B, T),
        backward_extra_bytes=2 * B * T * 1000 * 4,
        step_extra_bytes=1000 * 128 * 4,
    )
    assert abs(est["peak"] / measured - 1) < 0.15


# ---------------------------------------------------------- every model type the docstring names, via from_config
def _small_config(model_type: str, tie: bool):
    "A small config of `model_type` (vocabulary 300, 2 layers, grouped-query attention where the family has it)."
    from transformers import AutoConfig

    common = dict(vocab_size=300, tie_word_embeddings=tie)
    if model_type == "bert":
        return AutoConfig.for_model(
            "bert", hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4, **common
        )
    if model_type == "gpt2":
        return AutoConfig.for_model("gpt2", n_embd=48, n_layer=2, n_head=4, n_positions=40, **common)
    return AutoConfig.for_model(
        model_type,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=64,
        **common,
    )


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("model_type", ["bert", "gpt2", "llama", "mistral", "qwen2"])
def test_param_count_equals_transformers_for_every_named_type(model_type, tie):
    """param_count(config, head) equals the parameter count of the model transformers builds from the config
    (`from_config`, random weights): with head, the LM model (BERT: BertModel with its pooler); without, the bare
    model (BERT: without pooler). Tied and untied embeddings; a dict of the config's fields gives the same counts.
    Qwen2 has q/k/v biases; Mistral and Llama none."""
    from transformers import AutoModel, AutoModelForCausalLM

    c = _small_config(model_type, tie)
    assert c.model_type == model_type
    torch.manual_seed(0)
    if model_type == "bert":
        with_head, bare = AutoModel.from_config(c), AutoModel.from_config(c, add_pooling_layer=False)
    else:
        with_head, bare = AutoModelForCausalLM.from_config(c), AutoModel.from_config(c)
    n_head, n_bare = (sum(p.numel() for p in m.parameters()) for m in (with_head, bare))
    if model_type != "bert":  # the untied output matrix is V x d more
        d = c.hidden_size
        assert n_head - n_bare == (0 if tie else c.vocab_size * d)
    got = param_count(c)
    assert got["total"] == n_head, got
    assert param_count(c, head=False)["total"] == n_bare
    assert param_count(c.to_dict())["total"] == n_head
    biases = sum(p.numel() for n, p in bare.named_parameters() if "attn" in n and n.endswith(".bias"))
    if model_type in ("llama", "mistral", "qwen2"):
        assert got["attention_bias"] == biases == (2 * (64 + 2 * 2 * 8) if model_type == "qwen2" else 0)
