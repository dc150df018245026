"""Core ML target: one .mlpackage per method, ML Program for iOS 18, KV cache as Core ML state (the iOS path).

Every method goes through the same steps (as Apple's ml-stable-diffusion does): wrap, capture, convert,
save, read the saved spec back and check it against the declared I/O, check the captured program against
PyTorch eager. Capture (see `capture`): the stateful text_decoder by `torch.jit.trace`, the path the
split-kv probes converted with ct.StateType (TOOLCHAIN.md: the torch.export path froze state into constants);
the stateless methods by `torch.export`, because coremltools 9.0 under numpy 2 fails on the `int(size)` ops
a trace records for static shapes (timm's attention, the vision prefill). The decoder is a private copy
with two transforms: `use_slice_cache_writes` (index_copy_ converts on neither path; a slice write becomes
a state slice_update) and `use_shaped_text_masks` (works around a coremltools `where` typing bug).

Split layout (any plan). One MLState shared by two functions of a multifunction package converts, but
whether one state drives both at run time cannot be tested on Linux (TOOLCHAIN.md), so this builds the
fallback that is provable here:
  vision_prefill  stateless. In: vision_embeds, start_pos, and the text K/V of each `full` layer it runs
                  (the image attends to the text before it: the runtime reads them from the text decoder's
                  state, MLState.read_state / withMultiArray, zeros when no text precedes the image).
                  Out: vision_states, and the vision K/V of every full/cross layer (fp16).
  text_decoder    stateful. In: embeds, pos, slot, select, and those vision K/V (zeros before the image).
                  State: the text K/V of every layer (+ topk_keep when the plan keeps top-k).
Vision K/V are bound in place of the decoder's vision buffers while tracing (no copy in the graph, and no
read-only state). Text and exit layers have no vision K/V anywhere.
Shared layout (dense plan): vision_encoder, token_embedding, text_decoder(embeds, input_pos) with one cache.

Core ML has no int64 or bool inputs: ids, positions and slots are int32, `select` is int32 (nonzero ends
the prompt). The chunk length is ct.RangeDim(1, capacity) on embeds/pos/ids (one symbol per method), so
the runtime passes any prefill chunk and the decode step as they are. ct.EnumeratedShapes converts too
(tried with lengths 1/8/32/128); it would make the runtime split chunks into the listed lengths, which the
ANE prefers: a later option, not the default.

On Linux the saved program is also checked for what can be seen without running it: every state is
written, no output was folded to a constant, no zero-size tensor. On macOS the build runs the packages
on the checked sequence ("device_parity"); elsewhere that is reported as pending.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from models.decoder import NEG_INF, Decoder, Masks, use_slice_cache_writes
from models.vlm import VLM, Cursor

from . import graphs

PRECISIONS = ("fp16", "fp32")
NP_DTYPES = {"float16": np.float16, "float32": np.float32, "int32": np.int32}
SPEC_DTYPES = {65552: "float16", 65568: "float32", 131104: "int32", 65600: "float64"}  # ArrayDataType
COREML_DTYPES = {"int64": "int32", "bool": "int32", "float32": "float32"}  # no int64 / bool I/O in Core ML


# ---------------------------------------------------------------- wrappers (what gets traced)

@contextlib.contextmanager
def _bound(module_tensors):
    """Temporarily bind tensors in place of module buffers: [(module, buffer_name, tensor)]."""
    saved = [(m, n, getattr(m, n)) for m, n, _ in module_tensors]
    try:
        for m, n, t in module_tensors:
            setattr(m, n, t)
        yield
    finally:
        for m, n, t in saved:
            setattr(m, n, t)


def _kv_layers(decoder: Decoder):
    """(layers whose text K/V vision_prefill reads: `full`, layers that store vision K/V: full/cross),
    as (index, layer)."""
    reads = [(i, layer) for i, layer in enumerate(decoder.layers) if layer.mode == "full"]
    stores = [(i, layer) for i, layer in enumerate(decoder.layers) if layer.attends_vision]
    return reads, stores


class VisionPrefill(nn.Module):
    """Stateless: forward_vision with the given text K/V; returns vision states + the vision K/V it wrote."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder
        self.reads, self.stores = _kv_layers(decoder)

    def forward(self, vision_embeds, start_pos, *text_kv):
        fresh = [torch.empty(layer.vision_k.shape) for _, layer in self.stores for _ in range(2)]  # copy_ targets
        binds = [(layer, n) for _, layer in self.reads for n in ("text_k", "text_v")]
        binds += [(layer, n) for _, layer in self.stores for n in ("vision_k", "vision_v")]
        with _bound([(m, n, t) for (m, n), t in zip(binds, list(text_kv) + fresh)]):
            states = self.decoder.forward_vision(vision_embeds, start_pos[0].long())
        return (states, *fresh)


class TextDecoder(nn.Module):
    """Split layout: the text K/V are state; the vision K/V come in as inputs (zeros before the image)."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder
        self.stores = _kv_layers(decoder)[1]

    def forward(self, embeds, pos, slot, select, *vision_kv):
        binds = [(layer, n) for _, layer in self.stores for n in ("vision_k", "vision_v")]
        with _bound([(m, n, t) for (m, n), t in zip(binds, vision_kv)]):
            return self.decoder.forward_text(embeds, pos.long(), slot[0].long(), select[0] > 0)


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
    """Spec name of a layer's K/V (the state's attribute path, dots as underscores, as coremltools writes)."""
    return f"decoder_layers_{i}_{buf}"


def _t(name, shape, dtype) -> dict:
    return {"name": name, "shape": list(shape), "dtype": dtype}


def capacity(vlm: VLM) -> int:
    """Longest chunk a text_decoder call takes = text KV capacity (the shared decoder's includes the image)."""
    return vlm.decoder.cfg.max_seq_len


def declared_methods(vlm: VLM, layout: str) -> dict[str, dict]:
    """Per method: inputs, outputs, states (name, shape, dtype) as the .mlpackage must declare them;
    "seq" in a shape is the chunk length, 1 .. seq_range[1]."""
    dec = vlm.decoder
    base = graphs.methods(vlm.cfg, layout, dec.cfg.hidden_size)
    out = {}
    for name, m in base.items():
        out[name] = {"inputs": [_t(t.name, t.shape, COREML_DTYPES[t.dtype]) for t in m.inputs],
                     "outputs": [_t(t.name, t.shape, t.dtype) for t in m.outputs], "states": []}
        if any("seq" in t.shape for t in m.inputs):
            out[name]["seq_range"] = [1, capacity(vlm)]
    text_shape, vision_shape = dec.layers[0].text_k.shape, (1, dec.cfg.num_kv_heads, dec.num_vision, dec.cfg.head_dim)
    out["text_decoder"]["states"] = [_t(_name(i, b), text_shape, "float16")
                                     for i in range(len(dec.layers)) for b in ("text_k", "text_v")]
    if dec.plan.keep_topk is not None:
        out["text_decoder"]["states"].append(_t("decoder_topk_keep", (dec.num_vision,), "float16"))
    if layout == "split":
        reads, stores = _kv_layers(dec)
        vision_kv = [_t(_name(i, b), vision_shape, "float16") for i, _ in stores for b in ("vision_k", "vision_v")]
        out["vision_prefill"]["inputs"] += [_t(_name(i, b), text_shape, "float16")
                                            for i, _ in reads for b in ("text_k", "text_v")]
        out["vision_prefill"]["outputs"] += vision_kv
        out["text_decoder"]["inputs"] += vision_kv
    return out


def _kv_io(tensors: list[dict], kind: str) -> list[dict]:
    """The K/V among declared tensors: kind "vision" or "text"."""
    return [t for t in tensors if t["name"].endswith((f"_{kind}_k", f"_{kind}_v"))]


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


# ---------------------------------------------------------------- parity of the traced program (and of Core ML)

def _inputs(cfg, seed=7, n_prefix=4, n_question=5):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.decoder.vocab_size, (1, n_prefix + n_question), generator=g)
    pixels = torch.rand(1, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    return ids[:, :n_prefix], pixels, ids[:, n_prefix:]


@torch.no_grad()
def eager_reference(vlm: VLM, layout: str, prefix, pixels, question, n_decode=2) -> dict:
    """Stage outputs of the PyTorch model itself (its own cache writes, not the Core ML copy)."""
    dec, out = vlm.decoder, {}
    dec.reset()
    if layout == "shared":  # graphs.SharedTextDecoder is the shared layout's definition
        step, n = graphs.SharedTextDecoder(vlm), prefix.shape[1]
        out["prefix"] = step(dec.embed(prefix), torch.tensor([0]))
        out["vision_embeds"] = vlm.encode_image(pixels)
        step(out["vision_embeds"], torch.tensor([n]))
        at = n + out["vision_embeds"].shape[1]
        logits = out["question"] = step(dec.embed(question), torch.tensor([at]))
        at += question.shape[1]
        decode = lambda token, at: step(dec.embed(torch.tensor([[token]])), torch.tensor([at]))  # noqa: E731
    else:
        cur = Cursor()
        out["prefix"] = vlm.prefill_text(cur, prefix)
        out["vision_embeds"] = vlm.encode_image(pixels)
        vlm.prefill_image(cur, out["vision_embeds"])
        logits = out["question"] = vlm.prefill_text(cur, question, select_topk=True)
        decode = lambda token, at: vlm.decode(cur, token)  # noqa: E731
        at = 0
    tokens, steps = [int(logits[0, -1].argmax())], []
    for i in range(n_decode):
        steps.append(decode(tokens[-1], at + i))
        tokens.append(int(steps[-1][0, -1].argmax()))
    dec.reset()
    return {**out, "decode": torch.cat(steps), "tokens": tokens}


def drive(run, layout: str, num_vision: int, prefix, pixels, question, tokens) -> dict:
    """The conversation through a backend `run` (embed/encode/text/vision): same stages as eager_reference,
    decoding the reference's tokens."""
    run.reset()
    n, q = prefix.shape[1], question.shape[1]
    out = {"prefix": run.text(run.embed(prefix), 0, 0, False)}
    vision = out["vision_embeds"] = run.encode(pixels)
    if layout == "shared":
        run.text(vision, n, n, False)
    else:
        run.vision(vision, n)
    slot = n + (num_vision if layout == "shared" else 0)
    out["question"] = run.text(run.embed(question), n + num_vision, slot, True)
    steps = [run.text(run.embed(torch.tensor([[t]])), n + num_vision + q + i, slot + q + i, False)
             for i, t in enumerate(tokens[:-1])]
    out["decode"] = torch.cat(steps)
    out["tokens"] = [int(x[0, -1].argmax()) for x in [out["question"], *steps]]
    return out


class TracedRun:
    """The traced modules handed to coremltools; fp16_kv rounds K/V state and vision K/V I/O to fp16 as
    Core ML stores them."""

    def __init__(self, traced: dict, decl: dict, layout: str, fp16_kv: bool):
        self.m, self.decl, self.layout, self.fp16 = traced, decl, layout, fp16_kv
        self.state = dict(traced["text_decoder"].named_buffers())
        self.state = {s["name"]: self.state[_state_fqn(s["name"])] for s in decl["text_decoder"]["states"]}

    def _kv(self, t):
        return t.half().float() if self.fp16 else t

    def reset(self):
        for name, buf in self.state.items():
            buf.fill_(1.0 if name.endswith("topk_keep") else 0.0)
        self.vision_kv = [torch.zeros(t["shape"]) for t in _kv_io(self.decl["text_decoder"]["inputs"], "vision")]

    def embed(self, ids):
        return self.m["token_embedding"](ids.int())

    def encode(self, pixels):
        return self.m["vision_encoder"](pixels)

    def text(self, embeds, pos: int, slot: int, select: bool):
        i32 = lambda x: torch.tensor(x, dtype=torch.int32)  # noqa: E731
        if self.layout == "shared":
            logits = self.m["text_decoder"](embeds, i32([pos]))
        else:
            logits = self.m["text_decoder"](embeds, i32(list(range(pos, pos + embeds.shape[1]))), i32([slot]),
                                            i32([int(select)]), *self.vision_kv)
        for buf in self.state.values():
            buf.copy_(self._kv(buf))
        return logits

    def vision(self, vision_embeds, start: int):
        text_kv = [self.state[t["name"]] for t in _kv_io(self.decl["vision_prefill"]["inputs"], "text")]
        out = self.m["vision_prefill"](vision_embeds, torch.tensor([start], dtype=torch.int32), *text_kv)
        self.vision_kv = [self._kv(t) for t in out[1:]]


class CoreMLRun:
    """The saved packages through Core ML (macOS 15+ only), same interface as TracedRun."""

    def __init__(self, out_dir: Path, decl: dict, layout: str, ct):
        self.m = {name: ct.models.MLModel(str(out_dir / f"{name}.mlpackage")) for name in decl}
        self.decl, self.layout = decl, layout

    def reset(self):
        self.state = self.m["text_decoder"].make_state()
        for s in self.decl["text_decoder"]["states"]:
            if s["name"].endswith("topk_keep"):
                self.state.write_state(s["name"], np.ones(s["shape"], np.float16))
        self.vision_kv = {t["name"]: np.zeros(t["shape"], np.float16)
                          for t in _kv_io(self.decl["text_decoder"]["inputs"], "vision")}

    def embed(self, ids):
        return torch.from_numpy(self.m["token_embedding"].predict({"ids": ids.numpy().astype(np.int32)})["embeds"])

    def encode(self, pixels):
        out = self.m["vision_encoder"].predict({"pixels": pixels.numpy()})["vision_embeds"]
        return torch.from_numpy(out.astype(np.float32))

    def text(self, embeds, pos: int, slot: int, select: bool):
        x = {"embeds": embeds.numpy().astype(np.float32)}
        if self.layout == "shared":
            x["input_pos"] = np.array([pos], np.int32)
        else:
            x.update(pos=np.arange(pos, pos + embeds.shape[1], dtype=np.int32), slot=np.array([slot], np.int32),
                     select=np.array([int(select)], np.int32), **self.vision_kv)
        return torch.from_numpy(self.m["text_decoder"].predict(x, state=self.state)["logits"].astype(np.float32))

    def vision(self, vision_embeds, start: int):
        x = {"vision_embeds": vision_embeds.numpy(), "start_pos": np.array([start], np.int32)}
        x.update({t["name"]: self.state.read_state(t["name"]) for t in _kv_io(self.decl["vision_prefill"]["inputs"], "text")})
        out = self.m["vision_prefill"].predict(x)
        self.vision_kv = {name: out[name] for name in self.vision_kv}


def compare_stages(ref: dict, got: dict) -> dict:
    from runtime.parity import compare

    stages = {k: compare(ref[k].numpy(), got[k].numpy()) for k in ("vision_embeds", "prefix", "question", "decode")}
    return {"stages": stages, "min_psnr_db": min(s["psnr_db"] for s in stages.values()),
            "tokens_match": got["tokens"] == ref["tokens"]}


# ---------------------------------------------------------------- the target

def quantize_int4(mlm, ct, block_size: int = 32):
    """Weights of the converted program to int4, symmetric, one scale per block of `block_size` input
    channels (iOS 18 `constexpr_blockwise_shift_scale`); compute stays in the build's precision."""
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

    config = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                     block_size=block_size, weight_threshold=512)
    return linear_quantize_weights(mlm, OptimizationConfig(global_config=config))


def build(vlm: VLM, layout: str, out_dir: Path, tokenizer_info: dict, log, compute_precision: str = "fp16",
          quant: str = "none") -> dict:
    """Trace, convert, save, check. Returns {"files", "timings", "methods", "checks"}."""
    import coremltools as ct

    if compute_precision not in PRECISIONS:
        raise ValueError(f"compute_precision {compute_precision!r}; valid: {', '.join(PRECISIONS)}")
    if layout not in ("split", "shared"):
        raise ValueError(f"unknown KV layout {layout!r}; valid layouts: split, shared")
    if layout == "shared" and vlm.decoder.num_vision:
        vlm = graphs.shared_layout_model(vlm)  # build.py hands over the re-housed model already
    start, decl = time.perf_counter(), declared_methods(vlm, layout)
    timings, methods, traced, checks = {}, {}, {}, {"spec": {}}
    for name, module in coreml_modules(vlm, layout).items():
        t0 = time.perf_counter()
        program, traced[name] = capture(module, decl[name])
        t1 = time.perf_counter()
        try:
            with warnings.catch_warnings():  # state names: dots become underscores, as declared
                warnings.filterwarnings("ignore", message=r"Input, '.*' has been renamed")
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
            f"{len(spec['states'])} states")
    checks.update(parity_checks(vlm, layout, traced, decl, out_dir, ct))
    device = checks["device_parity"]
    device = device if isinstance(device, str) else f"min PSNR {device['min_psnr_db']:.1f} dB"
    log(f"traced vs eager: min PSNR {checks['traced_vs_eager']['min_psnr_db']:.1f} dB, fp16 K/V "
        f"{checks['traced_vs_eager_fp16_kv']['min_psnr_db']:.1f} dB; device parity: {device}")
    timings["total_s"] = round(time.perf_counter() - start, 2)
    return {"files": [m["file"] for m in methods.values()], "timings": timings, "methods": methods, "checks": checks}


def parity_checks(vlm: VLM, layout: str, traced: dict, decl: dict, out_dir: Path, ct) -> dict:
    prefix, pixels, question = _inputs(vlm.cfg)
    ref = eager_reference(vlm, layout, prefix, pixels, question)
    nv = vlm.cfg.num_vision_tokens
    with torch.no_grad():
        exact = drive(TracedRun(traced, decl, layout, False), layout, nv, prefix, pixels, question, ref["tokens"])
        fp16 = drive(TracedRun(traced, decl, layout, True), layout, nv, prefix, pixels, question, ref["tokens"])
    out = {"traced_vs_eager": compare_stages(ref, exact), "traced_vs_eager_fp16_kv": compare_stages(ref, fp16)}
    if sys.platform == "darwin":
        got = drive(CoreMLRun(out_dir, decl, layout, ct), layout, nv, prefix, pixels, question, ref["tokens"])
        out["device_parity"] = compare_stages(ref, got)
    else:
        out["device_parity"] = "pending: needs macOS"
    return out


def linux_parity(manifest: dict) -> dict:
    """parity.json of a Core ML build: device parity judged by the build dtype's floors where it ran (macOS);
    elsewhere the traced program's check judged by the fp32 floors, with status "pending" if it passed."""
    from runtime.parity import judge

    checks = manifest.get("checks", {})
    device = checks.get("device_parity")
    if isinstance(device, dict):
        return judge(device["stages"], device["tokens_match"], manifest.get("dtype", "fp16"), manifest.get("quant", "none"))
    traced = checks["traced_vs_eager"]
    report = judge(traced["stages"], traced["tokens_match"], "fp32")
    report.update(status="pending" if report["passed"] else "failed", device_parity=device,
                  checked="the traced program handed to coremltools, against PyTorch eager")
    return report
