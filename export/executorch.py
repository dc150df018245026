"""ExecuTorch target: one .pte with every method, XNNPACK-delegated (the Android path).

No state crosses methods (export/graphs.py): text_decoder's text K/V are its own mutable buffers, the
vision K/V are vision_prefill's outputs and text_decoder's inputs, so the .pte runs the same whether the
runtime gives the methods one memory (Python's `executorch.runtime`) or one each (the Android binding).
Settings (docs/design.md §9): mutable buffers planned apart from activations (`share_mutable_buffers=True`, so a
runtime that shares one arena between methods cannot overwrite the text K/V with another method's
activations), graph inputs not copied (`alloc_graph_input=False`: the vision K/V stay in the caller's
memory), `run_reinplace_pass=True` (no whole-cache copy per write), and a partitioner that never lets
XNNPACK take a state buffer as a constant weight.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

from models.protocol import KVLayout
from models.vlm import VLM

from . import graphs

STATE_SUFFIXES = ("_k", "_v", "topk_keep")
PTE_NAME = "model.pte"


def _state_safe_partitioner():
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class StateSafeXnnpackPartitioner(XnnpackPartitioner):
        """Stock XNNPACK partitioning, then untag the placeholders of state buffers: a buffer a method only
        reads would otherwise be baked into the delegate blob with its initial (zero) value."""

        def partition(self, ep):
            result = super().partition(ep)
            to_buffer = ep.graph_signature.inputs_to_buffers
            for node in ep.graph.nodes:
                if node.op == "placeholder" and to_buffer.get(node.name, "").endswith(STATE_SUFFIXES):
                    node.meta.pop("delegation_tag", None)
            return result

    return StateSafeXnnpackPartitioner()


def calibration_pixels(vlm: VLM, n: int = 32) -> list[torch.Tensor]:
    """Images of the shapes task (training split), preprocessed as the runtime does: what the int8
    vision encoder's activation ranges are calibrated on."""
    from data.shapes import render, scene_questions
    from runtime.image import preprocess

    spec = vlm.cfg.image_spec()
    return [torch.from_numpy(preprocess(render(scene_questions("train", i)[0]), spec)) for i in range(n)]


DWCONV_MAX_SIDE = 5  # XNNPACK's depthwise kernels take up to 25 taps; a larger kernel falls back to IGEMM


class SplitDepthwiseConv(torch.nn.Module):
    """A stride-1 depthwise convolution with a kernel wider than 5, computed as the sum of depthwise
    convolutions over tiles of its kernel, each at most 5 x 5, on the zero-padded input.

    XNNPACK runs a 7 x 7 depthwise convolution as a grouped IGEMM with one channel per group, the
    slowest path it has (in int8 slower still than fp32); the tiles run on its depthwise kernels. The
    four tiles of a 7 x 7 kernel (48 x 48 x 192 input, one thread) took 4.0 ms against the IGEMM's 15.2 ms."""

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        k = conv.kernel_size[0]
        step = -(-k // -(-k // DWCONV_MAX_SIDE))  # tiles as even as possible: 7 -> 4 + 3
        spans = [(start, min(start + step, k)) for start in range(0, k, step)]
        self.pad, self.groups = k // 2, conv.groups
        self.tiles = [(r0, r1 - r0, c0, c1 - c0) for r0, r1 in spans for c0, c1 in spans]
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(conv.weight.detach()[:, :, r0:r0 + h, c0:c0 + w].clone(), requires_grad=False)
            for r0, h, c0, w in self.tiles)
        self.bias = None if conv.bias is None else torch.nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    @staticmethod
    def applies(m: torch.nn.Module) -> bool:
        return (isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels == m.out_channels
                and m.kernel_size[0] == m.kernel_size[1] > DWCONV_MAX_SIDE and m.kernel_size[0] % 2 == 1
                and m.stride == (1, 1) and m.dilation == (1, 1) and m.padding_mode == "zeros"
                and m.padding == (m.kernel_size[0] // 2,) * 2)

    def forward(self, x):
        # Each tile convolves the input with the whole kernel's zero padding (inside the convolution:
        # XNNPACK refuses a separate pad of int8 tensors), then keeps the rows and columns the tile's
        # offset in the kernel selects.
        height, width = x.shape[-2:]
        out = None
        for i, ((r0, _, c0, _), weight) in enumerate(zip(self.tiles, self.weights)):
            tile = torch.nn.functional.conv2d(x, weight, self.bias if i == 0 else None, padding=self.pad,
                                              groups=self.groups)[..., r0:r0 + height, c0:c0 + width]
            out = tile if out is None else out + tile
        return out


@contextlib.contextmanager
def depthwise_convs_split(module: torch.nn.Module):
    """Within the block, every wide stride-1 depthwise convolution of `module` is a SplitDepthwiseConv
    (same function, tiles XNNPACK runs fast); restored on exit."""
    swapped = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if SplitDepthwiseConv.applies(child):
                setattr(parent, name, SplitDepthwiseConv(child))
                swapped.append((parent, name, child))
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def export_vision_encoder(vlm: VLM, example: tuple, int8: bool = False, calibration_images: int = 32):
    """The vision_encoder method's program for XNNPACK: wide depthwise convolutions split into tiles,
    and, with int8, PT2E static int8 calibrated on task images."""
    from torch.export import export

    module = graphs.VisionEncoder(vlm)
    with depthwise_convs_split(vlm.vision), torch.no_grad():
        if int8:
            return quantize_vision_int8(module, example, calibration_pixels(vlm, calibration_images))
        return export(module, example, strict=False)


def unshare_batch_norms(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Rewrite, in place, every eval-mode batch norm whose input another node also reads as a per-channel
    multiply-add with constant scale and shift; the graph computes the same.

    `prepare_pt2e` folds a batch norm into the convolution before it without checking that the
    convolution's output has no other reader. FastViT's attention blocks have one: `x = pos_emb(x);
    x = x + attn(norm(x))`, where the residual reads the convolution's output unnormalised. Folded,
    the residual is normalised too: the graph is wrong before a single value is quantized (an empty
    quantizer moved the trained model's vision tokens to a cosine of 0.94 from fp32)."""
    aten = torch.ops.aten
    constants = {**dict(gm.named_parameters()), **dict(gm.named_buffers())}
    for i, node in enumerate(list(gm.graph.nodes)):
        if node.target is not aten.batch_norm.default or node.args[5] or len(node.args[0].users) == 1:
            continue
        x, weight, bias, mean, var = (node.args[0], *(constants[a.target] if a is not None else None
                                                       for a in node.args[1:5]))
        scale = (weight if weight is not None else 1.0) / torch.sqrt(var + node.args[7])
        shift = (bias if bias is not None else 0.0) - mean * scale
        names = (f"_unshared_bn_scale_{i}", f"_unshared_bn_shift_{i}")
        for name, value in zip(names, (scale, shift)):
            gm.register_buffer(name, value.detach().reshape(-1, 1, 1).clone())
        with gm.graph.inserting_before(node):
            scaled = gm.graph.call_function(aten.mul.Tensor, (x, gm.graph.get_attr(names[0])))
            out = gm.graph.call_function(aten.add.Tensor, (scaled, gm.graph.get_attr(names[1])))
        out.meta.update(node.meta)
        node.replace_all_uses_with(out)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def quantize_vision_int8(module: torch.nn.Module, example: tuple, calibration: list[torch.Tensor]):
    """PT2E static int8 (XNNPACK quantizer: per-channel symmetric weights, per-tensor activations) of the
    vision encoder method, activation ranges observed on `calibration` images; returns its program."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                           get_symmetric_quantization_config)
    from torch.export import export
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = unshare_batch_norms(export(module, example, strict=False).module())
    observed = prepare_pt2e(graph, quantizer)
    for pixels in calibration:
        observed(pixels)
    return export(convert_pt2e(observed), example, strict=False)


def export_programs(vlm: VLM, kv: KVLayout, vision_int8: bool = False, vision_kv: str = "io", log=None) -> dict:
    """torch.export every method of the layout (static shapes, a bounded dynamic chunk length); a line
    through `log` per method."""
    from torch.export import Dim, export

    seq = Dim("seq", min=1, max=kv.text_rows - 1)
    specs = graphs.methods(vlm.cfg, kv, vision_kv)
    log = log or (lambda msg: None)
    programs = {}
    with torch.no_grad():
        for name, module in graphs.wrappers(vlm, kv.layout, vision_kv).items():
            t0, method = time.perf_counter(), specs[name]
            if name == "vision_encoder":
                programs[name] = export_vision_encoder(vlm, graphs.example_inputs(method), vision_int8)
            else:
                programs[name] = export(module, graphs.example_inputs(method), strict=False,
                                        dynamic_shapes=graphs.dynamic_shapes(method, seq))
            log(f"torch.export {name}: {time.perf_counter() - t0:.1f} s")
    vlm.decoder.reset()  # export ran the wrappers on example inputs
    return programs


def constant_methods(vlm: VLM, kv: KVLayout, tokenizer_info: dict) -> dict:
    """Metadata methods; the stock MultimodalRunner reads these (get_max_seq_len is required). The context
    is what the cache holds (KVLayout.max_context), counted once."""
    cfg = vlm.cfg
    return {"get_max_seq_len": kv.max_context, "get_max_context_len": kv.max_context,
            "get_vocab_size": cfg.decoder.vocab_size, "use_kv_cache": True, "enable_dynamic_shape": True,
            "use_sdpa_with_kv_cache": False, "get_n_vision_tokens": kv.vision_tokens,
            "get_bos_id": tokenizer_info.get("bos_id", 0), "get_eos_ids": tokenizer_info["stop_ids"]}


class Int8Embedding(torch.nn.Module):
    """Token embedding with int8 rows and one fp32 scale per row (symmetric), read by ExecuTorch's
    `quantized_decomposed::embedding_byte` kernel: a quarter of the fp32 table, dequantized row by row."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # (V,)
        self.register_buffer("weight_int8", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.float32))

    def forward(self, ids):
        from executorch.exir.passes import _quant_patterns_and_replacements  # noqa: F401 (registers the op)

        return torch.ops.quantized_decomposed.embedding_byte.default(self.weight_int8, self.scale, None, -127, 127, ids)


def quantize_8da4w(vlm: VLM, group_size: int = 32) -> VLM:
    """A copy of the model for the 8da4w build: the decoder's linear layers are torchao 8da4w (int8
    activations quantized on the fly, int4 weights in groups of `group_size` along the input dimension;
    layers whose width is not a multiple stay fp32) and the token embedding is int8 per row.

    A tied LM head is untied first, so the table becomes its own int8 embedding (1.5 bytes per entry
    instead of 4). The head itself is int8 per output channel (8da8w): its error lands straight on the
    logits, and int4 there measurably costs answers (README, quantization). The vision encoder and the
    projector stay fp32."""
    import copy

    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    vlm = copy.deepcopy(vlm)
    dec = vlm.decoder
    if dec.lm_head is None:
        dec.lm_head = torch.nn.Linear(dec.cfg.hidden_size, dec.cfg.vocab_size, bias=False)
        dec.lm_head.weight = torch.nn.Parameter(dec.embed_tokens.weight.detach().clone())
    head = dec.lm_head
    quantize_(dec, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                        weight_granularity=PerGroup(group_size)),
              filter_fn=lambda m, _: isinstance(m, torch.nn.Linear) and m is not head
              and m.in_features % group_size == 0)
    quantize_(head, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)))
    dec.embed_tokens = Int8Embedding(dec.embed_tokens.weight.detach())
    return vlm


def lower(programs: dict, constant_methods: dict | None = None, log=None) -> bytes:
    """Exported programs -> the bytes of one XNNPACK-delegated .pte. Each method is taken to the edge dialect
    and lowered on its own, with a line through `log` when it starts and when it is done, then the methods
    are put together for to_executorch: the program `to_edge_transform_and_lower` makes of them all at once
    (it too lowers them one by one), with the time each took shown."""
    from executorch.exir import (EdgeCompileConfig, EdgeProgramManager, ExecutorchBackendConfig,
                                 to_edge_transform_and_lower)
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    log = log or (lambda msg: None)
    lowered, start = {}, time.perf_counter()
    for i, (name, program) in enumerate(programs.items(), 1):
        log(f"XNNPACK lowering {name} ({i}/{len(programs)}) ...")
        t0 = time.perf_counter()
        edge = to_edge_transform_and_lower({name: program}, partitioner={name: [_state_safe_partitioner()]},
                                           compile_config=EdgeCompileConfig(_check_ir_validity=False))
        lowered[name] = edge.exported_program(name)
        log(f"{name} lowered in {time.perf_counter() - t0:.1f} s ({time.perf_counter() - start:.1f} s in all)")
    edge = EdgeProgramManager(lowered, constant_methods, EdgeCompileConfig(_check_ir_validity=False))
    t0 = time.perf_counter()
    log("to_executorch (memory planning, serialization) ...")
    program = edge.to_executorch(ExecutorchBackendConfig(
        extract_delegate_segments=True,
        memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False, share_mutable_buffers=True),
        sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
        run_reinplace_pass=True, emit_mutable_buffer_names=True))
    buffer = program.buffer
    log(f"to_executorch done in {time.perf_counter() - t0:.1f} s")
    return buffer


def build(vlm: VLM, kv: KVLayout, out_dir: Path, tokenizer_info: dict, log, quant: str = "none",
          quant_vision: str = "none", vision_kv: str = "io") -> dict:
    """Export, lower and save. Returns {"files": [...], "timings": {...}}."""
    t0 = time.perf_counter()
    if quant == "8da4w":
        vlm = quantize_8da4w(vlm)
    programs = export_programs(vlm, kv, vision_int8=quant_vision == "int8", vision_kv=vision_kv, log=log)
    t1 = time.perf_counter()
    log(f"torch.export of {len(programs)} methods: {t1 - t0:.1f} s; XNNPACK lowering takes minutes at full size")
    buffer = lower(programs, constant_methods(vlm, kv, tokenizer_info), log)
    t2 = time.perf_counter()
    log(f"XNNPACK lowering + to_executorch: {t2 - t1:.1f} s")
    (out_dir / PTE_NAME).write_bytes(buffer)
    return {"files": [PTE_NAME], "timings": {"export_s": t1 - t0, "lower_s": t2 - t1}}
