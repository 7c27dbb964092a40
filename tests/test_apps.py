"""Tests for `llmbook.apps` and `llmbook.vision_speech`: the GGUF and CTranslate2 conversions, NMS, and left-padded
batched generation. They use the real pinned models (fetched through `llmbook.resources`); about a minute on 2 cores."""

import json
import struct

import numpy as np
import pytest
import torch

from llmbook import apps, resources
from llmbook import vision_speech as vs
from llmbook.resources import get


# ---------------------------------------------------------------- GGUF -> Hugging Face folder
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("smol") / "hf"
    return resources.convert_gguf(get("smollm2_gguf"), out)


def test_gguf_conversion_is_lossless(converted):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = get("smollm2_gguf")
    assert "quantization_config" not in json.loads((converted / "config.json").read_text())
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    saved = load_file(converted / "model.safetensors")
    ref_sd = ref.state_dict()
    # every GGUF tensor is in the folder (the tied lm_head is stored once), with identical values
    assert set(saved) == set(ref_sd) - {"lm_head.weight"}
    assert all(torch.equal(saved[k], ref_sd[k]) for k in saved)
    plain = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(converted)
    enc = tok(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(plain(**enc).logits, ref(**enc).logits)
    assert tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    ).endswith("<|im_start|>assistant\n")


def test_convert_gguf_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="smollm2_gguf"):
        resources.convert_gguf(tmp_path / "nope.gguf", tmp_path / "out")


# ---------------------------------------------------------------- batched generation
@pytest.fixture(scope="module")
def lm():
    return apps.load_chat_model()


def test_left_padded_batch_equals_one_at_a_time(lm):
    model, tok = lm
    prompts = ["Hi.", "List three primary colours, separated by commas.", "What is 2 + 2?"]
    enc = apps.encode_chat(tok, prompts)
    assert enc["attention_mask"][:, -1].all() and not enc["attention_mask"][:, 0].all()  # padded on the left
    batched = apps.generate(prompts, lm, max_new_tokens=6)
    single = [apps.generate([p], lm, max_new_tokens=6)[0] for p in prompts]
    assert batched == single and all(batched)


def test_greedy_from_scratch_equals_hf_generate(lm):
    model, tok = lm
    enc = apps.encode_chat(tok, ["Name a fruit.", "Say hello in French, please, in one word."])
    ours = apps.greedy_generate(model, enc["input_ids"], enc["attention_mask"], 5, tok.eos_token_id, tok.pad_token_id)
    with torch.no_grad():
        hf = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(ours, hf[:, enc["input_ids"].shape[1] :][:, : ours.shape[1]])


def test_generate_rejects_a_bare_string(lm):
    with pytest.raises(TypeError):
        apps.generate("hello", lm)


# ---------------------------------------------------------------- CTranslate2 -> transformers Whisper
def _write_ct2(path, variables, aliases=()):
    codes = {
        np.dtype(np.float32): 0,
        np.dtype(np.int8): 1,
        np.dtype(np.int16): 2,
        np.dtype(np.int32): 3,
        np.dtype(np.float16): 4,
    }

    def name(s):
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    out = struct.pack("<I", 6) + name("TestSpec") + struct.pack("<I", 1) + struct.pack("<I", len(variables))
    for k, a in variables.items():
        out += name(k) + struct.pack("<B", a.ndim) + b"".join(struct.pack("<I", d) for d in a.shape)
        out += struct.pack("<BI", codes[a.dtype], a.nbytes) + a.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(name(a) + name(t) for a, t in aliases)
    path.write_bytes(out)


def test_read_ct2_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    v = {
        "a/weight": rng.standard_normal((3, 4)).astype(np.float16),
        "b": np.array(7, np.int32),
        "c/bias": rng.standard_normal(5).astype(np.float32),
        "q": np.arange(-4, 4, dtype=np.int8).reshape(2, 4),
    }
    _write_ct2(tmp_path / "model.bin", v, [("d/weight", "a/weight")])
    got, aliases = vs.read_ct2(tmp_path / "model.bin")
    assert got.pop("__spec__") == "TestSpec" and aliases == {"d/weight": "a/weight"}
    assert set(got) == set(v) and all(np.array_equal(got[k], v[k]) and got[k].dtype == v[k].dtype for k in v)
    (tmp_path / "cut.bin").write_bytes((tmp_path / "model.bin").read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated"):
        vs.read_ct2(tmp_path / "cut.bin")


def test_whisper_conversion_maps_every_tensor():
    from transformers import WhisperForConditionalGeneration

    v, aliases = vs.read_ct2(get("whisper_tiny_en_ct2") / "model.bin")
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    sd = vs.ct2_to_hf_whisper(v)
    model = WhisperForConditionalGeneration(vs.whisper_config_from_ct2(v)).eval()
    expected = model.state_dict()
    assert set(sd) == set(expected) and all(sd[k].shape == expected[k].shape for k in sd)
    model.load_state_dict(sd, strict=True)
    # every CTranslate2 value lands somewhere (the dropped key biases are zero)
    arrays = {k: a for k, a in v.items() if isinstance(a, np.ndarray) and a.ndim > 0}
    n_hf = sum(t.numel() for k, t in sd.items() if k != "proj_out.weight")
    kb = sum(a.size // 3 for k, a in arrays.items() if k.endswith("self_attention/linear_0/bias")) + sum(
        a.size // 2 for k, a in arrays.items() if k.endswith("/attention/linear_1/bias")
    )
    assert n_hf + kb == sum(a.size for a in arrays.values())
    # a fused q|k|v weight is split in order
    w = v["encoder/layer_0/self_attention/linear_0/weight"].astype(np.float32)
    assert np.array_equal(sd["model.encoder.layers.0.self_attn.v_proj.weight"].numpy(), w[768:])
    feats = vs.log_mel(vs.load_audio(get("speech_clips") / "beckett.wav"))
    with torch.no_grad():
        logits = model(input_features=feats, decoder_input_ids=torch.tensor([[50257, 50362]])).logits
    assert torch.isfinite(logits).all() and logits.shape == (1, 2, 51864)
    assert int(logits[0, -1].argmax()) == 10776  # "Ever", the first word of the clip


# ---------------------------------------------------------------- NMS
def _nms_numpy(boxes, scores, threshold, method="union", offset=0.0):
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + offset) * (y2 - y1 + offset)
    order, keep = np.argsort(scores, kind="stable"), []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(i)
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + offset)
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + offset)
        inter = w * h
        o = inter / np.minimum(area[i], area[rest]) if method == "min" else inter / (area[i] + area[rest] - inter)
        order = rest[o <= threshold]
    return np.array(keep, dtype=np.int64)


@pytest.mark.parametrize("mode,offset,th", [("union", 0, 0.3), ("union", 0, 0.5), ("min", 1, 0.7)])
def test_nms_matches_numpy_reference(mode, offset, th):
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        xy = torch.rand(400, 2, generator=g) * 200
        wh = torch.rand(400, 2, generator=g) * 40 + 1
        b, s = torch.cat([xy, xy + wh], 1).double(), torch.rand(400, generator=g).double()
        assert np.array_equal(
            vs.nms(b, s, th, mode, offset).numpy(), _nms_numpy(b.numpy(), s.numpy(), th, mode, offset)
        )


def test_nms_edge_cases():
    assert vs.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    b = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    assert vs.nms(b, torch.tensor([0.5, 0.9, 0.1]), 0.5).tolist() == [1, 2]
    groups = torch.tensor([0, 1, 0])  # the overlapping pair is in different groups: both stay
    assert sorted(vs.batched_nms(b, torch.tensor([0.5, 0.9, 0.1]), groups, 0.5).tolist()) == [0, 1, 2]
    with pytest.raises(ValueError):
        vs.nms(torch.zeros(3, 5), torch.zeros(3), 0.5)


def test_env_report_is_json_ready():
    rep = apps.env_report()
    json.dumps(rep)
    assert rep["versions"]["torch"] and rep["threads"]["torch_intra_op"] == torch.get_num_threads()


# ---------------------------------------------------------------- text classification entry point
def test_classify_batch_single_labels_and_errors(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from llmbook.finetune import FinetuneError

    torch.manual_seed(0)
    m = AutoModelForSequenceClassification.from_pretrained(
        get("minilm"), num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"}
    ).eval()
    m.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(get("minilm")).save_pretrained(tmp_path)
    texts = ["A triumph.", "Dull, long and pointless, with a plot that goes nowhere at all.", "Fine."]
    batch, single = apps.classify(tmp_path, texts, batch_size=2), [apps.classify(tmp_path, t)[0] for t in texts]
    tok = AutoTokenizer.from_pretrained(tmp_path)
    with torch.no_grad():
        ref = m(**tok(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    for b, s, r in zip(batch, single, ref):
        assert b["label"] == s["label"] == m.config.id2label[int(r.argmax())]
        assert np.allclose(b["probs"], r.numpy(), atol=1e-5) and np.allclose(s["probs"], r.numpy(), atol=1e-5)
        assert abs(b["score"] - float(r.max())) < 1e-5 and abs(sum(b["probs"]) - 1) < 1e-5
    with pytest.raises(FinetuneError, match="not a fine-tuned model folder"):
        apps.classify(tmp_path / "missing", "text")
