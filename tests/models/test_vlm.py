"""The whole VLM: greedy `generate` (chunked prefill + cached decode) equals step-by-step argmax over the
whole-sequence reference for planned models; the text KV capacity is enforced with a clear error.

(Dense-plan parity with transformers' FastVLM / LLaMA lives in test_checkpoint.py.)
"""

import pytest
import torch

from models.config import preset
from models.reference import forward_sequence
from models.vlm import VLM, Cursor

PLANS = {
    "fastvlm-tiny": {"layers": {"0": "full", "1": "cross", "2": "text", "3": "exit"}, "window": 1},
    "mobilevlm-tiny": {"layers": {"0-1": "full", "2": "cross", "3": "text"}, "keep_topk": {"from_layer": 1, "k": 5},
                       "vision_heads": [0, 2]},
}


def tiny(name, plan, seed=0, **decoder):
    torch.manual_seed(seed)
    cfg = preset(name)
    if decoder:
        cfg = cfg.replace(decoder=decoder)
    model = VLM(cfg, plan).eval()
    with torch.no_grad():  # non-trivial norms and biases, so every parameter matters
        for n, p in model.decoder.named_parameters():
            if n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif p.dim() == 1:
                p.normal_(0, 0.2)
    return model


def inputs(cfg, n_prefix=4, n_question=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.decoder.vocab_size, (1, n_prefix + n_question), generator=g)
    pixels = torch.rand(1, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    return ids[:, :n_prefix], pixels, ids[:, n_prefix:]


@torch.no_grad()
def reference_greedy(model, prefix, pixels, question, n):
    """Greedy tokens from the whole-sequence forward, re-run from scratch for every new token, and the
    logits (n, V) each token was chosen from."""
    dec = model.decoder
    vision = model.encode_image(pixels) if pixels is not None else None
    tokens, steps = [], []
    for _ in range(n):
        rest = dec.embed(torch.cat([question, torch.tensor([tokens], dtype=torch.long)], dim=1))
        logits = forward_sequence(dec, dec.embed(prefix), vision, rest, prompt_rest=question.shape[1])
        steps.append(logits[0, -1])
        tokens.append(int(logits[0, -1].argmax()))
    return tokens, torch.stack(steps)


@torch.no_grad()
def cached_logits(model, prefix, pixels, question, tokens):
    """The logits the cached path chooses each of `tokens` from (prefill chunks, then decode steps)."""
    model.decoder.reset()
    cur = Cursor()
    model.prefill_text(cur, prefix)
    model.prefill_image(cur, model.encode_image(pixels))
    steps = [model.prefill_text(cur, question, select_topk=True)[0, -1]]
    for token in tokens[:-1]:
        steps.append(model.decode(cur, token)[0, -1])
    return torch.stack(steps)


@pytest.mark.parametrize("name", sorted(PLANS))
def test_generate_equals_whole_sequence_argmax(name):
    model = tiny(name, PLANS[name])
    assert not model.plan.is_dense
    prefix, pixels, question = inputs(model.cfg)
    ref_tokens, ref_logits = reference_greedy(model, prefix, pixels, question, 6)
    assert model.generate(prefix, pixels, question, max_new_tokens=6) == ref_tokens
    got = cached_logits(model, prefix, pixels, question, ref_tokens)
    torch.testing.assert_close(got, ref_logits, atol=1e-4, rtol=0)
    # the plan matters: the dense model on the same weights gives other logits
    dense = tiny(name, "dense")
    assert (cached_logits(dense, prefix, pixels, question, ref_tokens) - ref_logits).abs().max() > 1e-2


def test_generate_without_image_and_with_stop_token():
    model = tiny("fastvlm-tiny", PLANS["fastvlm-tiny"])
    prefix, _, question = inputs(model.cfg)
    ref_tokens, _ = reference_greedy(model, prefix, None, question, 4)
    assert model.generate(prefix, None, question, max_new_tokens=4) == ref_tokens
    stop = ref_tokens[1]
    first = ref_tokens.index(stop)
    assert model.generate(prefix, None, question, max_new_tokens=4, stop_ids=(stop,)) == ref_tokens[:first + 1]


def test_prompt_longer_than_kv_capacity_is_refused():
    model = tiny("fastvlm-tiny", "dense", max_seq_len=12)
    prefix, pixels, question = inputs(model.cfg, n_prefix=4, n_question=9)
    with pytest.raises(ValueError, match="prompt of 13 tokens does not fit the KV capacity of 12 rows"):
        model.generate(prefix, pixels, question, max_new_tokens=2)
    # the image does not count against the text capacity; decoding past it does
    prefix, pixels, question = inputs(model.cfg, n_prefix=4, n_question=6)
    assert len(model.generate(prefix, pixels, question, max_new_tokens=3)) == 3  # 10 + 2 decoded = 12 slots
    assert len(model.generate(prefix, pixels, question, max_new_tokens=4)) == 3  # the cache is full: it stops
    cur = Cursor(pos=12 + model.cfg.num_vision_tokens, slot=12)
    with pytest.raises(ValueError, match="exceeds the KV capacity of 12"):  # one token past the last slot
        model.decode(cur, 0)
