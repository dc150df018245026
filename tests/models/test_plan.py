"""Vision plan: validation errors, and the semantics of each mode and option as properties."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.plan import PlanError, load_plan

from .test_decoder import CFG, GRID, NV, make_decoder, run_chunked

L, H = CFG.num_layers, CFG.num_heads


def plan(spec):
    return load_plan(spec, L, H, NV)


def test_layers_map_ranges_alternation_and_exit():
    p = plan({"layers": {"0": "full", "1-2": "text/cross", "3": "exit"}})
    assert p.modes == ("full", "text", "cross", "exit", "exit")
    assert p.vision_layers == (0, 2)
    assert p.vision_depth == 3
    assert plan("dense").is_dense and not p.is_dense


def test_plan_file_roundtrip(tmp_path):
    p = plan({"name": "x", "layers": {"1": "cross", "2": "exit"}, "window": 1,
              "keep_topk": {"from_layer": 1, "k": 3}, "vision_heads": [2, 0]})
    f = tmp_path / "p.json"
    f.write_text(json.dumps(p.to_dict()))
    assert plan(str(f)) == p
    assert p.vision_heads == (0, 2)


@pytest.mark.parametrize("spec, message", [
    ({"layers": {"0": "fully"}}, "unknown mode 'fully'"),
    ({"layers": {"99": "exit"}}, "names layer 99"),
    ({"layers": {"3-7": "text"}}, "names layer 7"),
    ({"layers": {"1": "exit", "3": "full"}}, "layer 3: mode 'full' after 'exit' at layer 1"),
    ({"modes": ["full"] * 3}, "lists 3 layers, the decoder has 5"),
    ({"keep_topk": {"from_layer": 0, "k": NV + 1}}, f"between 1 and the {NV} vision tokens"),
    ({"layers": {"2": "text"}, "keep_topk": {"from_layer": 2, "k": 2}}, "must attend to vision"),
    ({"vision_heads": [0, 7]}, "vision_heads [7] out of range"),
    ({"window": -1}, "'window' is a radius"),
    ({"layer": {}}, "unknown plan keys ['layer']"),
    ({"layers": {"a-b": "full"}}, "bad layer key 'a-b'"),
])
def test_bad_plans_are_refused_with_a_clear_message(spec, message):
    with pytest.raises(PlanError) as e:
        plan(spec)
    assert message in str(e.value)


def test_plan_file_errors(tmp_path):
    with pytest.raises(PlanError, match="not found"):
        plan(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(PlanError, match="not valid JSON"):
        plan(str(bad))


@pytest.mark.parametrize("text", ['["full", "exit"]', "3", "2.5", '"dense"', "null", "true"])
def test_a_plan_file_that_is_not_an_object_is_refused_naming_the_file(tmp_path, text):
    file = tmp_path / "p.json"
    file.write_text(text)
    with pytest.raises(PlanError) as e:
        plan(str(file))
    message = str(e.value)
    assert str(file) in message and "JSON object" in message and "\n" not in message


def test_vision_kv_is_stored_only_where_text_attends_vision():
    dec = make_decoder({"layers": {"0": "full", "1": "cross", "2": "text", "3": "exit"}})
    assert dec.vision_layers == (0, 1)
    with torch.no_grad():
        _, kv = dec.forward_vision(torch.randn(1, NV, CFG.hidden_size), torch.tensor(0))
    assert [tuple(t.shape) for t in kv] == [(1, CFG.num_kv_heads, NV, CFG.head_dim)] * 4
    assert not [n for n, _ in dec.named_buffers() if "vision_k" in n or "vision_v" in n]  # no state to share


def _capture(dec, layer_idx, prefix, vision, question, replace_input=None):
    """Run a conversation; return (input, output) of layer `layer_idx` on the question chunk.

    replace_input substitutes that layer's question-chunk input (the text states reaching it)."""
    seen = {}

    def pre(module, args):
        x = args[0]
        if x.shape[1] == question.shape[1]:
            seen["in"] = x.clone()
            if replace_input is not None:
                return (replace_input,) + args[1:]

    def post(module, args, out):
        if args[0].shape[1] == question.shape[1]:
            seen["out"] = out.clone()

    layer = dec.layers[layer_idx]
    h1, h2 = layer.register_forward_pre_hook(pre), layer.register_forward_hook(post)
    try:
        run_chunked(dec, prefix, vision, question, n_decode=0)
    finally:
        h1.remove()
        h2.remove()
    return seen["in"], seen["out"]


def _two_images(seed):
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randn(1, 3, CFG.hidden_size, generator=g)
    question = torch.randn(1, 4, CFG.hidden_size, generator=g)
    a, b = (torch.randn(1, NV, CFG.hidden_size, generator=g) for _ in range(2))
    return prefix, question, a, b


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), layer=st.integers(1, L - 1), mode=st.sampled_from(["text", "exit"]))
def test_text_and_exit_layers_ignore_the_image_given_their_input(seed, layer, mode):
    """Given the same input text states, a text/exit layer's output does not depend on the image."""
    modes = ["full"] * L
    modes[layer] = mode
    if mode == "exit":
        modes[layer:] = ["exit"] * (L - layer)
    dec = make_decoder({"modes": modes}, seed=seed % 7)
    prefix, question, img_a, img_b = _two_images(seed)
    x_a, out_a = _capture(dec, layer, prefix, img_a, question)
    x_b, _ = _capture(dec, layer, prefix, img_b, question)
    assert not torch.allclose(x_a, x_b)  # the image does reach this layer through earlier layers
    _, out_b = _capture(dec, layer, prefix, img_b, question, replace_input=x_a)
    torch.testing.assert_close(out_a, out_b, atol=1e-6, rtol=0)


def test_a_full_layer_does_depend_on_the_image_given_its_input():
    """The property above can fail: with a full layer, the same input gives different outputs."""
    dec = make_decoder("dense")
    prefix, question, img_a, img_b = _two_images(0)
    x_a, out_a = _capture(dec, 2, prefix, img_a, question)
    _, out_b = _capture(dec, 2, prefix, img_b, question, replace_input=x_a)
    assert (out_a - out_b).abs().max() > 1e-3


@pytest.mark.parametrize("mode, frozen", [("cross", True), ("text", True), ("full", False)])
def test_cross_and_text_layers_leave_vision_states_unchanged(mode, frozen):
    dec = make_decoder({"layers": {"0": "full", "1": mode, "2": "full"}})
    torch.manual_seed(1)
    prefix = torch.randn(1, 3, CFG.hidden_size)
    dec.reset()
    with torch.no_grad():
        dec.forward_text(prefix, torch.arange(3), torch.tensor(0))
    states = {}
    step = dec.layers[1].vision_step

    def spy(x, *args):
        states["in"] = x.clone()
        out = step(x, *args)
        states["out"] = out[0].clone()
        return out

    dec.layers[1].vision_step = spy
    with torch.no_grad():
        dec.forward_vision(torch.randn(1, NV, CFG.hidden_size), torch.tensor(3))
    unchanged = torch.equal(states["in"], states["out"])
    assert unchanged == frozen


def test_cross_layer_kv_comes_from_the_frozen_states():
    """A cross layer's vision K/V equal its own k/v projections of the states entering it."""
    dec = make_decoder({"layers": {"0": "text", "1": "cross", "2": "full"}})
    torch.manual_seed(2)
    vision = torch.randn(1, NV, CFG.hidden_size)
    dec.reset()
    with torch.no_grad():
        _, kv = dec.forward_vision(vision, torch.tensor(0))  # layer 0 is text: the states reach layer 1 unchanged
        layer = dec.layers[1]
        pos = torch.arange(NV)
        k, v = layer.self_attn.key_value(layer.input_layernorm(vision), dec.rope_cos[pos], dec.rope_sin[pos])
    torch.testing.assert_close(kv[0], k)  # layers 1 (cross) and 2 (full) store vision K/V, in that order
    torch.testing.assert_close(kv[1], v)


@pytest.mark.parametrize("window", [0, 1, 2])
def test_window_masks_exactly_the_pairs_farther_than_h(window):
    """Perturbing vision token j changes token i's output in a full windowed layer iff j <= i (raster
    causal) and j is within Chebyshev distance `window` of i on the grid."""
    dec = make_decoder({"default": "full", "window": window})
    layer = dec.layers[0]
    torch.manual_seed(3)
    x = torch.randn(1, NV, CFG.hidden_size)
    pos = torch.arange(NV)
    cos, sin = dec.rope_cos[pos], dec.rope_sin[pos]
    no_text = (torch.zeros(1, CFG.num_kv_heads, 0, CFG.head_dim),) * 2  # no text before the image
    with torch.no_grad():
        base = layer._vision_full(x, cos, sin, no_text, dec.vision_self_bias)[0]
        for j in range(NV):
            x2 = x.clone()
            x2[0, j] += 1.0
            diff = (layer._vision_full(x2, cos, sin, no_text, dec.vision_self_bias)[0] - base).abs().amax(-1)[0]
            for i in range(NV):
                ri, ci, rj, cj = i // GRID, i % GRID, j // GRID, j % GRID
                expect = j <= i and max(abs(ri - rj), abs(ci - cj)) <= window
                assert bool(diff[i] > 1e-6) == expect, (i, j)


def test_vision_heads_hide_vision_from_the_other_heads():
    """With vision_heads=[1], only head 1 of text queries puts attention mass on vision keys."""
    dec = make_decoder({"vision_heads": [1]})
    prefix, question, img, _ = _two_images(4)
    run_chunked(dec, prefix, img, question, n_decode=0)
    masks = dec._text_masks(torch.arange(3 + NV, 3 + NV + 4), torch.arange(3, 7), torch.tensor(False))
    layer = dec.layers[0]
    with torch.no_grad():
        x = layer.input_layernorm(question)
        pos = torch.arange(3 + NV, 3 + NV + 4)
        q = layer.self_attn.query(x, dec.rope_cos[pos], dec.rope_sin[pos])
        bias = torch.cat([masks.vision, masks.text.expand(masks.vision.shape[0], -1, -1)], -1)
        probs = layer.self_attn.scores(q, torch.cat([dec.vision_kv[0], layer.text_k], 2), bias)
    vision_mass = probs[0, :, :, :NV].sum(-1)  # (H, T)
    assert torch.all(vision_mass[[0, 2, 3]] == 0)
    assert torch.all(vision_mass[1] > 0)


def test_keep_topk_limits_later_layers_to_k_vision_tokens():
    dec = make_decoder({"default": "full", "keep_topk": {"from_layer": 2, "k": 3}})
    prefix, question, img, _ = _two_images(5)
    run_chunked(dec, prefix, img, question, n_decode=1)
    assert int(dec.topk_keep.sum()) == 3
    # Changing a dropped vision token's K/V in layers >= 2 changes nothing; a kept one does.
    dropped = int((dec.topk_keep == 0).nonzero()[0])
    kept = int(dec.topk_keep.nonzero()[0])
    x = dec.embed(torch.tensor([[7]]))
    pos, slot = torch.tensor([3 + NV + 5]), torch.tensor(3 + 5)

    def decode_with(token_idx):
        kv = [t.clone() for t in dec.vision_kv]
        for t in kv[2 * 2:]:  # every layer is full: layers >= 2 hold entries 4 ..
            t[:, :, token_idx] += 5.0
        with torch.no_grad():
            return dec.forward_text(x, pos, slot, vision_kv=kv)

    with torch.no_grad():
        base = dec.forward_text(x, pos, slot)
    torch.testing.assert_close(decode_with(dropped), base)
    assert (decode_with(kept) - base).abs().max() > 1e-4
