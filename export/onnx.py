"""ONNX target: one .onnx per method, run by onnxruntime (CPU); KV cache as explicit inputs and outputs.

A stateful method becomes stateless here: its state buffers (KV caches, the top-k keep mask) are
extra inputs named after the buffers, and their new values extra outputs named `<buffer>.out`.
Exported through torch.export (dynamo exporter, opset 18) with distinct example tensors (the same
tensor twice is taken as aliased and silently gives a wrong graph).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn

from models.protocol import KVLayout
from models.vlm import VLM

from . import graphs

STATE_SUFFIXES = ("_k", "_v", "topk_keep")
EXTERNAL_DATA_BYTES = 1_500_000_000  # larger models keep weights beside the graph: a protobuf holds at most 2 GB


def state_names(module: nn.Module) -> list[str]:
    return [n for n, _ in module.named_buffers() if n.endswith(STATE_SUFFIXES)]


class Stateless(nn.Module):
    """Run `inner` with its state buffers taken from inputs; return outputs + updated states."""

    def __init__(self, inner: nn.Module, states: list[str]):
        super().__init__()
        self.inner, self.states = inner, states

    def forward(self, *args):
        n = len(args) - len(self.states)
        buffers = {name: value.clone() for name, value in zip(self.states, args[n:])}
        out = torch.func.functional_call(self.inner, buffers, args[:n], strict=False)
        outs = out if isinstance(out, tuple) else (out,)
        return (*outs, *[buffers[name] for name in self.states])


def touched_states(vlm: VLM, name: str, module: nn.Module) -> list[str]:
    """State buffers a method reads or writes (the others stay out of its signature): only text_decoder
    has any (its text K/V, and the top-k keep mask when the plan keeps top-k)."""
    if name != "text_decoder":
        return []
    return [n for n in state_names(module) if vlm.plan.keep_topk is not None or not n.endswith("topk_keep")]


def build(vlm: VLM, kv: KVLayout, out_dir: Path, tokenizer_info: dict, log, quant: str = "none") -> dict:
    from torch.export import Dim, export

    cfg = vlm.cfg
    seq = Dim("seq", min=1, max=kv.text_rows - 1)
    specs = graphs.methods(cfg, kv)
    files, methods, t0 = [], {}, time.perf_counter()
    external = sum(p.numel() * p.element_size() for p in vlm.parameters()) > EXTERNAL_DATA_BYTES
    if external and quant != "none":
        raise ValueError(f"--quant {quant} of an ONNX graph with external weights (over "
                         f"{EXTERNAL_DATA_BYTES / 1e9:.1f} GB) is not supported")
    wrappers = graphs.wrappers(vlm, kv.layout)
    for i, (name, module) in enumerate(wrappers.items(), 1):
        log(f"{name} ({i}/{len(wrappers)}): torch.export and ONNX export ...")
        t1, method, states = time.perf_counter(), specs[name], touched_states(vlm, name, module)
        buffers = dict(module.named_buffers())
        state_inputs = tuple(torch.zeros_like(buffers[s]) + 0.0 for s in states)  # distinct tensors
        args = graphs.example_inputs(method) + state_inputs
        dyn = graphs.dynamic_shapes(method, seq, flat=True) or tuple(None for _ in method.inputs)
        with torch.no_grad():
            ep = export(Stateless(module, states), args, strict=False,
                        dynamic_shapes=(tuple(dyn) + tuple(None for _ in states),))
            names_in = [t.name for t in method.inputs] + states
            names_out = [t.name for t in method.outputs] + [f"{s}.out" for s in states]
            path = out_dir / f"{name}.onnx"
            torch.onnx.export(ep, args, str(path), dynamo=True, input_names=names_in, output_names=names_out,
                              external_data=external, verbose=False)
        if quant == "int8":
            quantize_int8(path)
        files += [path.name] + ([f"{path.name}.data"] if (out_dir / f"{path.name}.data").is_file() else [])
        kept = onnx_input_names(path)  # the exporter drops inputs a graph never reads
        state_specs = [{"name": s, "shape": list(buffers[s].shape), "dtype": "float32"} for s in states if s in kept]
        unread = [t.name for t in method.inputs if t.name not in kept]  # e.g. prefix_embeds without full layers
        methods[name] = {"file": path.name, "states": state_specs, **({"unread_inputs": unread} if unread else {})}
        log(f"{name}: {path.stat().st_size / 1e6:.2f} MB in {time.perf_counter() - t1:.1f} s "
            f"({time.perf_counter() - t0:.1f} s in all)")
    vlm.decoder.reset()
    return {"files": files, "methods": methods, "timings": {"export_s": time.perf_counter() - t0}}


def quantize_int8(path: Path) -> None:
    """onnxruntime dynamic quantization in place: int8 weights (per channel) of MatMul/Gemm, activations
    quantized on the fly; the embedding table (Gather) stays fp32."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(path.stem + ".int8.onnx")
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # its advice to pre-process is printed per graph
    try:
        # reduce_range: 7-bit weights, so u8 x s8 products cannot saturate the 16-bit accumulation of CPUs
        # without VNNI (AVX2: logits at a cosine of 0.68 to fp32 on such a machine without it)
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.level = level
    tmp.replace(path)


def onnx_input_names(path: Path) -> set[str]:
    import onnx

    return {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}
