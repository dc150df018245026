"""Checks of a Core ML build that need no Core ML: the program handed to coremltools against PyTorch eager
(runtime.check's stages, through the runner protocol), and the parity report of a build made where Core ML
cannot predict (anywhere but macOS 15 or later): what was checked on this machine, with its figures, and the
prediction check still pending, with the command that runs it on a Mac. Pending is not a pass.
"""

from __future__ import annotations

import torch

from models.protocol import KVLayout
from models.vlm import VLM


def _inputs(cfg, seed=7, n_prefix=4, n_question=5):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.decoder.vocab_size, (n_prefix + n_question,), generator=g).tolist()
    pixels = torch.rand(1, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    return ids[:n_prefix], pixels, ids[n_prefix:]


class TracedRun:
    """The traced modules handed to coremltools as a runner-protocol engine (models/protocol.py); fp16_kv
    rounds the K/V state and the vision K/V to fp16 as Core ML stores them."""

    def __init__(self, traced: dict, decl: dict, layout: str, fp16_kv: bool):
        self.m, self.decl, self.layout, self.fp16 = traced, decl, layout, fp16_kv
        buffers = {path.replace(".", "_"): b for path, b in traced["text_decoder"].named_buffers()}  # spec names
        self.state = {s["name"]: buffers[s["name"]] for s in decl["text_decoder"]["states"]}
        self.vision_kv_shapes = [t["shape"] for t in decl["text_decoder"]["inputs"][4:]] if layout == "split" else []

    def _kv(self, t):
        return t.half().float() if self.fp16 else t

    def reset(self):
        for name, buf in self.state.items():
            buf.fill_(1.0 if name.endswith("topk_keep") else 0.0)
        self.vision_kv = [torch.zeros(shape) for shape in self.vision_kv_shapes]

    def embed(self, ids):
        return self.m["token_embedding"](torch.tensor([ids], dtype=torch.int32))

    def encode_image(self, pixels):
        return self.m["vision_encoder"](torch.as_tensor(pixels))

    def text(self, embeds, pos: int, slot: int, select: bool):
        i32 = lambda x: torch.tensor(x, dtype=torch.int32)  # noqa: E731
        if self.layout == "shared":
            logits = self.m["text_decoder"](embeds, i32([pos]))
        else:
            logits = self.m["text_decoder"](embeds, i32(list(range(pos, pos + embeds.shape[1]))), i32([slot]),
                                            i32([int(select)]), *self.vision_kv)
        for buf in self.state.values():
            buf.copy_(self._kv(buf))
        return logits[0, -1]

    def prefill_vision(self, vision_embeds, start_pos: int, prefix_embeds):
        if prefix_embeds is None:
            prefix_embeds = torch.zeros(1, 1, vision_embeds.shape[-1])
        out = self.m["vision_prefill"](vision_embeds, torch.tensor([start_pos], dtype=torch.int32), prefix_embeds)
        self.vision_kv = [self._kv(t) for t in out[1:]]


def traced_stages(vlm: VLM, kv: KVLayout, traced: dict, decl: dict, fp16_kv: bool) -> dict:
    """Parity of the traced program against the eager model (runtime.check's stages), and token match."""
    from runtime.check import stage_metrics

    from models.protocol import converse
    from models.vlm import EagerEngine

    before, pixels, after = _inputs(vlm.cfg)
    ref, run = EagerEngine(vlm), TracedRun(traced, decl, kv.layout, fp16_kv)
    with torch.no_grad():
        stages = stage_metrics(ref, run, kv, pixels, before, after, n_decode=3)
        tokens = [converse(e, kv, before, pixels, after, 3).ids for e in (ref, run)]
    vlm.decoder.reset()
    return {"stages": stages, "min_psnr_db": min(s["psnr_db"] for s in stages.values()),
            "tokens_match": tokens[0] == tokens[1]}


SPEC_CHECK = ("each saved .mlpackage read back: inputs, outputs and states as declared, every state written, "
              "no output folded to a constant, no zero-size tensor")
TRACED_CHECKS = {  # manifest "checks" key: (what it compared, the dtype whose floors judge it)
    "traced_vs_eager": ("the program handed to coremltools (fp32, before conversion) against PyTorch eager, "
                        "same plan", "fp32"),
    "traced_vs_eager_fp16_kv": ("the same program with its K/V rounded to fp16, as Core ML stores its state",
                                "fp16"),
}


def _judged(what: str, check: dict, floors: str) -> dict:
    from runtime.parity import judge

    j = judge(check["stages"], check["tokens_match"], floors)
    return {"what": what, "ok": j["passed"], "failures": j["failures"], "floor_db": j["floor_db"],
            "min_psnr_db": round(check["min_psnr_db"], 1), "tokens_match": check["tokens_match"],
            "stages": check["stages"]}


def local_parity(checks: dict, dtype: str, quant: str, build_dir) -> dict:
    """parity.json of a Core ML build where Core ML cannot predict: "passed" is None and "status" "pending"
    when every check made here ("checked_here") held, else False and "failed". "dtype" is the build's."""
    checked = {name: _judged(what, checks[name], floors) for name, (what, floors) in TRACED_CHECKS.items()}
    checked["saved_specs"] = {"what": SPEC_CHECK, "ok": all(s["status"] == "ok" for s in checks["spec"].values()),
                              "failures": [f"{m}: {s['status']}" for m, s in checks["spec"].items()
                                           if s["status"] != "ok"], "methods": checks["spec"]}
    failures = [f"{name}: {f}" for name, c in checked.items() for f in c["failures"]]
    report = {"passed": False if failures else None, "status": "failed" if failures else "pending",
              "dtype": dtype, "quant": quant, "failures": failures, "checked_here": checked}
    if not failures:
        report["pending"] = {"check": "Core ML prediction of the saved packages against PyTorch eager",
                             "needs": "macOS 15 or later", "command": f"python -m runtime.parity --build {build_dir}"}
    return report
