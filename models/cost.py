r"""Analytic cost of a VLM config + vision plan + prompt shape: FLOPs, KV-cache bytes, parameter bytes.

    python -m models.cost --preset fastvlm-0.5b --plan plans/example-fastvlm-0.5b.json --image-size 1024 \
        --prompt-tokens 32

What is counted (checked against `torch.utils.flop_counter.FlopCounterMode` on the eager model):
- FLOPs are matmul/conv FLOPs only, 2 per multiply-add ((m x k) @ (k x n) = 2mkn), which is exactly
  what FlopCounterMode's registry counts (mm, addmm, bmm, baddbmm, convolutions, fused attention).
  Norms, softmax, RoPE, SiLU/GELU, bias adds, pooling and embedding lookups are not counted; for a
  decoder they are a few percent at most.
- The vision encoder and projector are not derived by hand: they are counted once per config by
  FlopCounterMode on the modules built on the meta device (no memory, no weights).
- The decoder is analytic and follows models/decoder.py step by step, in two flavours:
    *_flops         "graph": what the static-shape graph executes. Every text query scores the whole
                    static text buffer (max_seq_len keys) plus, in full/cross layers, all N_vision
                    keys, masked or not; a full layer's vision prefill scores N_vision + max_seq_len
                    keys; top-k selection adds one scores row at its layer in every text chunk and
                    decode step (a tensor flag keeps the result only at the prompt's end). Windows,
                    top-k and vision_heads are masks here, so they save nothing.
    *_flops_ideal   what the seed papers count and a dynamic-length kernel would do: each query
                    scores only the keys it can see (causal, window, the kept top-k tokens, vision
                    only in vision_heads). Linear layers are the same in both: the image is
                    prefilled before the question picks its top-k tokens (docs/design.md §3), so
                    keep_topk never shrinks the vision prefill, only what later text attends.
  Each text chunk (text before the image, the prompt after it, each decode step) ends with the LM
  head on its last position only, as the decoder does. Vision prefill runs layers up to the last
  full/cross layer: `full` runs attention + FFN on the vision tokens, `cross` only k_proj/v_proj.
- image=False is the text-only reference: the same prompt through the decoder as a plain LM (no
  image, no vision K/V buffers, no vision weights shipped), whatever the plan. The share of vision
  cost a plan removes is (dense - plan) / (dense - text_only).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .config import PRESETS, DecoderConfig, ModelConfig, ProjectorConfig, VisionConfig, preset
from .decoder import vision_self_bias
from .plan import VISION_MODES, Plan, PlanError, load_plan

# Tokens the presets' prompt templates put before the image (no tokenizer here): Qwen2's
# "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" is 14 Qwen2 tokens;
# LLaVA v1's system sentence + " USER: " is about 35 LLaMA tokens with BOS.
PREFIX_TOKENS = {"fastvlm": 14, "mobilevlm": 35}


@dataclass(frozen=True)
class Cost:
    """One conversation: prefix text, image, prompt, then `new_tokens` decode steps. FLOPs as above."""

    num_vision_tokens: int  # tokens the decoder sees (0 without an image)
    vision_encoder_flops: int
    projector_flops: int
    prefill_text_flops: int  # graph: text before the image + the prompt after it (incl. their LM heads)
    vision_prefill_flops: int  # graph: the image through the layers that still use vision
    prefill_attention_flops: int  # graph: the attention (scores + probs @ V) part of the two above
    decode_flops: int  # graph: one decode step (the same at every position: static shapes)
    prefill_text_flops_ideal: int
    vision_prefill_flops_ideal: int
    prefill_attention_flops_ideal: int
    decode_flops_ideal: float  # mean over the new_tokens steps (the step at the end of the prompt if 0)
    kv_bytes_static: int  # allocated: text K/V at max_seq_len in every layer, vision K/V in full/cross layers
    kv_bytes_filled: int  # written by this conversation (all text slots used, vision K/V if an image)
    kv_bytes_ideal: int  # what decoding reads: filled text, kept top-k vision tokens, KV heads of vision_heads
    vision_param_bytes: int
    projector_param_bytes: int
    decoder_param_bytes: int
    new_tokens: int

    @property
    def prefill_flops(self) -> int:
        """Decoder prefill, graph: text chunks + vision prefill."""
        return self.prefill_text_flops + self.vision_prefill_flops

    @property
    def prefill_flops_ideal(self) -> int:
        return self.prefill_text_flops_ideal + self.vision_prefill_flops_ideal

    @property
    def first_token_flops(self) -> int:
        """Everything before the first new token (graph): encoder + projector + decoder prefill."""
        return self.vision_encoder_flops + self.projector_flops + self.prefill_flops

    @property
    def first_token_flops_ideal(self) -> int:
        return self.vision_encoder_flops + self.projector_flops + self.prefill_flops_ideal

    @property
    def param_bytes(self) -> int:
        return self.vision_param_bytes + self.projector_param_bytes + self.decoder_param_bytes

    def to_dict(self) -> dict:
        derived = ("prefill_flops", "prefill_flops_ideal", "first_token_flops", "first_token_flops_ideal",
                   "param_bytes")
        return {**asdict(self), **{name: getattr(self, name) for name in derived}}


def estimate(cfg: ModelConfig, plan, prefix_tokens: int, prompt_tokens: int, new_tokens: int = 1,
             image: bool = True, kv_dtype_bytes: int = 4, param_dtype_bytes: int = 4) -> Cost:
    """Cost of one conversation. plan: "dense", a JSON path, a dict or a Plan (validated against cfg)."""
    d = cfg.decoder
    plan = load_plan(plan, d.num_layers, d.num_heads, cfg.num_vision_tokens)
    P, Q, n = prefix_tokens, prompt_tokens, new_tokens
    if P < 0 or Q < 1 or n < 0:
        raise ValueError(f"need prefix_tokens >= 0, prompt_tokens >= 1, new_tokens >= 0; got {P}, {Q}, {n}")
    if P + Q + n > d.max_seq_len:
        raise ValueError(f"{P} + {Q} + {n} text tokens exceed the KV capacity of {d.max_seq_len} (max_seq_len)")
    if not image:
        plan = text_only_plan(d.num_layers)
    nv = cfg.num_vision_tokens if image else 0

    prefix = [_text_chunk(d, plan, nv, 0, P, False, False)] if P else []  # generate() skips an empty prefix
    chunks = prefix + [_text_chunk(d, plan, nv, P, Q, image, True)]
    vision = _vision_prefill(d, plan, nv, cfg.vision_grid, P) if image else _Flops(0, 0, 0)
    steps = [_text_chunk(d, plan, nv, P + Q + i, 1, image, False) for i in range(max(n, 1))]
    text = _Flops(*map(sum, zip(*chunks)))

    v_flops, p_flops, v_params, p_params = _encoder_counts(cfg) if image else (0, 0, 0, 0)
    kv = _kv_bytes(d, plan, nv, P + Q + n, kv_dtype_bytes)
    return Cost(
        num_vision_tokens=nv, vision_encoder_flops=v_flops, projector_flops=p_flops,
        prefill_text_flops=text.linear + text.attn, vision_prefill_flops=vision.linear + vision.attn,
        prefill_attention_flops=text.attn + vision.attn, decode_flops=steps[0].linear + steps[0].attn,
        prefill_text_flops_ideal=text.linear + text.attn_ideal,
        vision_prefill_flops_ideal=vision.linear + vision.attn_ideal,
        prefill_attention_flops_ideal=text.attn_ideal + vision.attn_ideal,
        decode_flops_ideal=sum(s.linear + s.attn_ideal for s in steps) / len(steps),
        kv_bytes_static=kv[0], kv_bytes_filled=kv[1], kv_bytes_ideal=kv[2],
        vision_param_bytes=v_params * param_dtype_bytes, projector_param_bytes=p_params * param_dtype_bytes,
        decoder_param_bytes=decoder_params(d) * param_dtype_bytes, new_tokens=n)


def text_only_plan(num_layers: int) -> Plan:
    """The plan of a plain text LM: vision exits before layer 0."""
    return Plan(name="text-only", modes=("exit",) * num_layers)


# ---- decoder FLOPs, following models/decoder.py ----

class _Flops(NamedTuple):
    linear: int  # matmuls outside attention, LM head included (the same in graph and ideal)
    attn: int  # attention, graph
    attn_ideal: int  # attention, ideal


def _layer_flops(d: DecoderConfig) -> int:
    """Linear FLOPs of one token through one layer: q/k/v/o projections and the SwiGLU MLP."""
    q_dim, kv_dim = d.num_heads * d.head_dim, d.num_kv_heads * d.head_dim
    attn = 2 * d.hidden_size * (q_dim + 2 * kv_dim) + 2 * q_dim * d.hidden_size
    return attn + 3 * 2 * d.hidden_size * d.intermediate_size


def _kept(plan: Plan, layer: int, nv: int) -> int:
    """Vision keys a text query may see in a full/cross layer."""
    topk = plan.keep_topk
    return topk.k if topk is not None and layer >= topk.from_layer else nv


def _text_chunk(d: DecoderConfig, plan: Plan, nv: int, slot: int, T: int, after_image: bool,
                select_topk: bool) -> _Flops:
    """T text tokens at text slots slot..slot+T-1; after_image: the image precedes them."""
    H, D, S = d.num_heads, d.head_dim, d.max_seq_len
    hv = H if plan.vision_heads is None else len(plan.vision_heads)
    text_keys = T * slot + T * (T + 1) // 2  # visible text keys, summed over the chunk's queries
    linear = d.num_layers * T * _layer_flops(d) + 2 * d.hidden_size * d.vocab_size  # LM head: last position
    attn = ideal = 0
    for i, mode in enumerate(plan.modes):
        vision_keys = nv if mode in VISION_MODES else 0  # static buffer, masked or not
        seen = _kept(plan, i, nv) if vision_keys and after_image else 0
        attn += 2 * 2 * H * T * (S + vision_keys) * D  # q @ k^T and probs @ v over every key
        ideal += 2 * 2 * D * (H * text_keys + hv * T * seen)
        if plan.keep_topk is not None and i == plan.keep_topk.from_layer:
            attn += 2 * H * (nv + S) * D  # every chunk: the last query's scores over all keys (kept if select_topk)
            if select_topk:  # ideal: only the prompt's last token picks
                ideal += 2 * D * (H * (slot + T) + hv * (nv if after_image else 0))
    return _Flops(linear, attn, ideal)


def _vision_prefill(d: DecoderConfig, plan: Plan, nv: int, grid: int, prefix: int) -> _Flops:
    """The image's nv tokens, after `prefix` text tokens, through layers[:vision_depth]; before them, the
    text before the image again through the layers up to the last `full` one (its K/V there: the image
    attends to it, and no state is shared with the text decoder). This is the split protocol for every plan,
    dense included (a dense build's shared layout runs the image through the text decoder instead)."""
    H, D = d.num_heads, d.head_dim
    kv_dim = d.num_kv_heads * D
    pairs = _vision_pairs(grid, plan.window)  # (query, key) vision pairs the causal window allows
    full = [i for i, m in enumerate(plan.modes) if m == "full"]
    depth = full[-1] + 1 if full and prefix else 0
    linear = attn = ideal = 0
    for i in range(depth):  # the prefix: whole layers, then only K/V in the last
        if i + 1 < depth:
            linear += prefix * _layer_flops(d)
            attn += 2 * 2 * H * prefix * prefix * D
            ideal += 2 * 2 * H * D * prefix * (prefix + 1) // 2
        else:
            linear += prefix * 2 * d.hidden_size * 2 * kv_dim
    for mode in plan.modes[:plan.vision_depth]:
        if mode == "full":
            linear += nv * _layer_flops(d)
            attn += 2 * 2 * H * nv * (nv + prefix) * D
            ideal += 2 * 2 * H * D * (nv * prefix + pairs)
        elif mode == "cross":
            linear += nv * 2 * d.hidden_size * 2 * kv_dim  # k_proj and v_proj of the frozen states
    return _Flops(linear, attn, ideal)


@functools.lru_cache(maxsize=64)
def _vision_pairs(grid: int, window: int | None) -> int:
    return int((vision_self_bias(grid, window) == 0).sum())


def _kv_bytes(d: DecoderConfig, plan: Plan, nv: int, text_slots: int, dtype_bytes: int) -> tuple[int, int, int]:
    """(static, filled, ideal) bytes of K and V."""
    per_token = 2 * d.num_kv_heads * d.head_dim * dtype_bytes  # K and V of one token in one layer
    text_static, text_filled = d.num_layers * d.max_seq_len * per_token, d.num_layers * text_slots * per_token
    layers = plan.vision_layers
    group = d.num_heads // d.num_kv_heads
    heads = plan.vision_heads if plan.vision_heads is not None else range(d.num_heads)
    live_kv_heads = len({h // group for h in heads})
    ideal = sum(_kept(plan, i, nv) for i in layers) * per_token * live_kv_heads // d.num_kv_heads
    return text_static + len(layers) * nv * per_token, text_filled + len(layers) * nv * per_token, text_filled + ideal


def decoder_params(d: DecoderConfig) -> int:
    """Parameters of the decoder: embedding, layers, final norm, LM head unless tied."""
    q_dim, kv_dim = d.num_heads * d.head_dim, d.num_kv_heads * d.head_dim
    attn = d.hidden_size * (q_dim + 2 * kv_dim) + q_dim * d.hidden_size
    if d.qkv_bias:
        attn += q_dim + 2 * kv_dim
    layer = attn + 3 * d.hidden_size * d.intermediate_size + 2 * d.hidden_size
    head = 0 if d.tie_embeddings else d.vocab_size * d.hidden_size
    return d.vocab_size * d.hidden_size + d.num_layers * layer + d.hidden_size + head


# ---- vision encoder and projector: counted on the meta device ----

def flop_counter() -> FlopCounterMode:
    """FlopCounterMode that also counts CPU's fused attention kernel, which torch's registry lacks
    (aten._scaled_dot_product_flash_attention_for_cpu: the path F.scaled_dot_product_attention takes on CPU)."""
    def sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)
    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa_cpu})


def _encoder_counts(cfg: ModelConfig) -> tuple[int, int, int, int]:
    """(vision FLOPs, projector FLOPs, vision params, projector params). Cached per config (VisionConfig
    holds a dict, so the cache is keyed by JSON)."""
    vision_json = json.dumps(asdict(cfg.vision), sort_keys=True)
    stages = tuple(cfg.projector.mbtf_blocks)
    v_flops, v_params, _ = _vision_counts(vision_json, stages)
    p_flops, p_params = _projector_counts(vision_json, json.dumps(asdict(cfg.projector)), cfg.decoder.hidden_size)
    return v_flops, p_flops, v_params, p_params


@functools.lru_cache(maxsize=16)
def _vision_counts(vision_json: str, stages: tuple[int, ...]) -> tuple[int, int, tuple]:
    """(FLOPs, params, output shapes) of the encoder as VLM.encode_image runs it (feature maps for MBTF)."""
    from .vision import build_vision_encoder  # timm / transformers: imported only when counting

    vcfg = VisionConfig(**json.loads(vision_json))
    with torch.device("meta"):
        encoder = build_vision_encoder(vcfg)
    pixels = torch.empty(1, 3, vcfg.image_size, vcfg.image_size, device="meta")
    with flop_counter() as counter, torch.no_grad():
        out = encoder.feature_maps(pixels, stages) if stages else [encoder(pixels)]
    return counter.get_total_flops(), _numel(encoder), tuple(tuple(t.shape) for t in out)


@functools.lru_cache(maxsize=16)
def _projector_counts(vision_json: str, projector_json: str, hidden: int) -> tuple[int, int]:
    from .projector import build_projector

    vcfg, p = VisionConfig(**json.loads(vision_json)), json.loads(projector_json)
    pcfg = ProjectorConfig(**{**p, "mbtf_blocks": tuple(p["mbtf_blocks"])})
    _, _, shapes = _vision_counts(vision_json, pcfg.mbtf_blocks)
    with torch.device("meta"):
        projector = build_projector(pcfg, vcfg, hidden)
        out = [torch.empty(s) for s in shapes]
    tokens = out[0].flatten(2).transpose(1, 2) if pcfg.mbtf_blocks else out[0]  # as VLM.encode_image
    with flop_counter() as counter, torch.no_grad():
        projector(tokens, out[1:])
    return counter.get_total_flops(), _numel(projector)


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- CLI ----

ROWS = [  # (label, value of a Cost, unit divisor)
    ("vision tokens (decoder)", lambda c: c.num_vision_tokens, 1),
    ("vision encoder GFLOPs", lambda c: c.vision_encoder_flops, 1e9),
    ("projector GFLOPs", lambda c: c.projector_flops, 1e9),
    ("decoder prefill GFLOPs (graph)", lambda c: c.prefill_flops, 1e9),
    ("decoder prefill GFLOPs (ideal)", lambda c: c.prefill_flops_ideal, 1e9),
    ("  of which attention (graph)", lambda c: c.prefill_attention_flops, 1e9),
    ("  of which attention (ideal)", lambda c: c.prefill_attention_flops_ideal, 1e9),
    ("first token GFLOPs (graph)", lambda c: c.first_token_flops, 1e9),
    ("first token GFLOPs (ideal)", lambda c: c.first_token_flops_ideal, 1e9),
    ("decode GFLOPs/token (graph)", lambda c: c.decode_flops, 1e9),
    ("decode GFLOPs/token (ideal)", lambda c: c.decode_flops_ideal, 1e9),
    ("KV cache MiB (static)", lambda c: c.kv_bytes_static, 2 ** 20),
    ("KV cache MiB (filled)", lambda c: c.kv_bytes_filled, 2 ** 20),
    ("KV cache MiB (ideal)", lambda c: c.kv_bytes_ideal, 2 ** 20),
    ("parameters MiB", lambda c: c.param_bytes, 2 ** 20),
]


def _num(x: float) -> str:
    return f"{x:,.1f}" if abs(x) >= 1000 else f"{x:.4g}"


def format_table(costs: dict[str, Cost]) -> str:
    """Rows of ROWS; columns dense, plan, text-only, plan/dense, share of the vision cost the plan removes."""
    dense, plan, text = costs["dense"], costs["plan"], costs["text_only"]
    header = f"{'':32}{'dense':>12}{'plan':>12}{'text-only':>12}{'plan/dense':>12}{'vision removed':>16}"
    lines = [header]
    for label, get, unit in ROWS:
        a, b, t = get(dense), get(plan), get(text)
        ratio = f"{b / a:.3f}" if a else "-"
        removed = f"{100 * (a - b) / (a - t):.1f}%" if a != t else "-"
        lines.append(f"{label:32}{_num(a / unit):>12}{_num(b / unit):>12}{_num(t / unit):>12}{ratio:>12}{removed:>16}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    summary, rest = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(prog="python -m models.cost", description=summary, epilog=rest,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help=f"model preset: {', '.join(sorted(PRESETS))}")
    p.add_argument("--plan", default="dense", help="plan JSON file or 'dense' (default)")
    p.add_argument("--image-size", type=int, help="replace the preset's image size (changes the token count)")
    p.add_argument("--prompt-tokens", type=int, default=32, help="tokens after the image (default 32)")
    p.add_argument("--prefix-tokens", type=int, help="tokens before the image; default: an estimate of the "
                   f"preset's template ({', '.join(f'{k} {v}' for k, v in PREFIX_TOKENS.items())})")
    p.add_argument("--new-tokens", type=int, default=1, help="decode steps (default 1)")
    p.add_argument("--max-seq-len", type=int, help="replace the text KV capacity")
    p.add_argument("--projector", choices=["stf"], help="plan column only: swap the projector for STF, k=2 "
                   "(the dense column keeps the preset's projector)")
    p.add_argument("--kv-bytes", type=int, default=4, help="bytes per K/V element (default 4: fp32)")
    p.add_argument("--param-bytes", type=int, default=4, help="bytes per parameter (default 4: fp32)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p


def _configs(args, parser) -> tuple[ModelConfig, ModelConfig]:
    """(dense config, plan config) from the flags; bad values end in parser.error (exit 2)."""
    try:
        cfg = preset(args.preset)
    except ValueError as e:
        parser.error(str(e))
    if args.image_size is not None:
        if args.image_size <= 0 or args.image_size % cfg.vision.stride:
            parser.error(f"--image-size {args.image_size} is not a positive multiple of the encoder stride "
                         f"{cfg.vision.stride}")
        cfg = cfg.replace(vision={"image_size": args.image_size})
    if args.max_seq_len is not None:
        cfg = cfg.replace(decoder={"max_seq_len": args.max_seq_len})
    planned = cfg.replace(projector={"kind": "stf", "k": 2, "mbtf_blocks": ()}) if args.projector else cfg
    for c in (cfg, planned):
        if c.vision.grid % c.projector.reduction:
            parser.error(f"the {c.vision.grid}x{c.vision.grid} token grid is not divisible by the "
                         f"{c.projector.kind} projector's k={c.projector.reduction}")
    return cfg, planned


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    cfg, planned = _configs(args, parser)
    prefix = args.prefix_tokens if args.prefix_tokens is not None else PREFIX_TOKENS.get(cfg.family, 0)
    shape = dict(prefix_tokens=prefix, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                 kv_dtype_bytes=args.kv_bytes, param_dtype_bytes=args.param_bytes)
    try:
        d = planned.decoder
        plan = load_plan(args.plan, d.num_layers, d.num_heads, planned.num_vision_tokens)
        costs = {"dense": estimate(cfg, "dense", **shape), "plan": estimate(planned, plan, **shape),
                 "text_only": estimate(cfg, "dense", **shape, image=False)}
    except (PlanError, ValueError) as e:
        parser.error(str(e))
    if args.json:
        print(json.dumps({"preset": args.preset, "image_size": cfg.vision.image_size, "plan": plan.to_dict(),
                          "projector": asdict(planned.projector), **shape,
                          "costs": {k: c.to_dict() for k, c in costs.items()}}, indent=2))
        return 0
    print(f"{args.preset}: {cfg.vision.image_size} px, {cfg.num_vision_tokens} vision tokens "
          f"(plan: {planned.num_vision_tokens}, projector {planned.projector.kind}); text {prefix} before the image, "
          f"{args.prompt_tokens} after, {args.new_tokens} decode step(s); max_seq_len {cfg.decoder.max_seq_len}")
    print(f"plan {plan.name!r}: {' '.join(m[0] for m in plan.modes)} (f=full c=cross t=text e=exit)"
          + "".join(f", {k} {v}" for k, v in plan.to_dict().items() if k not in ("name", "modes")))
    print(format_table(costs))
    print("graph: what the static-shape graphs compute (masked keys included); ideal: only the keys a query "
          "can see.\nFLOPs count matmuls/convs only (2 per multiply-add), as FlopCounterMode does.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
