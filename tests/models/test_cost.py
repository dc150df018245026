"""models/cost.py against FlopCounterMode on the eager tiny models (the real chunked path, real CPU
tensors), its invariants over plans, and the CLI."""

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.config import MOBILELLAMA_1_4B, QWEN2_0_5B, preset
from models.cost import PREFIX_TOKENS, decoder_params, estimate, flop_counter, main, text_only_plan
from models.decoder import Decoder
from models.plan import MODES, load_plan
from models.vlm import VLM, Cursor

PLANS = {
    "dense": "dense",
    "mixed": {"layers": {"0": "full", "1": "cross", "2": "text", "3": "exit"}},
    "window": {"layers": {"0-1": "full", "2-3": "full/cross"}, "window": 1},
    "topk": {"layers": {"0-2": "full", "3": "cross"}, "keep_topk": {"from_layer": 1, "k": 4}},
    "heads": {"layers": {"3": "exit"}, "vision_heads": [1, 3]},
    "everything": {"layers": {"0": "full", "1": "cross", "2": "full", "3": "exit"}, "window": 0,
                   "keep_topk": {"from_layer": 2, "k": 3}, "vision_heads": [0]},
}
PROJECTORS = {"preset": None, "stf": {"kind": "stf", "k": 2, "mbtf_blocks": ()},
              "mbtf": {"kind": "stf", "k": 2, "mbtf_blocks": (1,)}}
STF = PROJECTORS["stf"]
CASES = ([(name, plan, "preset") for name in ("fastvlm-tiny", "mobilevlm-tiny") for plan in PLANS]
         + [(name, plan, proj) for name in ("fastvlm-tiny", "mobilevlm-tiny")
            for plan, proj in [("dense", "stf"), ("mixed", "stf"), ("mixed", "mbtf")]])
EXAMPLE_PLAN = Path(__file__).parents[2] / "plans" / "example-fastvlm-0.5b.json"


def tiny(name, projector=None):
    cfg = preset(name)
    return cfg.replace(projector=projector) if projector else cfg


def count_conversation(model: VLM, prefix: int, prompt: int, image: bool = True, encoder: bool = True) -> dict:
    """Count the chunked path of VLM.generate: prefix, image, prompt (picks top-k), one decode step.

    encoder=False feeds random embeddings instead of running the (plan-independent, slow on CPU) encoder."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(0, cfg.decoder.vocab_size, (1, n), generator=g)  # noqa: E731
    model.decoder.reset()
    cur = Cursor()
    with torch.no_grad():
        pixels = torch.randn(1, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
        with flop_counter() as enc:
            if image and encoder:
                embeds = model.encode_image(pixels)
            elif image:
                embeds = torch.randn(1, cfg.num_vision_tokens, cfg.decoder.hidden_size, generator=g)
        with flop_counter() as pre:
            if prefix:
                model.prefill_text(cur, ids(prefix))
            if image:
                model.prefill_image(cur, embeds)
            logits = model.prefill_text(cur, ids(prompt), select_topk=True)
        with flop_counter() as dec:
            model.decode(cur, int(logits[0, -1].argmax()))
    projector = sum(enc.get_flop_counts().get(type(model.projector).__name__, {}).values())
    return {"vision": enc.get_total_flops() - projector, "projector": projector,
            "prefill": pre.get_total_flops(), "decode": dec.get_total_flops()}


def numel_bytes(module) -> int:
    return sum(p.numel() * 4 for p in module.parameters())


def kv_buffer_bytes(decoder) -> int:
    """The text K/V buffers and the vision K/V the eager decoder keeps for the image."""
    text = sum(b.numel() * 4 for name, b in decoder.named_buffers() if name.endswith(("_k", "_v")))
    return text + sum(t.numel() * 4 for t in decoder.vision_kv)


@pytest.mark.parametrize("name,plan,projector", CASES, ids=["-".join(c) for c in CASES])
def test_matches_flop_counter_on_eager_model(name, plan, projector):
    cfg = tiny(name, PROJECTORS[projector])
    torch.manual_seed(0)
    model = VLM(cfg, PLANS[plan]).eval()
    prefix, prompt = (0, 6) if plan == "window" else (3, 5)  # one case without text before the image
    encoder = plan in ("dense", "mixed")  # the encoder does not depend on the plan
    counted = count_conversation(model, prefix, prompt, encoder=encoder)
    cost = estimate(cfg, PLANS[plan], prefix, prompt)
    if encoder:
        assert cost.vision_encoder_flops == pytest.approx(counted["vision"], rel=0.02)
        assert cost.projector_flops == pytest.approx(counted["projector"], rel=0.02)
    # The decoder's matmul count is exact, not merely within 2%.
    assert cost.prefill_flops == counted["prefill"]
    assert cost.decode_flops == counted["decode"]
    assert cost.vision_param_bytes == numel_bytes(model.vision)
    assert cost.projector_param_bytes == numel_bytes(model.projector)
    assert cost.decoder_param_bytes == numel_bytes(model.decoder)
    assert cost.param_bytes == numel_bytes(model)


@pytest.mark.parametrize("name", ["fastvlm-tiny", "mobilevlm-tiny"])
def test_text_only_reference_is_the_decoder_as_plain_lm(name):
    cfg = tiny(name)
    model = VLM(cfg, text_only_plan(cfg.decoder.num_layers)).eval()
    counted = count_conversation(model, 3, 5, image=False)
    cost = estimate(cfg, PLANS["mixed"], 3, 5, image=False)  # the plan does not matter without an image
    assert (cost.prefill_flops, cost.decode_flops) == (counted["prefill"], counted["decode"])
    assert cost.vision_encoder_flops == cost.projector_flops == cost.num_vision_tokens == 0
    assert cost.param_bytes == numel_bytes(model.decoder)
    assert cost.kv_bytes_static == kv_buffer_bytes(model.decoder)


def test_kv_static_bytes_are_the_decoder_buffers():
    cfg = tiny("fastvlm-tiny")
    for plan in PLANS.values():
        assert estimate(cfg, plan, 3, 5).kv_bytes_static == kv_buffer_bytes(VLM(cfg, plan).decoder)


def test_decoder_params_of_real_decoders():
    assert decoder_params(QWEN2_0_5B) == 494_032_768  # Qwen2-0.5B as published
    for d in (QWEN2_0_5B, MOBILELLAMA_1_4B):
        with torch.device("meta"):
            dec = Decoder(d, load_plan("dense", d.num_layers, d.num_heads, 4), 4, 2)
        assert decoder_params(d) == sum(p.numel() for p in dec.parameters())


# ---- invariants ----

CFG = tiny("fastvlm-tiny").replace(decoder={"num_layers": 6, "max_seq_len": 64})
D = CFG.decoder
NV = CFG.num_vision_tokens


def select_cost(plan, prefix, prompt) -> tuple[int, int]:
    """Graph FLOPs of one top-k selection (run in every text chunk) and ideal FLOPs of the one that counts:
    the only thing a plan can add over dense."""
    if plan.keep_topk is None:
        return 0, 0
    hv = D.num_heads if plan.vision_heads is None else len(plan.vision_heads)
    return (2 * D.num_heads * (NV + D.max_seq_len) * D.head_dim,
            2 * D.head_dim * (D.num_heads * (prefix + prompt) + hv * NV))


plans = st.builds(
    lambda modes, window, heads, topk: {"modes": modes, "window": window, "vision_heads": heads, "keep_topk": topk},
    modes=st.lists(st.sampled_from(MODES), min_size=D.num_layers, max_size=D.num_layers).map(
        lambda m: m[:m.index("exit")] + ["exit"] * (len(m) - m.index("exit")) if "exit" in m else m),
    window=st.one_of(st.none(), st.integers(0, 3)),
    heads=st.one_of(st.none(), st.sets(st.integers(0, D.num_heads - 1), min_size=1).map(sorted)),
    topk=st.one_of(st.none(), st.integers(1, NV)))


def resolve(spec) -> dict:
    """Attach keep_topk to the first vision layer, or drop it when there is none."""
    spec = {k: v for k, v in spec.items() if v is not None}
    vision = [i for i, m in enumerate(spec["modes"]) if m in ("full", "cross")]
    if "keep_topk" in spec:
        spec["keep_topk"] = {"from_layer": vision[0], "k": spec["keep_topk"]} if vision else None
        spec = {k: v for k, v in spec.items() if v is not None}
    return spec


FIELDS = ("prefill_flops", "prefill_flops_ideal", "decode_flops", "decode_flops_ideal", "prefill_attention_flops",
          "prefill_attention_flops_ideal", "kv_bytes_static", "kv_bytes_filled", "kv_bytes_ideal")


@settings(max_examples=60, deadline=None)
@given(spec=plans, prefix=st.integers(0, 10), prompt=st.integers(1, 20), new=st.integers(0, 5))
def test_plan_costs_between_text_only_and_dense(spec, prefix, prompt, new):
    spec = resolve(spec)
    plan = load_plan(spec, D.num_layers, D.num_heads, NV)
    dense, planned = (estimate(CFG, p, prefix, prompt, new) for p in ("dense", plan))
    text = estimate(CFG, plan, prefix, prompt, new, image=False)
    graph, ideal = select_cost(plan, prefix, prompt)
    chunks = 1 + (prefix > 0)
    extras = {"prefill_flops": chunks * graph, "prefill_attention_flops": chunks * graph, "decode_flops": graph,
              "prefill_flops_ideal": ideal, "prefill_attention_flops_ideal": ideal}
    for f in FIELDS:
        extra = extras.get(f, 0)
        assert getattr(text, f) <= getattr(planned, f) <= getattr(dense, f) + extra, f
    assert planned.kv_bytes_ideal <= planned.kv_bytes_filled <= planned.kv_bytes_static
    assert planned.prefill_flops_ideal <= planned.prefill_flops
    assert planned.decode_flops_ideal <= planned.decode_flops


def test_exit_at_layer_0_is_text_only_plus_encoder_and_projector():
    text = estimate(CFG, "dense", 4, 7, 3, image=False)
    exit0 = estimate(CFG, {"layers": {"0": "exit"}}, 4, 7, 3)
    for f in FIELDS[:6]:
        assert getattr(exit0, f) == getattr(text, f), f
    assert exit0.kv_bytes_static == text.kv_bytes_static
    assert exit0.first_token_flops == text.first_token_flops + exit0.vision_encoder_flops + exit0.projector_flops
    assert exit0.vision_encoder_flops > 0 and exit0.projector_flops > 0


@pytest.mark.parametrize("layer", range(D.num_layers + 1))
def test_kv_static_bytes_of_vision_exit(layer):
    spec = {"layers": {str(layer): "exit"}} if layer < D.num_layers else "dense"
    text = estimate(CFG, "dense", 2, 3, image=False).kv_bytes_static
    vision_kv_per_layer = 2 * D.num_kv_heads * NV * D.head_dim * 4
    assert estimate(CFG, spec, 2, 3).kv_bytes_static == text + layer * vision_kv_per_layer


def test_topk_and_vision_heads_shrink_ideal_kv():
    base = {"layers": {"0-2": "full", "3-5": "cross"}}
    full = estimate(CFG, base, 2, 3)
    topk = estimate(CFG, {**base, "keep_topk": {"from_layer": 2, "k": 4}}, 2, 3)
    heads = estimate(CFG, {**base, "vision_heads": [0, 1]}, 2, 3)  # 4 heads over 2 KV heads: KV head 0 only
    per_token = 2 * D.num_kv_heads * D.head_dim * 4
    assert full.kv_bytes_filled - topk.kv_bytes_ideal == 4 * (NV - 4) * per_token
    assert full.kv_bytes_filled - heads.kv_bytes_ideal == 6 * NV * per_token // 2
    assert topk.kv_bytes_filled == heads.kv_bytes_filled == full.kv_bytes_filled


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="exceed the KV capacity"):
        estimate(CFG, "dense", 30, 30, 5)
    with pytest.raises(ValueError, match="prompt_tokens >= 1"):
        estimate(CFG, "dense", 3, 0)


# ---- CLI ----

def run_cli(capsys, *argv) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_cli_json_matches_estimate(capsys):
    out = json.loads(run_cli(capsys, "--preset", "mobilevlm-tiny", "--plan", "dense", "--prompt-tokens", "8", "--json"))
    cfg = preset("mobilevlm-tiny")
    assert out["prefix_tokens"] == PREFIX_TOKENS["mobilevlm"]
    assert out["costs"]["plan"] == estimate(cfg, "dense", PREFIX_TOKENS["mobilevlm"], 8).to_dict()
    assert out["costs"]["text_only"] == estimate(cfg, "dense", PREFIX_TOKENS["mobilevlm"], 8, image=False).to_dict()


def test_cli_table_matches_estimate(capsys, tmp_path):
    spec = {"layers": {"0": "full", "1": "cross", "2": "exit"}}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(spec))
    out = run_cli(capsys, "--preset", "fastvlm-tiny", "--plan", str(path), "--image-size", "192",
                  "--prompt-tokens", "9", "--prefix-tokens", "2", "--projector", "stf")
    cfg = preset("fastvlm-tiny").replace(vision={"image_size": 192})
    dense, plan = estimate(cfg, "dense", 2, 9), estimate(cfg.replace(projector=STF), spec, 2, 9)
    rows = {line[:32].strip(): [float(x.replace(",", "")) for x in line[32:].split()[:3]]
            for line in out.splitlines() if "GFLOPs" in line[:32] or "MiB" in line[:32]}
    assert rows["decoder prefill GFLOPs (graph)"][:2] == pytest.approx(
        [dense.prefill_flops / 1e9, plan.prefill_flops / 1e9], rel=1e-3)
    assert rows["decode GFLOPs/token (ideal)"][1] == pytest.approx(plan.decode_flops_ideal / 1e9, rel=1e-3)
    assert rows["projector GFLOPs"][1] == pytest.approx(plan.projector_flops / 1e9, rel=1e-3)
    assert rows["KV cache MiB (static)"][1] == pytest.approx(plan.kv_bytes_static / 2 ** 20, rel=1e-3)
    assert rows["parameters MiB"][0] == pytest.approx(dense.param_bytes / 2 ** 20, rel=1e-3)
    assert plan.num_vision_tokens == 9 and dense.num_vision_tokens == 36


@pytest.mark.parametrize("argv,message", [
    (["--preset", "nope"], "unknown preset"),
    (["--preset", "fastvlm-tiny", "--image-size", "100"], "multiple of the encoder stride"),
    (["--preset", "fastvlm-tiny", "--image-size", "96", "--projector", "stf"], "not divisible"),
    (["--preset", "fastvlm-tiny", "--plan", "missing.json"], "plan file not found"),
    (["--preset", "fastvlm-tiny", "--plan", str(EXAMPLE_PLAN)], "the decoder has layers 0-3"),
    (["--preset", "fastvlm-tiny", "--prompt-tokens", "200"], "exceed the KV capacity"),
])
def test_cli_errors_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("modes", [["cross"], ["full", "text"], ["full", "cross", "text", "exit"]])
def test_mobilevlm_8l_preset_removes_the_same_share_of_vision_flops_as_full_depth(modes):
    """The 8-layer speed preset stands in for MobileVLM V2 1.7B: a plan repeating the same pattern of modes
    removes the same share of the vision-attributable prefill FLOPs at 8 layers as at 24: exactly without
    text before the image, and within 2 points with it (the vision prefill runs that text again through the
    layers up to the last full one, all but the last of them whole: not quite proportional to depth)."""
    full, short = preset("mobilevlm-v2-1.7b"), preset("mobilevlm-v2-1.7b-8l")
    assert short.replace(decoder={"num_layers": 24}) == full and short.num_vision_tokens == 144

    def removed(cfg, prefix):
        n = cfg.decoder.num_layers
        plan = {"name": "pattern", "modes": [modes[i * len(modes) // n] for i in range(n)]}
        dense, planned, text = (estimate(cfg, p, prefix, 32, image=i).prefill_flops
                                for p, i in (("dense", True), (plan, True), ("dense", False)))
        return (dense - planned) / (dense - text)

    assert removed(short, 0) == pytest.approx(removed(full, 0), abs=1e-9)
    assert removed(short, 35) == pytest.approx(removed(full, 35), abs=0.02)
    assert 0 < removed(short, 35) < 1
