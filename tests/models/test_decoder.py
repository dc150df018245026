"""The planned decoder: chunked prefill + cached decode equal the whole-sequence forward, for every
mode and option; plan semantics as properties."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.config import DecoderConfig
from models.decoder import Decoder
from models.plan import MODES, load_plan
from models.reference import forward_sequence

CFG = DecoderConfig(vocab_size=97, hidden_size=32, num_layers=5, num_heads=4, num_kv_heads=2,
                    intermediate_size=48, rope_theta=1e4, qkv_bias=True, max_seq_len=40)
GRID = 3
NV = GRID * GRID


def make_decoder(plan_spec, seed=0):
    torch.manual_seed(seed)
    plan = load_plan(plan_spec, CFG.num_layers, CFG.num_heads, NV)
    dec = Decoder(CFG, plan, NV, GRID).eval()
    with torch.no_grad():
        for name, p in dec.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.uniform_(0.5, 1.5)
            elif p.dim() == 1:
                p.normal_(0, 0.2)
    return dec


def run_chunked(dec, prefix, vision, question, n_decode):
    """prefix -> image -> question -> greedy decode; returns all logits after the image and the tokens."""
    dec.reset()
    P, Q = prefix.shape[1], question.shape[1]
    nv = vision.shape[1] if vision is not None else 0
    with torch.no_grad():
        dec.forward_text(prefix, torch.arange(P), torch.tensor(0))
        if vision is not None:
            dec.set_vision_kv(dec.forward_vision(vision, torch.tensor(P), prefix)[1])
        logits = dec.forward_text(question, torch.arange(P + nv, P + nv + Q), torch.tensor(P),
                                  select_topk=True, all_logits=True)
        out, tokens = [logits[0]], []
        for step in range(n_decode):
            tok = int(out[-1][-1].argmax())
            tokens.append(tok)
            pos = P + nv + Q + step
            x = dec.embed(torch.tensor([[tok]]))
            out.append(dec.forward_text(x, torch.tensor([pos]), torch.tensor(P + Q + step))[0])
    return torch.cat(out), tokens


def check_plan_equivalence(spec, seed=0, n_decode=4, with_image=True):
    dec = make_decoder(spec, seed)
    g = torch.Generator().manual_seed(seed + 1)
    prefix = torch.randn(1, 3, CFG.hidden_size, generator=g)
    vision = torch.randn(1, NV, CFG.hidden_size, generator=g) if with_image else None
    question = torch.randn(1, 5, CFG.hidden_size, generator=g)
    chunked, tokens = run_chunked(dec, prefix, vision, question, n_decode)
    rest = torch.cat([question, dec.embed(torch.tensor([tokens]))], dim=1) if tokens else question
    ref = forward_sequence(dec, prefix, vision, rest, prompt_rest=question.shape[1])[0]
    assert chunked.shape == ref.shape
    torch.testing.assert_close(chunked, ref, atol=1e-4, rtol=1e-4)


PLANS = {
    "dense": "dense",
    "mixed": {"layers": {"0": "full", "1": "cross", "2": "text", "3": "full", "4": "exit"}},
    "exit-1": {"layers": {"1": "exit"}},
    "all-cross": {"default": "cross"},
    "text-then-full": {"layers": {"0-2": "text", "3-4": "full"}},
    "window": {"layers": {"0-1": "full", "2-4": "full/cross"}, "window": 1},
    "topk": {"layers": {"0-2": "full", "3": "cross", "4": "text"}, "keep_topk": {"from_layer": 1, "k": 4}},
    "heads": {"layers": {"3-4": "exit"}, "vision_heads": [1, 3]},
    "everything": {"layers": {"0": "full", "1": "cross", "2": "text", "3": "full", "4": "exit"}, "window": 0,
                   "keep_topk": {"from_layer": 3, "k": 2}, "vision_heads": [0]},
}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_chunked_equals_whole_sequence(name):
    check_plan_equivalence(PLANS[name])


def test_text_only_conversation_ignores_vision_layers():
    check_plan_equivalence(PLANS["mixed"], with_image=False)


@settings(max_examples=15, deadline=None)
@given(modes=st.lists(st.sampled_from(MODES), min_size=CFG.num_layers, max_size=CFG.num_layers),
       window=st.one_of(st.none(), st.integers(0, 2)), seed=st.integers(0, 5))
def test_any_plan_chunked_equals_whole_sequence(modes, window, seed):
    if "exit" in modes:
        e = modes.index("exit")
        modes = modes[:e] + ["exit"] * (len(modes) - e)
    check_plan_equivalence({"modes": modes, "window": window}, seed=seed, n_decode=2)


def test_dense_plan_is_plain_causal_transformer():
    """The dense reference equals a straightforward causal forward written here with no plan at all."""
    dec = make_decoder("dense")
    torch.manual_seed(3)
    x = torch.randn(1, 3 + NV + 4, CFG.hidden_size)
    ref = forward_sequence(dec, x[:, :3], x[:, 3:3 + NV], x[:, 3 + NV:], prompt_rest=4)
    h, S = x, x.shape[1]
    mask = torch.full((S, S), float("-inf")).triu(1)
    with torch.no_grad():
        for layer in dec.layers:
            a = layer.self_attn
            hn = layer.input_layernorm(h)
            cos, sin = dec.rope_cos[:S], dec.rope_sin[:S]
            q = a.query(hn, cos, sin)
            k, v = a.key_value(hn, cos, sin)
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
            h = layer.block(h, a.o_proj(o.transpose(1, 2).reshape(1, S, -1)))
        direct = dec.logits(h[:, 3 + NV:])
    torch.testing.assert_close(ref, direct, atol=1e-5, rtol=1e-5)


def test_slice_cache_writes_give_the_same_outputs():
    from models.decoder import use_slice_cache_writes

    spec = PLANS["everything"]
    dec = make_decoder(spec)
    g = torch.Generator().manual_seed(9)
    prefix, vision, question = (torch.randn(1, n, CFG.hidden_size, generator=g) for n in (3, NV, 5))
    a, tokens_a = run_chunked(dec, prefix, vision, question, 3)
    b, tokens_b = run_chunked(use_slice_cache_writes(dec), prefix, vision, question, 3)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert tokens_a == tokens_b
