"""Core ML target: one .mlpackage per method, ML Program for iOS 18, KV cache as Core ML state (the iOS path).

Every method goes through the same steps (as Apple's ml-stable-diffusion does): wrap, capture, convert,
save, read the saved spec back and check it against the declared I/O, check the captured program against
PyTorch eager. Capture (see `capture`): the stateful text_decoder by `torch.jit.trace`, the path the
split-kv probes converted with ct.StateType (the torch.export path froze the state into constants);
the stateless methods by `torch.export`, because coremltools 9.0 under numpy 2 fails on the `int(size)` ops
a trace records for static shapes (timm's attention, the vision prefill). The decoder is a private copy
with two transforms: `use_slice_cache_writes` (index_copy_ converts on neither path; a slice write becomes
a state slice_update) and `use_shaped_text_masks` (works around a coremltools `where` typing bug).

Split layout (any plan), the runner protocol of every target (models/protocol.py): no state crosses methods.
  vision_prefill  stateless. In: vision_embeds, start_pos, prefix_embeds (the text before the image, run again
                  through the layers up to the last `full` one, where the image attends to it).
                  Out: vision_states, and the vision K/V of every full/cross layer (fp16).
  text_decoder    stateful. In: embeds, pos, slot, select, and those vision K/V (zeros before the image).
                  State: the text K/V of every layer (+ topk_keep when the plan keeps top-k).
Shared layout (dense plan): vision_encoder, token_embedding, text_decoder(embeds, input_pos) with one cache.

Core ML has no int64 or bool inputs: ids, positions and slots are int32, `select` is int32 (nonzero ends
the prompt). The chunk length is ct.RangeDim(1, capacity) on embeds/pos/ids (one symbol per method), so
the runtime passes any prefill chunk and the decode step as they are. ct.EnumeratedShapes converts too
(tried with lengths 1/8/32/128); it would make the runtime split chunks into the listed lengths, which the
ANE prefers: a later option, not the default.

On Linux the saved program is also checked for what can be seen without running it: every state is
written, no output was folded to a constant, no zero-size tensor. On macOS the build runs the packages
through runtime/coreml_backend.py (runtime.check, as every target); elsewhere the prediction check is pending
and parity.json says what was checked instead (export/coreml_checks.py).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from models.decoder import NEG_INF, Decoder, Masks, use_slice_cache_writes
from models.protocol import KVLayout
from models.vlm import VLM

from . import graphs
from .coreml_checks import traced_stages

PRECISIONS = ("fp16", "fp32")
NP_DTYPES = {"float16": np.float16, "float32": np.float32, "int32": np.int32}
SPEC_DTYPES = {65552: "float16", 65568: "float32", 131104: "int32", 65600: "float64"}  # ArrayDataType
COREML_DTYPES = {"int64": "int32", "bool": "int32", "float32": "float32"}  # no int64 / bool I/O in Core ML


# ---------------------------------------------------------------- wrappers (what gets traced)

class VisionPrefill(nn.Module):
    """Stateless: the image after start_pos text tokens (their embeddings: prefix_embeds) -> vision states
    and the vision K/V of every full/cross layer."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, vision_embeds, start_pos, prefix_embeds):
        states, kv = self.decoder.forward_vision(vision_embeds, start_pos[0].long(), prefix_embeds)
        # `* 1.0`: with no full layer the states are the input itself, and coremltools refuses an output that
        # is the program's input ("Main block's input name ... is different from its corresponding var")
        return (states * 1.0, *kv)


class TextDecoder(nn.Module):
    """Split layout: the text K/V are state; the vision K/V come in as inputs (zeros before the image)."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, embeds, pos, slot, select, *vision_kv):
        return self.decoder.forward_text(embeds, pos.long(), slot[0].long(), select[0] > 0, vision_kv=list(vision_kv))


class SharedTextDecoder(nn.Module):
    """Shared layout: one cache where slot == position; image embeddings go in like text."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, embeds, input_pos):
        start = input_pos[0].long()
        return self.decoder.forward_text(embeds, start + torch.arange(embeds.shape[1]), start)


class TokenEmbedding(nn.Module):
    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, ids):
        return self.decoder.embed(ids.long())


def use_shaped_text_masks(decoder: Decoder) -> Decoder:
    """Transform: build the text-chunk masks with `masked_fill` on full-shaped zeros, not
    `where(cond, 0.0, -inf)`. Same values; coremltools 9.0 types `where` with two scalar branches from the
    branches alone, so with the dynamic chunk length in `cond` the mask became a scalar in MIL."""
    S, nv = decoder.cfg.max_seq_len, decoder.num_vision

    def text_masks(pos, slots, select_topk):
        hidden = torch.arange(S)[None, :] > slots[:, None]  # (T, S): text keys after the query's slot
        text = torch.zeros_like(hidden, dtype=torch.float32).masked_fill(hidden, NEG_INF)
        before_image = ((pos - slots) != nv)[:, None].expand(-1, nv)  # (T, N_v): no image before the query
        vision = torch.zeros_like(before_image, dtype=torch.float32).masked_fill(before_image, NEG_INF)
        return Masks(text, vision[None] + decoder.head_bias, select_topk)

    decoder._text_masks = text_masks
    return decoder


def coreml_modules(vlm: VLM, layout: str) -> dict[str, nn.Module]:
    """The wrappers, over a private copy of the decoder with slice cache writes and shaped masks."""
    decoder = use_shaped_text_masks(use_slice_cache_writes(copy.deepcopy(vlm.decoder))).eval()
    mods = {"vision_encoder": graphs.VisionEncoder(vlm), "token_embedding": TokenEmbedding(decoder)}
    if layout == "shared":
        mods["text_decoder"] = SharedTextDecoder(decoder)
    else:
        mods["vision_prefill"] = VisionPrefill(decoder)
        mods["text_decoder"] = TextDecoder(decoder)
    return {name: m.eval() for name, m in mods.items()}


def capture(module: nn.Module, decl: dict):
    """The program handed to coremltools, and a callable that runs exactly it: torch.jit.trace for a
    stateful method, torch.export for the others (traced static `int(size)` ops fail in coremltools 9.0
    under numpy 2: "only 0-dimensional arrays can be converted to Python scalars")."""
    example = example_inputs(decl)
    with torch.no_grad():
        if decl["states"]:
            traced = torch.jit.trace(module, example, check_trace=False)
            return traced, traced
        seq = torch.export.Dim("seq", min=1, max=decl["seq_range"][1]) if "seq_range" in decl else None
        dims = tuple({i: seq for i, d in enumerate(t["shape"]) if d == "seq"} or None for t in decl["inputs"])
        ep = torch.export.export(module, example, dynamic_shapes=dims if seq else None, strict=False)
        ep = ep.run_decompositions({})
        return ep, ep.module()



# ---------------------------------------------------------------- declared I/O

def _name(i: int, buf: str) -> str:
    """Spec name of a layer's text K/V state (its attribute path, dots as underscores, as coremltools writes)."""
    return f"decoder_layers_{i}_{buf}"


def _t(name, shape, dtype) -> dict:
    return {"name": name, "shape": list(shape), "dtype": dtype}


def declared_methods(vlm: VLM, kv: KVLayout) -> dict[str, dict]:
    """Per method: inputs, outputs, states (name, shape, dtype) as the .mlpackage must declare them;
    "seq" in a shape is the chunk length, 1 .. seq_range[1]. The vision K/V travel as float16."""
    dec = vlm.decoder
    out = {}
    vision_kv = set(kv.vision_kv_names())
    for name, m in graphs.methods(vlm.cfg, kv).items():
        def io(t):
            return _t(t.name, t.shape, "float16" if t.name in vision_kv else COREML_DTYPES[t.dtype])
        out[name] = {"inputs": [io(t) for t in m.inputs], "outputs": [io(t) for t in m.outputs], "states": []}
        if any("seq" in t.shape for t in m.inputs):
            out[name]["seq_range"] = [1, kv.text_rows]
    text_shape = dec.layers[0].text_k.shape
    out["text_decoder"]["states"] = [_t(_name(i, b), text_shape, "float16")
                                     for i in range(len(dec.layers)) for b in ("text_k", "text_v")]
    if dec.plan.keep_topk is not None:
        out["text_decoder"]["states"].append(_t("decoder_topk_keep", (dec.num_vision,), "float16"))
    return out


def _state_fqn(spec_name: str) -> str:
    """decoder_layers_0_text_k -> decoder.layers.0.text_k (the buffer's path in the traced wrapper)."""
    m = re.fullmatch(r"decoder_layers_(\d+)_(\w+)", spec_name)
    return f"decoder.layers.{m[1]}.{m[2]}" if m else spec_name.replace("decoder_", "decoder.", 1)


def example_inputs(decl: dict, seq: int = 3) -> tuple[torch.Tensor, ...]:
    """Distinct example tensors: float inputs random, positions 0..seq-1, other ints zero."""
    g = torch.Generator().manual_seed(0)
    out = []
    for t in decl["inputs"]:
        shape = tuple(seq if d == "seq" else d for d in t["shape"])
        if t["dtype"].startswith("float"):
            out.append(torch.rand(shape, generator=g))  # fp16 I/O: traced in fp32, coremltools casts
        elif t["name"] == "pos":
            out.append(torch.arange(seq, dtype=torch.int32))
        else:
            out.append(torch.zeros(shape, dtype=torch.int32))
    return tuple(out)


# ---------------------------------------------------------------- convert, save, check the spec

def convert(traced, decl: dict, precision: str, ct):
    seq = ct.RangeDim(1, decl["seq_range"][1], default=1) if "seq_range" in decl else None
    inputs = [ct.TensorType(name=t["name"], shape=tuple(seq if d == "seq" else d for d in t["shape"]),
                            dtype=NP_DTYPES[t["dtype"]]) for t in decl["inputs"]]
    outputs = [ct.TensorType(name=t["name"], dtype=NP_DTYPES[t["dtype"]]) for t in decl["outputs"]]
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=tuple(s["shape"]), dtype=np.float16),
                           name=_state_fqn(s["name"])) for s in decl["states"]]
    return ct.convert(traced, inputs=inputs, outputs=outputs, states=states or None, convert_to="mlprogram",
                      minimum_deployment_target=ct.target.iOS18, skip_model_load=True,
                      compute_precision={"fp16": ct.precision.FLOAT16, "fp32": ct.precision.FLOAT32}[precision])


def _spec_array(name: str, arr) -> dict:
    ranges = list(arr.shapeRange.sizeRanges)
    shape = ([r.lowerBound if r.lowerBound == r.upperBound else [r.lowerBound, r.upperBound] for r in ranges]
             if ranges else list(arr.shape))
    return _t(name, shape, SPEC_DTYPES.get(arr.dataType, str(arr.dataType)))


def read_spec(path: Path, ct) -> dict:
    """Inputs, outputs and states of a saved .mlpackage, as the runtime will see them, and facts about its
    program that Linux can check without running it (ops, states written, outputs folded to constants)."""
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    d, fn = spec.description, spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    producer = {o.name: op for op in block.operations for o in op.outputs}

    def source(name):  # the op behind an output, through identity / cast
        op = producer.get(name)
        while op is not None and op.type in ("identity", "cast"):
            op = producer.get(op.inputs["x"].arguments[0].name)
        return op

    values = [o.type.tensorType for op in block.operations for o in op.outputs]
    return {"inputs": [_spec_array(f.name, f.type.multiArrayType) for f in d.input],
            "outputs": [_spec_array(f.name, f.type.multiArrayType) for f in d.output],
            "states": [_spec_array(s.name, s.type.stateType.arrayType) for s in d.state],
            "program": {"ops": len(block.operations),
                        "written_states": [op.inputs["input"].arguments[0].name for op in block.operations
                                           if op.type == "write_state"],
                        "constant_outputs": [n for n in block.outputs if getattr(source(n), "type", "") == "const"],
                        "zero_size_values": sum(any(x.WhichOneof("dimension") == "constant" and x.constant.size == 0
                                                    for x in t.dimensions) for t in values)}}


def check_spec(method: str, decl: dict, spec: dict) -> None:
    """Raise a ValueError listing every difference between the declared I/O and the saved spec.
    An output whose spec carries no shape (coremltools leaves dynamic ones out) is checked by name and dtype."""
    problems = []
    for kind in ("inputs", "outputs", "states"):
        want = [dict(t, shape=[decl.get("seq_range") if d == "seq" else d for d in t["shape"]]) for t in decl[kind]]
        got = spec[kind]
        if [t["name"] for t in want] != [t["name"] for t in got]:
            problems.append(f"{kind}: declared {[t['name'] for t in want]}, spec has {[t['name'] for t in got]}")
            continue
        for w, g in zip(want, got):
            if w["dtype"] != g["dtype"] or (w["shape"] != g["shape"] and not (kind == "outputs" and not g["shape"])):
                problems.append(f"{kind} {w['name']}: declared {w['shape']} {w['dtype']}, spec {g['shape']} {g['dtype']}")
    prog = spec["program"]
    unwritten = [t["name"] for t in decl["states"] if t["name"] not in prog["written_states"]]
    if unwritten:
        problems.append(f"states never written: {unwritten}")
    if prog["constant_outputs"]:
        problems.append(f"outputs folded to constants (their inputs were frozen): {prog['constant_outputs']}")
    if prog["zero_size_values"]:
        problems.append(f"{prog['zero_size_values']} zero-size tensors in the program")
    if problems:
        raise ValueError(f"Core ML {method}: the saved program does not match its declared I/O:\n  "
                         + "\n  ".join(problems))


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ---------------------------------------------------------------- the target

def quantize_int4(mlm, ct, block_size: int = 32):
    """Weights of the converted program to int4, symmetric, one scale per block of `block_size` input
    channels (iOS 18 `constexpr_blockwise_shift_scale`); compute stays in the build's precision."""
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

    config = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                     block_size=block_size, weight_threshold=512)
    return linear_quantize_weights(mlm, OptimizationConfig(global_config=config))


def build(vlm: VLM, kv: KVLayout, out_dir: Path, tokenizer_info: dict, log, compute_precision: str = "fp16",
          quant: str = "none") -> dict:
    """Trace, convert, save, check. Returns {"files", "timings", "methods", "checks"}."""
    import coremltools as ct

    if compute_precision not in PRECISIONS:
        raise ValueError(f"compute_precision {compute_precision!r}; valid: {', '.join(PRECISIONS)}")
    layout = kv.layout
    start, decl = time.perf_counter(), declared_methods(vlm, kv)
    timings, methods, traced, checks = {}, {}, {}, {"spec": {}}
    modules = coreml_modules(vlm, layout)
    for i, (name, module) in enumerate(modules.items(), 1):
        log(f"{name} ({i}/{len(modules)}): capture and convert ...")
        t0 = time.perf_counter()
        program, traced[name] = capture(module, decl[name])
        t1 = time.perf_counter()
        try:
            mlm = convert(program, decl[name], compute_precision, ct)
        except Exception as e:
            raise ValueError(f"Core ML {name}: coremltools could not convert it: {type(e).__name__}: {e}") from e
        if quant == "int4":
            mlm = quantize_int4(mlm, ct)
        mlm.short_description = f"foveate {name} ({layout} KV layout, plan {vlm.plan.name})"
        mlm.user_defined_metadata.update({"foveate.method": name, "foveate.layout": layout,
                                          "foveate.plan": json.dumps(vlm.plan.to_dict())})
        path = out_dir / f"{name}.mlpackage"
        shutil.rmtree(path, ignore_errors=True)
        mlm.save(str(path))
        t2 = time.perf_counter()
        spec = read_spec(path, ct)
        check_spec(name, decl[name], spec)
        checks["spec"][name] = {"status": "ok", "ops": spec["program"]["ops"],
                                "states_written": len(spec["program"]["written_states"])}
        methods[name] = {"file": path.name, **decl[name], "bytes": _dir_bytes(path)}
        timings[name] = {"capture_s": round(t1 - t0, 2), "convert_s": round(t2 - t1, 2)}
        log(f"{name}: captured {t1 - t0:.1f} s, converted {t2 - t1:.1f} s, {methods[name]['bytes'] / 1e6:.2f} MB, "
            f"{len(spec['states'])} states ({time.perf_counter() - start:.1f} s in all)")
    log("traced program vs PyTorch eager ...")
    checks["traced_vs_eager"] = traced_stages(vlm, kv, traced, decl, fp16_kv=False)
    checks["traced_vs_eager_fp16_kv"] = traced_stages(vlm, kv, traced, decl, fp16_kv=True)
    log(f"traced vs eager: min PSNR {checks['traced_vs_eager']['min_psnr_db']:.1f} dB, fp16 K/V "
        f"{checks['traced_vs_eager_fp16_kv']['min_psnr_db']:.1f} dB")
    timings["total_s"] = round(time.perf_counter() - start, 2)
    return {"files": [m["file"] for m in methods.values()], "timings": timings, "methods": methods, "checks": checks}

