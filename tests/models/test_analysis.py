"""The layer analyses of models/analysis.py on a tiny random model: each measurement's invariants."""

import numpy as np
import pytest
import torch

from models.analysis import _influence, cka_matrix, filtering_and_exit, linear_cka, summarise, trace
from models.config import preset
from models.vlm import VLM, Cursor


@pytest.fixture(scope="module")
def vlm():
    torch.manual_seed(0)
    return VLM(preset("fastvlm-tiny")).eval()


def _inputs(vlm, seed=0, prefix=5, after=7, answer=2):
    g = torch.Generator().manual_seed(seed)
    V, hid, nv = vlm.cfg.decoder.vocab_size, vlm.cfg.decoder.hidden_size, vlm.cfg.num_vision_tokens
    return (torch.randint(V, (prefix,), generator=g), torch.randn(1, nv, hid, generator=g),
            torch.randint(V, (after,), generator=g), torch.randint(V, (answer,), generator=g))


def test_trace_logits_are_the_models_own(vlm):
    prefix, vision, after, answer = _inputs(vlm)
    t = trace(vlm, prefix, vision, after, answer)
    vlm.decoder.reset()
    cur = Cursor()
    vlm.prefill_text(cur, prefix[None])
    vlm.prefill_image(cur, vision)
    chunked = vlm.prefill_text(cur, torch.cat([after, answer])[None], all_logits=True)[0, len(after) - 1:]
    torch.testing.assert_close(t.logits, chunked, atol=1e-4, rtol=1e-4)


def test_allocation_fractions_sum_to_one_per_token_and_layer(vlm):
    t = trace(vlm, *_inputs(vlm, seed=1))
    L, Q, types = t.allocation.shape
    assert (L, Q, types) == (vlm.cfg.decoder.num_layers, 3, 4)
    np.testing.assert_allclose(t.allocation.sum(-1), 1.0, atol=1e-5)
    assert (t.allocation >= 0).all()
    assert (t.allocation[:, 0, 3] == 0).all()  # the prompt's last token has no output token to attend to
    assert (t.allocation[:, 1:, 3] > 0).all()  # answer tokens attend to themselves at least
    np.testing.assert_array_equal(t.type_counts, [5, vlm.cfg.num_vision_tokens, 7, 2])


def test_influence_is_the_output_with_the_token_masked():
    g = torch.Generator().manual_seed(0)
    H, N, D = 4, 6, 8
    weights = torch.rand(H, N, generator=g) / N
    values = torch.randn(H, N, D, generator=g)
    other = torch.randn(H, D, generator=g)  # the attention output's part from non-vision keys
    out = other + (weights[..., None] * values).sum(1)
    cos, l2 = _influence(weights, values, out)
    for j in range(N):
        w = weights.clone()
        w[:, j] = 0.0  # W'_{i->j} = 0 in every head, not renormalised
        masked = (other + (w[..., None] * values).sum(1)).reshape(-1)
        assert cos[j].item() == pytest.approx(torch.cosine_similarity(masked, out.reshape(-1), dim=0).item(), abs=1e-6)
        assert l2[j].item() == pytest.approx((masked - out.reshape(-1)).norm().item(), abs=1e-5)


def test_a_layer_that_cannot_read_vision_shows_no_influence(vlm):
    """Zero vision embeddings and no v_proj bias in layer 0: the vision tokens' values there are exactly
    zero, so masking any of them leaves the last prompt token's output unchanged; deeper layers see
    vision states that attention and the MLP have filled in."""
    prefix, vision, after, answer = _inputs(vlm, seed=2)
    bias = vlm.decoder.layers[0].self_attn.v_proj.bias
    saved = bias.detach().clone()
    try:
        with torch.no_grad():
            bias.zero_()
        t = trace(vlm, prefix, torch.zeros_like(vision), after, answer)
    finally:
        with torch.no_grad():
            bias.copy_(saved)
    np.testing.assert_allclose(t.influence_l2[0], 0.0, atol=1e-7)
    np.testing.assert_allclose(t.influence_cos[0], 1.0, atol=1e-6)
    assert t.influence_l2[1:].max() > 1e-4


def test_cka_of_a_layer_with_itself_is_one_and_ignores_rotation_and_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(64, 16))) < 0.5
    m = cka_matrix(np.stack([x, x @ q, rng.normal(size=(64, 16))]))
    np.testing.assert_allclose(np.diag(m), 1.0)
    np.testing.assert_allclose(m, m.T)


def test_filtering_and_exit_layers():
    cos = np.ones((6, 4))
    l2 = np.zeros((6, 4))
    assert filtering_and_exit(cos, l2) == (None, None, 0)
    cos[1, 2], l2[1, 2] = 0.9, 0.5  # token 2 matters at layer 1: the filtering layer, and it is kept
    cos[1, 0], l2[1, 0] = 0.99, 0.1  # token 0 too, but under the L2 bar: not kept
    cos[2, 2] = 0.98  # still influential at layer 2
    cos[3:, 0] = 0.5  # only the dropped token moves later on: layers 3 and 4 are quiet for the kept one
    assert filtering_and_exit(cos, l2) == (1, 4, 1)
    cos[4, 2] = 0.9  # the kept token wakes up at 4: quiet at 3 and 5 only, never two in a row
    assert filtering_and_exit(cos, l2) == (1, None, 1)


def test_summary_tables_have_one_row_per_layer(vlm):
    traces = [trace(vlm, *_inputs(vlm, seed=s)) for s in range(3)]
    m = summarise(traces)
    L, nv = vlm.cfg.decoder.num_layers, vlm.cfg.num_vision_tokens
    assert np.array(m["lambda"]).shape == (L, 4) and np.array(m["influence_cos_mean"]).shape == (L, nv)
    np.testing.assert_allclose(np.array(m["lambda"]).sum(-1), 3.0, atol=1e-4)  # 3 answer queries, each sums to 1
    np.testing.assert_allclose(np.diag(m["cka"]), 1.0, atol=1e-9)
    assert sum(m["filtering_layer"]["counts"].values()) + m["filtering_layer"]["none"] == 3


def test_trace_needs_the_dense_model():
    torch.manual_seed(0)
    planned = VLM(preset("fastvlm-tiny"), {"layers": {"1": "text"}}).eval()
    with pytest.raises(ValueError, match="dense"):
        trace(planned, *_inputs(planned))
